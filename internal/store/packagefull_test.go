package store

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	spinbroker "github.com/spin-broker/spinbroker"
)

// TestDB_AddCommand_PackageFull: a package holds at most
// spinbroker.MaxCommandsPerPackage commands (here a test's smaller limit).
// An add past it is refused with a conflict that names the limit, and adds
// nothing; a create is held to it too (a request's 10,000 commands are
// fewer than the real limit, but not than a test's). Without the limit one package grew
// without end, and its enqueue, cancel and every read of it took longer
// and more memory with each command: at 100,000 an enqueue held every
// other write back for seconds and its answer outgrew what the Go client
// reads.
func TestDB_AddCommand_PackageFull(t *testing.T) {
	const limit = 5
	db := openQuiet(t, filepath.Join(t.TempDir(), "full.db"), Options{maxPackageCommands: limit})
	defer db.Close()
	ctx := context.Background()
	cmds := make([]spinbroker.NewCommand, limit-1)
	for i := range cmds {
		cmds[i] = spinbroker.NewCommand{Resource: "r", Action: "a"}
	}
	p, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Commands: cmds}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.AddCommand(ctx, p.ID, spinbroker.NewCommand{Resource: "r", Action: "a"}, nil); err != nil {
		t.Fatalf("the add that fills the package: %v", err)
	}
	_, _, err = db.AddCommand(ctx, p.ID, spinbroker.NewCommand{Resource: "r", Action: "a"}, nil)
	if spinbroker.ErrorCode(err) != spinbroker.ECONFLICT || !strings.Contains(err.Error(), "at most 5 commands") {
		t.Fatalf("an add past the limit: got %v, want a conflict naming the limit", err)
	}
	got, err := db.Package(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Total != limit || len(got.Commands) != limit {
		t.Fatalf("the package holds %d commands (total %d), want %d", len(got.Commands), got.Total, limit)
	}
	if _, err := db.Enqueue(ctx, p.ID); err != nil {
		t.Fatalf("a full package must still enqueue: %v", err)
	}

	over := append(cmds, spinbroker.NewCommand{Resource: "r", Action: "a"}, spinbroker.NewCommand{Resource: "r", Action: "a"})
	_, _, err = db.CreatePackage(ctx, spinbroker.NewPackage{Commands: over}, nil)
	if spinbroker.ErrorCode(err) != spinbroker.EINVALID || !strings.Contains(err.Error(), "at most 5 commands") {
		t.Fatalf("a create past the limit: got %v, want invalid_request naming the limit", err)
	}
}
