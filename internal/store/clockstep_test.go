package store_test

import (
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/store"
	"github.com/spin-broker/spinbroker/internal/store/storetest"
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
	clock.Add(-time.Hour)
	return db, clock, c
}
