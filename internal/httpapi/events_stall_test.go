package httpapi

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/store"
	"github.com/spin-broker/spinbroker/internal/store/storetest"
)

// TestEvents_StalledClientDoesNotHoldShutdown: an event stream whose client
// stopped reading blocks its handler in a write; at shutdown that stream
// ends at once, rather than after the write timeout (30s), which held every
// graceful stop of the broker for all of its --shutdown-timeout.
func TestEvents_StalledClientDoesNotHoldShutdown(t *testing.T) {
	db, _ := storetest.MustOpen(t, store.Options{Now: time.Now})
	s := New(db, slog.New(slog.NewTextHandler(io.Discard, nil)), Options{})
	ended := make(chan struct{})
	h := s.Handler()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		if r.URL.Path == "/events" {
			close(ended)
		}
	}))
	srv.Config.ConnState = func(c net.Conn, st http.ConnState) {
		if tc, ok := c.(*net.TCPConn); ok && st == http.StateNew {
			tc.SetWriteBuffer(4096) //nolint:errcheck // small buffers fill fast
		}
	}
	srv.Start()
	defer srv.Close()
	defer s.Shutdown()

	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) }) //nolint:errcheck
	}}
	conn, err := d.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /events HTTP/1.1\r\nHost: localhost\r\n\r\n")
	// Never read: fill the stream until its handler is stuck in a write.
	for i := range 8 {
		cmds := make([]spinbroker.NewCommand, 250)
		for j := range cmds {
			cmds[j] = spinbroker.NewCommand{Resource: fmt.Sprintf("r%d", j%4), Action: "a"}
		}
		if _, _, err := db.CreatePackage(context.Background(), spinbroker.NewPackage{Enqueue: true, Commands: cmds}, nil); err != nil {
			t.Fatal(i, err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	select {
	case <-ended:
		t.Fatal("the stream ended before the shutdown: the test did not stall it")
	default:
	}
	start := time.Now()
	s.Shutdown()
	select {
	case <-ended:
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("the stalled stream ended %v after the shutdown", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a stalled event stream held the shutdown for more than 10s")
	}
}

// TestEvents_ResyncReachesFilteredStreams: when the hub drops commits,
// every stream is told to reload, a stream of one package (?package=, what
// a producer waiting for its package and the dashboard's package page
// follow) too: it may have lost that package's last event, and without
// "resync" it would wait for one that never comes.
func TestEvents_ResyncReachesFilteredStreams(t *testing.T) {
	s, srv, _ := newTestServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sc := connectedStream(t, ctx, srv.URL+"/events?package=0190c3a4-5a6b-4c8d-9e0f-a1b2c3d4e5f6")
	s.hub.overflow.Store(true)
	for sc.Scan() {
		if sc.Text() == "event: resync" {
			return
		}
	}
	t.Fatalf("no resync on a stream of one package: %v", sc.Err())
}

// TestEvents_CascadeKeepsStreamsOpen: one commit with more transitions
// than a stream's buffer (a failure cancelling 2,000 dependents) reaches a
// stream that reads as fast as it can either whole or with a "resync",
// and the stream stays open. It used to be cut without a word: every
// follower (the dashboard, `spinbroker events`) saw its stream end and
// the cascade's events lost, with no resync to say so.
func TestEvents_CascadeKeepsStreamsOpen(t *testing.T) {
	_, srv, db := newTestServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	once := 1
	a, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{
		{Resource: "seed", Action: "a", MaxAttempts: &once}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	seed := a.Commands[0].ID
	const n = 2000
	cmds := make([]spinbroker.NewCommand, n)
	for i := range cmds {
		cmds[i] = spinbroker.NewCommand{Resource: "after", Action: "b", Dependencies: []string{seed}}
	}
	if _, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: cmds}, nil); err != nil {
		t.Fatal(err)
	}
	leased, _, err := db.Next(ctx, "seed", 0)
	if err != nil || leased == nil {
		t.Fatal(leased, err)
	}

	sc := connectedStream(t, ctx, srv.URL+"/events")
	no := false
	if _, err := db.Complete(ctx, seed, spinbroker.Result{Status: &no, Lease: leased.Lease.Token}); err != nil {
		t.Fatal(err)
	}
	commands, resync := 0, false
	for commands < n+1 && !resync && sc.Scan() {
		switch sc.Text() {
		case "event: command":
			commands++
		case "event: resync":
			resync = true
		}
	}
	if commands < n+1 && !resync {
		t.Fatalf("the stream ended (%v) after %d of %d command events, without a resync", sc.Err(), commands, n+1)
	}
	// Still open: a later change arrives.
	if _, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{{Resource: "later", Action: "c"}}}, nil); err != nil {
		t.Fatal(err)
	}
	for sc.Scan() {
		if strings.Contains(sc.Text(), `"resource":"later"`) {
			return
		}
	}
	t.Fatalf("the stream ended (%v) before a later change came", sc.Err())
}

// TestHub_FullBufferKeepsSubscriber: a broadcast that finds a stream's
// buffer full leaves the stream subscribed, its buffer as it was, and
// marks it to be sent "resync". (TestEvents_CascadeKeepsStreamsOpen shows
// it end to end, but a stream that reads fast enough, as under -race, never
// fills its buffer there: this test fills it for certain.)
func TestHub_FullBufferKeepsSubscriber(t *testing.T) {
	quit := make(chan struct{})
	defer close(quit)
	h := newHub(nil, slog.New(slog.DiscardHandler), quit)
	s := h.subscribe("")
	defer h.unsubscribe(s)
	for i := range subscriberBuf + 10 {
		h.broadcast("command", "p", map[string]int{"i": i})
	}
	h.mu.Lock()
	_, subscribed := h.subs[s]
	h.mu.Unlock()
	if !subscribed {
		t.Fatal("a stream whose buffer filled was dropped: it ends without a resync")
	}
	if !s.lost.Load() {
		t.Error("a stream that missed events is not marked to be sent a resync")
	}
	if got := len(s.ch); got != subscriberBuf {
		t.Errorf("the buffer holds %d events, want %d (the first ones, kept)", got, subscriberBuf)
	}
	if ev := <-s.ch; !strings.Contains(string(ev.data), `{"i":0}`) {
		t.Errorf("the first event kept is %q, want the first broadcast", ev.data)
	}
}

// connectedStream opens the event stream at url for the test, and returns
// it once the stream has subscribed (its preamble, ": connected", is
// written then); it is closed when the test ends.
func connectedStream(t *testing.T, ctx context.Context, url string) *bufio.Scanner {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() && sc.Text() != ": connected" {
	}
	return sc
}
