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

// TestWriter_SweepBatchRunsAlone: a client's write that arrives while a
// sweep batch is queued commits in a transaction of its own, not in the
// batch's. Sharing it made every agent's write wait for a whole sweep
// batch besides the one running: when --retain first met a months-old
// backlog, writes took 40-80 ms (p50) instead of 1 ms for as long as the
// sweep ran.
func TestWriter_SweepBatchRunsAlone(t *testing.T) {
	db := openQuiet(t, filepath.Join(t.TempDir(), "w.db"), Options{})
	defer db.Close()
	ctx := context.Background()
	queued := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); len(db.ops) < n; {
			if time.Now().After(deadline) {
				t.Fatalf("%d operations queued, want %d", len(db.ops), n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	// Hold the writer, so that the client's write and the sweep batch
	// queue behind it in that order.
	holding, release := make(chan struct{}), make(chan struct{})
	go db.write(ctx, func(*Tx) error { close(holding); <-release; return nil })
	<-holding
	clientDone := make(chan error, 1)
	go func() {
		// As quick as an agent's heartbeat: it would share a transaction
		// begun less than absorbFor ago.
		clientDone <- db.write(ctx, func(t *Tx) error {
			_, err := t.exec(`UPDATE queues SET paused = 1 WHERE resource = 'r'`)
			return err
		})
	}()
	queued(1)
	sweeping, sweepRelease := make(chan struct{}), make(chan struct{})
	sweepDone := make(chan error, 1)
	go func() {
		_, err := db.inBatches(ctx, func(*Tx) (int, bool, error) {
			close(sweeping)
			<-sweepRelease
			return 0, false, nil
		})
		sweepDone <- err
	}()
	queued(2)
	close(release)
	<-sweeping
	select {
	case err := <-clientDone:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		close(sweepRelease)
		<-clientDone
		t.Fatal("the client's write waited for the sweep batch queued after it")
	}
	close(sweepRelease)
	if err := <-sweepDone; err != nil {
		t.Fatal(err)
	}
}
