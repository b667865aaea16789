package store

import (
	"context"
	"database/sql"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
)

// TestWriter_MaintenanceAmidWrites: maintenance operations submitted while
// a transaction takes in the writes that arrive during it are each run
// once, between transactions, and none is lost.
func TestWriter_MaintenanceAmidWrites(t *testing.T) {
	db := openQuiet(t, filepath.Join(t.TempDir(), "w.db"), Options{})
	ctx := context.Background()
	var ran sync.Map
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 60 {
				if _, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{{Resource: "r", Action: "a"}}}, nil); err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
		}()
	}
	const maintenance = 40
	for i := range maintenance {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := db.maintain(ctx, func(c *sql.Conn) error {
				if _, loaded := ran.LoadOrStore(i, true); loaded {
					t.Errorf("maintenance %d ran twice", i)
				}
				_, err := c.ExecContext(ctx, `PRAGMA user_version`)
				return err
			})
			if err != nil {
				t.Errorf("maintenance %d: %v", i, err)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		// Not closed: Close would wait for the lost operation too.
		t.Fatal("a write or maintenance operation never returned")
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	n := 0
	ran.Range(func(any, any) bool { n++; return true })
	if n != maintenance {
		t.Fatalf("%d of %d maintenance operations ran", n, maintenance)
	}
}

// openQuiet opens the database at path for a test of this package, its
// log discarded unless opts has a logger, and fails the test if it cannot.
func openQuiet(t testing.TB, path string, opts Options) *DB {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	db, err := Open(context.Background(), path, opts)
	if err != nil {
		t.Fatal(err)
	}
	return db
}
