package store

import (
	"context"
	"database/sql"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
)

// TestCheckpointer_WhileIdle: once enough commits have gone by, the
// checkpointer copies the WAL into the database file while the writer is
// idle, and not before.
func TestCheckpointer_WhileIdle(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.db")
	db := openQuiet(t, path, Options{})
	defer db.Close()
	ctx := context.Background()
	create := func() {
		t.Helper()
		if _, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{{Resource: "r", Action: "a"}}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	checkpoints := func() int64 { _, _, c := db.WriteStats(); return c }
	// The migrations committed outside the writer; count from here.
	for range checkpointAfter - 1 {
		create()
	}
	time.Sleep(50 * checkpointIdle)
	if n := checkpoints(); n != 0 {
		t.Fatalf("%d checkpoints after %d commits; none is due before %d", n, checkpointAfter-1, checkpointAfter)
	}
	create()
	deadline := time.Now().Add(30 * time.Second)
	for checkpoints() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint while the writer idled after %d commits", checkpointAfter)
		}
		time.Sleep(checkpointIdle)
	}

	// The database file itself, read without its WAL, now holds every
	// package.
	main, err := sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath()+"?immutable=1")
	if err != nil {
		t.Fatal(err)
	}
	defer main.Close()
	var n int
	if err := main.QueryRow(`SELECT count(*) FROM packages`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != checkpointAfter {
		t.Fatalf("the database file holds %d packages without its WAL, want %d", n, checkpointAfter)
	}
}

// TestCheckpointDue: a checkpoint is due after checkpointAfter commits when
// the writer idles, after checkpointBusyAfter whatever it does; whether it
// idles is asked only when that decides.
func TestCheckpointDue(t *testing.T) {
	for _, c := range []struct {
		since      int64
		idle       bool
		due, asked bool
	}{
		{0, true, false, false},
		{checkpointAfter - 1, true, false, false},
		{checkpointAfter, true, true, true},
		{checkpointAfter, false, false, true},
		{checkpointBusyAfter - 1, false, false, true},
		{checkpointBusyAfter, false, true, false},
		{10 * checkpointBusyAfter, false, true, false},
	} {
		asked := false
		due := checkpointDue(c.since, func() bool { asked = true; return c.idle })
		if due != c.due || asked != c.asked {
			t.Errorf("after %d commits, idle %v: due %v (asked %v), want %v (asked %v)", c.since, c.idle, due, asked, c.due, c.asked)
		}
	}
}

// TestCheckpointer_Busy: writes that keep coming while checkpoints run are
// all kept, and Close stops the checkpointer.
func TestCheckpointer_Busy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.db")
	db := openQuiet(t, path, Options{})
	ctx := context.Background()
	const total = 20 * checkpointAfter
	for i := range total {
		if _, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{{Resource: "r", Action: "a"}}}, nil); err != nil {
			t.Fatal(err)
		}
		if i%checkpointAfter == 0 {
			time.Sleep(5 * checkpointIdle) // room for a checkpoint now and then
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openQuiet(t, path, Options{})
	defer db.Close()
	q, err := db.Queue(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	if q.Counts.Ready != total {
		t.Fatalf("%d ready after reopening, want %d", q.Counts.Ready, total)
	}
}

// TestCheckpointer_TruncatesWhenQuiet: once nothing has been written for a
// quiet spell, the WAL file is truncated to nothing, but not while a reader
// still needs what is in it; the data stays, and writes go on growing it
// again.
func TestCheckpointer_TruncatesWhenQuiet(t *testing.T) {
	const quiet = 100 * time.Millisecond
	path := filepath.Join(t.TempDir(), "q.db")
	db := openQuiet(t, path, Options{walQuiet: quiet})
	defer db.Close()
	ctx := context.Background()
	create := func(n int) {
		t.Helper()
		for range n {
			if _, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{{Resource: "r", Action: "a"}}}, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	walSize := func() int64 {
		t.Helper()
		fi, err := os.Stat(path + "-wal")
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}

	// A reader in a transaction holds the WAL's later frames out of the
	// database file: nothing can be truncated while it reads.
	create(50)
	other, err := sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	rtx, err := other.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := rtx.QueryRow(`SELECT count(*) FROM packages`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	create(50)
	time.Sleep(5 * quiet)
	if s := walSize(); s == 0 {
		t.Fatal("the WAL was truncated while a reader still read from it")
	}
	if err := rtx.Rollback(); err != nil {
		t.Fatal(err)
	}

	// An idle agent's polls go on committing transactions that write
	// nothing: they do not keep the WAL from being truncated.
	deadline := time.Now().Add(30 * time.Second)
	for walSize() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the WAL is still %d bytes after the last write and its reader left", walSize())
		}
		if c, _, err := db.Next(ctx, "idle", 0); err != nil || c != nil {
			t.Fatalf("next on an empty queue: %v %v", c, err)
		}
		time.Sleep(quiet / 10)
	}
	if err := other.QueryRow(`SELECT count(*) FROM packages`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 100 {
		t.Fatalf("%d packages after the WAL was truncated, want 100", n)
	}
	create(1)
	if s := walSize(); s == 0 {
		t.Fatal("a commit after the truncation left the WAL empty")
	}
}
