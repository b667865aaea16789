package agent_test

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/agent"
	"github.com/spin-broker/spinbroker/client"
	"github.com/spin-broker/spinbroker/internal/httpapi"
	"github.com/spin-broker/spinbroker/internal/syncbuf"
)

// refuseResults answers 500 to every completion the agent sends (single or
// batched) while down is set; a person's client (another User-Agent) gets
// through.
func refuseResults() *outage {
	return &outage{status: http.StatusInternalServerError, match: func(r *http.Request) bool {
		return isComplete(r) && r.UserAgent() != "by-hand"
	}}
}

// TestRun_RefusedResultReleasesTheLease: a result the broker answers with
// 500 on every try does not keep its command leased for ever. Heartbeats
// went on while the delivery was retried, so the command was never given
// again and a serial queue waited behind it for good. Now the agent stops
// extending the lease once delivery has failed for a lease's duration:
// the lease runs out, the command can be given again, and the agent,
// seeing that the broker has moved on, gives up the result and takes
// work again.
func TestRun_RefusedResultReleasesTheLease(t *testing.T) {
	for _, claim := range []int{0, 4} {
		t.Run(map[int]string{0: "Single", 4: "Batch"}[claim], func(t *testing.T) {
			// Once the agent holds the command, its own takes are refused
			// too: it gives up the result as soon as the broker says the
			// lease ran out, and asking again at once it could win the
			// command back from the hand below (attempt 2 its own, the
			// hand's 3), as it did on a loaded machine.
			var held atomic.Bool
			f := refuseResults()
			results := f.match
			f.match = func(r *http.Request) bool {
				taking := strings.HasSuffix(r.URL.Path, "/next") || strings.HasSuffix(r.URL.Path, "/claim")
				return results(r) || held.Load() && taking && r.UserAgent() != "by-hand"
			}
			f.down.Store(true)
			b := startBroker(t, httpapi.Options{}, f.wrap)
			hand, err := client.New(b.url, client.WithUserAgent("by-hand"))
			if err != nil {
				t.Fatal(err)
			}
			var logs syncbuf.Buffer
			runAgent(t, b, []agent.Handler{greeter(nil)}, agent.Options{Claim: claim, Lease: time.Second, MaxBackoff: 200 * time.Millisecond,
				Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			ids := b.enqueue(t, cmd("greet", `{"name":"refused"}`))
			// The agent takes it first: only then does the hand below ask
			// the same queue, or it could be the first to get it.
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
				c, err := hand.Command(context.Background(), ids[0])
				if err != nil {
					t.Fatal(err)
				}
				if c.State == spinbroker.Leased {
					held.Store(true)
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the agent did not take the command: %s", c.State)
				}
			}

			// The command comes back to its queue: someone else gets it.
			var again *spinbroker.Command
			for deadline := time.Now().Add(15 * time.Second); again == nil; {
				if time.Now().After(deadline) {
					t.Fatalf("15s after a 1s lease, with every result refused, the command is still held:\n%s", logs.String())
				}
				again, err = hand.Next(context.Background(), "test", time.Second, 30*time.Second)
				if err != nil {
					t.Fatal(err)
				}
			}
			if again.ID != ids[0] || again.Attempts != 2 {
				t.Fatalf("got command %s at attempt %d, want %s at attempt 2", again.ID, again.Attempts, ids[0])
			}
			// The agent stops retrying a result that cannot count any more.
			awaitLog(t, &logs, "result not delivered")
			ok := true
			if _, err := hand.Complete(context.Background(), again.ID, spinbroker.Result{Status: &ok, Lease: again.Lease.Token}); err != nil {
				t.Fatal(err)
			}
			// And it works again once the broker takes results.
			f.down.Store(false)
			next := b.enqueue(t, cmd("greet", `{"name":"after"}`))
			if c := b.await(t, next[0]); c.State != spinbroker.Succeeded || c.Attempts != 1 {
				t.Errorf("the next command: %s after %d attempts", c.State, c.Attempts)
			}
		})
	}
	// With nobody else to take it, the command is run again by the same
	// agent until its attempts are spent, then fails: bounded.
	t.Run("Bounded", func(t *testing.T) {
		f := refuseResults()
		f.down.Store(true)
		wantRefusedResultBounded(t, startBroker(t, httpapi.Options{}, f.wrap))
	})
}

// wantRefusedResultBounded runs a command of two attempts on b, whose
// results are all refused, and wants it failed "lease expired" after two
// runs: the agent gives the result up once the broker's lease has run out.
func wantRefusedResultBounded(t *testing.T, b *broker) {
	t.Helper()
	var runs atomic.Int32
	runAgent(t, b, []agent.Handler{greeter(&runs)}, agent.Options{Lease: time.Second})
	two := 2
	c := cmd("greet", `{"name":"refused"}`)
	c.MaxAttempts = &two
	ids := b.enqueue(t, c)
	got := b.await(t, ids[0])
	if got.State != spinbroker.Failed || got.Attempts != 2 || deref(got.Reason) != "lease expired" || runs.Load() != 2 {
		t.Errorf("command %s after %d attempts and %d runs, reason %q; want failed, lease expired, after 2", got.State, got.Attempts, runs.Load(), deref(got.Reason))
	}
}

// TestRun_BatchRefusedResultsGiveUpOnce: when a batch's results are refused
// for a lease's duration, the agent stops extending their leases and says
// so once for the batch. Each command's heartbeat said it: a batch of 100
// wrote 100 warnings of the same give-up at once.
func TestRun_BatchRefusedResultsGiveUpOnce(t *testing.T) {
	f := refuseResults()
	f.down.Store(true)
	b := startBroker(t, httpapi.Options{}, f.wrap)
	const n = 4
	conc := n
	if _, err := b.c.SetQueue(context.Background(), "test", spinbroker.QueueSettings{Concurrency: &conc}); err != nil {
		t.Fatal(err)
	}
	var logs syncbuf.Buffer
	runAgent(t, b, []agent.Handler{greeter(nil)}, agent.Options{Claim: n, Lease: time.Second, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	once := 1
	var cmds []spinbroker.NewCommand
	for range n {
		c := cmd("greet", `{"name":"refused"}`)
		c.MaxAttempts = &once
		cmds = append(cmds, c)
	}
	for _, id := range b.enqueue(t, cmds...) {
		if c := b.await(t, id); c.State != spinbroker.Failed || deref(c.Reason) != "lease expired" {
			t.Errorf("command %s (%q), want failed: lease expired", c.State, deref(c.Reason))
		}
	}
	// The agent drops each result once it sees the broker moved on.
	for deadline := time.Now().Add(10 * time.Second); strings.Count(logs.String(), "result not delivered") < n; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the agent still offers results of commands that failed:\n%s", logs.String())
		}
	}
	got := logs.String()
	if k := strings.Count(got, "after a lease's duration; no longer extending"); k != 1 || !strings.Contains(got, "batch=4") {
		t.Errorf("%d lines say the leases are no longer extended, want 1 for the batch of %d:\n%s", k, n, got)
	}
}
