package store_test

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/store"
	"github.com/spin-broker/spinbroker/internal/store/storetest"
	"github.com/spin-broker/spinbroker/internal/syncbuf"
)

// TestDB_ClockStep: the broker keeps its times as wall-clock instants, and
// a server's wall clock steps (NTP correcting a drift at boot, a timezone
// fixed by hand, a VM resumed from a snapshot).
func TestDB_ClockStep(t *testing.T) {
	// BackBackoffHoldsNoHour: a back-off lasts at most BackoffCap, so one
	// that ends further away than that was set before the clock stepped
	// back. It holds the whole queue (rule 3): honoured to the letter, a
	// step back of an hour stalled the queue for an hour.
	t.Run("BackBackoffHoldsNoHour", func(t *testing.T) {
		for _, concurrency := range []int{1, 3} {
			db, clock, c := retriedThenStepBack(t, concurrency)
			head, until, err := db.QueueHead(ctx, "r")
			if err != nil || head == nil || head.ID != c.ID {
				t.Fatalf("head %v, %v", head, err)
			}
			if !until.IsZero() {
				t.Errorf("concurrency %d: the dashboard shows a back-off until %v, %v from now", concurrency, until, until.Sub(clock.Now()))
			}
			// A long-poll that a commit woke reads first: it must see
			// the head free, or it would wait for the hour.
			if maybe, wake, err := db.Peek(ctx, "r"); err != nil || !maybe {
				t.Errorf("concurrency %d: after a step back of an hour, Peek says %v (wake %v, %v); want maybe", concurrency, maybe, wake, err)
			}
			got := next(t, db, "r")
			if got == nil || got.ID != c.ID || got.Attempts != 2 {
				t.Fatalf("concurrency %d: after a step back of an hour, next gave %v; want the retried command, not a queue held for an hour", concurrency, got)
			}
		}
	})
	// BackBackoffHoldsNoClaim: the same through claim, which leases
	// several at once by another path than next.
	t.Run("BackBackoffHoldsNoClaim", func(t *testing.T) {
		db, clock, c := retriedThenStepBack(t, 3)
		got, wake, err := db.Claim(ctx, "r", 3, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0].ID != c.ID {
			t.Fatalf("after a step back of an hour, claim gave %d commands (wake %v, %v from now); want the retried one and the one behind it, not a queue held for an hour",
				len(got), wake, wake.Sub(clock.Now()))
		}
	})
}

// retriedThenStepBack is a queue of the given concurrency whose head c
// failed asking for a retry (a back-off of a second, holding the command
// behind it), after which the clock stepped back an hour.
func retriedThenStepBack(t *testing.T, concurrency int) (*store.DB, *storetest.Clock, *spinbroker.Command) {
	t.Helper()
	db, clock := open(t)
	if _, err := db.SetQueue(ctx, "r", spinbroker.QueueSettings{Concurrency: ptr(concurrency)}); err != nil {
		t.Fatal(err)
	}
	enqueue(t, db, cmd("r", "flaky"), cmd("r", "behind"))
	c := mustNext(t, db, "r")
	if _, err := db.Complete(ctx, c.ID, spinbroker.Result{Status: ptr(false), Retry: true, Lease: c.Lease.Token}); err != nil {
		t.Fatal(err)
	}
	clock.Step(-time.Hour)
	return db, clock, c
}

// TestDB_ClockStepLeases: a lease lasts its duration on the broker's
// monotonic clock, whatever its wall clock does meanwhile. The first write
// after a step shifts every lease by it, before it runs: here a next, a
// heartbeat, a sweep or a claim.
func TestDB_ClockStepLeases(t *testing.T) {
	firsts := map[string]func(t *testing.T, db *store.DB, c *spinbroker.Command){
		"Next": func(t *testing.T, db *store.DB, c *spinbroker.Command) {
			noNext(t, db, "r") // concurrency 1: an expired lease would be settled and a redelivered
		},
		"Heartbeat": func(t *testing.T, db *store.DB, c *spinbroker.Command) {
			if _, err := db.Heartbeat(ctx, c.ID, c.Lease.Token, 0); err != nil {
				t.Fatalf("heartbeat after the step: %v", err)
			}
		},
		"Sweep": func(t *testing.T, db *store.DB, c *spinbroker.Command) {
			if res, err := db.Sweep(ctx, store.SweepOptions{}); err != nil || res.LeasesSettled != 0 {
				t.Fatalf("sweep after the step settled %d leases (%v), want none", res.LeasesSettled, err)
			}
		},
		"Claim": func(t *testing.T, db *store.DB, c *spinbroker.Command) {
			if got, _, err := db.Claim(ctx, "r", 1, 0); err != nil || len(got) != 0 {
				t.Fatalf("claim after the step gave %d commands (%v), want none", len(got), err)
			}
		},
	}
	// Forward: a step forward of an hour expired every lease at once; the
	// agent lost its command at the next sweep, its heartbeat and result
	// were refused stale_lease, and an attempt was spent.
	for name, first := range firsts {
		t.Run("Forward/"+name, func(t *testing.T) {
			db, clock, log := openLogged(t)
			enqueue(t, db, cmd("r", "long"), cmd("r", "behind"))
			c := mustNext(t, db, "r")
			clock.Add(10 * time.Second)
			clock.Step(time.Hour)
			first(t, db, c)
			if res, err := db.Sweep(ctx, store.SweepOptions{}); err != nil || res.LeasesSettled != 0 {
				t.Fatalf("sweep after the step settled %d leases (%v), want none", res.LeasesSettled, err)
			}
			got := wantState(t, db, c.ID, spinbroker.Leased)
			if got.Attempts != 1 {
				t.Errorf("attempts %d after the step, want 1", got.Attempts)
			}
			if !strings.Contains(log.String(), "the clock stepped") || !strings.Contains(log.String(), "drift=1h0m0s") {
				t.Errorf("log %q: want one warning of the step and its drift", log.String())
			}
			if n := strings.Count(log.String(), "the clock stepped"); n != 1 {
				t.Errorf("%d warnings of the step, want 1", n)
			}
			if _, err := db.Heartbeat(ctx, c.ID, c.Lease.Token, 0); err != nil {
				t.Fatalf("heartbeat after the step: %v", err)
			}
			succeed(t, db, c)
		})
	}
	// RolledBack: the first write after the step failed, and its
	// transaction, shift and all, rolled back; the next makes the shift.
	t.Run("RolledBack", func(t *testing.T) {
		db, clock, log := openLogged(t)
		enqueue(t, db, cmd("r", "long"))
		c := mustNext(t, db, "r")
		clock.Add(10 * time.Second)
		clock.Step(time.Hour)
		_, err := db.Heartbeat(ctx, c.ID, "not-the-token", 0)
		wantCode(t, err, spinbroker.ESTALE)
		sweepSettles(t, db, 0)
		wantState(t, db, c.ID, spinbroker.Leased)
		if n := strings.Count(log.String(), "the clock stepped"); n != 1 {
			t.Errorf("%d warnings of the step, want 1: %s", n, log.String())
		}
	})
	// ForwardStillRunsOut: shifted, the lease still runs out 60s after its
	// grant, as the monotonic clock counts.
	t.Run("ForwardStillRunsOut", func(t *testing.T) {
		db, clock, _ := openLogged(t)
		enqueue(t, db, cmd("r", "long"))
		c := mustNext(t, db, "r")
		clock.Add(10 * time.Second)
		clock.Step(time.Hour)
		sweepSettles(t, db, 0)
		clock.Add(49 * time.Second)
		sweepSettles(t, db, 0)
		clock.Add(time.Second)
		sweepSettles(t, db, 1)
		wantState(t, db, c.ID, spinbroker.Ready)
	})
	// Back: a step back of an hour kept a dead agent's lease an hour
	// longer, and the queue behind it waited.
	t.Run("Back", func(t *testing.T) {
		db, clock, log := openLogged(t)
		enqueue(t, db, cmd("r", "dead"))
		c := mustNext(t, db, "r")
		clock.Add(10 * time.Second)
		clock.Step(-time.Hour)
		sweepSettles(t, db, 0)
		clock.Add(49 * time.Second)
		sweepSettles(t, db, 0)
		clock.Add(time.Second)
		sweepSettles(t, db, 1)
		if got := wantState(t, db, c.ID, spinbroker.Ready); got.Attempts != 1 {
			t.Errorf("attempts %d, want 1", got.Attempts)
		}
		if !strings.Contains(log.String(), "drift=-1h0m0s") {
			t.Errorf("log %q: want the step's drift", log.String())
		}
	})
	// Idle: wall and monotonic clocks advancing together, however long
	// the broker waited between two writes, are no step.
	t.Run("Idle", func(t *testing.T) {
		db, clock, log := openLogged(t)
		enqueue(t, db, cmd("r", "dead"))
		mustNext(t, db, "r")
		clock.Add(59 * time.Second)
		sweepSettles(t, db, 0)
		clock.Add(2 * time.Hour)
		sweepSettles(t, db, 1)
		if strings.Contains(log.String(), "the clock stepped") {
			t.Errorf("log %q: no step happened", log.String())
		}
	})
	// Small: a drift under the threshold (NTP slewing, a write that took
	// long) moves no lease.
	t.Run("Small", func(t *testing.T) {
		db, clock, log := openLogged(t)
		enqueue(t, db, cmd("r", "dead"))
		mustNext(t, db, "r")
		clock.Add(10 * time.Second)
		clock.Step(1500 * time.Millisecond)
		sweepSettles(t, db, 0)
		clock.Add(49 * time.Second) // 60.5s on the wall clock
		sweepSettles(t, db, 1)
		if strings.Contains(log.String(), "the clock stepped") {
			t.Errorf("log %q: a drift of 1.5s is no step", log.String())
		}
	})
	// NotBeforeStays: not_before is a calendar time, which the step
	// reached: the command is due, not held an hour more.
	t.Run("NotBeforeStays", func(t *testing.T) {
		db, clock, _ := openLogged(t)
		later := clock.Now().Add(30 * time.Minute)
		delayed := cmd("d", "later")
		delayed.NotBefore = &later
		p := enqueue(t, db, delayed, cmd("r", "long"))
		mustNext(t, db, "r")
		clock.Step(time.Hour)
		sweepSettles(t, db, 0)
		if got := mustNext(t, db, "d"); got.ID != p.Commands[0].ID {
			t.Fatalf("next d gave %s, want the delayed command", got.ID)
		}
	})
}

// openLogged is open with the store's log lines kept.
func openLogged(t *testing.T) (*store.DB, *storetest.Clock, *syncbuf.Buffer) {
	t.Helper()
	var log syncbuf.Buffer
	db, clock := storetest.MustOpen(t, store.Options{Logger: slog.New(slog.NewTextHandler(&log, nil))})
	return db, clock, &log
}

func sweepSettles(t *testing.T, db *store.DB, want int) {
	t.Helper()
	res, err := db.Sweep(ctx, store.SweepOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.LeasesSettled != want {
		t.Fatalf("sweep settled %d leases, want %d", res.LeasesSettled, want)
	}
}
