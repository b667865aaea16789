package main

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"
)

// riverArgs is the job River inserts: only its number.
type riverArgs struct {
	Seq int `json:"seq"`
}

// Kind names the job kind for River.
func (riverArgs) Kind() string { return "bench" }

// riverWorker counts each job it is given in the tally.
type riverWorker struct {
	river.WorkerDefaults[riverArgs]
	tally *tally
}

// Work records the job as done.
func (w *riverWorker) Work(_ context.Context, job *river.Job[riverArgs]) error {
	return w.tally.mark(job.Args.Seq)
}

// runRiver measures River with its SQLite driver on db: a client with one
// queue per configured queue and cfg.Workers workers each (MaxWorkers). A job
// counts as completed when River reports it completed, which is after its
// completer has written it, so the clock stops at the last such event.
func runRiver(ctx context.Context, cfg Config, db *sql.DB, t *tally) (time.Duration, error) {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	driver := riversqlite.New(db)
	migrator, err := rivermigrate.New(driver, &rivermigrate.Config{Logger: logger})
	if err != nil {
		return 0, err
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return 0, fmt.Errorf("migrate: %w", err)
	}

	workers := river.NewWorkers()
	river.AddWorker(workers, &riverWorker{tally: t})
	queues := make(map[string]river.QueueConfig, cfg.Queues)
	for q := range cfg.Queues {
		queues[queueName(q)] = river.QueueConfig{MaxWorkers: cfg.Workers}
	}
	client, err := river.NewClient(driver, &river.Config{
		FetchCooldown: cfg.RiverFetchCooldown,
		Logger:        logger,
		Queues:        queues,
		Workers:       workers,
	})
	if err != nil {
		return 0, err
	}
	// Room for every event so that none is dropped (River drops events a
	// full subscription channel cannot take).
	events, unsubscribe := client.SubscribeConfig(&river.SubscribeConfig{
		ChanSize: cfg.Jobs + 1000,
		Kinds:    []river.EventKind{river.EventKindJobCompleted, river.EventKindJobFailed},
	})
	defer unsubscribe()
	if err := client.Start(ctx); err != nil {
		return 0, err
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_ = client.Stop(stopCtx)
	}()

	// Count completion events while the producers run.
	completed := make(chan time.Time, 1) // when the last job completed
	failed := make(chan *river.Event, 1)
	go func() {
		n := 0
		for ev := range events {
			if ev.Kind != river.EventKindJobCompleted {
				select {
				case failed <- ev:
				default:
				}
				continue
			}
			if n++; n == cfg.Jobs {
				completed <- time.Now()
				return
			}
		}
	}()

	insert := func(ctx context.Context, seqs []int) error {
		if cfg.PerJob {
			for _, seq := range seqs {
				if _, err := client.Insert(ctx, riverArgs{Seq: seq}, &river.InsertOpts{Queue: queueName(queueOf(cfg, seq))}); err != nil {
					return err
				}
			}
			return nil
		}
		params := make([]river.InsertManyParams, len(seqs))
		for i, seq := range seqs {
			params[i] = river.InsertManyParams{Args: riverArgs{Seq: seq}, InsertOpts: &river.InsertOpts{Queue: queueName(queueOf(cfg, seq))}}
		}
		_, err := client.InsertMany(ctx, params)
		return err
	}
	start, err := produce(ctx, cfg, insert)
	if err != nil {
		return 0, err
	}
	if err := t.wait(ctx, cfg.Timeout); err != nil {
		return time.Since(start), err
	}
	// Every job was worked; now wait for River to record the last completion.
	timer := time.NewTimer(cfg.Timeout)
	defer timer.Stop()
	var end time.Time
	select {
	case end = <-completed:
	case ev := <-failed:
		return time.Since(start), fmt.Errorf("job %d failed: %v", ev.Job.ID, ev.Job.Errors)
	case <-timer.C:
		return time.Since(start), fmt.Errorf("timed out waiting for River to record %d completions", cfg.Jobs)
	case <-ctx.Done():
		return time.Since(start), ctx.Err()
	}
	elapsed := end.Sub(start)

	var total, notDone int
	err = db.QueryRowContext(ctx, `SELECT count(*), count(*) FILTER (WHERE state <> 'completed') FROM river_job`).Scan(&total, &notDone)
	if err != nil {
		return elapsed, err
	}
	if total != cfg.Jobs || notDone != 0 {
		return elapsed, fmt.Errorf("river_job holds %d jobs, %d of them not completed; want %d, all completed", total, notDone, cfg.Jobs)
	}
	return elapsed, nil
}
