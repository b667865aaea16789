package store

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"strings"
)

// Check runs SQLite's integrity check over the whole database and returns
// an error listing what it found wrong.
func (db *DB) Check(ctx context.Context) error {
	rows, err := db.rdb.QueryContext(ctx, `PRAGMA integrity_check`)
	if err != nil {
		return interpretError(err)
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return err
		}
		if line != "ok" {
			problems = append(problems, line)
		}
	}
	if err := rows.Err(); err != nil {
		return interpretError(err)
	}
	if len(problems) > 0 {
		return fmt.Errorf("store: integrity check of %s failed: %s", db.path, strings.Join(problems, "; "))
	}
	return nil
}

// Backup writes a consistent copy of the live database to dest (which must
// not exist), without stopping writers: VACUUM INTO reads one snapshot, and
// the copy is compact and needs no WAL. Restore by stopping the broker and
// putting the copy in place of the database file (and removing its -wal and
// -shm files).
func (db *DB) Backup(ctx context.Context, dest string) error {
	return Backup(ctx, db.path, dest)
}

// Backup copies the database at path to dest, whether or not a broker has
// it open.
func Backup(ctx context.Context, path, dest string) error {
	if _, err := os.Stat(dest); err == nil {
		return fmt.Errorf("store: backup: %s already exists", dest)
	}
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("store: backup: %w", err)
	}
	conn, err := sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath()+"?_pragma=busy_timeout(10000)")
	if err != nil {
		return err
	}
	defer conn.Close()
	// The copy is as private as a database spin-broker creates: VACUUM
	// INTO fills an empty file, keeping its mode.
	f, err := os.OpenFile(dest, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("store: backup: %w", err)
	}
	f.Close()
	if _, err := conn.ExecContext(ctx, `VACUUM INTO ?`, dest); err != nil {
		os.Remove(dest) // a failed backup leaves nothing to mistake for one
		return fmt.Errorf("store: backup to %s: %w", dest, interpretError(err))
	}
	return nil
}
