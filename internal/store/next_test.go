package store_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
)

func TestDB_Next(t *testing.T) {
	t.Run("InOrderAndSerial", func(t *testing.T) {
		db, _ := open(t)
		enqueue(t, db, cmd("r", "one"), cmd("r", "two"))
		enqueue(t, db, cmd("r", "three"))
		for _, want := range []string{"one", "two", "three"} {
			c := mustNext(t, db, "r")
			if c.Action != want {
				t.Fatalf("got %s, want %s", c.Action, want)
			}
			if c.Attempts != 1 || c.Lease == nil || c.Lease.Token == "" || c.State != spinbroker.Leased {
				t.Fatalf("lease: %s", mustJSON(c))
			}
			noNext(t, db, "r") // concurrency 1: one at a time
			succeed(t, db, c)
		}
		noNext(t, db, "r")
	})

	t.Run("BlockedHeadDoesNotBlock", func(t *testing.T) {
		db, _ := open(t)
		p := enqueue(t, db, keyed("x", "other", "x"), keyed("a", "r", "a", "x"), keyed("b", "r", "b"), keyed("c", "r", "c"))
		b := mustNext(t, db, "r")
		if b.Action != "b" {
			t.Fatalf("got %s, want b: a blocked head must not hold the queue", b.Action)
		}
		succeed(t, db, b)
		// The dependency succeeds: a becomes ready at its original place,
		// ahead of c.
		succeed(t, db, mustNext(t, db, "other"))
		wantState(t, db, p.Commands[1].ID, spinbroker.Ready)
		if a := mustNext(t, db, "r"); a.Action != "a" {
			t.Fatalf("got %s, want a back at its place", a.Action)
		}
	})

	t.Run("Concurrency", func(t *testing.T) {
		db, _ := open(t)
		enqueue(t, db, cmd("r", "1"), cmd("r", "2"), cmd("r", "3"))
		if _, err := db.SetQueue(ctx, "r", spinbroker.QueueSettings{Concurrency: ptr(2)}); err != nil {
			t.Fatal(err)
		}
		one, two := mustNext(t, db, "r"), mustNext(t, db, "r")
		if one.Action != "1" || two.Action != "2" {
			t.Fatalf("got %s %s", one.Action, two.Action)
		}
		noNext(t, db, "r")
		succeed(t, db, two)
		if three := mustNext(t, db, "r"); three.Action != "3" {
			t.Fatalf("got %s", three.Action)
		}
	})

	t.Run("Paused", func(t *testing.T) {
		db, _ := open(t)
		enqueue(t, db, cmd("r", "x"))
		if _, err := db.SetQueue(ctx, "r", spinbroker.QueueSettings{Paused: ptr(true)}); err != nil {
			t.Fatal(err)
		}
		if wake := noNext(t, db, "r"); !wake.IsZero() {
			t.Fatalf("a paused queue wakes only on a write, got %v", wake)
		}
		if _, err := db.SetQueue(ctx, "r", spinbroker.QueueSettings{Paused: ptr(false)}); err != nil {
			t.Fatal(err)
		}
		mustNext(t, db, "r")
	})

	t.Run("BackoffHoldsTheQueue", func(t *testing.T) {
		for _, concurrency := range []int{1, 3} {
			db, clock := open(t)
			if _, err := db.SetQueue(ctx, "r", spinbroker.QueueSettings{Concurrency: ptr(concurrency)}); err != nil {
				t.Fatal(err)
			}
			enqueue(t, db, cmd("r", "flaky"), cmd("r", "behind"))
			c := mustNext(t, db, "r")
			if concurrency > 1 {
				succeed(t, db, mustNext(t, db, "r"))
				enqueue(t, db, cmd("r", "later"))
			}
			got, err := db.Complete(ctx, c.ID, spinbroker.Result{Status: ptr(false), Retry: true, Lease: c.Lease.Token, Reason: ptr("try again")})
			if err != nil {
				t.Fatal(err)
			}
			if got.State != spinbroker.Ready || deref(got.Reason) != "try again" {
				t.Fatalf("after retry: %s", mustJSON(got))
			}
			wake := noNext(t, db, "r")
			if want := clock.Now().Add(time.Second); !wake.Equal(want) {
				t.Fatalf("wake %v, want the end of the back-off %v", wake, want)
			}
			clock.Add(time.Second)
			again := mustNext(t, db, "r")
			if again.ID != c.ID || again.Attempts != 2 {
				t.Fatalf("got %s attempt %d", again.Action, again.Attempts)
			}
			// The second back-off is twice as long.
			if _, err := db.Complete(ctx, c.ID, spinbroker.Result{Status: ptr(false), Retry: true, Lease: again.Lease.Token}); err != nil {
				t.Fatal(err)
			}
			if wake := noNext(t, db, "r"); !wake.Equal(clock.Now().Add(2 * time.Second)) {
				t.Fatalf("second back-off ends %v", wake)
			}
			clock.Add(2 * time.Second)
			third := mustNext(t, db, "r")
			// Out of attempts: retry is refused and the command fails.
			last, err := db.Complete(ctx, c.ID, spinbroker.Result{Status: ptr(false), Retry: true, Lease: third.Lease.Token})
			if err != nil {
				t.Fatal(err)
			}
			if last.State != spinbroker.Failed || last.Attempts != 3 {
				t.Fatalf("after the last attempt: %s", mustJSON(last))
			}
			if n := mustNext(t, db, "r"); n.Action == "flaky" {
				t.Fatal("a failed command was delivered again")
			}
		}
	})

	// EndedBackoffIsNoWake: a full queue whose head's back-off has ended
	// waits for a slot, which only a write (a completion) or a lease
	// running out frees. The end of that back-off, now past, is no time
	// to wake at: a long-poll told to would ask again every millisecond,
	// a write transaction each time, until the slot frees.
	t.Run("EndedBackoffIsNoWake", func(t *testing.T) {
		db, clock := open(t)
		// x waits on d (another queue) and so is blocked while a, behind
		// it, runs, fails and backs off; then d succeeds and x, ahead of
		// a, takes the queue's one slot.
		enqueue(t, db, keyed("d", "other", "d"), keyed("x", "r", "x", "d"), keyed("a", "r", "a"))
		a := mustNext(t, db, "r")
		if a.Action != "a" {
			t.Fatalf("got %s, want a (x is blocked)", a.Action)
		}
		if _, err := db.Complete(ctx, a.ID, spinbroker.Result{Status: ptr(false), Retry: true, Lease: a.Lease.Token}); err != nil {
			t.Fatal(err)
		}
		succeed(t, db, mustNext(t, db, "other"))
		x := mustNext(t, db, "r")
		if x.Action != "x" {
			t.Fatalf("got %s, want x back at its place ahead of a", x.Action)
		}
		clock.Add(2 * time.Second) // a's back-off (1s) has ended
		wake := noNext(t, db, "r")
		if !wake.IsZero() && !wake.After(clock.Now()) {
			t.Fatalf("wake %v is not after now %v: a long-poll would ask again at once, in a loop", wake, clock.Now())
		}
		if !wake.Equal(x.Lease.ExpiresAt) {
			t.Fatalf("wake %v, want the end of x's lease %v", wake, x.Lease.ExpiresAt)
		}
		succeed(t, db, x)
		if again := mustNext(t, db, "r"); again.ID != a.ID {
			t.Fatalf("got %s, want a once x is done", again.Action)
		}
	})

	t.Run("LeaseExpiry", func(t *testing.T) {
		db, clock := open(t)
		p := enqueue(t, db, keyed("a", "r", "slow"), keyed("b", "s", "after", "a"))
		first := mustNext(t, db, "r")
		if want := clock.Now().Add(spinbroker.DefaultLease); !first.Lease.ExpiresAt.Equal(want) {
			t.Fatalf("default lease ends %v, want %v", first.Lease.ExpiresAt, want)
		}
		if wake := noNext(t, db, "r"); !wake.Equal(first.Lease.ExpiresAt) {
			t.Fatalf("wake %v, want the lease's expiry", wake)
		}
		clock.Add(spinbroker.DefaultLease)
		second := mustNext(t, db, "r")
		if second.ID != first.ID || second.Attempts != 2 || second.Lease.Token == first.Lease.Token {
			t.Fatalf("redelivery: %s", mustJSON(second))
		}
		// The first holder's result is refused now.
		_, err := db.Complete(ctx, first.ID, spinbroker.Result{Status: ptr(true), Lease: first.Lease.Token})
		wantCode(t, err, spinbroker.ESTALE)
		clock.Add(spinbroker.DefaultLease)
		mustNext(t, db, "r")
		clock.Add(spinbroker.DefaultLease)
		noNext(t, db, "r")
		c := wantState(t, db, first.ID, spinbroker.Failed)
		if deref(c.Reason) != "lease expired" || c.Attempts != 3 {
			t.Fatalf("after max attempts: %s", mustJSON(c))
		}
		b := wantState(t, db, p.Commands[1].ID, spinbroker.Cancelled)
		if deref(b.Reason) != "dependency "+first.ID+" failed" {
			t.Fatalf("cascade reason %s", deref(b.Reason))
		}
	})

	t.Run("LeaseDurations", func(t *testing.T) {
		db, clock := open(t)
		enqueue(t, db, spinbroker.NewCommand{Resource: "r", Action: "own", LeaseDuration: ptr(spinbroker.Duration(5 * time.Minute))},
			spinbroker.NewCommand{Resource: "r", Action: "call", LeaseDuration: ptr(spinbroker.Duration(5 * time.Minute))})
		c := mustNext(t, db, "r")
		if want := clock.Now().Add(5 * time.Minute); !c.Lease.ExpiresAt.Equal(want) {
			t.Fatalf("the command's own lease: %v", c.Lease.ExpiresAt)
		}
		succeed(t, db, c)
		d, _, err := db.Next(ctx, "r", 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if want := clock.Now().Add(10 * time.Second); !d.Lease.ExpiresAt.Equal(want) {
			t.Fatalf("the call's lease wins: %v", d.Lease.ExpiresAt)
		}
		_, _, err = db.Next(ctx, "r", time.Millisecond)
		wantCode(t, err, spinbroker.EINVALID)
	})

	t.Run("NotBefore", func(t *testing.T) {
		db, clock := open(t)
		at := clock.Now().Add(30 * time.Second)
		p := enqueue(t, db, spinbroker.NewCommand{Resource: "r", Action: "later", NotBefore: &at}, cmd("r", "now"))
		if p.Commands[0].State != spinbroker.Blocked {
			t.Fatalf("a delayed command counts as blocked, got %s", p.Commands[0].State)
		}
		now := mustNext(t, db, "r")
		if now.Action != "now" {
			t.Fatalf("a delayed command holds no one back, got %s", now.Action)
		}
		if wake := noNext(t, db, "r"); !wake.Equal(at) && !wake.Equal(now.Lease.ExpiresAt) {
			t.Fatalf("wake %v", wake)
		}
		clock.Add(30 * time.Second)
		// Ready again at its original place, but concurrency 1 is taken.
		noNext(t, db, "r")
		wantState(t, db, p.Commands[0].ID, spinbroker.Ready)
		succeed(t, db, now)
		if c := mustNext(t, db, "r"); c.Action != "later" {
			t.Fatalf("got %s", c.Action)
		}
	})

	t.Run("Claim", func(t *testing.T) {
		db, _ := open(t)
		enqueue(t, db, cmd("r", "1"), cmd("r", "2"), cmd("r", "3"), cmd("r", "4"))
		if _, err := db.SetQueue(ctx, "r", spinbroker.QueueSettings{Concurrency: ptr(3)}); err != nil {
			t.Fatal(err)
		}
		cmds, _, err := db.Claim(ctx, "r", 10, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(cmds) != 3 || cmds[0].Action != "1" || cmds[2].Action != "3" {
			t.Fatalf("claim: %d commands", len(cmds))
		}
		more, _, err := db.Claim(ctx, "r", 10, 0)
		if err != nil || len(more) != 0 {
			t.Fatalf("claim past concurrency: %d, %v", len(more), err)
		}
		for _, bad := range []int{0, -1, spinbroker.MaxClaim + 1} {
			_, _, err := db.Claim(ctx, "r", bad, 0)
			wantCode(t, err, spinbroker.EINVALID)
		}
	})

	t.Run("UnknownAndInvalidQueues", func(t *testing.T) {
		db, _ := open(t)
		if wake := noNext(t, db, "nobody-home"); !wake.IsZero() {
			t.Fatalf("wake %v", wake)
		}
		_, _, err := db.Next(ctx, "NOT VALID", 0)
		wantCode(t, err, spinbroker.EINVALID)
	})
}

// TestDB_Release: the commands of an answer never delivered go back to
// ready at their places, their attempt not counted, and the next delivery
// is theirs; a lease that has moved on is left alone.
func TestDB_Release(t *testing.T) {
	db, _ := open(t)
	enqueue(t, db, cmd("r", "a"), cmd("r", "b"))
	first := mustNext(t, db, "r")
	if err := db.Release(ctx, []spinbroker.Command{*first}); err != nil {
		t.Fatal(err)
	}
	got := getCmd(t, db, first.ID)
	if got.State != spinbroker.Ready || got.Attempts != 0 || got.LeaseExpiresAt != nil || got.StartedAt != nil {
		t.Fatalf("released: %s, %d attempts, lease until %v, started %v", got.State, got.Attempts, got.LeaseExpiresAt, got.StartedAt)
	}
	q, err := db.Queue(ctx, "r")
	if err != nil || q.Counts.Ready != 2 || q.Counts.Leased != 0 {
		t.Fatalf("queue counts %+v, %v", q.Counts, err)
	}
	again := mustNext(t, db, "r")
	if again.ID != first.ID || again.Attempts != 1 {
		t.Fatalf("after a release the queue delivered %s (attempt %d), want %s again (attempt 1)", again.ID, again.Attempts, first.ID)
	}
	// The old lease's answer, released late, touches nothing.
	if err := db.Release(ctx, []spinbroker.Command{*first}); err != nil {
		t.Fatal(err)
	}
	if got := getCmd(t, db, first.ID); got.State != spinbroker.Leased || got.Attempts != 1 {
		t.Fatalf("a stale release changed the command: %s, %d attempts", got.State, got.Attempts)
	}
	succeed(t, db, again)
	if err := db.Release(ctx, []spinbroker.Command{*again}); err != nil {
		t.Fatal(err)
	}
	if got := getCmd(t, db, first.ID); got.State != spinbroker.Succeeded {
		t.Fatalf("a release after the completion: %s", got.State)
	}
}

// TestDB_ReleaseInCancelledPackage: a command whose package a client
// cancelled while its lease was being taken is not put back to be
// delivered again when its answer goes unread: it is cancelled, as the
// cancel would have made it had it still been ready, and what waits on it
// in another package is cancelled with it. Put back, it was ready in a
// cancelled package, and the next poll delivered it.
func TestDB_ReleaseInCancelledPackage(t *testing.T) {
	db, _ := open(t)
	p := enqueue(t, db, cmd("r", "a"), cmd("r", "b"))
	c := mustNext(t, db, "r")
	dep := enqueue(t, db, cmd("s", "later", c.ID))
	if _, err := db.CancelPackage(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	if err := db.Release(ctx, []spinbroker.Command{*c}); err != nil {
		t.Fatal(err)
	}
	got := wantState(t, db, c.ID, spinbroker.Cancelled)
	if got.Attempts != 0 || deref(got.Reason) != "package cancelled" || got.FinishedAt == nil || got.LeaseExpiresAt != nil {
		t.Fatalf("released in a cancelled package: %d attempts, reason %q, finished %v, lease until %v",
			got.Attempts, deref(got.Reason), got.FinishedAt, got.LeaseExpiresAt)
	}
	if again := next(t, db, "r"); again != nil {
		t.Fatalf("delivered %s (%s) of a cancelled package", again.ID, again.Action)
	}
	wantState(t, db, dep.Commands[0].ID, spinbroker.Cancelled)
	if pkg := getPkg(t, db, p.ID); pkg.State != spinbroker.PackageCancelled || pkg.Counts.Cancelled != 2 {
		t.Fatalf("package %s, counts %+v", pkg.State, pkg.Counts)
	}
	if pkg := getPkg(t, db, dep.ID); pkg.State != spinbroker.PackageFailed {
		t.Fatalf("the dependent's package is %s, want failed", pkg.State)
	}
	cons, err := db.CheckConsistency(ctx)
	if err != nil || !cons.OK() {
		t.Fatalf("consistency: %+v %v", cons, err)
	}
}

// TestDB_ClaimBoundedByBytes: a claim leases commands until their
// parameters and outputs pass spinbroker.ClaimBytes (the one that passes
// it included, so that a claim always leases one):
// a claim of 200 commands of 1 MiB parameters built an answer of 208 MB,
// and took the broker to 1.3 GB (a claim may ask for 1,000). Those left
// are the next claim's, in order.
func TestDB_ClaimBoundedByBytes(t *testing.T) {
	db, _ := open(t)
	concurrency := 100
	if _, err := db.SetQueue(ctx, "big", spinbroker.QueueSettings{Concurrency: &concurrency}); err != nil {
		t.Fatal(err)
	}
	params := json.RawMessage(`{"x":"` + strings.Repeat("y", 1<<20-16) + `"}`)
	per := spinbroker.ClaimBytes/len(params) + 1 // the commands that pass the bound
	var ids []string
	for range 2 * per {
		p := enqueue(t, db, spinbroker.NewCommand{Resource: "big", Action: "a", Parameters: params})
		ids = append(ids, p.Commands[0].ID)
	}
	enqueue(t, db, cmd("big", "small"))
	var got []string
	for len(got) < len(ids)+1 {
		cmds, _, err := db.Claim(ctx, "big", 100, 0)
		if err != nil || len(cmds) == 0 {
			t.Fatalf("claim after %d: %d commands, %v", len(got), len(cmds), err)
		}
		size := 0
		for _, c := range cmds {
			got = append(got, c.ID)
			size += len(c.Parameters)
		}
		if len(cmds) > 1 && size > spinbroker.ClaimBytes+len(params) {
			t.Fatalf("a claim of %d commands holds %d bytes of parameters, past %d and one more command", len(cmds), size, spinbroker.ClaimBytes)
		}
		if len(cmds) > per {
			t.Fatalf("a claim of %d commands of %d bytes", len(cmds), len(params))
		}
	}
	if strings.Join(got[:len(ids)], ",") != strings.Join(ids, ",") {
		t.Fatal("the claims did not lease the commands in queue order")
	}
}
