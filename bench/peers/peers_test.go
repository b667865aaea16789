package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// smallConfig is the default shape with few jobs, so a run takes a second.
func smallConfig(t *testing.T, syncMode string) Config {
	return Config{
		Jobs: 500, Producers: 4, Queues: 4, Workers: 1, Batch: 10,
		Sync: syncMode, Dir: t.TempDir(),
		RiverFetchCooldown: time.Millisecond, GoqitePoll: 10 * time.Millisecond,
		Timeout: time.Minute,
	}
}

// TestPeers runs every peer on a small job count and wants every job
// completed exactly once.
func TestPeers(t *testing.T) {
	for _, name := range []string{"river", "goqite"} {
		for _, syncMode := range []string{"normal", "full"} {
			t.Run(name+"/"+syncMode, func(t *testing.T) {
				res := Run(context.Background(), name, smallConfig(t, syncMode))
				if res.Failed() {
					t.Fatalf("run failed: %+v", res)
				}
				if res.Jobs != 500 || res.Seconds <= 0 || res.JobsPerSec <= 0 {
					t.Errorf("implausible result: %+v", res)
				}
			})
		}
	}
}

// TestRiverPerJob covers River's one-Insert-per-job mode, with a package
// size that does not divide the job count.
func TestRiverPerJob(t *testing.T) {
	cfg := smallConfig(t, "normal")
	cfg.PerJob, cfg.Jobs, cfg.Batch = true, 203, 7
	if res := Run(context.Background(), "river", cfg); res.Failed() {
		t.Fatalf("run failed: %+v", res)
	}
}

// TestTally checks the counting of duplicates and losses.
func TestTally(t *testing.T) {
	tl := newTally(4)
	for _, seq := range []int{0, 1, 1, 2, 2, 2} {
		if err := tl.mark(seq); err != nil {
			t.Fatal(err)
		}
	}
	if err := tl.mark(4); err == nil {
		t.Error("mark(4) of 4 jobs: want an error")
	}
	if dup, lost := tl.check(); dup != 3 || lost != 1 {
		t.Errorf("check = %d duplicates, %d lost; want 3, 1", dup, lost)
	}
	if err := tl.wait(context.Background(), 10*time.Millisecond); err == nil {
		t.Error("wait with a job missing: want a timeout error")
	}
}

// TestCommandJSON runs the command with -json and checks its output.
func TestCommandJSON(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run([]string{"-jobs", "100", "-peers", "goqite", "-sync", "normal", "-json", "-dir", t.TempDir()}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d, stderr: %s", code, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("want one JSON line, got %q", out.String())
	}
	var res Result
	if err := json.Unmarshal([]byte(lines[0]), &res); err != nil {
		t.Fatal(err)
	}
	if res.Peer != "goqite" || res.Sync != "normal" || res.Jobs != 100 || res.Failed() {
		t.Errorf("result %+v", res)
	}
	if code := run([]string{"-peers", "nope"}, &out, &errOut); code != 2 {
		t.Errorf("unknown peer: exit %d, want 2", code)
	}
}
