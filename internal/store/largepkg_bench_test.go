package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
)

// failedCommand makes a package of one command and fails it: the outside
// dependency whose failure an enqueue of its dependents must cascade.
func failedCommand(tb testing.TB, db *DB, resource string) string {
	tb.Helper()
	ctx := context.Background()
	p, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{
		{Resource: resource, Action: "gate"}}}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	c, _, err := db.Next(ctx, resource, 0)
	if err != nil || c == nil {
		tb.Fatalf("next %s: %v %v", resource, c, err)
	}
	no := false
	if _, err := db.Complete(ctx, c.ID, spinbroker.Result{Status: &no, Lease: c.Lease.Token}); err != nil {
		tb.Fatal(err)
	}
	return p.Commands[0].ID
}

// waitingCommand makes a package of one command, enqueued and not yet
// run: the outside dependency that its dependents wait on.
func waitingCommand(tb testing.TB, db *DB, resource string) string {
	tb.Helper()
	p, _, err := db.CreatePackage(context.Background(), spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{
		{Resource: resource, Action: "gate"}}}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return p.Commands[0].ID
}

// stagedPackage makes a package in staging of n commands of resource
// "big", straight through SQL (50,000 adds through the API would take
// minutes), with its counts to match: with deps "inside" each command but
// the first waits on the one before it, with "outside" or "waiting" each
// waits on command gate (of another package), with "none" none waits.
func stagedPackage(tb testing.TB, db *DB, n int, deps, gate string) string {
	tb.Helper()
	id := newID()
	err := db.write(context.Background(), func(t *Tx) error {
		now := nanos(t.now)
		if _, err := t.exec(`INSERT INTO packages (id, created_at, total, n_staged) VALUES (?1, ?2, ?3, ?3)`, id, now, n); err != nil {
			return err
		}
		if _, err := t.exec(`WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?1 - 1)
			INSERT INTO commands (id, package_id, pos, resource, action, parameters, state, max_attempts, created_at)
			SELECT printf('%s-%012x', substr(?2, 1, 23), i), ?2, i, 'big', 'step', '{"n":1}', 'staged', 3, ?3
			FROM n`, n, id, now); err != nil {
			return err
		}
		switch deps {
		case "inside":
			if _, err := t.exec(`INSERT INTO command_deps (command_id, depends_on)
				SELECT c.id, p.id FROM commands c JOIN commands p ON p.package_id = c.package_id AND p.pos = c.pos - 1
				WHERE c.package_id = ?1 ORDER BY c.pos`, id); err != nil {
				return err
			}
			_, err := t.exec(`UPDATE commands SET n_deps = (pos > 0), n_dependents = (pos < ?2 - 1) WHERE package_id = ?1`, id, n)
			return err
		case "outside", "waiting":
			if _, err := t.exec(`INSERT INTO command_deps (command_id, depends_on)
				SELECT id, ?2 FROM commands WHERE package_id = ?1 ORDER BY pos`, id, gate); err != nil {
				return err
			}
			if _, err := t.exec(`UPDATE commands SET n_deps = 1 WHERE package_id = ?1`, id); err != nil {
				return err
			}
			_, err := t.exec(`UPDATE commands SET n_dependents = n_dependents + ?2 WHERE id = ?1`, gate, n)
			return err
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return id
}

// newCommands is a create's commands, with dependencies as stagedPackage
// makes them (by key inside the package).
func newCommands(n int, deps, gate string) []spinbroker.NewCommand {
	cmds := make([]spinbroker.NewCommand, n)
	for i := range cmds {
		cmds[i] = spinbroker.NewCommand{Key: fmt.Sprint("k", i), Resource: "big", Action: "step", Parameters: []byte(`{"n":1}`)}
		switch {
		case deps == "inside" && i > 0:
			cmds[i].Dependencies = []string{fmt.Sprint("k", i-1)}
		case deps == "outside" || deps == "waiting":
			cmds[i].Dependencies = []string{gate}
		}
	}
	return cmds
}

// BenchmarkLargePackage measures the one write transaction of each
// operation on a large package: the create of 10,000 commands (enqueued),
// and the enqueue, cancel (of an enqueued package) and delete (of a
// cancelled one, as the retention sweep deletes a finished package) of
// 10,000 and 50,000, with no dependencies, a chain inside the package,
// each command on an outside failed command, or each on an outside command
// still to run. hold-ms is how long the
// writer ran the transaction (nothing else writes meanwhile), stmts/cmd
// the statements it ran per command of the package.
//
//	go test ./internal/store -run '^$' -bench LargePackage -benchtime 1x
func BenchmarkLargePackage(b *testing.B) {
	for _, op := range []string{"create", "enqueue", "cancel", "delete"} {
		for _, n := range []int{10000, 50000} {
			if op == "create" && n > spinbroker.MaxCommandsPerBatch {
				continue
			}
			for _, deps := range []string{"none", "inside", "outside", "waiting"} {
				b.Run(fmt.Sprintf("%s/%d/%s", op, n, deps), func(b *testing.B) {
					benchLarge(b, op, n, deps)
				})
			}
		}
	}
}

func benchLarge(b *testing.B, op string, n int, deps string) {
	if b.N > 10 {
		b.Skip("a round takes seconds: run it with -benchtime 1x or 3x")
	}
	db := benchOpen(b)
	ctx := context.Background()
	gate := failedCommand(b, db, "gate")
	if deps == "waiting" {
		gate = waitingCommand(b, db, "gate")
	}
	b.ReportAllocs()
	var hold time.Duration
	var stmts int
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		var id string
		var in spinbroker.NewPackage
		if op == "create" {
			in = spinbroker.NewPackage{Enqueue: true, Commands: newCommands(n, deps, gate)}
		} else {
			id = stagedPackage(b, db, n, deps, gate)
			if op != "enqueue" {
				if _, err := db.Enqueue(ctx, id); err != nil {
					b.Fatal(err)
				}
			}
			if op == "delete" {
				if err := db.CancelPackageOnly(ctx, id); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.StartTimer()
		start := time.Now()
		err := db.write(ctx, func(t *Tx) error {
			before := t.statements
			defer func() { stmts += t.statements - before }()
			switch op {
			case "create":
				id = newID()
				_, err := t.createPackage(id, in)
				return err
			case "enqueue":
				return t.enqueue(id)
			case "cancel":
				return t.cancel(id)
			default:
				return t.deletePackage(id)
			}
		})
		hold += time.Since(start)
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		if op != "delete" { // keeps the file from growing a round
			if err := db.CancelPackageOnly(ctx, id); err != nil {
				b.Fatal(err)
			}
			if err := db.DeletePackage(ctx, id); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(hold.Milliseconds())/float64(b.N), "hold-ms")
	b.ReportMetric(float64(stmts)/float64(b.N)/float64(n), "stmts/cmd")
}
