package client

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
)

// TestConnectionsKeptForManyAgents: a program that runs 64 agents on one
// Client (64 long-polls at once, each agent.Run its own loop) keeps their
// connections between calls. The transport kept 32 idle per host, so
// every round of calls closed 32 connections and dialed 32 new ones.
func TestConnectionsKeptForManyAgents(t *testing.T) {
	const agents = 64
	var dialed atomic.Int64
	var arrived sync.WaitGroup
	release := make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived.Done()
		<-release // all of them at once, as long-polls are
		w.WriteHeader(http.StatusNoContent)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			dialed.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	c, err := New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	round := func() {
		arrived.Add(agents)
		var done sync.WaitGroup
		for range agents {
			done.Go(func() {
				if _, err := c.Next(context.Background(), "work", 0, 0); err != nil {
					t.Error(err)
				}
			})
		}
		arrived.Wait()
		for range agents {
			release <- struct{}{}
		}
		done.Wait()
	}
	round()
	first := dialed.Load()
	round()
	if again := dialed.Load() - first; first != agents || again != 0 {
		t.Errorf("64 calls at once dialed %d connections, then %d more the next time, want 64 and 0", first, again)
	}
}
