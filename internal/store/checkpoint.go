package store

import (
	"context"
	"database/sql"
	"time"
)

// SQLite copies the WAL back into the database file (a checkpoint) inside
// the COMMIT that takes the WAL past 1,000 pages. That commit, and every
// write queued behind it, then waits the few milliseconds the copy takes:
// measured, one commit in a hundred took 3.5 ms instead of 0.1 ms, and that
// was the p99 of every write at low load.
//
// The checkpointer does the copy on a connection of its own while the
// writer is idle, so that the WAL rarely reaches that size. Under a steady
// load the writer is never idle for long and SQLite's own checkpoints go on
// as before; a PASSIVE checkpoint never blocks the writer, and the writer
// never waits for one.
const (
	// checkpointAfter is how many commits since the last checkpoint make
	// one worth running (about ten pages each: well under SQLite's 1,000).
	checkpointAfter = 32
	// checkpointIdle is how long the writer must have committed nothing
	// before the checkpointer runs.
	checkpointIdle = time.Millisecond
)

type checkpointer struct {
	db   *DB
	conn *sql.DB // a connection of its own: the writer's is busy
	poke chan struct{}
	stop chan struct{}
	done chan struct{}
}

func newCheckpointer(db *DB, conn *sql.DB) *checkpointer {
	c := &checkpointer{db: db, conn: conn, poke: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{})}
	go c.run()
	return c
}

// idle tells the checkpointer that the writer has nothing queued. It never
// blocks.
func (c *checkpointer) idle() {
	select {
	case c.poke <- struct{}{}:
	default:
	}
}

func (c *checkpointer) run() {
	defer close(c.done)
	var last int64 // commits at the last checkpoint
	timer := time.NewTimer(checkpointIdle)
	timer.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-c.poke:
		}
		seen := c.db.batches.Load()
		if seen-last < checkpointAfter {
			continue
		}
		timer.Reset(checkpointIdle)
		select {
		case <-c.stop:
			return
		case <-timer.C:
		}
		if c.db.batches.Load() != seen {
			continue // busy again: the writer pokes when it next drains
		}
		last = seen // also after a failure: try again 32 commits later, not at once
		var busy, pages, copied int
		err := c.conn.QueryRowContext(context.Background(), `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &pages, &copied)
		if err != nil {
			c.db.log.Warn("checkpoint failed", "err", err)
			continue
		}
		c.db.checkpoints.Add(1)
	}
}

// close stops the checkpointer and closes its connection.
func (c *checkpointer) close() error {
	close(c.stop)
	<-c.done
	return c.conn.Close()
}
