package store

import (
	"context"
	"database/sql"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	spinbroker "github.com/spin-broker/spinbroker"
)

// TestDatabaseFileReplacedWhileOpen: when the database's path stops naming
// the file the broker opened (moved aside and replaced by a restored copy,
// or its folder removed), the writer would go on committing into a file no
// later broker reads, so every 2xx from then on would be lost. Writes must
// answer EUNAVAILABLE naming the cause, WriteFailure must say so, and a log
// line must name the file.
func TestDatabaseFileReplacedWhileOpen(t *testing.T) {
	for _, how := range []string{"replaced", "removed"} {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "b.db")
			var logs strings.Builder
			db, err := Open(context.Background(), path, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			ctx := context.Background()
			if _, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{}, nil); err != nil {
				t.Fatal(err)
			}
			if err := Backup(ctx, path, filepath.Join(dir, "backup.db")); err != nil {
				t.Fatal(err)
			}
			switch how {
			case "replaced": // a restore done without stopping the broker
				for _, s := range []string{"", "-wal"} {
					if err := os.Rename(path+s, filepath.Join(dir, "old.db"+s)); err != nil && !os.IsNotExist(err) {
						t.Fatal(err)
					}
				}
				os.Remove(path + "-shm")
				if err := os.Rename(filepath.Join(dir, "backup.db"), path); err != nil {
					t.Fatal(err)
				}
			case "removed":
				for _, s := range []string{"", "-wal", "-shm"} {
					os.Remove(path + s)
				}
			}
			_, _, err = db.CreatePackage(ctx, spinbroker.NewPackage{}, nil)
			if spinbroker.ErrorCode(err) != spinbroker.EUNAVAILABLE || !strings.Contains(spinbroker.ErrorMessage(err), how) {
				t.Fatalf("a write once the file was %s: %v (%s), want unavailable naming it", how, err, spinbroker.ErrorCode(err))
			}
			if err := db.WriteFailure(ctx); spinbroker.ErrorCode(err) != spinbroker.EUNAVAILABLE {
				t.Fatalf("WriteFailure once the file was %s: %v", how, err)
			}
			if !strings.Contains(logs.String(), "was "+how) {
				t.Fatalf("no log line says the file was %s:\n%s", how, logs.String())
			}
		})
	}
}

// TestWriteFailure_LogsOnceAndRecovery: while writes keep failing for one
// cause (a full disk fails every batch, thousands a second), the log gets
// a line when it starts, not one per batch; and a line when writes work
// again, so that the log shows the end of the trouble too.
func TestWriteFailure_LogsOnceAndRecovery(t *testing.T) {
	var logs strings.Builder
	db, err := Open(context.Background(), filepath.Join(t.TempDir(), "f.db"), Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	setQueryOnly := func(v string) {
		if err := db.maintain(ctx, func(c *sql.Conn) error { _, err := c.ExecContext(ctx, "PRAGMA query_only = "+v); return err }); err != nil {
			t.Fatal(err)
		}
	}
	setQueryOnly("1")
	for range 50 {
		if _, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{}, nil); spinbroker.ErrorCode(err) != spinbroker.EUNAVAILABLE {
			t.Fatalf("a write to a read-only database: %v", err)
		}
	}
	if n := strings.Count(logs.String(), "database unavailable"); n != 1 {
		t.Fatalf("50 failed writes logged %d lines, want 1:\n%s", n, logs.String())
	}
	setQueryOnly("0")
	if _, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{}, nil); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "database takes writes again") || !strings.Contains(logs.String(), "failed_since_last_line=49") {
		t.Fatalf("no line says writes work again, and how many failed:\n%s", logs.String())
	}
}

// TestDatabaseFileMovedWhileOpen_NotRecreated: once the database's file was
// moved away (or removed) under a running broker, a connection its pools
// open later must not create a new, empty file at the path: that file
// (made with SQLite's mode, not 0600) turned /healthz's read into "no such
// table: packages", made the writes' cause "replaced by another file", and
// would be what a restart serves. Health must say at once, without waiting
// for a client's write, that the file was removed: Ping still answers (the
// open file reads), and WriteFailure names the cause.
func TestDatabaseFileMovedWhileOpen_NotRecreated(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "b.db")
	db, err := Open(context.Background(), path, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	if _, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{}, nil); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"", "-wal", "-shm"} {
		if err := os.Rename(path+s, filepath.Join(dir, "moved.db"+s)); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	if err := db.WriteFailure(ctx); spinbroker.ErrorCode(err) != spinbroker.EUNAVAILABLE || !strings.Contains(err.Error(), "removed") {
		t.Errorf("WriteFailure once the file was moved away, before any write: %v, want unavailable saying it was removed", err)
	}
	// More readers than the pool has opened so far: each new one opens the path.
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() { errs[i] = db.Ping(ctx) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Errorf("Ping once the file was moved away: %v, want nil (the open file reads; WriteFailure says why)", err)
			break
		}
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("the broker made a file at %s once its own was moved away (stat: %v)", path, err)
	}
	_, _, err = db.CreatePackage(ctx, spinbroker.NewPackage{}, nil)
	if spinbroker.ErrorCode(err) != spinbroker.EUNAVAILABLE || !strings.Contains(spinbroker.ErrorMessage(err), "removed") {
		t.Errorf("a write once the file was moved away: %v, want unavailable saying it was removed", err)
	}
}
