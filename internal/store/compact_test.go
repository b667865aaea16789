package store_test

import (
	"database/sql"
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
	if _, _, err := store.Compact(ctx, path, nil); !errors.Is(err, store.ErrInUse) {
		t.Fatalf("compact beside the broker: %v, want ErrInUse", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	before, after, err := store.Compact(ctx, path, nil)
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
	if _, _, err := store.Compact(ctx, filepath.Join(t.TempDir(), "missing.db"), nil); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("compacting a database that does not exist: %v", err)
	}
}

// TestCompact_OnlySpinBrokerDatabases: another program's SQLite file, an
// empty file and a file that is no database are refused, named, and left
// as they were.
func TestCompact_OnlySpinBrokerDatabases(t *testing.T) {
	dir := t.TempDir()
	other := filepath.Join(dir, "other.db")
	raw, err := sql.Open("sqlite", "file:"+other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`CREATE TABLE foo (x); INSERT INTO foo VALUES (randomblob(100000))`); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	empty := filepath.Join(dir, "empty.db")
	text := filepath.Join(dir, "notes.db")
	for f, data := range map[string]string{empty: "", text: "not a database, just notes\n"} {
		if err := os.WriteFile(f, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{other, empty, text} {
		before, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := store.Compact(ctx, f, nil); err == nil || !strings.Contains(err.Error(), f) {
			t.Errorf("compact %s: %v, want a refusal naming it", f, err)
		}
		if after, _ := os.ReadFile(f); string(after) != string(before) {
			t.Errorf("compact changed %s though it refused", f)
		}
	}
}
