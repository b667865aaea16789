package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // registers the pure Go "sqlite" database/sql driver
)

// Config is the shape of one run: who produces what, and who works it.
type Config struct {
	Jobs      int    // total jobs N
	Producers int    // producer goroutines P
	Queues    int    // queues R, named q0..q{R-1} (see queueOf)
	Workers   int    // workers W per queue
	Batch     int    // jobs per package K
	Sync      string // SQLite synchronous setting: "normal" or "full"
	Dir       string // parent of the run's temp dir; "" is os.TempDir()

	// PerJob makes River insert one job per Insert call instead of one
	// InsertMany call per package.
	PerJob bool
	// RiverFetchCooldown is River's Config.FetchCooldown; 0 keeps River's
	// default (100ms).
	RiverFetchCooldown time.Duration
	// GoqitePoll is how often an idle goqite worker polls its queue.
	GoqitePoll time.Duration
	// Timeout bounds the wait for the last job; jobs not done by then are lost.
	Timeout time.Duration
	// Progress, if set, is called about once a second with the jobs done.
	Progress func(done int)
}

// Result is the outcome of one run, as printed by -json.
type Result struct {
	Peer       string  `json:"peer"`
	Sync       string  `json:"sync"`
	PerJob     bool    `json:"per_job,omitempty"`
	Jobs       int     `json:"jobs"`
	Seconds    float64 `json:"seconds"`
	JobsPerSec float64 `json:"jobs_per_sec"`
	Duplicates int     `json:"duplicates"`
	Lost       int     `json:"lost"`
	Error      string  `json:"error,omitempty"`
}

// Failed tells whether the run lost or duplicated a job or hit an error.
func (r Result) Failed() bool { return r.Duplicates > 0 || r.Lost > 0 || r.Error != "" }

// peer runs one measured run on a fresh database. It must start its workers,
// call produce (which starts the clock) and return once the tally is complete
// or ctx is done, and leave the database state checked: an error for any job
// the library itself does not hold as completed.
type peer func(ctx context.Context, cfg Config, db *sql.DB, t *tally) (time.Duration, error)

// peers are the libraries measured, by the name -peers takes.
var peers = map[string]peer{
	"river":  runRiver,
	"goqite": runGoqite,
}

// Run measures peer name with cfg on a fresh SQLite file in a new temp dir,
// removed afterwards.
func Run(ctx context.Context, name string, cfg Config) Result {
	res := Result{Peer: name, Sync: cfg.Sync, Jobs: cfg.Jobs, PerJob: cfg.PerJob && name == "river"}
	run, ok := peers[name]
	if !ok {
		res.Error = "unknown peer"
		return res
	}
	dir, err := os.MkdirTemp(cfg.Dir, "peers-"+name+"-")
	if err != nil {
		res.Error = err.Error()
		return res
	}
	defer os.RemoveAll(dir)

	db, err := openDB(ctx, filepath.Join(dir, name+".sqlite3"), cfg.Sync)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	defer db.Close()

	t := newTally(cfg.Jobs)
	stopProgress := t.report(cfg.Progress)
	elapsed, err := run(ctx, cfg, db, t)
	stopProgress()
	if err != nil {
		res.Error = err.Error()
	}
	res.Duplicates, res.Lost = t.check()
	res.Seconds = elapsed.Seconds()
	if elapsed > 0 {
		res.JobsPerSec = float64(cfg.Jobs-res.Lost) / elapsed.Seconds()
	}
	return res
}

// openDB opens path in WAL mode with the given synchronous setting, one
// connection (what River's and goqite's SQLite docs both advise), and checks
// that SQLite took the settings.
func openDB(ctx context.Context, path, syncMode string) (*sql.DB, error) {
	want := map[string]int{"normal": 1, "full": 2}[syncMode]
	if want == 0 {
		return nil, fmt.Errorf("sync %q: want normal or full", syncMode)
	}
	// modernc.org/sqlite runs each _pragma on every new connection, in order.
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(" +
		strings.ToUpper(syncMode) + ")&_pragma=busy_timeout(10000)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	var mode string
	var syn int
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		db.Close()
		return nil, err
	}
	if err := db.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&syn); err != nil {
		db.Close()
		return nil, err
	}
	if mode != "wal" || syn != want {
		db.Close()
		return nil, fmt.Errorf("database has journal_mode=%s synchronous=%d, want wal and %d", mode, syn, want)
	}
	return db, nil
}

// produce runs cfg.Producers producers that take packages of cfg.Batch job
// numbers in turn from 0..cfg.Jobs-1 and hand each package to insert. It
// returns the time it started, which is when the clock starts.
func produce(ctx context.Context, cfg Config, insert func(ctx context.Context, seqs []int) error) (time.Time, error) {
	var next atomic.Int64 // next package
	packages := (cfg.Jobs + cfg.Batch - 1) / cfg.Batch
	var wg sync.WaitGroup
	errs := make([]error, cfg.Producers)
	start := time.Now()
	for p := range cfg.Producers {
		wg.Go(func() {
			seqs := make([]int, 0, cfg.Batch)
			for {
				pkg := int(next.Add(1) - 1)
				if pkg >= packages || ctx.Err() != nil {
					return
				}
				seqs = seqs[:0]
				for i := pkg * cfg.Batch; i < min((pkg+1)*cfg.Batch, cfg.Jobs); i++ {
					seqs = append(seqs, i)
				}
				if err := insert(ctx, seqs); err != nil {
					errs[p] = fmt.Errorf("producer %d: %w", p, err)
					return
				}
			}
		})
	}
	wg.Wait()
	return start, errors.Join(errs...)
}

// queueOf is the queue job seq goes to: package p's jobs go round-robin over
// the queues starting at queue p mod R, as in spin-broker's load generator.
func queueOf(cfg Config, seq int) int { return (seq/cfg.Batch + seq%cfg.Batch) % cfg.Queues }

// queueName names queue q.
func queueName(q int) string { return fmt.Sprintf("q%d", q) }

// tally counts, per job, how often a worker completed it.
type tally struct {
	counts []atomic.Int32
	done   atomic.Int64  // jobs completed at least once
	all    chan struct{} // closed when every job completed at least once
}

func newTally(n int) *tally {
	t := &tally{counts: make([]atomic.Int32, n), all: make(chan struct{})}
	if n == 0 {
		close(t.all)
	}
	return t
}

// mark records one completion of job seq; an unknown seq is an error.
func (t *tally) mark(seq int) error {
	if seq < 0 || seq >= len(t.counts) {
		return fmt.Errorf("job %d out of range", seq)
	}
	if t.counts[seq].Add(1) == 1 && t.done.Add(1) == int64(len(t.counts)) {
		close(t.all)
	}
	return nil
}

// wait blocks until every job completed once, ctx is done or timeout passed.
func (t *tally) wait(ctx context.Context, timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-t.all:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return fmt.Errorf("timed out after %s with %d of %d jobs done", timeout, t.done.Load(), len(t.counts))
	}
}

// check counts the extra completions and the jobs never completed.
func (t *tally) check() (duplicates, lost int) {
	for i := range t.counts {
		switch c := int(t.counts[i].Load()); {
		case c == 0:
			lost++
		case c > 1:
			duplicates += c - 1
		}
	}
	return duplicates, lost
}

// report calls progress once a second until the returned stop is called.
func (t *tally) report(progress func(done int)) (stop func()) {
	if progress == nil {
		return func() {}
	}
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case <-tick.C:
				progress(int(t.done.Load()))
			}
		}
	})
	return func() { close(quit); wg.Wait() }
}

// firstError keeps the first error reported by any goroutine.
type firstError struct {
	once sync.Once
	err  error
}

func (f *firstError) set(err error) {
	if err != nil {
		f.once.Do(func() { f.err = err })
	}
}
