package store_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spin-broker/spinbroker/internal/store"
)

// damagedData makes a database whose schema reads but whose rows do not:
// one page in the middle of its file overwritten, as a failing disk or a
// bad copy leaves it. The file's first pages (the schema) are intact, so
// that the damage is met only once the rows are read.
func damagedData(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "broker.db")
	db, err := store.Open(ctx, path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for range 4 {
		enqueue(t, db, many("r", 1000)...)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{path + "-wal", path + "-shm"} {
		if _, err := os.Stat(f); err == nil {
			t.Fatalf("%s is left after a clean close; the test needs the rows in the file", f)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const page = 4096 // SQLite's default page size
	middle := fi.Size() / page / 2 * page
	if _, err := f.WriteAt([]byte(strings.Repeat("\xff", page)), middle); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestBackup_DamagedSource: a backup of a live database whose rows cannot
// be read says that database is damaged, naming it, not that the copy
// could not be written: "cannot write /backups/b.db: database disk image
// is malformed" sent an operator to the backup's disk while the broker's
// own file was the one to restore.
func TestBackup_DamagedSource(t *testing.T) {
	path := damagedData(t)
	to := filepath.Join(t.TempDir(), "b.db")
	err := store.Backup(ctx, path, to)
	if err == nil {
		t.Fatal("a backup of a damaged database succeeded")
	}
	want := "store: " + path + " is damaged"
	if !strings.HasPrefix(err.Error(), want) {
		t.Errorf("backup of a damaged database: %q, want it to start %q", err, want)
	}
	if strings.Contains(err.Error(), to) {
		t.Errorf("backup of a damaged database blames the copy: %q", err)
	}
	if _, err := os.Lstat(to); !os.IsNotExist(err) {
		t.Errorf("a failed backup left %s", to)
	}
}

// TestCheckFile_DamagedRows: check of a file whose rows are damaged reports
// what SQLite's integrity check found, as the integrity row of its table
// (exit 1, "something is wrong"), rather than fail as a check that could
// not run (exit 2, the lines it found thrown away): the integrity check
// reports its findings, then ends in SQLITE_CORRUPT.
func TestCheckFile_DamagedRows(t *testing.T) {
	path := damagedData(t)
	c, err := store.CheckFile(ctx, path)
	if err != nil {
		t.Fatalf("check of a damaged file could not run: %v", err)
	}
	if len(c.Integrity) == 0 || c.OK() {
		t.Fatalf("check of a damaged file found nothing: %+v", c)
	}
	if !strings.Contains(strings.Join(c.Integrity, "\n"), "malformed") {
		t.Errorf("the integrity lines do not end in the error that stopped the check: %q", c.Integrity)
	}
}
