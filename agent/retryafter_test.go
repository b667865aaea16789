package agent_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/agent"
	"github.com/spin-broker/spinbroker/internal/httpapi"
)

// busy answers the first n requests whose path matches with 503 and a
// Retry-After of after, and records when every matching request came.
type busy struct {
	match func(r *http.Request) bool
	after string
	n     int

	mu    sync.Mutex
	times []time.Time
}

func (b *busy) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !b.match(r) {
			h.ServeHTTP(w, r)
			return
		}
		b.mu.Lock()
		b.times = append(b.times, time.Now())
		refuse := len(b.times) <= b.n
		b.mu.Unlock()
		if !refuse {
			h.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Retry-After", b.after)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `{"error":{"code":"unavailable","message":"injected"}}`)
	})
}

// gaps are the pauses between the first n+1 matching requests: after each
// refusal, the wait before the next try.
func (b *busy) gaps(t *testing.T) []time.Duration {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.times) <= b.n {
		t.Fatalf("%d requests, want at least %d", len(b.times), b.n+1)
	}
	var gaps []time.Duration
	for i := 1; i <= b.n; i++ {
		gaps = append(gaps, b.times[i].Sub(b.times[i-1]))
	}
	return gaps
}

// TestRun_RetryAfter: a 503 that says when to come back (the broker's
// Retry-After: 1, when it sheds load) is waited out, by polls, heartbeats
// and completions alike, rather than tried again at once by a back-off of
// a few milliseconds; and it is capped by MaxBackoff, so that a proxy
// asking for an hour does not park the agent for one.
func TestRun_RetryAfter(t *testing.T) {
	slow := agent.Handle("slow", func(ctx context.Context, p struct{}) (any, error) {
		select {
		case <-time.After(4500 * time.Millisecond):
			return map[string]bool{"done": true}, nil
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	})
	for _, tc := range []struct {
		name    string
		match   func(r *http.Request) bool
		action  string
		after   string
		maxWait time.Duration
		lease   time.Duration
		min     time.Duration
		max     time.Duration
	}{
		{"Next", func(r *http.Request) bool { return strings.HasSuffix(r.URL.Path, "/next") }, "greet", "1", 0, 0, 950 * time.Millisecond, 3 * time.Second},
		{"Complete", isComplete, "greet", "1", 0, 0, 950 * time.Millisecond, 3 * time.Second},
		// A heartbeat comes at a third of the lease (2s here); after a
		// refusal the back-off (10 to 100ms) would come far sooner.
		{"Heartbeat", func(r *http.Request) bool { return strings.HasSuffix(r.URL.Path, "/heartbeat") }, "slow", "1", 0, 6 * time.Second, 950 * time.Millisecond, 1900 * time.Millisecond},
		{"CappedByMaxBackoff", func(r *http.Request) bool { return strings.HasSuffix(r.URL.Path, "/next") }, "greet", "3600", 300 * time.Millisecond, 0, 0, 900 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bz := &busy{match: tc.match, after: tc.after, n: 2}
			b := startBroker(t, httpapi.Options{}, bz.wrap)
			opts := agent.Options{Lease: tc.lease, MinBackoff: 10 * time.Millisecond, MaxBackoff: 5 * time.Second}
			if tc.maxWait > 0 {
				opts.MaxBackoff = tc.maxWait
			}
			runAgent(t, b, []agent.Handler{greeter(nil), slow}, opts)
			params := `{}`
			if tc.action == "greet" {
				params = `{"name":"later"}`
			}
			ids := b.enqueue(t, cmd(tc.action, params))
			if c := b.await(t, ids[0]); c.State != spinbroker.Succeeded || c.Attempts != 1 {
				t.Fatalf("command %s after %d attempts (%q)", c.State, c.Attempts, deref(c.Reason))
			}
			for i, d := range bz.gaps(t) {
				if d < tc.min || d > tc.max {
					t.Errorf("try %d came %s after a 503 with Retry-After: %s; want %s to %s", i+2, d.Round(time.Millisecond), tc.after, tc.min, tc.max)
				}
			}
		})
	}
}
