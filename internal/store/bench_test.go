package store

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
)

func benchOpen(b *testing.B) *DB {
	b.Helper()
	db := openQuiet(b, filepath.Join(b.TempDir(), "bench.db"), Options{})
	b.Cleanup(func() { db.Close() })
	return db
}

// load bulk-inserts n enqueued commands of resource in the given state, in
// packages of up to 10,000, straight through SQL: a million inserts through
// the API would take minutes and measure nothing this benchmark is about.
// Blocked commands wait on gate, a command that never finishes.
func load(b *testing.B, db *DB, tag int, resource string, n int, state spinbroker.CommandState, gate string) {
	b.Helper()
	const per = 10000
	for start := 0; start < n; start += per {
		count := min(per, n-start)
		err := db.write(context.Background(), func(t *Tx) error {
			now := nanos(t.now)
			pkg := fmt.Sprintf("%08x-%04x-4000-8000-000000000000", tag, start/per)
			if _, err := t.exec(`INSERT INTO packages (id, created_at, enqueued_at) VALUES (?, ?, ?)`, pkg, now, now); err != nil {
				return err
			}
			if _, err := t.exec(`INSERT INTO queues (resource) VALUES (?) ON CONFLICT DO NOTHING`, resource); err != nil {
				return err
			}
			var last int64
			if err := t.queryRow(`UPDATE counters SET value = value + ? WHERE name = 'seq' RETURNING value`, count).Scan(&last); err != nil {
				return err
			}
			pending := 0
			if state == spinbroker.Blocked {
				pending = 1
			}
			if _, err := t.exec(`WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?1 - 1)
				INSERT INTO commands (id, package_id, pos, resource, action, parameters, state, seq, pending_deps,
					max_attempts, created_at, enqueued_at, ready_at)
				SELECT printf('%08x-%04x-4000-8000-%012x', ?2, ?3, i), ?4, i, ?5, 'bench', '{"n":1}', ?6, ?7 + i, ?8,
					3, ?9, ?9, ?9
				FROM n`, count, tag, start/per, pkg, resource, string(state), last-int64(count)+1, pending, now); err != nil {
				return err
			}
			if gate != "" {
				_, err := t.exec(`INSERT INTO command_deps (command_id, depends_on)
					SELECT id, ? FROM commands WHERE package_id = ?`, gate, pkg)
				return err
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNext measures one delivery (next, then complete, since the queue
// is serial) against backlogs of ready commands of growing size, and with
// 100,000 blocked commands at the head of the queue. The cost must not grow
// with either: the ready query reads one partial index.
func BenchmarkNext(b *testing.B) {
	cases := []struct {
		name           string
		ready, blocked int
	}{
		{"ready=1k", 1000, 0},
		{"ready=100k", 100000, 0},
		{"ready=1M", 1000000, 0},
		{"blocked=100k/ready=1k", 1000, 100000},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			db := benchOpen(b)
			ctx := context.Background()
			tag := 1
			if c.blocked > 0 {
				p, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{{Resource: "gate", Action: "never"}}}, nil)
				if err != nil {
					b.Fatal(err)
				}
				load(b, db, tag, "work", c.blocked, spinbroker.Blocked, p.Commands[0].ID)
				tag++
			}
			load(b, db, tag, "work", c.ready, spinbroker.Ready, "")
			tag++
			left := c.ready
			ok := true
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if left <= c.ready/2 {
					// Keep the backlog between half and all of its size.
					b.StopTimer()
					load(b, db, tag, "work", c.ready/2, spinbroker.Ready, "")
					tag++
					left += c.ready / 2
					b.StartTimer()
				}
				cmd, _, err := db.Next(ctx, "work", 0)
				if err != nil || cmd == nil {
					b.Fatalf("next: %v %v", cmd, err)
				}
				if _, err := db.Complete(ctx, cmd.ID, spinbroker.Result{Status: &ok, Lease: cmd.Lease.Token}); err != nil {
					b.Fatal(err)
				}
				left--
			}
		})
	}
}

// BenchmarkCycle measures the whole life of a package of 10 commands:
// create and enqueue it in one call (or, in seed/, the seed's protocol: an
// empty package, each command added, then the enqueue), then next and
// complete each command. It reports commands per second.
func BenchmarkCycle(b *testing.B) {
	for _, bc := range []struct {
		name  string
		sync  string
		seed  bool
		chain bool // each command depends on the one before it
	}{
		{"sync=normal", "normal", false, false},
		{"sync=full", "full", false, false},
		{"seed/sync=normal", "normal", true, false},
		{"chain/sync=normal", "normal", false, true},
	} {
		sync, seed, chain := bc.sync, bc.seed, bc.chain
		b.Run(bc.name, func(b *testing.B) {
			db := openQuiet(b, filepath.Join(b.TempDir(), "bench.db"), Options{Sync: sync})
			defer db.Close()
			ctx := context.Background()
			in := spinbroker.NewPackage{Enqueue: true}
			for i := 0; i < 10; i++ {
				c := spinbroker.NewCommand{Resource: "work", Action: "step", Parameters: []byte(`{"size":10}`)}
				if chain {
					c.Key = fmt.Sprint("step", i)
					if i > 0 {
						c.Dependencies = []string{fmt.Sprint("step", i-1)}
					}
				}
				in.Commands = append(in.Commands, c)
			}
			ok := true
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if seed {
					// The seed's protocol: a package, its commands one call
					// each, then the enqueue.
					p, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{}, nil)
					if err != nil {
						b.Fatal(err)
					}
					for _, c := range in.Commands {
						if _, _, err := db.AddCommand(ctx, p.ID, c, nil); err != nil {
							b.Fatal(err)
						}
					}
					if _, err := db.Enqueue(ctx, p.ID); err != nil {
						b.Fatal(err)
					}
				} else if _, _, err := db.CreatePackage(ctx, in, nil); err != nil {
					b.Fatal(err)
				}
				for j := 0; j < 10; j++ {
					cmd, _, err := db.Next(ctx, "work", 0)
					if err != nil || cmd == nil {
						b.Fatalf("next: %v %v", cmd, err)
					}
					if _, err := db.Complete(ctx, cmd.ID, spinbroker.Result{Status: &ok, Lease: cmd.Lease.Token}); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.N*10)/b.Elapsed().Seconds(), "commands/s")
		})
	}
}

// BenchmarkClaimCycle measures the batched protocol's shape in-process: ten
// packages of ten commands over four resources created one call each, then
// per resource a claim of up to 100 and one batched completion. It reports
// commands per second.
func BenchmarkClaimCycle(b *testing.B) {
	db := openQuiet(b, filepath.Join(b.TempDir(), "bench.db"), Options{})
	defer db.Close()
	ctx := context.Background()
	resources := []string{"r0", "r1", "r2", "r3"}
	conc := 1000
	for _, r := range resources {
		if _, err := db.SetQueue(ctx, r, spinbroker.QueueSettings{Concurrency: &conc}); err != nil {
			b.Fatal(err)
		}
	}
	in := spinbroker.NewPackage{Enqueue: true}
	for i := 0; i < 10; i++ {
		in.Commands = append(in.Commands, spinbroker.NewCommand{Resource: resources[i%4], Action: "step", Parameters: []byte(`{"size":10}`)})
	}
	ok := true
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for p := 0; p < 10; p++ {
			if _, _, err := db.CreatePackage(ctx, in, nil); err != nil {
				b.Fatal(err)
			}
		}
		for _, r := range resources {
			cmds, _, err := db.Claim(ctx, r, 100, 0)
			if err != nil || len(cmds) == 0 {
				b.Fatalf("claim: %d %v", len(cmds), err)
			}
			items := make([]spinbroker.BatchResult, len(cmds))
			for j, c := range cmds {
				items[j] = spinbroker.BatchResult{ID: c.ID, Result: spinbroker.Result{Status: &ok, Lease: c.Lease.Token}}
			}
			errs, err := db.CompleteBatch(ctx, items)
			if err != nil {
				b.Fatal(err)
			}
			for _, e := range errs {
				if e != nil {
					b.Fatal(e)
				}
			}
		}
	}
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "commands/s")
}

// BenchmarkConsistency measures spinbroker check on a million commands in
// 100,000 packages of ten, in every state, on 50 queues: the recount alone
// (RepairCounts with nothing to mend, which holds the writer that long),
// and the whole read-only check (integrity check, foreign keys, recount).
// The first repair, of counts all wrong (the rows were inserted with
// none), is logged.
func BenchmarkConsistency(b *testing.B) {
	db := benchOpen(b)
	const packages, per = 100000, 10
	states := []string{"succeeded", "succeeded", "succeeded", "failed", "cancelled", "ready", "leased", "blocked", "succeeded", "succeeded"}
	// The state of command i is states[i % 10].
	state := `json_extract(?3, '$[' || (i % 10) || ']')`
	const batch = 10000
	for start := 0; start < packages; start += batch {
		err := db.write(context.Background(), func(t *Tx) error {
			now := nanos(t.now)
			if _, err := t.exec(`WITH RECURSIVE n(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1 + ?2 - 1)
				INSERT INTO packages (id, created_at, enqueued_at) SELECT printf('p%08d', i), ?3, ?3 FROM n`,
				start, batch, now); err != nil {
				return err
			}
			_, err := t.exec(`WITH RECURSIVE n(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1 + ?2 - 1)
				INSERT INTO commands (id, package_id, pos, resource, action, parameters, state, seq,
					max_attempts, created_at, enqueued_at, finished_at)
				SELECT printf('c%09d', i), printf('p%08d', i / 10), i % 10, 'r' || (i % 50), 'bench', '{}', `+state+`, i,
					3, ?4, ?4, CASE WHEN i % 10 < 5 OR i % 10 > 7 THEN ?4 + i END
				FROM n`, start*per, batch*per, mustJSON(b, states), now)
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	start := time.Now()
	fixed, err := db.RepairCounts(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("first repair: %d packages and queues mended in %s", len(fixed), time.Since(start).Round(time.Millisecond))
	b.Run("recount", func(b *testing.B) {
		for b.Loop() {
			if fixed, err := db.RepairCounts(context.Background()); err != nil || len(fixed) != 0 {
				b.Fatal(err, len(fixed))
			}
		}
	})
	b.Run("check", func(b *testing.B) {
		for b.Loop() {
			c, err := db.CheckConsistency(context.Background())
			if err != nil || !c.OK() || c.Commands != packages*per {
				b.Fatal(err, c)
			}
		}
	})
}

func mustJSON(b *testing.B, v any) string {
	b.Helper()
	j, err := json.Marshal(v)
	if err != nil {
		b.Fatal(err)
	}
	return string(j)
}

// BenchmarkQueues times the list of queues that GET /queues, the
// dashboard and every /metrics scrape read, with 1,000 queues each holding
// ready work: each queue's oldest ready command is part of the answer.
func BenchmarkQueues(b *testing.B) {
	db := benchOpen(b)
	ctx := context.Background()
	const queues = 1000
	in := spinbroker.NewPackage{Enqueue: true}
	for i := range queues {
		in.Commands = append(in.Commands, spinbroker.NewCommand{Resource: fmt.Sprintf("r%04d", i), Action: "step", Parameters: []byte(`{}`)})
	}
	if _, _, err := db.CreatePackage(ctx, in, nil); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		qs, err := db.Queues(ctx)
		if err != nil || len(qs) != queues || qs[0].Counts.Ready != 1 {
			b.Fatal(err, len(qs))
		}
	}
}

// bigPackage makes a package in staging of n commands of resource "big",
// each with parameters of size bytes: one created through the API, the
// rest inserted straight through SQL (40,000 adds through the API would
// take minutes per round), with the package's counts to match.
func bigPackage(b *testing.B, db *DB, n, size int) string {
	b.Helper()
	ctx := context.Background()
	params := mustJSON(b, map[string]string{"pad": strings.Repeat("x", size)})
	p, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Commands: []spinbroker.NewCommand{
		{Resource: "big", Action: "step", Parameters: json.RawMessage(params)}}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	err = db.write(ctx, func(t *Tx) error {
		now := nanos(t.now)
		if _, err := t.exec(`WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1 - 1)
			INSERT INTO commands (id, package_id, pos, resource, action, parameters, state, max_attempts, created_at)
			SELECT printf('%s-%012x', substr(?2, 1, 23), i), ?2, i, 'big', 'step', ?3, 'staged', 3, ?4
			FROM n`, n, p.ID, params, now); err != nil {
			return err
		}
		_, err := t.exec(`UPDATE packages SET total = ?1, n_staged = ?1 WHERE id = ?2`, n, p.ID)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return p.ID
}

// BenchmarkBigPackage measures what the enqueue and the cancel of a
// package of 50,000 commands (parameters of 1 KiB each) cost the other
// clients: op-ms is the call's own time, hold-ms how long the writer was
// busy with the transaction it ran in, and wait-ms how long a create of
// one command, sent once that transaction had begun, waited for its
// answer. A round takes seconds: make bench's 3,000 would take hours.
//
//	go test ./internal/store -run '^$' -bench BigPackage -benchtime 3x
func BenchmarkBigPackage(b *testing.B) {
	const n, size = 50000, 1024
	for _, op := range []string{"enqueue", "cancel"} {
		b.Run(op, func(b *testing.B) {
			if b.N > 10 {
				b.Skip("a round takes seconds: run it with -benchtime 3x")
			}
			db := benchOpen(b)
			ctx := context.Background()
			small := spinbroker.NewPackage{Commands: []spinbroker.NewCommand{{Resource: "small", Action: "a"}}}
			var opTime, hold, wait time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				id := bigPackage(b, db, n, size)
				if op == "cancel" {
					if _, err := db.Enqueue(ctx, id); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				start := time.Now()
				done := make(chan error, 1)
				go func() {
					var p *spinbroker.Package
					var err error
					if op == "enqueue" {
						p, err = db.Enqueue(ctx, id)
					} else {
						p, err = db.CancelPackage(ctx, id)
					}
					if err == nil && len(p.Commands) != n {
						err = fmt.Errorf("the answer holds %d commands, not %d", len(p.Commands), n)
					}
					done <- err
				}()
				var began int64
				for began == 0 {
					time.Sleep(10 * time.Microsecond)
					began = db.busySince.Load()
				}
				held := make(chan time.Duration, 1)
				go func() {
					for db.busySince.Load() == began {
						time.Sleep(20 * time.Microsecond)
					}
					held <- time.Since(time.Unix(0, began))
				}()
				sent := time.Now()
				if _, _, err := db.CreatePackage(ctx, small, nil); err != nil {
					b.Fatal(err)
				}
				wait += time.Since(sent)
				// The big transaction has ended by now: the small create
				// ran in a later one.
				if err := <-done; err != nil {
					b.Fatal(err)
				}
				opTime += time.Since(start)
				b.StopTimer()
				hold += <-held
				if op == "enqueue" {
					if _, err := db.CancelPackage(ctx, id); err != nil {
						b.Fatal(err)
					}
				}
				if err := db.DeletePackage(ctx, id); err != nil { // keeps the file from growing by 50 MB a round
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(opTime.Milliseconds())/float64(b.N), "op-ms")
			b.ReportMetric(float64(hold.Milliseconds())/float64(b.N), "hold-ms")
			b.ReportMetric(float64(wait.Milliseconds())/float64(b.N), "wait-ms")
		})
	}
}

// BenchmarkEnqueueSmall times the enqueue of a package of 10 commands, the
// seed protocol's, answer included: the read-back of a package's answer
// moved out of the writer's transaction must not make the small case slower.
func BenchmarkEnqueueSmall(b *testing.B) {
	db := benchOpen(b)
	ctx := context.Background()
	in := spinbroker.NewPackage{Commands: many10()}
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		p, _, err := db.CreatePackage(ctx, in, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		got, err := db.Enqueue(ctx, p.ID)
		if err != nil || len(got.Commands) != 10 || got.Commands[9].State != spinbroker.Ready {
			b.Fatal(err)
		}
	}
}

func many10() []spinbroker.NewCommand {
	cmds := make([]spinbroker.NewCommand, 10)
	for i := range cmds {
		cmds[i] = spinbroker.NewCommand{Resource: fmt.Sprint("work", i%2), Action: "step", Parameters: []byte(`{"size":10}`)}
	}
	return cmds
}

// BenchmarkSweepQueues times a sweep with retention over n queues: with
// half of them idle to forget (the first half of those made, so that a
// batch that read the table from its start read every kept queue again),
// and with none to forget, the sweep's cost every --sweep-interval.
//
//	go test ./internal/store -run '^$' -bench SweepQueues -benchtime 2x
func BenchmarkSweepQueues(b *testing.B) {
	for _, n := range []int{10_000, 50_000, 100_000} {
		for _, idle := range []bool{true, false} {
			b.Run(fmt.Sprintf("queues=%d/idle=%v", n, idle), func(b *testing.B) {
				for b.Loop() {
					b.StopTimer()
					db := openQuiet(b, filepath.Join(b.TempDir(), "bench.db"), Options{})
					err := db.write(context.Background(), func(t *Tx) error {
						_, err := t.exec(`WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?1 - 1)
							INSERT INTO queues (resource, last_active_at)
							SELECT printf('vm-%06d', i), CASE WHEN ?3 AND i >= ?1 / 2 THEN 0 ELSE ?2 END FROM n`, n, nanos(t.now), idle)
						return err
					})
					if err != nil {
						b.Fatal(err)
					}
					want := 0
					if idle {
						want = n / 2
					}
					b.StartTimer()
					res, err := db.Sweep(context.Background(), SweepOptions{Retain: time.Hour})
					if err != nil || res.QueuesForgotten != want {
						b.Fatal(err, res)
					}
					b.StopTimer()
					db.Close()
					b.StartTimer()
				}
			})
		}
	}
}

// BenchmarkSweepRetained times the retention sweep's deletion of finished
// packages of 10 commands, per command: every deleted command also looks
// for its dependency edges and its parameters kept aside (schema 6).
//
//	go test ./internal/store -run '^$' -bench SweepRetained -benchtime 5x
func BenchmarkSweepRetained(b *testing.B) {
	const packages = 2000
	long := time.Now().Add(-48 * time.Hour).UnixNano()
	for b.Loop() {
		b.StopTimer()
		db := openQuiet(b, filepath.Join(b.TempDir(), "bench.db"), Options{})
		err := db.write(context.Background(), func(t *Tx) error {
			if _, err := t.exec(`WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?1 - 1)
				INSERT INTO packages (id, created_at, enqueued_at, last_finished_at, total, n_succeeded)
				SELECT printf('%08x-0000-4000-8000-000000000000', i), ?2, ?2, ?2, 10, 10 FROM n`, packages, long); err != nil {
				return err
			}
			_, err := t.exec(`WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?1 * 10 - 1)
				INSERT INTO commands (id, package_id, pos, resource, action, parameters, state, seq,
					max_attempts, created_at, enqueued_at, finished_at)
				SELECT printf('%08x-0000-4000-8000-%012x', i / 10, i % 10), printf('%08x-0000-4000-8000-000000000000', i / 10),
					i % 10, 'r', 'bench', '{"n":1}', 'succeeded', i + 1, 3, ?2, ?2, ?2
				FROM n`, packages, long)
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		res, err := db.Sweep(context.Background(), SweepOptions{Retain: time.Hour})
		if err != nil || res.RetainedDeleted != packages {
			b.Fatal(err, res)
		}
		b.StopTimer()
		db.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*packages*10), "ns/command")
}
