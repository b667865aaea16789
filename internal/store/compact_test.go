package store_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/store"
)

// TestCompact: deleted packages leave free pages, which FreeBytes counts;
// Compact refuses to run beside a broker, and once it has stopped gives
// the space back to the file system and keeps every row that was left.
func TestCompact(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.db")
	db, err := store.Open(ctx, path, store.Options{Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	kept := enqueue(t, db, cmd("r", "kept"))
	blob := []byte(`{"blob": "` + strings.Repeat("x", 4000) + `"}`)
	var big []string
	for range 300 {
		p, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Commands: []spinbroker.NewCommand{{Resource: "r", Action: "big", Parameters: blob}}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		big = append(big, p.ID)
	}
	for _, id := range big {
		if err := db.DeletePackage(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	free, err := db.FreeBytes(ctx)
	if err != nil || free < 1<<20 {
		t.Fatalf("free bytes after deleting 1.2 MB of rows: %d %v", free, err)
	}
	if _, _, err := store.Compact(ctx, path); !errors.Is(err, store.ErrInUse) {
		t.Fatalf("compact beside the broker: %v, want ErrInUse", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	before, after, err := store.Compact(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if after != st.Size() || before-after < free*9/10 {
		t.Fatalf("compacted from %d to %d bytes (the file: %d), with %d free before", before, after, st.Size(), free)
	}
	if _, err := os.Stat(path + "-wal"); err == nil {
		if st, _ := os.Stat(path + "-wal"); st.Size() != 0 {
			t.Fatalf("the WAL holds %d bytes after compacting", st.Size())
		}
	}

	db, err = store.Open(ctx, path, store.Options{Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if free, err := db.FreeBytes(ctx); err != nil || free != 0 {
		t.Fatalf("free bytes after compacting: %d %v", free, err)
	}
	if c := mustNext(t, db, "r"); c.ID != kept.Commands[0].ID {
		t.Fatalf("after compacting the queue hands out %+v, want the kept command", c)
	}
	if _, _, err := store.Compact(ctx, filepath.Join(t.TempDir(), "missing.db")); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("compacting a database that does not exist: %v", err)
	}
}
