package store_test

import (
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/store"
)

// TestForeignDatabaseRefused: --db naming another program's SQLite
// database (a slip of the path) is refused by serve and 'migrate up', and
// left as it was (no spin-broker tables, not turned to WAL), as compact
// already refuses it; 'migrate status' writes nothing, not even to an
// empty file.
func TestForeignDatabaseRefused(t *testing.T) {
	dir := t.TempDir()
	other := filepath.Join(dir, "other.db")
	c, err := sql.Open("sqlite", other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(`CREATE TABLE notes (body TEXT)`); err != nil {
		t.Fatal(err)
	}
	c.Close()
	before, _ := os.ReadFile(other)

	if db, err := store.Open(ctx, other, store.Options{Exclusive: true}); err == nil || !strings.Contains(err.Error(), "not a spin-broker database") {
		if db != nil {
			db.Close()
		}
		t.Fatalf("Open of another program's database: %v", err)
	}
	if _, err := store.Migrations(ctx, other, true); err == nil || !strings.Contains(err.Error(), "not a spin-broker database") {
		t.Fatalf("migrate up of another program's database: %v", err)
	}
	if _, err := store.Migrations(ctx, other, false); err == nil {
		t.Fatal("migrate status of another program's database succeeded")
	}
	if after, _ := os.ReadFile(other); string(after) != string(before) {
		t.Fatal("another program's database was changed")
	}
	for _, s := range []string{"-wal", "-shm"} {
		if _, err := os.Stat(other + s); err == nil {
			t.Errorf("%s left beside it", s)
		}
	}

	empty := filepath.Join(dir, "empty.db")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := store.Migrations(ctx, empty, false)
	if err != nil || len(st) == 0 || st[0].Applied {
		t.Fatalf("status of an empty file: %v %v", st, err)
	}
	if fi, _ := os.Stat(empty); fi.Size() != 0 {
		t.Fatalf("status wrote %d bytes to an empty file", fi.Size())
	}
	// A new file still becomes a database, as before.
	db, err := store.Open(ctx, empty, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
}

// TestOpen_Folder: a --db naming a folder is refused saying so, and no
// "<folder>.lock" is left in its parent.
func TestOpen_Folder(t *testing.T) {
	dir := t.TempDir()
	folder := filepath.Join(dir, "data")
	if err := os.Mkdir(folder, 0o700); err != nil {
		t.Fatal(err)
	}
	if db, err := store.Open(ctx, folder, store.Options{Exclusive: true}); err == nil || !strings.Contains(err.Error(), "is a folder") {
		if db != nil {
			db.Close()
		}
		t.Fatalf("Open of a folder: %v", err)
	}
	if _, err := store.Migrations(ctx, folder, true); err == nil || !strings.Contains(err.Error(), "is a folder") {
		t.Fatalf("migrate up of a folder: %v", err)
	}
	if _, err := os.Stat(folder + ".lock"); err == nil {
		t.Fatal("a lock file was left beside the folder")
	}
}

// TestNotSQLiteFile: a --db that is no SQLite file at all (a log, a
// tarball, a database whose header was overwritten) is refused by every
// way into a database with one sentence that says so, not with the code
// of a temporary fault ("file is not a database (26) (unavailable)"): no
// retry makes it a database.
func TestNotSQLiteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "notes.db")
	if err := os.WriteFile(path, []byte(strings.Repeat("not a database ", 512)), 0o600); err != nil {
		t.Fatal(err)
	}
	wantRefusedEverywhere(t, path, "store: "+path+" is not a spin-broker database: it is not an SQLite database at all", "a file that is no database")
}

// wantRefusedEverywhere holds every way into a database (open, migrate
// status and up, backup, compact) to refusing path with an error that
// starts with want and is not the code of a temporary fault, which no
// retry would cure for the file (what).
func wantRefusedEverywhere(t *testing.T, path, want, what string) {
	t.Helper()
	check := func(way string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("%s succeeded", way)
			return
		}
		if code := spinbroker.ErrorCode(err); code == spinbroker.EUNAVAILABLE {
			t.Errorf("%s: code %s, a temporary fault, for %s: %v", way, code, what, err)
		}
		if !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%s: %q, want it to start %q", way, err, want)
		}
	}
	db, err := store.Open(ctx, path, store.Options{Exclusive: true})
	if db != nil {
		db.Close()
	}
	check("Open", err)
	_, err = store.Migrations(ctx, path, false)
	check("Migrations (status)", err)
	_, err = store.Migrations(ctx, path, true)
	check("Migrations (up)", err)
	check("Backup", store.Backup(ctx, path, filepath.Join(t.TempDir(), "x.bak")))
	_, _, err = store.Compact(ctx, path, nil)
	check("Compact", err)
}

// TestDamagedFile: a database whose file is damaged (here cut short, as a
// copy that ran out of disk leaves it) is said to be damaged, with what to
// do, by every way into a database, not with the code of a temporary fault
// ("database disk image is malformed (11) (unavailable)").
func TestDamagedFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "b.db")
	db, err := store.Open(ctx, path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	os.Remove(path + "-wal")
	os.Remove(path + "-shm")
	if err := os.Truncate(path, 5000); err != nil {
		t.Fatal(err)
	}
	wantRefusedEverywhere(t, path, "store: "+path+" is damaged (database disk image is malformed): restore it from a backup", "a damaged file")
}
