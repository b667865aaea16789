package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"maragu.dev/goqite"
)

// goqiteSchema is the SQLite schema goqite v0.4.0 documents in its README
// (schema_sqlite.sql); the library does not create its table itself.
const goqiteSchema = `
create table goqite (
  id text primary key default ('m_' || lower(hex(randomblob(16)))),
  created text not null default (strftime('%Y-%m-%dT%H:%M:%fZ')),
  updated text not null default (strftime('%Y-%m-%dT%H:%M:%fZ')),
  queue text not null,
  body blob not null,
  timeout text not null default (strftime('%Y-%m-%dT%H:%M:%fZ')),
  received integer not null default 0,
  priority integer not null default 0
) strict;

create trigger goqite_updated_timestamp after update on goqite begin
  update goqite set updated = strftime('%Y-%m-%dT%H:%M:%fZ') where id = old.id;
end;

create index goqite_queue_priority_created_idx on goqite (queue, priority desc, created);
`

// runGoqite measures goqite on db with its documented queue API: producers
// Send one message per job; cfg.Workers goroutines per queue loop on
// ReceiveAndWait and Delete. A job counts as completed once Delete returned.
func runGoqite(ctx context.Context, cfg Config, db *sql.DB, t *tally) (time.Duration, error) {
	if _, err := db.ExecContext(ctx, goqiteSchema); err != nil {
		return 0, fmt.Errorf("schema: %w", err)
	}
	queues := make([]*goqite.Queue, cfg.Queues)
	for q := range queues {
		queues[q] = goqite.New(goqite.NewOpts{DB: db, Name: queueName(q)})
	}

	workCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var werr firstError
	defer func() { stop(); wg.Wait() }()
	for _, q := range queues {
		for range cfg.Workers {
			wg.Go(func() { werr.set(goqiteWork(workCtx, q, cfg.GoqitePoll, t)) })
		}
	}

	insert := func(ctx context.Context, seqs []int) error {
		for _, seq := range seqs {
			m := goqite.Message{Body: strconv.AppendInt(nil, int64(seq), 10)}
			if err := queues[queueOf(cfg, seq)].Send(ctx, m); err != nil {
				return err
			}
		}
		return nil
	}
	start, err := produce(ctx, cfg, insert)
	if err != nil {
		return 0, err
	}
	// A worker error ends the wait at once rather than at the timeout.
	waitCtx, cancelWait := context.WithCancel(ctx)
	go func() { wg.Wait(); cancelWait() }()
	err = t.wait(waitCtx, cfg.Timeout)
	cancelWait()
	elapsed := time.Since(start)
	stop()
	wg.Wait()
	if werr.err != nil {
		return elapsed, werr.err
	}
	if err != nil {
		return elapsed, err
	}

	var left int
	if err := db.QueryRowContext(ctx, `select count(*) from goqite`).Scan(&left); err != nil {
		return elapsed, err
	}
	if left != 0 {
		return elapsed, fmt.Errorf("goqite table still holds %d messages", left)
	}
	return elapsed, nil
}

// goqiteWork takes messages from q until ctx is done, deleting each and
// then counting it in the tally.
func goqiteWork(ctx context.Context, q *goqite.Queue, poll time.Duration, t *tally) error {
	for {
		m, err := q.ReceiveAndWait(ctx, poll)
		if errors.Is(err, context.Canceled) && ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("receive: %w", err)
		}
		seq, err := strconv.Atoi(string(m.Body))
		if err != nil {
			return fmt.Errorf("message %s: %w", m.ID, err)
		}
		// Delete even when ctx is being cancelled: the message was received.
		if err := q.Delete(context.WithoutCancel(ctx), m.ID); err != nil {
			return fmt.Errorf("delete: %w", err)
		}
		if err := t.mark(seq); err != nil {
			return err
		}
	}
}
