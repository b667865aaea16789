package agent_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/agent"
	"github.com/spin-broker/spinbroker/client"
	"github.com/spin-broker/spinbroker/internal/httpapi"
	"github.com/spin-broker/spinbroker/internal/store"
	"github.com/spin-broker/spinbroker/internal/store/storetest"
)

// startSkewedBroker is startBroker on a broker whose clock runs skew behind
// the agent's: the agent's host clock is skew ahead.
func startSkewedBroker(t *testing.T, skew time.Duration) *broker {
	t.Helper()
	now := func() time.Time { return time.Now().Add(-skew) }
	db, _ := storetest.MustOpen(t, store.Options{Now: now, Logger: quietLogger()})
	api := httpapi.New(db, quietLogger(), httpapi.Options{Now: now})
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(func() {
		api.Shutdown()
		srv.Close()
	})
	c, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return &broker{c: c, url: srv.URL, db: db}
}

// An agent whose clock is ahead of the broker's (here by two thirds of its
// lease) read the lease's expires_at, a time on the broker's clock, as
// nearly past, and at the first heartbeat stopped its handler ("lease
// expired by this agent's clock") though the broker held the lease for it
// and every heartbeat got through. The agent measures its lease on its own
// clock, from when it got the command.
func TestRun_ClockAheadOfBroker(t *testing.T) {
	b := startSkewedBroker(t, 2*time.Second)
	var cancelled atomic.Value
	slow := agent.Handle("slow", func(ctx context.Context, p struct{}) (any, error) {
		select {
		case <-time.After(2 * time.Second):
			return map[string]bool{"done": true}, nil
		case <-ctx.Done():
			cancelled.Store(context.Cause(ctx))
			return nil, context.Cause(ctx)
		}
	})
	runAgent(t, b, []agent.Handler{slow}, agent.Options{Lease: 3 * time.Second})
	ids := b.enqueue(t, cmd("slow", `{}`))
	c := b.await(t, ids[0])
	if err, _ := cancelled.Load().(error); err != nil {
		t.Errorf("the handler was stopped: %v (lease expired: %v)", err, errors.Is(err, agent.ErrLeaseExpired))
	}
	if c.State != spinbroker.Succeeded || c.Attempts != 1 {
		t.Errorf("command %s after %d attempts (%q)", c.State, c.Attempts, deref(c.Reason))
	}
}
