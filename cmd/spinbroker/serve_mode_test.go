package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServe_WarnsOfADatabaseOthersCanRead: a database file that other
// users may read (one made 0644 by an older build, a copy, a restore) is
// named at start, with the chmod that mends it: it holds every parameter
// in plain text. One the broker made (0600) is not.
func TestServe_WarnsOfADatabaseOthersCanRead(t *testing.T) {
	db := filepath.Join(t.TempDir(), "broker.db")
	b := startBroker(t, db)
	if err := b.stop(t); err != nil {
		t.Fatalf("serve exited with %v:\n%s", err, b.logs)
	}
	if strings.Contains(b.logs.String(), "readable by other users") {
		t.Fatalf("a database the broker made is said to be readable by others:\n%s", b.logs)
	}
	if err := os.Chmod(db, 0o644); err != nil {
		t.Fatal(err)
	}
	b = startBroker(t, db)
	if err := b.stop(t); err != nil {
		t.Fatalf("serve exited with %v:\n%s", err, b.logs)
	}
	logs := b.logs.String()
	if !strings.Contains(logs, `level=WARN msg="the database file is readable by other users`) || !strings.Contains(logs, "chmod 600 "+db) ||
		!strings.Contains(logs, "mode=-rw-r--r--") {
		t.Errorf("a database of mode 0644 is not named with its mode and the chmod that mends it:\n%s", logs)
	}
	// The broker only says so: the mode is its owner's.
	if fi, err := os.Stat(db); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("the mode of the database was changed: %v %v", fi.Mode(), err)
	}
}
