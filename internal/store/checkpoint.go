package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
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
	// walQuiet is how often the checkpointer looks at the WAL file while
	// it is not empty. When no frame was written to it between two looks,
	// it truncates the file to nothing: 10 to 20 s after the last write.
	// Under load the WAL grows to walAutocheckpoint pages and SQLite starts
	// it over without shrinking it, so a broker that had one busy hour
	// would otherwise keep a 32 MiB -wal file beside its database for good.
	walQuiet = 10 * time.Second
	// truncateBusy is how long a truncating checkpoint waits for readers
	// to leave the WAL. It holds the writer's lock meanwhile, so it waits
	// little, and tries again after the next quiet spell.
	truncateBusy = 100 * time.Millisecond
)

type checkpointer struct {
	db    *DB
	conn  *sql.DB // a connection of its own: the writer's is busy
	quiet time.Duration
	wake  chan struct{}
	stop  chan struct{}
	done  chan struct{}
}

// newCheckpointer starts a checkpointer; quiet is walQuiet but in tests.
func newCheckpointer(db *DB, conn *sql.DB, quiet time.Duration) *checkpointer {
	c := &checkpointer{db: db, conn: conn, quiet: quiet, wake: make(chan struct{}, 1),
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
	// While the WAL file is not empty, the checkpointer looks at it every
	// quiet spell; armed says it does.
	quiet := time.NewTimer(c.quiet)
	defer quiet.Stop()
	armed, frames := true, -1
	for {
		select {
		case <-c.stop:
			return
		case <-quiet.C:
			if armed = c.quietSpell(&frames); armed {
				quiet.Reset(c.quiet)
			}
			continue
		case <-c.wake:
		}
		if !armed {
			armed, frames = true, -1
			quiet.Reset(c.quiet)
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

// quietSpell truncates the WAL file if no frame was written to it since the
// last spell (frames is how many it held then), and reports whether there
// is still a file to watch. Commits are no sign of writes here: an agent's
// poll that finds nothing, or a sweep with nothing to do, commits a
// transaction that writes no frame.
func (c *checkpointer) quietSpell(frames *int) bool {
	if fi, err := os.Stat(c.db.path + "-wal"); err != nil || fi.Size() == 0 {
		return false
	}
	var busy, n, copied int
	if err := c.conn.QueryRowContext(context.Background(), `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &n, &copied); err != nil {
		c.db.log.Warn("checkpoint failed", "err", err)
		return true
	}
	if n != *frames {
		*frames = n
		return true
	}
	return !c.truncate()
}

// truncate checkpoints the whole WAL and truncates its file to nothing,
// and reports whether it did. It does not while a reader is still on the
// WAL, or a write runs: it then waits no longer than truncateBusy.
func (c *checkpointer) truncate() bool {
	ctx := context.Background()
	conn, err := c.conn.Conn(ctx)
	if err != nil {
		c.db.log.Warn("checkpoint failed", "err", err)
		return false
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, fmt.Sprintf("PRAGMA busy_timeout = %d", truncateBusy.Milliseconds())); err != nil {
		c.db.log.Warn("checkpoint failed", "err", err)
		return false
	}
	defer conn.ExecContext(ctx, fmt.Sprintf("PRAGMA busy_timeout = %d", busyTimeout.Milliseconds())) //nolint:errcheck // the connection's own
	var busy, pages, copied int
	if err := conn.QueryRowContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &pages, &copied); err != nil {
		if se := (*sqlite.Error)(nil); !errors.As(err, &se) || se.Code()&0xff != sqlite3.SQLITE_BUSY {
			c.db.log.Warn("checkpoint failed", "err", err)
		}
		return false
	}
	if busy != 0 {
		return false
	}
	c.db.checkpoints.Add(1)
	return true
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
