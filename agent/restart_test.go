package agent_test

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/agent"
	"github.com/spin-broker/spinbroker/client"
	"github.com/spin-broker/spinbroker/internal/httpapi"
	"github.com/spin-broker/spinbroker/internal/store"
	"github.com/spin-broker/spinbroker/internal/store/storetest"
	"github.com/spin-broker/spinbroker/internal/syncbuf"
)

// serveOn serves a broker over db on ln until the stop it returns is
// called, which stops it as the broker's serve does: waiting long-polls
// answer 503, then the listener closes and requests in flight finish.
func serveOn(t *testing.T, db *store.DB, ln net.Listener) (stop func()) {
	t.Helper()
	api := httpapi.New(db, quietLogger(), httpapi.Options{})
	hs := &http.Server{Handler: api.Handler()}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = hs.Serve(ln)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			api.Shutdown()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := hs.Shutdown(ctx); err != nil {
				hs.Close()
			}
			<-served
		})
	}
	t.Cleanup(stop)
	return stop
}

// restartable is a broker served on a fixed address, which a test stops
// and serves again over the same database where its agents left it.
type restartable struct {
	*broker
	addr string
	stop func()
}

func startRestartable(t *testing.T) *restartable {
	t.Helper()
	db, _ := storetest.MustOpen(t, store.Options{Now: time.Now})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	stop := serveOn(t, db, ln)
	c, err := client.New("http://" + addr)
	if err != nil {
		t.Fatal(err)
	}
	return &restartable{broker: &broker{c: c, url: "http://" + addr, db: db}, addr: addr, stop: stop}
}

// serveAgain serves the database again on the same address, once stopped.
func (r *restartable) serveAgain(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", r.addr)
	if err != nil {
		t.Fatalf("listen again on %s: %v", r.addr, err)
	}
	r.stop = serveOn(t, r.db, ln)
}

// TestRun_BackSoonAfterOutage: an agent whose broker was stopped for a
// while (an upgrade, a reboot) takes work again within a few seconds of
// the broker's return. Its back-off used to grow while nothing answered,
// to MaxBackoff (30s by default): with a minimum of 4s here, the fourth
// refused connection was waited out for 16s to 32s, and the command
// enqueued as the broker came back waited as long.
func TestRun_BackSoonAfterOutage(t *testing.T) {
	b := startRestartable(t)
	var logs syncbuf.Buffer
	runAgent(t, b.broker, []agent.Handler{greeter(nil)}, agent.Options{
		Logger:     slog.New(slog.NewTextHandler(&logs, nil)),
		MinBackoff: 4 * time.Second, MaxBackoff: time.Minute,
	})
	ids := b.enqueue(t, cmd("greet", `{"name":"before"}`))
	if c := b.await(t, ids[0]); c.State != spinbroker.Succeeded {
		t.Fatalf("command before the outage %s", c.State)
	}

	b.stop()
	const failures = 4
	deadline := time.Now().Add(40 * time.Second)
	for strings.Count(logs.String(), "cannot take commands; retrying") < failures {
		if time.Now().After(deadline) {
			t.Fatalf("40s into the outage, fewer than %d failed polls:\n%s", failures, logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "connection refused") {
		t.Fatalf("the outage is no refused connection:\n%s", logs.String())
	}

	b.serveAgain(t)
	back := time.Now()
	ids = b.enqueue(t, cmd("greet", `{"name":"after"}`))
	if c := b.await(t, ids[0]); c.State != spinbroker.Succeeded {
		t.Fatalf("command after the outage %s", c.State)
	}
	// At most 5s of back-off, and room for a busy machine (a -race build
	// beside the other packages' tests); the old back-off waited 16s at
	// least.
	if took := time.Since(back); took > 12*time.Second {
		t.Errorf("the agent took the command %v after the broker was back:\n%s", took.Round(time.Millisecond), logs.String())
	}
}
