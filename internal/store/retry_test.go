package store

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
)

// retryGraph makes a root command with n dependents in another package,
// half of them each on the root and half a chain by key from it, plus a
// command of the chain's package that also waits on a second command, x,
// and one that waits on that command. It fails the root and x and answers
// the root's id, x's, and the ids of the one x holds and of its dependent.
func retryGraph(t *testing.T, db *DB, n int) (root, x, held, below string) {
	t.Helper()
	ctx := context.Background()
	p, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{
		{Resource: "root", Action: "root"}, {Resource: "x", Action: "x"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	root, x = p.Commands[0].ID, p.Commands[1].ID
	in := spinbroker.NewPackage{Enqueue: true}
	for i := 0; i < n/2; i++ {
		in.Commands = append(in.Commands, spinbroker.NewCommand{Resource: "leaf", Action: "fan", Dependencies: []string{root}})
	}
	for i := 0; i < n-n/2; i++ {
		dep := root
		if i > 0 {
			dep = fmt.Sprint("k", i-1)
		}
		in.Commands = append(in.Commands, spinbroker.NewCommand{Key: fmt.Sprint("k", i), Resource: "leaf", Action: "chain", Dependencies: []string{dep}})
	}
	in.Commands = append(in.Commands,
		spinbroker.NewCommand{Key: "held", Resource: "leaf", Action: "held", Dependencies: []string{"k0", x}},
		spinbroker.NewCommand{Key: "below", Resource: "leaf", Action: "below", Dependencies: []string{"held"}})
	q, _, err := db.CreatePackage(ctx, in, nil)
	if err != nil {
		t.Fatal(err)
	}
	held, below = q.Commands[n].ID, q.Commands[n+1].ID
	no := false
	for _, r := range []string{"root", "x"} {
		c, _, err := db.Next(ctx, r, 0)
		if err != nil || c == nil {
			t.Fatalf("next %s: %v %v", r, c, err)
		}
		if _, err := db.Complete(ctx, c.ID, spinbroker.Result{Status: &no, Lease: c.Lease.Token}); err != nil {
			t.Fatal(err)
		}
	}
	return root, x, held, below
}

// TestRetry_StatementsDoNotGrow: a retry resets what a failure cancelled
// in a number of statements that does not grow with how many it resets (it
// ran four or five per command: a root with 50,000 dependents held the
// writer 3.6 s), and resets them right.
func TestRetry_StatementsDoNotGrow(t *testing.T) {
	ctx := context.Background()
	counts := map[int]int{}
	for _, n := range []int{10, 300} {
		db := openQuiet(t, filepath.Join(t.TempDir(), "retry.db"), Options{})
		defer db.Close()
		root, x, held, below := retryGraph(t, db, n)
		err := db.write(ctx, func(t *Tx) error {
			before := t.statements
			err := t.retry(root)
			counts[n] = t.statements - before
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		p, err := db.Package(ctx, mustCommand(t, db, held).PackageID)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]spinbroker.CommandState{}
		for _, c := range p.Commands {
			want[c.ID] = spinbroker.Blocked
		}
		want[held], want[below] = spinbroker.Cancelled, spinbroker.Cancelled
		for _, c := range p.Commands {
			if c.State != want[c.ID] || (c.State == spinbroker.Blocked && (c.Attempts != 0 || c.FinishedAt != nil || c.Reason != nil)) {
				t.Fatalf("n=%d: %s %s after the retry, reason %v", n, c.Action, c.State, c.Reason)
			}
		}
		for id, reason := range map[string]string{held: "dependency " + x + " failed", below: "dependency " + held + " cancelled"} {
			if c := mustCommand(t, db, id); c.Reason == nil || *c.Reason != reason {
				t.Fatalf("n=%d: %s reason %v, want %q", n, c.Action, c.Reason, reason)
			}
		}
		if r := mustCommand(t, db, root); r.State != spinbroker.Ready {
			t.Fatalf("root %s", r.State)
		}
		// The chain runs again in order once the root succeeds.
		yes := true
		for i := 0; i < 3; i++ {
			c, _, err := db.Next(ctx, []string{"root", "leaf", "leaf"}[i], 0)
			if err != nil || c == nil {
				t.Fatalf("n=%d: step %d: %v %v", n, i, c, err)
			}
			if _, err := db.Complete(ctx, c.ID, spinbroker.Result{Status: &yes, Lease: c.Lease.Token}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if counts[300] != counts[10] {
		t.Fatalf("a retry ran %d statements for 10 dependents and %d for 300", counts[10], counts[300])
	}
}

func mustCommand(t *testing.T, db *DB, id string) *spinbroker.Command {
	t.Helper()
	c, err := db.Command(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// BenchmarkRetry times the retry of a failed command that 10,000 commands
// of another package depend on, which its failure cancelled: the retry
// puts them all back (blocked) in one transaction. It reports how long the
// writer was held (hold-ms).
func BenchmarkRetry(b *testing.B) {
	ctx := context.Background()
	db := benchOpen(b)
	p, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{{Resource: "root", Action: "root"}}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	root := p.Commands[0].ID
	in := spinbroker.NewPackage{Enqueue: true}
	for i := 0; i < 10000; i++ {
		in.Commands = append(in.Commands, spinbroker.NewCommand{Resource: "leaf", Action: "fan", Dependencies: []string{root}})
	}
	if _, _, err := db.CreatePackage(ctx, in, nil); err != nil {
		b.Fatal(err)
	}
	no := false
	fail := func() {
		c, _, err := db.Next(ctx, "root", 0)
		if err != nil || c == nil {
			b.Fatalf("next: %v %v", c, err)
		}
		if _, err := db.Complete(ctx, c.ID, spinbroker.Result{Status: &no, Lease: c.Lease.Token}); err != nil {
			b.Fatal(err)
		}
	}
	var hold time.Duration
	for b.Loop() {
		b.StopTimer()
		fail()
		b.StartTimer()
		err := db.write(ctx, func(t *Tx) error {
			start := time.Now()
			defer func() { hold += time.Since(start) }()
			return t.retry(root)
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(hold.Milliseconds())/float64(b.N), "hold-ms")
}
