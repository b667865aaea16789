package client

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
)

// TestEvents_SilentConnection: a stream on which nothing more comes, not
// even the broker's keep-alive (a connection a NAT forgot), ends with an
// error worth a new stream, instead of holding its follower (WaitPackage,
// 'spinbroker events') for ever; one that keeps getting keep-alives stays
// open for longer than that.
func TestEvents_SilentConnection(t *testing.T) {
	defer func(d time.Duration) { eventsIdle = d }(eventsIdle)
	eventsIdle = 300 * time.Millisecond
	release := make(chan struct{})
	defer close(release)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "event: command\ndata: {}\n\n")
		w.(http.Flusher).Flush()
		if r.URL.Query().Get("package") == "" {
			// Silent: the connection stays, nothing comes.
			select {
			case <-r.Context().Done():
			case <-release:
			}
			return
		}
		// Keep-alives for four idle periods, then the end of the stream.
		for end := time.Now().Add(4 * eventsIdle); time.Now().Before(end); {
			io.WriteString(w, ": ping\n\n")
			w.(http.Flusher).Flush()
			time.Sleep(eventsIdle / 6)
		}
	}))
	defer srv.Close()
	c, err := New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	count := func(Event) error { got++; return nil }
	done := make(chan error, 1)
	go func() { done <- c.Events(context.Background(), count) }()
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Events still waits on a silent connection after 30s")
	}
	if got != 1 || !Temporary(err) || !strings.Contains(err.Error(), "keep-alive") {
		t.Errorf("a silent stream: %d event(s), %v (temporary %v); want 1 event and a temporary error naming the keep-alive", got, err, Temporary(err))
	}
	var se *SilentError
	if !errors.As(err, &se) || se.Idle != eventsIdle {
		t.Errorf("a silent stream: %#v, want a *SilentError of %s", err, eventsIdle)
	}

	// IdleTimeout sets the wait for one stream, whatever the default.
	idle := eventsIdle
	eventsIdle = time.Hour
	got = 0
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	err = c.Events(ctx, count, IdleTimeout(idle))
	cancel()
	eventsIdle = idle
	if !errors.As(err, &se) || se.Idle != idle || got != 1 {
		t.Errorf("a silent stream with IdleTimeout(%s): %d event(s), %v; want 1 and a *SilentError of that", idle, got, err)
	}

	got = 0
	err = c.Events(context.Background(), count, ForPackage("0190c3a4-5a6b-7c8d-9e0f-a1b2c3d4e5f6"))
	if got != 1 || !errors.Is(err, io.EOF) || !errors.Is(err, ErrStreamEnded) || strings.Contains(err.Error(), "keep-alive") {
		t.Errorf("a stream kept alive, then ended by the broker: %d event(s), %v; want 1 event and the broker's end", got, err)
	}
}

// TestEvents_SlowHandlerNotSilence: the time the caller's fn takes (a
// 'spinbroker events' whose pipe's reader is paused, a follower that reads
// the package the event names) is not the broker's silence: the stream,
// alive all along, goes on after fn returns. The watchdog used to run
// while fn ran, and ended the stream with a *SilentError ("the connection
// is gone") that lost the events sent meanwhile.
func TestEvents_SlowHandlerNotSilence(t *testing.T) {
	c, _, _ := newBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	idle := 300 * time.Millisecond
	opened := make(chan struct{})
	errDone := errors.New("done")
	var seen []string
	done := make(chan error, 1)
	go func() {
		done <- c.Events(ctx, func(ev Event) error {
			if ev.Type != "package" {
				return nil
			}
			seen = append(seen, string(ev.Data))
			if len(seen) == 1 {
				// Slow, for several idle periods, while the broker
				// sends the next event.
				time.Sleep(4 * idle)
				return nil
			}
			return errDone
		}, IdleTimeout(idle), OnOpen(func() { close(opened) }))
	}()
	<-opened
	in := spinbroker.NewPackage{Commands: []spinbroker.NewCommand{{Resource: "r", Action: "a"}}}
	if _, err := c.CreatePackage(ctx, in); err != nil {
		t.Fatal(err)
	}
	time.Sleep(idle) // the first event is in fn
	if _, err := c.CreatePackage(ctx, in); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, errDone) {
		t.Errorf("a handler slower than IdleTimeout: %v after %d package event(s), want the stream to go on to the second", err, len(seen))
	}
}
