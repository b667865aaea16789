package agent_test

import (
	"context"
	"errors"
	"io"
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

// setConcurrency sets the concurrency of the queue "test".
func (b *broker) setConcurrency(t *testing.T, n int) {
	t.Helper()
	if _, err := b.c.SetQueue(context.Background(), "test", spinbroker.QueueSettings{Concurrency: &n}); err != nil {
		t.Fatal(err)
	}
}

// awaitLog waits until the log holds want.
func awaitLog(t *testing.T, logs *syncbuf.Buffer, want string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(logs.String(), want); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the log never says %q:\n%s", want, logs.String())
		}
	}
}

// grepLine is the first line of logs that holds s, or "".
func grepLine(logs, s string) string {
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}

// TestRun_BatchOneLeaseLost: one command of a batch loses its lease (its
// heartbeats fail, the lease runs out, another agent takes it) while the
// others finish: the others' results are recorded, the lost one's dropped
// with one line that says why, and the agent takes the next batch. (The
// drop took two lines, "lease lost" and "result not delivered", for one
// refusal of the result; per-command mode too, tested here beside it.)
func TestRun_BatchOneLeaseLost(t *testing.T) {
	for _, claim := range []int{0, 4} {
		t.Run(map[int]string{0: "Single", 4: "Batch"}[claim], func(t *testing.T) {
			testOneLeaseLost(t, claim)
		})
	}
}

func testOneLeaseLost(t *testing.T, claim int) {
	var lostID atomic.Value
	lostID.Store("")
	failBeats := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if id := lostID.Load().(string); id != "" && r.URL.Path == "/commands/"+id+"/heartbeat" {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = io.WriteString(w, `{"error":{"code":"unavailable","message":"injected"}}`)
				return
			}
			h.ServeHTTP(w, r)
		})
	}
	b := startBroker(t, httpapi.Options{}, failBeats)
	b.setConcurrency(t, 4)
	release := make(chan struct{})
	started := make(chan struct{})
	work := agent.Handle("work", func(ctx context.Context, p struct{}) (any, error) {
		return map[string]bool{"done": true}, nil
	})
	stubborn := agent.Handle("stubborn", func(ctx context.Context, p struct{}) (any, error) {
		close(started)
		<-release // ignores its context: finishes, lease or not
		return map[string]bool{"stubborn": true}, nil
	})
	// One at a time, the stubborn command alone: the other agent below
	// would take the next one, ready, rather than wait for its lease.
	cmds := []spinbroker.NewCommand{cmd("stubborn", `{}`)}
	if claim > 1 {
		cmds = []spinbroker.NewCommand{cmd("work", `{}`), cmd("stubborn", `{}`), cmd("work", `{}`), cmd("work", `{}`)}
	}
	ids := b.enqueue(t, cmds...)
	lost := ids[min(1, len(ids)-1)] // the stubborn one
	lostID.Store(lost)
	var logs syncbuf.Buffer
	runAgent(t, b, []agent.Handler{work, stubborn}, agent.Options{Claim: claim, Lease: 3 * time.Second, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	<-started
	// Another agent takes the command once its lease has run out.
	var other *spinbroker.Command
	for deadline := time.Now().Add(15 * time.Second); other == nil; {
		if time.Now().After(deadline) {
			t.Fatalf("nobody else could take the command whose heartbeats failed:\n%s", logs.String())
		}
		var err error
		other, err = b.c.Next(context.Background(), "test", time.Second, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
	}
	if other.ID != lost || other.Attempts != 2 {
		t.Fatalf("the other agent got %s at attempt %d, want %s at 2", other.ID, other.Attempts, lost)
	}
	close(release)
	for i, id := range ids {
		if id == lost {
			continue
		}
		if c := b.await(t, id); c.State != spinbroker.Succeeded || c.Attempts != 1 {
			t.Errorf("command %d: %s after %d attempts (%q)", i, c.State, c.Attempts, deref(c.Reason))
		}
	}
	awaitLog(t, &logs, "result not delivered")
	// The lost one is still the other agent's.
	if c, _ := b.c.Command(context.Background(), lost); c.State != spinbroker.Leased || c.Attempts != 2 {
		t.Errorf("the command taken over: %s at attempt %d, want still leased at 2", c.State, c.Attempts)
	}
	ok := true
	if _, err := b.c.Complete(context.Background(), lost, spinbroker.Result{Status: &ok, Lease: other.Lease.Token}); err != nil {
		t.Fatal(err)
	}
	// The next batch is taken.
	next := b.enqueue(t, cmd("work", `{}`), cmd("work", `{}`))
	for _, id := range next {
		if c := b.await(t, id); c.State != spinbroker.Succeeded || c.Attempts != 1 {
			t.Errorf("next batch: %s after %d attempts", c.State, c.Attempts)
		}
	}
	var said []string
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, lost) && (strings.Contains(line, "lease lost") || strings.Contains(line, "not delivered")) {
			said = append(said, line)
		}
	}
	if len(said) != 1 || !strings.Contains(said[0], "result not delivered: the lease was lost") || !strings.Contains(said[0], "is not the current lease") {
		t.Errorf("the dropped result is said in %d lines, want 1 saying why (the broker's answer):\n%s", len(said), strings.Join(said, "\n"))
	}
}

// TestRun_BatchAcrossRestart: the broker stops between the claim and the
// batch's completion and comes back on the same database and address:
// every result is delivered once, none lost, nothing run twice.
func TestRun_BatchAcrossRestart(t *testing.T) {
	b := startRestartable(t)
	b.setConcurrency(t, 5)
	var runs atomic.Int32
	all := make(chan struct{})
	release := make(chan struct{})
	work := agent.Handle("work", func(ctx context.Context, p struct{}) (any, error) {
		if runs.Add(1) == 5 {
			close(all)
		}
		<-release
		return map[string]bool{"done": true}, nil
	})
	var logs syncbuf.Buffer
	runAgent(t, b.broker, []agent.Handler{work}, agent.Options{Claim: 5, Lease: 10 * time.Second, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	var cmds []spinbroker.NewCommand
	for range 5 {
		cmds = append(cmds, cmd("work", `{}`))
	}
	ids := b.enqueue(t, cmds...)
	<-all
	b.stop()
	close(release)
	// Down for a few tries of the batch's completion.
	for deadline := time.Now().Add(20 * time.Second); strings.Count(logs.String(), "cannot deliver every result; retrying") < 3; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the agent did not try to deliver the batch while the broker was down:\n%s", logs.String())
		}
	}
	b.serveAgain(t)
	for i, id := range ids {
		if c := b.await(t, id); c.State != spinbroker.Succeeded || c.Attempts != 1 {
			t.Errorf("command %d: %s after %d attempts", i, c.State, c.Attempts)
		}
	}
	if n := runs.Load(); n != 5 {
		t.Errorf("%d runs of 5 commands", n)
	}
}

// TestRun_BatchPanic: a handler that panics in a batch fails its command
// for good, the panic in the reason, and the rest of the batch succeeds.
func TestRun_BatchPanic(t *testing.T) {
	b := startBroker(t, httpapi.Options{}, nil)
	b.setConcurrency(t, 10)
	work := agent.Handle("work", func(ctx context.Context, p struct{ Panic bool }) (any, error) {
		if p.Panic {
			panic("out of cheese")
		}
		return map[string]bool{"done": true}, nil
	})
	var cmds []spinbroker.NewCommand
	for i := range 10 {
		if i == 4 {
			cmds = append(cmds, cmd("work", `{"Panic":true}`))
		} else {
			cmds = append(cmds, cmd("work", `{}`))
		}
	}
	ids := b.enqueue(t, cmds...)
	runAgent(t, b, []agent.Handler{work}, agent.Options{Claim: 10})
	for i, id := range ids {
		c := b.await(t, id)
		switch {
		case i == 4 && (c.State != spinbroker.Failed || c.Attempts != 1 || deref(c.Reason) != "agent error: the handler panicked: out of cheese"):
			t.Errorf("the panicking command: %s after %d attempts, %q", c.State, c.Attempts, deref(c.Reason))
		case i != 4 && (c.State != spinbroker.Succeeded || c.Attempts != 1):
			t.Errorf("command %d: %s after %d attempts", i, c.State, c.Attempts)
		}
	}
}

// TestRun_BatchGracefulStop: Run's context ends mid-batch. Within the
// grace, every running command finishes and its result is recorded before
// Run returns; past it, the commands not finished are reported for a
// retry, and the finished ones' results are recorded.
func TestRun_BatchGracefulStop(t *testing.T) {
	for _, short := range []bool{false, true} {
		t.Run(map[bool]string{false: "WithinGrace", true: "PastGrace"}[short], func(t *testing.T) {
			b := startBroker(t, httpapi.Options{}, nil)
			b.setConcurrency(t, 4)
			var began atomic.Int32
			all := make(chan struct{})
			work := agent.Handle("work", func(ctx context.Context, p struct{ Ms int }) (any, error) {
				if began.Add(1) == 4 {
					close(all)
				}
				select {
				case <-time.After(time.Duration(p.Ms) * time.Millisecond):
					return map[string]bool{"done": true}, nil
				case <-ctx.Done():
					return nil, context.Cause(ctx)
				}
			})
			slow := `{"Ms":1500}`
			if short {
				slow = `{"Ms":60000}`
			}
			ids := b.enqueue(t, cmd("work", `{"Ms":10}`), cmd("work", slow), cmd("work", `{"Ms":300}`), cmd("work", slow),
				cmd("work", `{"Ms":10}`))
			grace := 5 * time.Second
			if short {
				grace = 500 * time.Millisecond
			}
			stop := runAgent(t, b, []agent.Handler{work}, agent.Options{Claim: 4, Grace: grace})
			<-all
			if err := stop(); err != nil {
				t.Fatalf("Run: %v", err)
			}
			// Read at once: Run has returned, so every result is in.
			for i, id := range ids[:4] {
				c, err := b.c.Command(context.Background(), id)
				if err != nil {
					t.Fatal(err)
				}
				wantDone := i == 0 || i == 2 || !short
				switch {
				case wantDone && (c.State != spinbroker.Succeeded || c.Attempts != 1):
					t.Errorf("command %d: %s after %d attempts (%q), want succeeded", i, c.State, c.Attempts, deref(c.Reason))
				case !wantDone && (c.State != spinbroker.Ready || !strings.Contains(deref(c.Reason), "agent stopped")):
					t.Errorf("command %d: %s (%q), want ready again, the agent stopped", i, c.State, deref(c.Reason))
				}
			}
			if c, _ := b.c.Command(context.Background(), ids[4]); c.State != spinbroker.Ready || c.Attempts != 0 {
				t.Errorf("the command after the batch was taken after the stop: %s", c.State)
			}
		})
	}
}

// TestRun_BatchQueueChanged: the queue is paused, then its concurrency
// lowered below Claim, while a batch agent serves it: it takes nothing
// while paused, then no more than the new concurrency at once, with no
// warning.
func TestRun_BatchQueueChanged(t *testing.T) {
	var claims atomic.Int32
	b := startBroker(t, httpapi.Options{}, counting("/claim", &claims))
	b.setConcurrency(t, 8)
	var running highWater
	var runs atomic.Int32
	work := agent.Handle("work", func(ctx context.Context, p struct{}) (any, error) {
		runs.Add(1)
		defer running.enter()()
		time.Sleep(100 * time.Millisecond)
		return nil, nil
	})
	var warn syncbuf.Buffer
	runAgent(t, b, []agent.Handler{work}, agent.Options{Claim: 8, Wait: 300 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&warn, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	first := b.enqueue(t, cmd("work", `{}`))
	b.await(t, first[0])
	paused := true
	if _, err := b.c.SetQueue(context.Background(), "test", spinbroker.QueueSettings{Paused: &paused}); err != nil {
		t.Fatal(err)
	}
	var cmds []spinbroker.NewCommand
	for range 12 {
		cmds = append(cmds, cmd("work", `{}`))
	}
	ids := b.enqueue(t, cmds...)
	// Several long-polls of the agent on the paused queue.
	for seen, deadline := claims.Load(), time.Now().Add(10*time.Second); claims.Load() < seen+3; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the agent stopped asking for commands while the queue was paused")
		}
	}
	if n := runs.Load(); n != 1 {
		t.Fatalf("%d runs while the queue was paused", n-1)
	}
	two := 2
	paused = false
	running.most.Store(0)
	if _, err := b.c.SetQueue(context.Background(), "test", spinbroker.QueueSettings{Paused: &paused, Concurrency: &two}); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if c := b.await(t, id); c.State != spinbroker.Succeeded {
			t.Errorf("command %s", c.State)
		}
	}
	if m := running.most.Load(); m > 2 {
		t.Errorf("%d handlers at once on a queue of concurrency 2", m)
	}
	if got := warn.String(); got != "" {
		t.Errorf("warnings:\n%s", got)
	}
}

// TestRun_BatchPackageCancelled: a package cancelled while a batch runs
// its commands: the running ones' results are still recorded (API.md: its
// leased commands run to the end), a transient failure among them fails
// for good rather than run again, and the agent takes the next batch.
func TestRun_BatchPackageCancelled(t *testing.T) {
	b := startBroker(t, httpapi.Options{}, nil)
	b.setConcurrency(t, 3)
	var began atomic.Int32
	all := make(chan struct{})
	release := make(chan struct{})
	work := agent.Handle("work", func(ctx context.Context, p struct{ Busy bool }) (any, error) {
		if began.Add(1) == 3 {
			close(all)
		}
		<-release
		if p.Busy {
			return nil, agent.Transient(errors.New("device busy"))
		}
		return map[string]bool{"done": true}, nil
	})
	var logs syncbuf.Buffer
	runAgent(t, b, []agent.Handler{work}, agent.Options{Claim: 3, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	ids := b.enqueue(t, cmd("work", `{}`), cmd("work", `{"Busy":true}`), cmd("work", `{}`), cmd("work", `{}`))
	<-all
	b.cancelPackageOf(t, ids[0])
	close(release)
	want := []spinbroker.CommandState{spinbroker.Succeeded, spinbroker.Failed, spinbroker.Succeeded, spinbroker.Cancelled}
	for i, id := range ids {
		if c := b.await(t, id); c.State != want[i] {
			t.Errorf("command %d: %s (%q), want %s", i, c.State, deref(c.Reason), want[i])
		}
	}
	next := b.enqueue(t, cmd("work", `{}`))
	if c := b.await(t, next[0]); c.State != spinbroker.Succeeded {
		t.Errorf("the next package's command: %s", c.State)
	}
	if got := logs.String(); strings.Contains(got, "not delivered") || strings.Contains(got, "lease lost") {
		t.Errorf("the agent's log:\n%s", got)
	}
}

// TestRun_BatchHungBrokerAskedOnce: once a batch's leases have run out by
// the agent's clock, each try to deliver its results first asks the broker
// whether it has moved the commands on. A broker that does not answer at
// all (a network that drops packets) was asked once per command, each
// question waiting out CallTimeout: a batch of 100 with the default 15s
// took 25 minutes a round before its results were offered again, the agent
// taking no work meanwhile. One question unanswered is enough for a round.
func TestRun_BatchHungBrokerAskedOnce(t *testing.T) {
	var hang atomic.Bool
	var hungReads, hungCompletions atomic.Int32
	b := startBroker(t, httpapi.Options{}, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if hang.Load() && r.UserAgent() != "by-hand" {
				switch {
				case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/commands/"):
					hungReads.Add(1)
				case r.URL.Path == "/commands/complete":
					hungCompletions.Add(1)
				}
				// No answer before the agent gives up. (The server sees
				// the client go only once the body is read.)
				_, _ = io.Copy(io.Discard, r.Body)
				select {
				case <-r.Context().Done():
				case <-time.After(10 * time.Second):
				}
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	by := byHand(t, b)
	const n = 5
	by.setConcurrency(t, n)
	var runs atomic.Int32
	work := agent.Handle("work", func(ctx context.Context, p struct{}) (any, error) {
		if runs.Add(1) == n {
			hang.Store(true) // the network drops everything as the batch ends
		}
		return map[string]bool{"done": true}, nil
	})
	var cmds []spinbroker.NewCommand
	for range n {
		cmds = append(cmds, cmd("work", `{}`))
	}
	ids := by.enqueue(t, cmds...)
	runAgent(t, b, []agent.Handler{work}, agent.Options{Claim: n, Lease: time.Second, CallTimeout: 200 * time.Millisecond})
	// The leases run out 1s in; from then on each try asks first.
	for deadline := time.Now().Add(30 * time.Second); hungReads.Load() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the agent never asked whether the commands were moved on (%d tries of the completion)", hungCompletions.Load())
		}
	}
	from := hungCompletions.Load()
	for deadline := time.Now().Add(30 * time.Second); hungCompletions.Load() < from+3; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d tries to deliver the batch in 30s of a hung broker (%d reads of a command)", hungCompletions.Load()-from, hungReads.Load())
		}
	}
	if r, c := hungReads.Load(), hungCompletions.Load()-from; r > c+1 {
		t.Errorf("%d reads of a command for %d tries of the batch's completion: a hung broker is asked about each command of the batch in turn", r, c)
	}
	hang.Store(false)
	// Nothing is lost: the commands are run again once the broker answers.
	for i, id := range ids {
		if c := by.await(t, id); c.State != spinbroker.Succeeded {
			t.Errorf("command %d: %s", i, c.State)
		}
	}
}

// TestRun_BatchDeliveredAfterLocalExpiry: a broker out of reach for longer
// than the lease still gets a batch's results once it is back, as long as
// nobody else took the commands meanwhile, as it does a single command's
// (TestRun_ResultDeliveredAfterLocalExpiry): the work is not done twice.
// In batch mode each try after the first asked the broker first whether
// it had moved each command on, and took the lease run out by its clock
// for a command to be given again: the results were dropped, the broker
// that would have taken them gave the commands again, and the work was
// done twice.
func TestRun_BatchDeliveredAfterLocalExpiry(t *testing.T) {
	o := &outage{match: func(r *http.Request) bool {
		return strings.HasPrefix(r.URL.Path, "/commands/") && r.UserAgent() != "by-hand"
	}}
	b := startBroker(t, httpapi.Options{}, o.wrap)
	by := byHand(t, b)
	const n = 3
	by.setConcurrency(t, n)
	var runs atomic.Int32
	quick := agent.Handle("quick", func(ctx context.Context, p struct{}) (any, error) {
		if runs.Add(1) == n {
			o.down.Store(true) // the broker goes out of reach as the batch ends
		}
		return map[string]bool{"done": true}, nil
	})
	var cmds []spinbroker.NewCommand
	for range n {
		cmds = append(cmds, cmd("quick", `{}`))
	}
	ids := by.enqueue(t, cmds...)
	var logs syncbuf.Buffer
	runAgent(t, b, []agent.Handler{quick}, agent.Options{Claim: n, Lease: time.Second, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	// Out of reach until the leases have run out by every clock.
	for _, id := range ids {
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			c, err := by.c.Command(context.Background(), id)
			if err != nil {
				t.Fatal(err)
			}
			if c.State == spinbroker.Leased && c.LeaseExpiresAt != nil && time.Now().After(c.LeaseExpiresAt.Add(200*time.Millisecond)) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("command %s, lease until %v", c.State, c.LeaseExpiresAt)
			}
		}
	}
	o.down.Store(false)
	for i, id := range ids {
		if c := by.await(t, id); c.State != spinbroker.Succeeded || c.Attempts != 1 {
			t.Errorf("command %d: %s after %d attempts", i, c.State, c.Attempts)
		}
	}
	if r := runs.Load(); r != n || o.seen.Load() == 0 {
		t.Errorf("%d runs of %d commands (%d requests refused):\n%s", r, n, o.seen.Load(), logs.String())
	}
}

// TestRun_BatchAbandonedHandler: a handler that ignores its context is
// abandoned a second after the grace: its command is put back for a retry,
// the rest of its batch is recorded, and Run returns.
func TestRun_BatchAbandonedHandler(t *testing.T) {
	b := startBroker(t, httpapi.Options{}, nil)
	b.setConcurrency(t, 2)
	stuck := make(chan struct{})
	t.Cleanup(func() { close(stuck) })
	var began atomic.Int32
	all := make(chan struct{})
	work := agent.Handle("work", func(ctx context.Context, p struct{ Stuck bool }) (any, error) {
		if began.Add(1) == 2 {
			close(all)
		}
		if p.Stuck {
			<-stuck // deaf to its context
		}
		return map[string]bool{"done": true}, nil
	})
	ids := b.enqueue(t, cmd("work", `{"Stuck":true}`), cmd("work", `{}`))
	var logs syncbuf.Buffer
	stop := runAgent(t, b, []agent.Handler{work}, agent.Options{Claim: 2, Grace: 200 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	<-all
	begin := time.Now()
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if d := time.Since(begin); d > 10*time.Second {
		t.Errorf("Run returned %s after the stop, want about the grace and a second", d.Round(time.Millisecond))
	}
	if c, _ := b.c.Command(context.Background(), ids[0]); c.State != spinbroker.Ready || !strings.Contains(deref(c.Reason), "agent stopped before the command finished") {
		t.Errorf("the abandoned command: %s (%q), want ready again", c.State, deref(c.Reason))
	}
	if c, _ := b.c.Command(context.Background(), ids[1]); c.State != spinbroker.Succeeded {
		t.Errorf("the rest of the batch: %s (%q)", c.State, deref(c.Reason))
	}
	if !strings.Contains(logs.String(), "abandoning it") {
		t.Errorf("the log does not say the handler was abandoned:\n%s", logs.String())
	}
}

// TestRun_RetryOfACancelledPackage: a transient failure of a command whose
// package was cancelled while it ran is failed for good by the broker; the
// agent's "command finished" line said retry=true all the same, promising
// a run that never comes. Per-command mode has the broker's answer and
// says what became of it.
func TestRun_RetryOfACancelledPackage(t *testing.T) {
	b := startBroker(t, httpapi.Options{}, nil)
	began, release := make(chan struct{}), make(chan struct{})
	busy := agent.Handle("work", func(ctx context.Context, _ struct{}) (any, error) {
		close(began)
		<-release
		return nil, agent.Transient(errors.New("device busy"))
	})
	var logs syncbuf.Buffer
	runAgent(t, b, []agent.Handler{busy}, agent.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	ids := b.enqueue(t, cmd("work", `{}`))
	<-began
	b.cancelPackageOf(t, ids[0])
	close(release)
	if c := b.await(t, ids[0]); c.State != spinbroker.Failed {
		t.Fatalf("the command: %s, want failed", c.State)
	}
	awaitLog(t, &logs, "command finished")
	line := grepLine(logs.String(), "command finished")
	if !strings.Contains(line, "retry=false") || !strings.Contains(line, "state=failed") {
		t.Errorf("the finished line: %q, want retry=false and the state the broker gave it", line)
	}
}

// byHand is b with a person's client, whose requests the tests' network
// faults let through: they tell it by its User-Agent, "by-hand".
func byHand(t *testing.T, b *broker) *broker {
	t.Helper()
	hand, err := client.New(b.url, client.WithUserAgent("by-hand"))
	if err != nil {
		t.Fatal(err)
	}
	return &broker{c: hand, url: b.url, db: b.db}
}

// TestRun_BatchRetryOfACancelledPackage: TestRun_RetryOfACancelledPackage
// in batch mode, whose completion answers no command: the "command
// finished" line said retry=true for a command its cancelled package had
// failed for good. It says what became of it, as per-command mode does.
func TestRun_BatchRetryOfACancelledPackage(t *testing.T) {
	b := startBroker(t, httpapi.Options{}, nil)
	b.setConcurrency(t, 2)
	var began atomic.Int32
	all, release := make(chan struct{}), make(chan struct{})
	work := agent.Handle("work", func(ctx context.Context, p struct{ Busy bool }) (any, error) {
		if began.Add(1) == 2 {
			close(all)
		}
		<-release
		if p.Busy {
			return nil, agent.Transient(errors.New("device busy"))
		}
		return nil, nil
	})
	var logs syncbuf.Buffer
	runAgent(t, b, []agent.Handler{work}, agent.Options{Claim: 2, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	ids := b.enqueue(t, cmd("work", `{"Busy":true}`), cmd("work", `{}`))
	<-all
	b.cancelPackageOf(t, ids[0])
	close(release)
	if c := b.await(t, ids[0]); c.State != spinbroker.Failed {
		t.Fatalf("the command: %s, want failed", c.State)
	}
	awaitLog(t, &logs, "device busy")
	line := grepLine(logs.String(), "device busy")
	if !strings.Contains(line, "command finished") || !strings.Contains(line, "retry=false") || !strings.Contains(line, "state=failed") {
		t.Errorf("the finished line: %q, want retry=false and the state the broker gave it", line)
	}
}
