package store

import (
	"context"
	"database/sql"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"modernc.org/sqlite"

	spinbroker "github.com/spin-broker/spinbroker"
)

// TestSweepStalls is a diagnostic, not a test: it measures how long
// ordinary writes (a create, a next, a complete, one after the other) take
// while the sweeper deletes a large backlog of finished packages past their
// retention, and what the WAL does meanwhile. It runs only with
// SPINBROKER_SWEEP_STALLS set to the number of finished commands to load
// (packages of 10), e.g. 300000. SPINBROKER_SWEEP_PACE is a pause between
// two cycles of the ordinary writes (e.g. 5ms, a light load; none by
// default: as many as the writer takes); SPINBROKER_SWEEP_AUTOCHECKPOINT
// sets the writer's wal_autocheckpoint for the run (0 turns it off: the
// control).
//
//	SPINBROKER_SWEEP_STALLS=300000 SPINBROKER_SWEEP_PACE=5ms go test -run TestSweepStalls -v ./internal/store
func TestSweepStalls(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("SPINBROKER_SWEEP_STALLS"))
	if n <= 0 {
		t.Skip("a diagnostic: set SPINBROKER_SWEEP_STALLS to the number of finished commands to sweep")
	}
	var pace time.Duration
	if v := os.Getenv("SPINBROKER_SWEEP_PACE"); v != "" {
		var err error
		if pace, err = time.ParseDuration(v); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sweep.db")
	db := openQuiet(t, path, Options{})
	defer db.Close()
	loadFinished(t, db, n, 10)
	cacheWrite := func() int {
		t.Helper()
		var cur int
		err := db.maintain(ctx, func(c *sql.Conn) error {
			return c.Raw(func(dc any) error {
				var err error
				cur, _, err = dc.(sqlite.DBStatus).Status(sqlite.DBStatusCacheWrite, false)
				return err
			})
		})
		if err != nil {
			t.Fatal(err)
		}
		return cur
	}
	if err := db.maintain(ctx, func(c *sql.Conn) error {
		if v := os.Getenv("SPINBROKER_SWEEP_AUTOCHECKPOINT"); v != "" {
			if _, err := c.ExecContext(ctx, "PRAGMA wal_autocheckpoint = "+v); err != nil {
				return err
			}
		}
		_, err := c.ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)")
		return err
	}); err != nil {
		t.Fatal(err)
	}

	// The WAL's state, as the -shm file shows it: the frames in the WAL
	// (mxFrame, the wal-index header's) and those copied into the database
	// (nBackfill, the checkpoint info's), a sample every millisecond.
	type walSample struct {
		at                  time.Time
		frames, backfilled  uint32
		checkpoints, commit int64
		busySince           int64 // the writer's transaction under way, 0 for none
		waited              time.Duration
	}
	shm, err := os.Open(path + "-shm")
	if err != nil {
		t.Fatal(err)
	}
	defer shm.Close()
	var samples []walSample
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 100)
		var waited time.Duration
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := shm.ReadAt(buf, 0); err == nil {
				samples = append(samples, walSample{time.Now(), binary.LittleEndian.Uint32(buf[16:]),
					binary.LittleEndian.Uint32(buf[96:]), db.checkpoints.Load(), db.batches.Load(), db.busySince.Load(), waited})
			}
			if i%5 == 0 {
				waited = runQueueWait()
			}
			time.Sleep(time.Millisecond)
		}
	})

	// The ordinary writes, timed.
	type write struct {
		kind       string
		start, end time.Time
	}
	var writes []write
	wg.Go(func() {
		timed := func(kind string, f func() error) {
			start := time.Now()
			if err := f(); err != nil {
				t.Error(err)
			}
			writes = append(writes, write{kind, start, time.Now()})
		}
		for {
			select {
			case <-stop:
				return
			default:
			}
			timed("create", func() error {
				_, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{{Resource: "live", Action: "a"}}}, nil)
				return err
			})
			var c *spinbroker.Command
			timed("next", func() (err error) {
				c, _, err = db.Next(ctx, "live", 0)
				if err == nil && c == nil {
					err = fmt.Errorf("next delivered nothing")
				}
				return err
			})
			if c == nil {
				return
			}
			timed("complete", func() error {
				ok := true
				_, err := db.Complete(ctx, c.ID, spinbroker.Result{Status: &ok, Lease: c.Lease.Token})
				return err
			})
			select {
			case <-stop:
				return
			case <-time.After(pace):
			}
		}
	})

	time.Sleep(200 * time.Millisecond) // writes alone first, for a baseline
	written0, commits0, checkpoints0 := cacheWrite(), db.batches.Load(), db.checkpoints.Load()
	sweepStart := time.Now()
	res, err := db.Sweep(ctx, SweepOptions{Retain: time.Hour})
	sweepEnd := time.Now()
	written1, commits1, checkpoints1 := cacheWrite(), db.batches.Load(), db.checkpoints.Load()
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if res.RetainedDeleted != n/10 {
		t.Fatalf("swept %d packages, want %d", res.RetainedDeleted, n/10)
	}

	var during []time.Duration
	for _, w := range writes {
		if !w.start.Before(sweepStart) && w.end.Before(sweepEnd) {
			during = append(during, w.end.Sub(w.start))
		}
	}
	slices.Sort(during)
	q := func(p float64) time.Duration {
		if len(during) == 0 {
			return 0
		}
		return during[int(p*float64(len(during)-1))]
	}
	sweepBatches := (n + sweepCommands - 1) / sweepCommands
	t.Logf("sweep of %d commands: %v, %d transactions (%d sweep batches), %d pages written (%.0f a transaction), %d checkpoints beside the writer",
		n, sweepEnd.Sub(sweepStart).Round(time.Millisecond), commits1-commits0, sweepBatches,
		written1-written0, float64(written1-written0)/float64(commits1-commits0), checkpoints1-checkpoints0)
	t.Logf("writes during the sweep: %d, p50 %v, p99 %v, max %v", len(during), q(0.5), q(0.99), q(1))

	// The writer's transactions during the sweep, as the samples saw them
	// (to a millisecond): how long each was under way.
	spans := map[int64]time.Duration{}
	for _, s := range samples {
		if s.busySince != 0 && s.at.After(sweepStart) && s.at.Before(sweepEnd) {
			spans[s.busySince] = max(spans[s.busySince], s.at.Sub(time.Unix(0, s.busySince)))
		}
	}
	var long []time.Duration
	for _, d := range spans {
		if d >= 20*time.Millisecond {
			long = append(long, d.Round(time.Millisecond))
		}
	}
	slices.Sort(long)
	t.Logf("writer transactions seen under way for 20 ms or more: %d, %v", len(long), long)

	// Each stall, with what the WAL did while it lasted.
	for _, w := range writes {
		if d := w.end.Sub(w.start); d < 50*time.Millisecond || w.start.Before(sweepStart) || !w.end.Before(sweepEnd) {
			continue
		}
		var before, peak walSample
		var in []walSample
		for _, s := range samples {
			if s.at.Before(w.start) {
				before = s
			} else if s.at.Before(w.end) {
				in = append(in, s)
				if s.frames > peak.frames {
					peak = s
				}
			}
		}
		if len(in) == 0 {
			t.Logf("stall %s %v at +%v: no sample of the WAL while it lasted (the sampler was not scheduled either)",
				w.kind, w.end.Sub(w.start).Round(time.Millisecond), w.start.Sub(sweepStart).Round(time.Millisecond))
			continue
		}
		// The longest writer transaction seen under way during the stall,
		// and the longest gap between two samples (the process not
		// scheduled at all).
		var longest, gap time.Duration
		prev := before.at
		for _, s := range in {
			if s.busySince != 0 {
				longest = max(longest, s.at.Sub(time.Unix(0, s.busySince)))
			}
			gap = max(gap, s.at.Sub(prev))
			prev = s.at
		}
		var frames, backfilled []uint32
		for _, s := range in {
			if len(frames) == 0 || frames[len(frames)-1] != s.frames || backfilled[len(backfilled)-1] != s.backfilled {
				frames, backfilled = append(frames, s.frames), append(backfilled, s.backfilled)
			}
		}
		t.Logf("stall %s %v at +%v: longest transaction under way %v, longest gap between samples %v, the process's threads runnable but not running for %v; before it the WAL held %d frames, %d copied; checkpoints beside the writer during it %d; commits during it %d; WAL (frames/copied) during it %v / %v",
			w.kind, w.end.Sub(w.start).Round(time.Millisecond), w.start.Sub(sweepStart).Round(time.Millisecond),
			longest.Round(time.Millisecond), gap.Round(time.Millisecond), (lastOf(in).waited - before.waited).Round(time.Millisecond),
			before.frames, before.backfilled, lastOf(in).checkpoints-before.checkpoints, lastOf(in).commit-before.commit,
			frames, backfilled)
	}
	// Each time the WAL starts over: how far it had got, and how much of it
	// the checkpointer had copied at the last sample before; the rest the
	// writer's own checkpoint copied, inside a commit (unless a checkpoint
	// beside the writer ended between that sample and the restart).
	// The transaction under way at the last sample before the restart is
	// the one whose commit checkpointed (or one just before it).
	var last walSample
	restarts, byWriter, copied := 0, 0, 0
	for _, s := range samples {
		if s.at.After(sweepStart) && s.at.Before(sweepEnd) && s.frames < last.frames {
			restarts++
			if last.frames >= walAutocheckpoint && last.backfilled < last.frames && s.checkpoints == last.checkpoints {
				byWriter++
				copied += int(last.frames - last.backfilled)
			}
			t.Logf("WAL started over at +%v after %d frames, %d of them copied before (checkpoints beside the writer in between: %d); the transaction under way before it ran %v",
				s.at.Sub(sweepStart).Round(time.Millisecond), last.frames, last.backfilled, s.checkpoints-last.checkpoints,
				spans[last.busySince].Round(time.Millisecond))
		}
		last = s
	}
	t.Logf("the WAL started over %d times, %d of them after the writer's own checkpoint copied frames: %d frames in all", restarts, byWriter, copied)
}

// runQueueWait is how long the threads of this process have been runnable
// but not running, in all (/proc/self/task/*/schedstat): the share of a
// stall that is the machine's other load, not this process's work.
func runQueueWait() time.Duration {
	tasks, _ := os.ReadDir("/proc/self/task")
	var sum int64
	for _, task := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + task.Name() + "/schedstat")
		if err != nil {
			continue
		}
		var run, wait int64
		if _, err := fmt.Sscan(string(b), &run, &wait); err == nil {
			sum += wait
		}
	}
	return time.Duration(sum)
}

func lastOf[T any](s []T) T {
	var zero T
	if len(s) == 0 {
		return zero
	}
	return s[len(s)-1]
}

// loadFinished bulk-inserts n succeeded commands in packages of per, all
// created and finished two hours ago, straight through SQL.
func loadFinished(t testing.TB, db *DB, n, per int) {
	t.Helper()
	const chunk = 10000
	for start := 0; start < n; start += chunk {
		count := min(chunk, n-start)
		err := db.write(context.Background(), func(tx *Tx) error {
			then := nanos(tx.now.Add(-2 * time.Hour))
			if _, err := tx.exec(`WITH RECURSIVE p(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM p WHERE i < ?1 + ?2 - 1)
				INSERT INTO packages (id, created_at, enqueued_at, last_finished_at, total, n_succeeded)
				SELECT printf('%08x-0000-4000-8000-000000000000', i), ?3 + i, ?3 + i, ?3 + i, ?4, ?4 FROM p`,
				start/per, count/per, then, per); err != nil {
				return err
			}
			var last int64
			if err := tx.queryRow(`UPDATE counters SET value = value + ? WHERE name = 'seq' RETURNING value`, count).Scan(&last); err != nil {
				return err
			}
			_, err := tx.exec(`WITH RECURSIVE n(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1 + ?2 - 1)
				INSERT INTO commands (id, package_id, pos, resource, action, parameters, state, seq,
					attempts, max_attempts, created_at, enqueued_at, ready_at, started_at, finished_at, output)
				SELECT printf('%08x-%04x-7000-8000-000000000000', i / ?3, i % ?3), printf('%08x-0000-4000-8000-000000000000', i / ?3),
					i % ?3, 'r' || (i % 4), 'work', '{"size":10}', 'succeeded', ?4 + i - ?1,
					1, 3, ?5 + i, ?5 + i, ?5 + i, ?5 + i, ?5 + i, '{"ok":true}'
				FROM n`, start, count, per, last-int64(count)+1, then)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
