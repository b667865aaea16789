package agent_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/agent"
	"github.com/spin-broker/spinbroker/internal/brokertest"
)

// startSkewedBroker is startBroker on a broker whose clock runs skew behind
// the agent's: the agent's host clock is skew ahead.
func startSkewedBroker(t *testing.T, skew time.Duration) *broker {
	t.Helper()
	return startSkewedBrokerWrapped(t, skew, nil)
}

// startSkewedBrokerWrapped is startSkewedBroker with its handler wrapped
// (nil: as it is), as startBroker's wrap.
func startSkewedBrokerWrapped(t *testing.T, skew time.Duration, wrap func(http.Handler) http.Handler) *broker {
	t.Helper()
	sb := brokertest.Start(t, brokertest.WithSkew(skew), brokertest.WithLogger(quietLogger()), brokertest.Wrap(wrap))
	return &broker{c: sb.Client, url: sb.URL, db: sb.DB}
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

// An agent whose clock is ahead of the broker's, and whose result is not
// taken at once (a broker answering 503 for a while), asked the broker
// whether the lease had run out and compared its expires_at, a time on the
// broker's clock, with its own: the lease the broker still held (its
// heartbeats got through, only their answers were lost) looked past, the
// agent dropped the result ("the broker will give the command again"),
// and the broker, its lease run out at last, gave the command again: the
// work was done twice. The agent keeps offering the result while the
// broker holds the command at this attempt.
func TestRun_ClockAheadResultNotDropped(t *testing.T) {
	var down atomic.Bool
	lossy := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !down.Load() {
				h.ServeHTTP(w, r)
				return
			}
			switch {
			case strings.HasSuffix(r.URL.Path, "/heartbeat"):
				// It reaches the broker, which extends the lease; its
				// answer is lost on the way back.
				h.ServeHTTP(httptest.NewRecorder(), r)
			case strings.HasSuffix(r.URL.Path, "/complete"):
			default:
				h.ServeHTTP(w, r)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `{"error":{"code":"unavailable","message":"injected"}}`)
		})
	}
	b := startSkewedBrokerWrapped(t, 30*time.Second, lossy)
	var runs atomic.Int32
	quick := agent.Handle("quick", func(ctx context.Context, p struct{}) (any, error) {
		// Long enough for heartbeats to get through first, so that the
		// broker's lease, extended by those whose answers are lost
		// below, outlasts the agent's own count of it.
		time.Sleep(2500 * time.Millisecond)
		runs.Add(1)
		down.Store(true) // the broker's answers stop coming as the handler ends
		return map[string]bool{"done": true}, nil
	})
	runAgent(t, b, []agent.Handler{quick}, agent.Options{Lease: 3 * time.Second})
	ids := b.enqueue(t, cmd("quick", `{}`))
	// Past the lease by the agent's own count (its last heartbeat whose
	// answer came, at about 2s, plus 3s) and not by the broker's.
	time.Sleep(6500 * time.Millisecond)
	down.Store(false)
	c := b.await(t, ids[0])
	if c.State != spinbroker.Succeeded || c.Attempts != 1 || runs.Load() != 1 {
		t.Errorf("command %s after %d attempts and %d runs (%q): the result was dropped while the broker held the lease", c.State, c.Attempts, runs.Load(), deref(c.Reason))
	}
}

// An agent whose clock is behind the broker's, with every result refused
// (a 500), took the lease the broker had let run out for one still held
// (by the skew, here a minute) and kept offering the result, holding the
// command, and the queue behind it, that long. It gives up as soon as the
// broker's lease has run out, as with clocks that agree
// (TestRun_RefusedResultReleasesTheLease/Bounded).
func TestRun_ClockBehindRefusedResultGivesUp(t *testing.T) {
	f := refuseResults()
	f.down.Store(true)
	wantRefusedResultBounded(t, startSkewedBrokerWrapped(t, -time.Minute, f.wrap))
}
