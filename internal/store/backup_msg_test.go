package store_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/store"
)

// TestBackup_SaysWhichFile: a backup that cannot read its source names the
// source, and is not the API's "database is unavailable" (the CLI prints
// the message of a coded error without its context, so such an error read
// as the live database's failure, whichever file it was about); a source
// that is no spin-broker database (an empty file) is refused, not copied
// into an empty "backup".
func TestBackup_SaysWhichFile(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, []byte(strings.Repeat("not a database ", 512)), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.db")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, src := range []string{garbage, empty} {
		to := filepath.Join(dir, filepath.Base(src)+".bak")
		err := store.Backup(ctx, src, to)
		if err == nil {
			t.Fatalf("a backup of %s succeeded", src)
		}
		if spinbroker.ErrorCode(err) != spinbroker.EINTERNAL || !strings.Contains(err.Error(), src) {
			t.Errorf("backup of %s: %v (%s): want the driver's error naming the file", src, err, spinbroker.ErrorCode(err))
		}
		for _, f := range []string{to, to + "-journal"} {
			if _, err := os.Lstat(f); !os.IsNotExist(err) {
				t.Errorf("a failed backup left %s", f)
			}
		}
	}
}

// TestBackup_CompleteOrAbsent: the copy gets its name only once complete,
// so that a backup killed half way leaves no file at --to that a restore
// would take for a backup (SQLite rolled such a file's hot journal back to
// an empty database, and the broker then served an empty one); a backup
// leaves nothing else beside it.
func TestBackup_CompleteOrAbsent(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.db")
	db, err := store.Open(ctx, src, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	enqueue(t, db, cmd("r", "a"))
	out := filepath.Join(dir, "out")
	if err := os.Mkdir(out, 0o700); err != nil {
		t.Fatal(err)
	}
	to := filepath.Join(out, "b.db")
	// Watched while it runs, dest is absent until it is the whole copy:
	// never a file being written, nor its journal.
	for range 5 {
		enqueue(t, db, many("r", 1000)...)
	}
	watched := filepath.Join(out, "watched.db")
	done := make(chan error, 1)
	go func() { done <- store.Backup(ctx, src, watched) }()
	var seen []int64
	journal := false
	for running := true; running; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			running = false
		default:
		}
		if fi, err := os.Stat(watched); err == nil {
			seen = append(seen, fi.Size())
		}
		if _, err := os.Stat(watched + "-journal"); err == nil {
			journal = true
		}
	}
	final, err := os.Stat(watched)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range seen {
		if n != final.Size() {
			t.Fatalf("while the backup ran, %s was seen %d bytes long; the whole copy is %d", watched, n, final.Size())
		}
	}
	if journal {
		t.Fatalf("while the backup ran, %s had a journal beside it", watched)
	}
	os.Remove(watched)

	// Cancelled before it can finish: nothing at all is left.
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := store.Backup(cancelled, src, to); err == nil {
		t.Fatal("a cancelled backup succeeded")
	}
	if ents, _ := os.ReadDir(out); len(ents) != 0 {
		t.Fatalf("a cancelled backup left %v", ents)
	}
	if err := store.Backup(ctx, src, to); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(out)
	if len(ents) != 1 || ents[0].Name() != "b.db" {
		t.Fatalf("a backup left %v, want b.db alone", ents)
	}
	if fi, err := os.Stat(to); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the backup: %v %v", fi, err)
	}
	if err := store.Backup(ctx, src, to); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("a backup over an existing file: %v", err)
	}
}

// TestBackup_FolderOfDest: a dest whose folder does not exist, or is a
// file, says so of the folder; the error named the temporary
// "b.db.partial-123456" file the backup would have written first, which
// the operator never asked for and could not find.
func TestBackup_FolderOfDest(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.db")
	db, err := store.Open(ctx, src, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing", "sub")
	for _, tt := range []struct{ dest, want string }{
		{filepath.Join(missing, "b.db"), "folder " + missing + " does not exist"},
		{filepath.Join(file, "b.db"), file + " is not a folder"},
	} {
		err := store.Backup(ctx, src, tt.dest)
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), ".partial") {
			t.Errorf("backup to %s: %v, want it to say %q", tt.dest, err, tt.want)
		}
	}
}

// TestBackup_DestExistsSaysWhy: a dest that exists is refused with the
// reason, that a backup never replaces a file, and what to do: "x.db
// already exists" alone left the operator to guess whether to remove it
// or to give another name, or whether a flag would overwrite it.
func TestBackup_DestExistsSaysWhy(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.db")
	db, err := store.Open(ctx, src, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	to := filepath.Join(dir, "old.bak")
	if err := os.WriteFile(to, []byte("last week's"), 0o600); err != nil {
		t.Fatal(err)
	}
	err = store.Backup(ctx, src, to)
	want := to + " already exists, and a backup never replaces a file: give --to a new name, or move that file away first"
	if err == nil || !strings.HasSuffix(err.Error(), want) {
		t.Errorf("a backup to an existing file: %v, want it to end %q", err, want)
	}
	if b, _ := os.ReadFile(to); string(b) != "last week's" {
		t.Error("the existing file was changed")
	}
}
