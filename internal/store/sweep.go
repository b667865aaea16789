package store

import (
	"context"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
)

// SweepOptions say what a sweep deletes.
type SweepOptions struct {
	// StagingTTL is how long a package may stay in staging (default 24h;
	// negative keeps them forever).
	StagingTTL time.Duration
	// Retain is how long a finished package is kept (0 keeps them forever).
	Retain time.Duration
}

// SweepResult counts what a sweep did.
type SweepResult struct {
	LeasesSettled   int // expired leases requeued or failed
	StagingDeleted  int // packages deleted for staying too long in staging
	RetainedDeleted int // finished packages deleted past retention
	KeysDeleted     int // Idempotency-Key records past 24h
}

// sweepBatch bounds each sweep transaction, so that a large backlog of
// expired packages never holds the writer for long.
const sweepBatch = 200

// Sweep settles expired leases and delayed commands whose time has come in
// every queue, and deletes expired staging packages, finished packages past
// retention and old Idempotency-Key records, in short transactions.
func (db *DB) Sweep(ctx context.Context, opts SweepOptions) (SweepResult, error) {
	var res SweepResult
	if opts.StagingTTL == 0 {
		opts.StagingTTL = spinbroker.DefaultStagingTTL
	}
	err := db.write(ctx, func(t *Tx) error {
		n, err := t.settleExpired("")
		if err != nil {
			return err
		}
		res.LeasesSettled = n
		return t.promoteDelayed("")
	})
	if err != nil {
		return res, err
	}
	if opts.StagingTTL > 0 {
		n, err := db.sweepPackages(ctx, qSweepStaging, opts.StagingTTL)
		res.StagingDeleted = n
		if err != nil {
			return res, err
		}
	}
	if opts.Retain > 0 {
		n, err := db.sweepPackages(ctx, qSweepFinished, opts.Retain)
		res.RetainedDeleted = n
		if err != nil {
			return res, err
		}
	}
	for {
		var n int64
		err := db.write(ctx, func(t *Tx) error {
			r, err := t.exec(`DELETE FROM idempotency WHERE rowid IN
				(SELECT rowid FROM idempotency WHERE created_at < ? LIMIT ?)`,
				staleBefore(t.now, spinbroker.IdempotencyTTL), sweepBatch*5)
			if err != nil {
				return err
			}
			n, _ = r.RowsAffected()
			_, err = t.exec(`DELETE FROM completions WHERE minute < ?`, t.now.Add(-7*24*time.Hour).Unix()/60)
			return err
		})
		res.KeysDeleted += int(n)
		if err != nil || n < sweepBatch*5 {
			return res, err
		}
	}
}

// The packages the sweeper deletes, through packages_state_created: left
// in staging since before ?1, and finished before ?1.
const (
	qSweepStaging = `SELECT id FROM packages
		WHERE state = 'staging' AND created_at < ?1 LIMIT ?2`
	qSweepFinished = `SELECT id FROM packages
		WHERE state IN ('succeeded', 'failed', 'cancelled') AND created_at < ?1
		  AND coalesce(cancelled_at, last_finished_at) < ?1
		  AND n_staged + n_blocked + n_ready + n_leased = 0
		LIMIT ?2`
)

// sweepPackages deletes, a batch per transaction, the packages that query
// selects given a cutoff of now minus age.
func (db *DB) sweepPackages(ctx context.Context, query string, age time.Duration) (int, error) {
	total := 0
	for {
		var n int
		err := db.write(ctx, func(t *Tx) error {
			ids, err := queryStrings(t, query, staleBefore(t.now, age), sweepBatch)
			if err != nil {
				return err
			}
			for _, id := range ids {
				if err := t.deletePackage(id); err != nil {
					return err
				}
			}
			n = len(ids)
			return nil
		})
		total += n
		if err != nil || n < sweepBatch {
			return total, err
		}
	}
}
