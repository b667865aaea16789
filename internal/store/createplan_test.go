package store

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"

	spinbroker "github.com/spin-broker/spinbroker"
)

// TestCreate_DependenciesCountedOnce: a create resolves the dependencies
// among its own commands without reading them back, inserts each command
// with its count of dependents, and reads and counts a dependency outside
// the request once however many of its commands name it, so that its
// statements grow by one per command and one per dependency (it ran a read
// and an update per dependency besides). The counts are those of the
// command_deps rows, and the graph runs in order on them.
func TestCreate_DependenciesCountedOnce(t *testing.T) {
	ctx := context.Background()
	overhead := map[int]int{}
	for _, n := range []int{10, 200} {
		db := openQuiet(t, filepath.Join(t.TempDir(), "plan.db"), Options{})
		defer db.Close()
		gate := waitingCommand(t, db, "gate")
		first := uuid.NewString()
		cmds := make([]spinbroker.NewCommand, n)
		edges := 0
		for i := range cmds {
			cmds[i] = spinbroker.NewCommand{Key: fmt.Sprint("k", i), Resource: "r", Action: fmt.Sprint("step-", i)}
			switch {
			case i == 0:
				cmds[i].ID = first
			case i%3 == 0:
				// The first command twice (by its id, in capitals, and its
				// key) and the gate twice: each is one dependency.
				cmds[i].Dependencies = []string{fmt.Sprint("k", i-1), strings.ToUpper(first), gate, "k0", gate}
				edges += 3
			default:
				cmds[i].Dependencies = []string{fmt.Sprint("k", i-1), gate}
				edges += 2
			}
		}
		var pkg *spinbroker.Package
		err := db.write(ctx, func(t *Tx) error {
			before := t.statements
			var err error
			pkg, err = t.createPackage(newID(), spinbroker.NewPackage{Enqueue: true, Commands: cmds})
			overhead[n] = t.statements - before - n - edges
			return err
		})
		if err != nil {
			t.Fatal(err)
		}

		// Every command's count of dependents is its command_deps rows'.
		ids := append([]string{gate}, pkg.Commands[0].ID)
		for _, c := range pkg.Commands[1:] {
			ids = append(ids, c.ID)
		}
		err = db.write(ctx, func(t *Tx) error {
			for _, id := range ids {
				var counted, rows int
				if err := t.queryRow(`SELECT n_dependents, (SELECT count(*) FROM command_deps WHERE depends_on = ?1)
					FROM commands WHERE id = ?1`, id).Scan(&counted, &rows); err != nil {
					return err
				}
				if counted != rows {
					return fmt.Errorf("n=%d: command %s counts %d dependents, command_deps holds %d", n, id, counted, rows)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if got := len(pkg.Commands[3].Dependencies); got != 3 {
			t.Fatalf("n=%d: step-3 has dependencies %v, want its three", n, pkg.Commands[3].Dependencies)
		}

		// The graph runs: the first command, then the gate, then the rest in
		// order, each released by the one before it.
		yes := true
		run := func(resource, action string) {
			t.Helper()
			c, _, err := db.Next(ctx, resource, 0)
			if err != nil || c == nil || c.Action != action {
				t.Fatalf("n=%d: next %s: %+v %v, want %s", n, resource, c, err, action)
			}
			if _, err := db.Complete(ctx, c.ID, spinbroker.Result{Status: &yes, Lease: c.Lease.Token}); err != nil {
				t.Fatal(err)
			}
		}
		run("r", "step-0")
		if c, _, err := db.Next(ctx, "r", 0); err != nil || c != nil {
			t.Fatalf("n=%d: step-1 delivered before the gate succeeded: %+v %v", n, c, err)
		}
		run("gate", "gate")
		for i := 1; i < n; i++ {
			run("r", fmt.Sprint("step-", i))
		}
		p, err := db.Package(ctx, pkg.ID)
		if err != nil || p.State != spinbroker.PackageSucceeded {
			t.Fatalf("n=%d: package %+v %v", n, p, err)
		}
	}
	if overhead[200] != overhead[10] {
		t.Fatalf("a create ran %d statements besides one per command and per dependency for 10 commands, %d for 200", overhead[10], overhead[200])
	}
}
