package store

import (
	"context"
	"database/sql"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/syncbuf"
)

// TestReadOnlyWhileOpen: when the database refuses writes (SQLite's own
// SQLITE_READONLY, raised here by query_only on the writer's connection),
// writes answer EUNAVAILABLE and a log line says why; reads go on, and
// WriteFailure says writes fail; when the database takes writes again, so
// does the store, and WriteFailure finds out by itself.
func TestReadOnlyWhileOpen(t *testing.T) {
	var logs strings.Builder
	db, err := Open(context.Background(), filepath.Join(t.TempDir(), "ro.db"), Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	p, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	setQueryOnly := func(on bool) {
		v := "0"
		if on {
			v = "1"
		}
		if err := db.maintain(ctx, func(c *sql.Conn) error { _, err := c.ExecContext(ctx, "PRAGMA query_only = "+v); return err }); err != nil {
			t.Fatal(err)
		}
	}
	setQueryOnly(true)
	_, _, err = db.CreatePackage(ctx, spinbroker.NewPackage{}, nil)
	if code := spinbroker.ErrorCode(err); code != spinbroker.EUNAVAILABLE {
		t.Fatalf("a write to a read-only database: %v (%s), want unavailable", err, code)
	}
	if !strings.Contains(logs.String(), "database unavailable") || !strings.Contains(logs.String(), "readonly") {
		t.Fatalf("no log line names the cause:\n%s", logs.String())
	}
	if _, err := db.Package(ctx, p.ID); err != nil {
		t.Fatalf("reads must go on: %v", err)
	}
	// Ping answers (reads work); WriteFailure says writes fail, and why.
	if err := db.Ping(ctx); err != nil {
		t.Fatalf("Ping while only writes fail: %v", err)
	}
	for range 2 {
		if err := db.WriteFailure(ctx); spinbroker.ErrorCode(err) != spinbroker.EUNAVAILABLE || !strings.Contains(err.Error(), "readonly") {
			t.Fatalf("WriteFailure while writes fail: %v", err)
		}
	}
	setQueryOnly(false)
	// Its own write finds the database writable again, with no other write
	// to tell it.
	if err := db.WriteFailure(ctx); err != nil {
		t.Fatalf("WriteFailure once the database took writes again: %v", err)
	}
	if _, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{}, nil); err != nil {
		t.Fatalf("after the database took writes again: %v", err)
	}
}

// TestWriteFailure_WaitsNoLongerThanItsContext: while the last write failed
// and the database's write lock is held elsewhere, WriteFailure reports the
// failure when its context ends (not after the 10s busy timeout), its calls
// share one probe write, and it finds the database writable once the lock
// is let go.
func TestWriteFailure_WaitsNoLongerThanItsContext(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.db")
	db := openQuiet(t, path, Options{})
	defer db.Close()
	ctx := context.Background()
	failed := error(spinbroker.Errorf(spinbroker.EUNAVAILABLE, "disk full"))
	db.writeFailure.Store(&failed) // as a failed write leaves it

	release := holdWriteLock(t, path)
	var probes []*probe
	for range 3 {
		pctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		done := make(chan error, 1)
		go func() { done <- db.WriteFailure(pctx) }()
		select {
		case err := <-done:
			if spinbroker.ErrorCode(err) != spinbroker.EUNAVAILABLE || !strings.Contains(err.Error(), "disk full") {
				t.Fatalf("WriteFailure while writes fail: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("WriteFailure outlived its context")
		}
		cancel()
		db.probeMu.Lock()
		probes = append(probes, db.probe)
		db.probeMu.Unlock()
	}
	if probes[0] == nil || probes[1] != probes[0] || probes[2] != probes[0] {
		t.Fatalf("the calls did not share one probe: %p %p %p", probes[0], probes[1], probes[2])
	}

	release()
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := db.WriteFailure(pctx); err != nil {
		t.Fatalf("WriteFailure once the lock was let go: %v", err)
	}
	if db.writeFailure.Load() != nil {
		t.Fatal("the probe's commit left the failure recorded")
	}
}

// TestWriteFailure_ClearedOnlyByAChange: a commit that changed nothing (a
// sweep with nothing to do, which on a full disk still commits: it writes
// no page) leaves a recorded failure in place; one that changed rows, or
// the probe's, clears it.
func TestWriteFailure_ClearedOnlyByAChange(t *testing.T) {
	db := openQuiet(t, filepath.Join(t.TempDir(), "c.db"), Options{})
	defer db.Close()
	ctx := context.Background()
	failed := error(spinbroker.Errorf(spinbroker.EUNAVAILABLE, "disk full"))
	db.writeFailure.Store(&failed)
	if _, err := db.Sweep(ctx, SweepOptions{}); err != nil {
		t.Fatal(err)
	}
	if db.writeFailure.Load() == nil {
		t.Fatal("a sweep that changed nothing cleared the failure")
	}
	if _, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{}, nil); err != nil {
		t.Fatal(err)
	}
	if db.writeFailure.Load() != nil {
		t.Fatal("a create that committed left the failure recorded")
	}
	db.writeFailure.Store(&failed)
	if err := db.WriteFailure(ctx); err != nil {
		t.Fatalf("the probe on a writable database: %v", err)
	}
	if db.writeFailure.Load() != nil {
		t.Fatal("the probe's commit left the failure recorded")
	}
}

// TestPing_CorruptFile: a database whose pages are garbage (overwritten
// behind the broker's back) fails Ping, as every read of a package or a
// queue fails, rather than answering a "SELECT 1" that reads no page.
func TestPing_CorruptFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.db")
	db, err := Open(context.Background(), path, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	if _, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Commands: []spinbroker.NewCommand{{Resource: "r", Action: "a"}}, Enqueue: true}, nil); err != nil {
		t.Fatal(err)
	}
	// Everything into the main file, so that garbage there is what reads meet.
	if err := db.maintain(ctx, func(c *sql.Conn) error { _, err := c.ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)"); return err }); err != nil {
		t.Fatal(err)
	}
	if err := db.Ping(ctx); err != nil {
		t.Fatalf("Ping of a sound database: %v", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := f.Stat()
	junk := make([]byte, fi.Size()-4096)
	for i := range junk {
		junk[i] = byte(i*7 + 13)
	}
	if _, err := f.WriteAt(junk, 4096); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := db.Queues(ctx); err == nil {
		t.Skip("the reads still answer from a cache; nothing to compare")
	}
	if err := db.Ping(ctx); err == nil {
		t.Fatal("Ping answers while reads of the queues fail")
	}
}

// TestWriteFailure_StuckWriter: a writer that stays in one transaction
// (here, waiting for a lock another process holds) is reported as failing
// writes until it gets through, with no write having failed yet: a disk
// that never answers fails nothing.
func TestWriteFailure_StuckWriter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	db := openQuiet(t, path, Options{stallAfter: 100 * time.Millisecond})
	defer db.Close()
	ctx := context.Background()
	release := holdWriteLock(t, path)
	if err := db.WriteFailure(ctx); err != nil {
		t.Fatalf("WriteFailure before any write: %v", err)
	}
	wrote := make(chan error, 1)
	go func() {
		_, err := db.SetQueue(ctx, "q", spinbroker.QueueSettings{Concurrency: new(2)})
		wrote <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := db.WriteFailure(ctx)
		if err != nil {
			if !strings.Contains(err.Error(), "a write transaction has run for") {
				t.Fatalf("WriteFailure while the writer waits: %v", err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a writer stuck for 5s was not reported")
		}
		time.Sleep(20 * time.Millisecond)
	}
	release()
	if err := <-wrote; err != nil {
		t.Fatalf("the write, once the lock was let go: %v", err)
	}
	if err := db.WriteFailure(ctx); err != nil {
		t.Fatalf("WriteFailure once the write got through: %v", err)
	}
}

// TestWriteStall_Logged: a write stuck past the stall limit (a disk that
// does not answer, another process holding the lock) is logged when it
// begins and when it ends, not only answered to whoever asks /healthz or
// scrapes /metrics: the log of an incident otherwise showed nothing for
// the minutes the broker took no write.
func TestWriteStall_Logged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	var logs syncbuf.Buffer
	db := openQuiet(t, path, Options{stallAfter: 100 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	defer db.Close()
	ctx := context.Background()
	release := holdWriteLock(t, path)
	wrote := make(chan error, 1)
	go func() {
		_, err := db.SetQueue(ctx, "q", spinbroker.QueueSettings{Concurrency: new(2)})
		wrote <- err
	}()
	waitLog := func(want string) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !strings.Contains(logs.String(), want); {
			if time.Now().After(deadline) {
				t.Fatalf("no log line has %q:\n%s", want, logs.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitLog(`level=ERROR msg="write stalled"`)
	release()
	if err := <-wrote; err != nil {
		t.Fatalf("the write, once the lock was let go: %v", err)
	}
	waitLog(`level=INFO msg="stalled write ended"`)
	if n := strings.Count(logs.String(), "write stalled"); n != 1 {
		t.Errorf("%d lines say the write stalled, want 1:\n%s", n, logs.String())
	}
}

// holdWriteLock takes the database's write lock from another connection,
// as another process would, until release (or the test's end).
func holdWriteLock(t *testing.T, path string) (release func()) {
	t.Helper()
	other, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := other.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(context.Background(), "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			conn.ExecContext(context.Background(), "ROLLBACK") //nolint:errcheck
			conn.Close()
			other.Close()
		})
	}
	t.Cleanup(release)
	return release
}

// TestBackup_WithoutHardLinks: on a file system that has no hard links
// (vfat, exFAT, many network and FUSE mounts: link answers EPERM) the
// finished copy is renamed into place instead, whole and alone, and a
// file already at dest is still never replaced.
func TestBackup_WithoutHardLinks(t *testing.T) {
	old := link
	link = func(string, string) error { return &os.LinkError{Op: "link", Err: syscall.EPERM} }
	t.Cleanup(func() { link = old })
	dir := t.TempDir()
	src := filepath.Join(dir, "src.db")
	db, err := Open(context.Background(), src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	p, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Commands: []spinbroker.NewCommand{{Resource: "r", Action: "a"}}, Enqueue: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	if err := os.Mkdir(out, 0o700); err != nil {
		t.Fatal(err)
	}
	to := filepath.Join(out, "b.db")
	if err := Backup(ctx, src, to); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(out); len(ents) != 1 || ents[0].Name() != "b.db" {
		t.Fatalf("the backup left %v, want b.db alone", ents)
	}
	copied, err := Open(ctx, to, Options{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := copied.Package(ctx, p.ID)
	copied.Close()
	if err != nil || got.Total != 1 {
		t.Fatalf("the package in the backup: %+v, %v", got, err)
	}
	// A file that appears at dest while the copy is made (another backup
	// to the same name) is not replaced by the rename.
	theirs := filepath.Join(out, "c.db")
	link = func(string, string) error {
		if err := os.WriteFile(theirs, []byte("someone else's"), 0o600); err != nil {
			t.Error(err)
		}
		return &os.LinkError{Op: "link", Err: syscall.EPERM}
	}
	if err := Backup(ctx, src, theirs); err == nil || !strings.Contains(err.Error(), "already exists, and a backup never replaces a file") {
		t.Fatalf("a backup to a name taken meanwhile: %v", err)
	}
	if b, _ := os.ReadFile(theirs); string(b) != "someone else's" {
		t.Fatal("a backup replaced the file that appeared at its destination")
	}
	if ents, _ := os.ReadDir(out); len(ents) != 2 {
		t.Fatalf("a refused backup left %v, want b.db and c.db", ents)
	}
}

// TestRows_ErrorPartWayIsAnError: a statement that fails on its second row
// (SQLite's integer overflow, raised while it steps) ends the read with an
// error, not with the rows before it passed off as the whole list:
// database/sql's Rows.Close does not report why Next stopped.
func TestRows_ErrorPartWayIsAnError(t *testing.T) {
	db, err := Open(context.Background(), filepath.Join(t.TempDir(), "rows.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var got []string
	err = db.snapshot(context.Background(), func(q querier) (err error) {
		got, err = queryStrings(q, `SELECT CASE WHEN value = 2 THEN abs(-9223372036854775808) ELSE value END
			FROM json_each('[1, 2, 3]')`)
		return err
	})
	if err == nil {
		t.Fatalf("a read whose second row fails answered %q and no error", got)
	}
}

// TestWrite_AbandonedSkipsTheLock: a write whose request was abandoned
// before the writer came to it (its client gone, or cut off by a stop) is
// answered so without a transaction: while another process holds the
// database's lock, each BEGIN waits the busy timeout (10s), and a stop
// that cut off the requests queued behind a stalled write then waited
// that long for each of them in turn before it could close the database
// (five cut off, 50s, past --shutdown-timeout and the unit's
// TimeoutStopSec, so the broker was killed instead of stopping).
func TestWrite_AbandonedSkipsTheLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	db := openQuiet(t, path, Options{})
	defer db.Close()
	holdWriteLock(t, path)
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	errs := make(chan error, 3)
	for range cap(errs) {
		go func() {
			_, err := db.SetQueue(gone, "q", spinbroker.QueueSettings{Concurrency: new(2)})
			errs <- err
		}()
	}
	for range cap(errs) {
		err := <-errs
		if err == nil || !strings.Contains(err.Error(), "abandoned before it ran") {
			t.Fatalf("an abandoned write, with the lock held by another: %v; want it answered as abandoned, without waiting for the lock", err)
		}
	}
}
