package store

import (
	"context"
	"database/sql"
	"time"
)

// SQLite copies the WAL back into the database file (a checkpoint) inside
// the COMMIT that takes the WAL past wal_autocheckpoint pages. That commit,
// and every write queued behind it, then waits for the copy and its fsync:
// measured, one commit in a hundred took 3.5 ms instead of 0.1 ms, and that
// was the p99 of every write at low load.
//
// The checkpointer does the copy on a connection of its own, beside the
// writer: a PASSIVE checkpoint never blocks the writer, and the writer
// never waits for one. It runs once 32 commits have gone by and the writer
// has been idle for 1 ms, or, under a load that never lets the writer idle,
// once 128 have. The writer's own checkpoint (walAutocheckpoint in Open)
// is a backstop: by the time the WAL reaches it, the checkpointer has copied
// nearly all of it, and that commit only finishes the copy and lets the
// next one start the WAL over. Measured side by side (BENCHMARKS.md):
// seed +9%, per-command +5%, claim ±0, at the same CPU per command.
const (
	// checkpointAfter is how many commits since the last checkpoint make
	// one worth running while the writer is idle (about ten pages each).
	checkpointAfter = 32
	// checkpointIdle is how long the writer must have committed nothing
	// before the checkpointer runs.
	checkpointIdle = time.Millisecond
	// checkpointBusyAfter is how many commits make a checkpoint due even
	// while the writer is busy.
	checkpointBusyAfter = 128
	// walAutocheckpoint is the WAL size, in pages (8,000 of 4 KiB: 32 MiB),
	// at which the writer's commit checkpoints itself. At SQLite's 1,000 it
	// did so, fsync and all, every hundred commits under load.
	walAutocheckpoint = 8000
)

type checkpointer struct {
	db   *DB
	conn *sql.DB // a connection of its own: the writer's is busy
	wake chan struct{}
	stop chan struct{}
	done chan struct{}
}

func newCheckpointer(db *DB, conn *sql.DB) *checkpointer {
	c := &checkpointer{db: db, conn: conn, wake: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{})}
	go c.run()
	return c
}

// poke tells the checkpointer that the writer has nothing queued, or that
// commits have gone by. It never blocks.
func (c *checkpointer) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *checkpointer) run() {
	defer close(c.done)
	var last int64 // commits at the last checkpoint
	timer := time.NewTimer(checkpointIdle)
	timer.Stop()
	// idle waits checkpointIdle and reports whether the writer committed
	// nothing meanwhile; false too when the checkpointer is stopped.
	idle := func(seen int64) bool {
		timer.Reset(checkpointIdle)
		select {
		case <-c.stop:
			return false
		case <-timer.C:
		}
		return c.db.batches.Load() == seen // else the writer pokes when it next drains
	}
	for {
		select {
		case <-c.stop:
			return
		case <-c.wake:
		}
		seen := c.db.batches.Load()
		if !checkpointDue(seen-last, func() bool { return idle(seen) }) {
			continue
		}
		last = seen // also after a failure: try again later, not at once
		var busy, pages, copied int
		err := c.conn.QueryRowContext(context.Background(), `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &pages, &copied)
		if err != nil {
			c.db.log.Warn("checkpoint failed", "err", err)
			continue
		}
		c.db.checkpoints.Add(1)
	}
}

// checkpointDue says whether a checkpoint is due after since commits:
// after checkpointBusyAfter whatever the writer does, after checkpointAfter
// if it is idle (asked only then: idle waits).
func checkpointDue(since int64, idle func() bool) bool {
	return since >= checkpointBusyAfter || since >= checkpointAfter && idle()
}

// close stops the checkpointer and closes its connection.
func (c *checkpointer) close() error {
	close(c.stop)
	<-c.done
	return c.conn.Close()
}
