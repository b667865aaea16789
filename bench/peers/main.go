// Command peers measures, in-process, the throughput of two peer job queues
// on SQLite, River (riversqlite driver) and goqite, in the shape of
// spin-broker's own load test: P producers enqueue packages of K jobs spread
// over R queues, W workers per queue take and complete them, and the clock
// runs from the first insert to the last job completed. Each run uses a fresh
// database file in WAL mode with synchronous=NORMAL or FULL, and checks that
// every job was completed exactly once.
//
// Usage:
//
//	go run . [-jobs 20000] [-producers 4] [-queues 4] [-workers 1] [-batch 10]
//	         [-sync normal|full|both] [-peers river,goqite] [-per-job] [-json]
//
// It exits 1 if any run failed (lost or duplicated a job, or hit an error).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"text/tabwriter"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the exit: it parses args, runs every peer × sync
// setting in turn and prints the results to stdout.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("peers", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg Config
	fs.IntVar(&cfg.Jobs, "jobs", 20000, "total jobs `N`")
	fs.IntVar(&cfg.Producers, "producers", 4, "producer goroutines")
	fs.IntVar(&cfg.Queues, "queues", 4, "queues, named q0..qN-1; package p's jobs go round-robin over them from queue p mod queues")
	fs.IntVar(&cfg.Workers, "workers", 1, "workers per queue")
	fs.IntVar(&cfg.Batch, "batch", 10, "jobs per package (one River InsertMany call each)")
	fs.BoolVar(&cfg.PerJob, "per-job", false, "River: one Insert call per job instead of InsertMany per package")
	fs.DurationVar(&cfg.RiverFetchCooldown, "river-fetch-cooldown", time.Millisecond,
		"River Config.FetchCooldown; 0 for River's default (100ms), which caps a queue at one fetch per 100ms")
	fs.DurationVar(&cfg.GoqitePoll, "goqite-poll", 10*time.Millisecond, "goqite: poll interval of an idle worker")
	fs.DurationVar(&cfg.Timeout, "timeout", 10*time.Minute, "per run: longest wait for the last job")
	fs.StringVar(&cfg.Dir, "dir", "", "where to make each run's temp dir (default the system temp dir)")
	syncFlag := fs.String("sync", "both", "SQLite synchronous setting: normal, full or both")
	peersFlag := fs.String("peers", "river,goqite", "comma-separated peers to measure: river, goqite")
	jsonOut := fs.Bool("json", false, "print one JSON object per result")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "peers: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if cfg.Jobs < 1 || cfg.Producers < 1 || cfg.Queues < 1 || cfg.Workers < 1 || cfg.Batch < 1 {
		fmt.Fprintln(stderr, "peers: -jobs, -producers, -queues, -workers and -batch must be at least 1")
		return 2
	}
	syncs := []string{"normal", "full"}
	switch *syncFlag {
	case "both":
	case "normal", "full":
		syncs = []string{*syncFlag}
	default:
		fmt.Fprintf(stderr, "peers: -sync %q: want normal, full or both\n", *syncFlag)
		return 2
	}
	var names []string
	for name := range strings.SplitSeq(*peersFlag, ",") {
		name = strings.TrimSpace(name)
		if _, ok := peers[name]; !ok {
			fmt.Fprintf(stderr, "peers: unknown peer %q (want river, goqite)\n", name)
			return 2
		}
		names = append(names, name)
	}

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()

	var results []Result
	failed := false
	for _, name := range names {
		for _, s := range syncs {
			c := cfg
			c.Sync = s
			if isTerminal(stderr) {
				c.Progress = func(done int) {
					fmt.Fprintf(stderr, "\r%s sync=%s: %d/%d jobs done", name, s, done, c.Jobs)
				}
			}
			res := Run(ctx, name, c)
			if c.Progress != nil {
				fmt.Fprint(stderr, "\r\033[K")
			}
			failed = failed || res.Failed()
			if *jsonOut {
				line, _ := json.Marshal(res)
				fmt.Fprintf(stdout, "%s\n", line)
			}
			results = append(results, res)
			if ctx.Err() != nil {
				break
			}
		}
	}
	if !*jsonOut {
		printTable(stdout, cfg, results)
	}
	if failed {
		return 1
	}
	return 0
}

// printTable prints results as an aligned table, with the run's shape above.
func printTable(w io.Writer, cfg Config, results []Result) {
	insert := "InsertMany per package"
	if cfg.PerJob {
		insert = "Insert per job"
	}
	fmt.Fprintf(w, "%d jobs, %d producers, packages of %d, %d queues with %d worker(s) each; River: %s\n\n",
		cfg.Jobs, cfg.Producers, cfg.Batch, cfg.Queues, cfg.Workers, insert)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "peer\tsync\tjobs\tseconds\tjobs/s\tduplicates\tlost\tstatus\t")
	for _, r := range results {
		status := "ok"
		if r.Failed() {
			status = "FAILED"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.2f\t%.0f\t%d\t%d\t%s\t\n",
			r.Peer, r.Sync, r.Jobs, r.Seconds, r.JobsPerSec, r.Duplicates, r.Lost, status)
	}
	tw.Flush()
	for _, r := range results {
		if r.Error != "" {
			fmt.Fprintf(w, "%s sync=%s: %s\n", r.Peer, r.Sync, r.Error)
		}
	}
}

// isTerminal tells whether w is a character device such as a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
