package loadgen

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spin-broker/spinbroker/client"
	"github.com/spin-broker/spinbroker/internal/brokertest"
)

func broker(t *testing.T) *client.Client {
	t.Helper()
	return brokertest.Start(t).Client
}

func TestRun(t *testing.T) {
	for _, cfg := range []Config{
		{Scenario: "throughput", Producers: 2, Resources: 2, Agents: 2, Size: 5, Commands: 200, Protocol: "inline"},
		{Scenario: "throughput", Producers: 2, Resources: 2, Agents: 1, Size: 5, Commands: 100, Protocol: "seed"},
		{Scenario: "throughput", Producers: 2, Resources: 3, Agents: 1, Size: 10, Commands: 300, Protocol: "claim", Claim: 20},
		{Scenario: "throughput", Producers: 2, Resources: 2, Agents: 1, Size: 4, Commands: 40, Protocol: "claim", Claim: 4, ParameterBytes: 100 << 10},
		{Scenario: "dependencies", Producers: 2, Resources: 3, Agents: 1, Size: 4, Commands: 120, Protocol: "inline"},
		{Scenario: "backlog", Backlog: 300, Blocked: 0.5, Samples: 50},
		{Scenario: "wakeup", Wakeups: 10},
	} {
		t.Run(fmt.Sprintf("%s/%s/%d", cfg.Scenario, cfg.Protocol, cfg.ParameterBytes), func(t *testing.T) {
			var progressed bool
			cfg.Progress = func(_ string, done, total int) { progressed = done > 0 }
			res, err := Run(context.Background(), broker(t), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if !res.OK() {
				t.Fatalf("violations: %v", res.Violations)
			}
			if res.Commands == 0 || res.Seconds <= 0 || len(res.Calls) == 0 {
				t.Fatalf("measured nothing: %+v", res)
			}
			if claimed := res.PerClaim; (cfg.Protocol == "claim") != (claimed > 0) || claimed > float64(cfg.Claim) ||
				(claimed > 0 && math.Abs(claimed*float64(res.Calls["complete_batch"].Count)-float64(res.Commands)) > 1e-6) {
				t.Fatalf("commands per claim %v with %d batched completions of %d commands", claimed, res.Calls["complete_batch"].Count, res.Commands)
			}
			if cfg.Scenario == "wakeup" && res.Calls["enqueue_to_delivery"].Count != cfg.Wakeups {
				t.Fatalf("wakeup samples: %+v", res.Calls)
			}
			if cfg.Scenario == "throughput" || cfg.Scenario == "dependencies" {
				// The broker runs in this process too, so the bound is
				// every CPU's.
				if _, known := processCPU(); known && !(res.GeneratorCPUSeconds > 0 && res.GeneratorCPUSeconds <= res.Seconds*float64(runtime.NumCPU())*1.1+0.05) {
					t.Fatalf("generator CPU %.3fs in a run of %.3fs on %d CPUs", res.GeneratorCPUSeconds, res.Seconds, runtime.NumCPU())
				}
			}
			if res.ParameterBytes != cfg.ParameterBytes {
				t.Fatalf("the result says %d-byte parameters, the run padded them to %d", res.ParameterBytes, cfg.ParameterBytes)
			}
			if cfg.Scenario != "wakeup" && !progressed {
				t.Fatal("progress was never reported")
			}
		})
	}
}

// TestParameters: padded parameters are exactly the size asked for, stay a
// JSON object naming their command, and a size too small to pad is left
// alone.
func TestParameters(t *testing.T) {
	for _, size := range []int{0, 30, 64, 65, 4096, 100 << 10} {
		for _, ij := range [][2]int{{0, 0}, {123456, 9}} {
			b := parameters(ij[0], ij[1], size)
			var v struct {
				Package, Step int
				Pad           string
			}
			if err := json.Unmarshal(b, &v); err != nil || v.Package != ij[0] || v.Step != ij[1] {
				t.Fatalf("parameters(%d, %d, %d) = %s: %v", ij[0], ij[1], size, b, err)
			}
			if size >= 64 && len(b) != size {
				t.Errorf("parameters(%d, %d, %d) are %d bytes", ij[0], ij[1], size, len(b))
			}
			if size < 64 && v.Pad != "" {
				t.Errorf("parameters(%d, %d, %d) padded to %d bytes", ij[0], ij[1], size, len(b))
			}
		}
	}
}

// TestParamSetting: a run's settings name its parameter size only when
// it set one.
func TestParamSetting(t *testing.T) {
	for size, want := range map[int]string{0: "", 30: "", 64: " with 64-byte parameters", 16384: " with 16384-byte parameters"} {
		if got := paramSetting(size); got != want {
			t.Errorf("paramSetting(%d) = %q, want %q", size, got, want)
		}
	}
}

// TestCheck plants each kind of violation and expects the checker to name
// it: a check that cannot fail proves nothing.
func TestCheck(t *testing.T) {
	c := broker(t)
	t0 := time.Now()
	made := map[string]created{
		"a": {resource: "r", seq: 1},
		"b": {resource: "r", seq: 2},
		"c": {resource: "r", seq: 3, deps: []string{"a"}},
		"d": {resource: "r", seq: 4},
	}
	all := []delivery{
		{id: "a", resource: "r", attempts: 1, startedAt: t0, seq: 1},
		{id: "b", resource: "r", attempts: 1, startedAt: t0.Add(2), seq: 2},
		{id: "b", resource: "r", attempts: 2, startedAt: t0.Add(3), seq: 2},
		{id: "c", resource: "r", attempts: 1, startedAt: t0.Add(1), seq: 3},
		{id: "x", resource: "r", attempts: 1, startedAt: t0.Add(4), seq: 9},
	}
	v := strings.Join(check(context.Background(), c, made, nil, all, 3, true), "\n")
	for _, want := range []string{"b delivered 2 times", "attempts 2", "d was never delivered", "delivered x, which no producer created", "seq 2 after seq 3", "3 completions for 4 commands", "c started at"} {
		if !strings.Contains(v, want) {
			t.Errorf("the checker missed %q in:\n%s", want, v)
		}
	}
}

// TestBacklog_ProgressInEveryPhase: the backlog scenario tells its progress
// while it loads the queue, while it times next+complete and while it
// tidies up, each phase named and ending at its total: the timed phase and
// the tidying took many silent seconds on a terminal.
func TestBacklog_ProgressInEveryPhase(t *testing.T) {
	type step struct {
		phase       string
		done, total int
	}
	var (
		mu    sync.Mutex
		steps []step
	)
	cfg := Config{Scenario: "backlog", Backlog: 1500, Blocked: 0.5, Samples: 50, Tidy: true,
		Progress: func(phase string, done, total int) {
			mu.Lock()
			defer mu.Unlock()
			steps = append(steps, step{phase, done, total})
		}}
	res, err := Run(context.Background(), broker(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK() {
		t.Fatalf("violations: %v", res.Violations)
	}
	mu.Lock()
	defer mu.Unlock()
	// The gate's package and two chunks of the backlog are tidied.
	want := []step{{"loading", 1500, 1500}, {"timing", 50, 50}, {"tidying", 3, 3}}
	var phases []step // the last step of each phase, in order
	for _, s := range steps {
		if n := len(phases); n > 0 && phases[n-1].phase == s.phase {
			if s.done < phases[n-1].done || s.total != phases[n-1].total {
				t.Errorf("%s went from %d/%d to %d/%d", s.phase, phases[n-1].done, phases[n-1].total, s.done, s.total)
			}
			phases[n-1] = s
			continue
		}
		phases = append(phases, s)
	}
	if !slices.Equal(phases, want) {
		t.Errorf("progress ended its phases at %v, want %v", phases, want)
	}
}
