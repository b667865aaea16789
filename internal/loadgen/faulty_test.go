package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/client"
	"github.com/spin-broker/spinbroker/internal/brokertest"
)

// faultyBroker is a real broker behind a handler that may rewrite answers.
func faultyBroker(t *testing.T, rewrite func(r *http.Request, status int, body []byte) (int, []byte)) *client.Client {
	t.Helper()
	return brokertest.Start(t, brokertest.Wrap(func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			status, body := rewrite(r, rec.Code, rec.Body.Bytes())
			for k, v := range rec.Header() {
				if k != "Content-Length" {
					w.Header()[k] = v
				}
			}
			w.WriteHeader(status)
			w.Write(body)
		})
	})).Client
}

// A broker that never delivers one command: the run should fail with a
// violation, not wait for ever.
func TestFaulty_LostCommandIsReported(t *testing.T) {
	var mu sync.Mutex
	victim := ""
	c := faultyBroker(t, func(r *http.Request, status int, body []byte) (int, []byte) {
		if status != 200 || !strings.HasSuffix(r.URL.Path, "/next") {
			return status, body
		}
		var cmd spinbroker.Command
		json.Unmarshal(body, &cmd)
		mu.Lock()
		defer mu.Unlock()
		if victim == "" {
			victim = cmd.ID
		}
		if cmd.ID == victim {
			return http.StatusNoContent, nil // lost
		}
		return status, body
	})
	defer func(d time.Duration) { stallAfter = d }(stallAfter)
	stallAfter = 2 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := Run(ctx, c, Config{Scenario: "throughput", Producers: 1, Resources: 2, Agents: 1, Size: 5, Commands: 50, Protocol: "inline"})
	if err != nil {
		t.Fatalf("Run: %v (ctx: %v)", err, ctx.Err())
	}
	if res.OK() {
		t.Fatal("a lost command went unreported")
	}
	t.Log(res.Violations)
}

// A broker that hands a claim's commands out of queue order.
func TestFaulty_ClaimOutOfOrderIsReported(t *testing.T) {
	c := faultyBroker(t, func(r *http.Request, status int, body []byte) (int, []byte) {
		if status != 200 || !strings.HasSuffix(r.URL.Path, "/claim") {
			return status, body
		}
		var out spinbroker.ClaimResult
		json.Unmarshal(body, &out)
		slices.Reverse(out.Commands)
		b, _ := json.Marshal(out)
		return status, b
	})
	res, err := Run(context.Background(), c, Config{Scenario: "throughput", Producers: 1, Resources: 1, Agents: 1, Size: 10, Commands: 100, Protocol: "claim", Claim: 10})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK() {
		t.Fatal("claims handed out in reverse queue order went unreported")
	}
	t.Log(res.Violations)
}

// A broker that delivers a command with another's parameters: the run
// fails, naming the command, though nothing was lost or duplicated.
func TestFaulty_WrongParametersAreReported(t *testing.T) {
	var once sync.Once
	c := faultyBroker(t, func(r *http.Request, status int, body []byte) (int, []byte) {
		if status != 200 || !strings.HasSuffix(r.URL.Path, "/next") {
			return status, body
		}
		changed := body
		once.Do(func() { changed = []byte(strings.Replace(string(body), `"step":`, `"step":1`, 1)) })
		return status, changed
	})
	res, err := Run(context.Background(), c, Config{Scenario: "throughput", Producers: 1, Resources: 2, Agents: 1, Size: 5, Commands: 50, Protocol: "inline", ParameterBytes: 256})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK() || !strings.Contains(strings.Join(res.Violations, "\n"), "delivered with parameters other than it was created with (257 bytes, created with 256)") {
		t.Fatalf("a command delivered with changed parameters: want it named, got %v", res.Violations)
	}
}

// A queue holding a command the run did not create is refused before the
// run, not counted as the broker's fault after it; the backlog, tidy (as
// against a broker of the caller's), leaves its queues empty, so that it
// can run again on the same broker.
func TestPreflight(t *testing.T) {
	c := broker(t)
	ctx := context.Background()
	for range 2 {
		if _, err := Run(ctx, c, Config{Scenario: "backlog", Backlog: 100, Blocked: 0.5, Samples: 10, Tidy: true}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{{Resource: "bench-1", Action: "theirs"}}}); err != nil {
		t.Fatal(err)
	}
	_, err := Run(ctx, c, Config{Scenario: "throughput", Producers: 1, Resources: 2, Agents: 1, Size: 5, Commands: 20, Protocol: "inline"})
	if err == nil || !strings.Contains(err.Error(), "bench-1 already holds 1 command") {
		t.Fatalf("want a refusal naming bench-1, got %v", err)
	}
}

// A correct broker whose writes are slow (sync full on a slow disk): with
// --protocol seed no command is ready until a producer has added all of
// its package's commands one request at a time, so a large package gives
// no completion for longer than stallAfter; the producers' calls are
// progress, and the watchdog lets the run go on. (Scaled down: stallAfter
// 1s, 40 adds of 50ms each. Found by the review.)
func TestStall_ProducersAtWorkAreProgress(t *testing.T) {
	c := faultyBroker(t, func(r *http.Request, status int, body []byte) (int, []byte) {
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/commands") {
			time.Sleep(50 * time.Millisecond)
		}
		return status, body
	})
	defer func(d time.Duration) { stallAfter = d }(stallAfter)
	stallAfter = time.Second
	res, err := Run(context.Background(), c, Config{Scenario: "throughput", Producers: 1, Resources: 2, Agents: 1, Size: 40, Commands: 80, Protocol: "seed"})
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK() {
		t.Fatalf("a correct (slow) broker failed the run: %q", res.Violations)
	}
}

// Interrupted (Ctrl-C) after the last completion, while the run reads its
// packages back: Run answers the interruption, not a result whose
// violations are the failed reads (bench printed "checks: FAILED" and
// exited 1, "1 scenario(s) broke a rule", instead of 130).
func TestInterruptedWhileChecking(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var once atomic.Bool
	c := faultyBroker(t, func(r *http.Request, status int, body []byte) (int, []byte) {
		if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/packages/") && once.CompareAndSwap(false, true) {
			cancel() // SIGINT arrives during check()
		}
		return status, body
	})
	res, err := Run(ctx, c, Config{Scenario: "throughput", Producers: 1, Resources: 2, Agents: 1, Size: 5, Commands: 50, Protocol: "inline"})
	if err == nil {
		t.Fatalf("an interrupted run answered a result (ok %v, %q), not the interruption", res.OK(), res.Violations)
	}
}

// The answer to the last create arrives after the agents completed that
// package's commands (a busy machine: the broker commits, the agents are
// woken and finish, while the producer is yet to read its answer). The
// last completion ended the producers' calls too, so that package went
// unrecorded, and a correct broker failed the run: "delivered …, which no
// producer created" for each of its commands. Found by a soak run of
// bench --procs 1 beside other load.
func TestLastCreateAnsweredAfterItsCommandsCompleted(t *testing.T) {
	const packages, size = 10, 5
	var creates, completes atomic.Int32
	allDone := make(chan struct{})
	c := faultyBroker(t, func(r *http.Request, status int, body []byte) (int, []byte) {
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/packages":
			if creates.Add(1) == packages {
				select {
				case <-allDone:
				case <-time.After(10 * time.Second):
					t.Error("the last package's commands were not completed before its create was answered")
				}
				// and the agent has its answer to the last completion: the
				// producer gives up (its request ends), or it waits.
				select {
				case <-r.Context().Done():
				case <-time.After(time.Second):
				}
			}
		case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/complete") && status == http.StatusOK:
			if completes.Add(1) == packages*size {
				close(allDone)
			}
		}
		return status, body
	})
	res, err := Run(context.Background(), c, Config{Scenario: "throughput", Producers: 1, Resources: 2, Agents: 1, Size: size, Commands: packages * size, Protocol: "inline"})
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK() {
		t.Fatalf("a correct broker failed the run: %q", res.Violations)
	}
}

// A broker that ignores the dependencies a package's commands name: it
// answers the create with none, and delivers the chain's commands at once,
// in any order. The check took the dependencies from the broker's answer,
// found none to check, and passed the run: a dependencies run must fail a
// broker that never held a command back.
func TestFaulty_DroppedDependenciesAreReported(t *testing.T) {
	c := brokertest.Start(t, brokertest.Wrap(func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost && r.URL.Path == "/packages" {
				var in map[string]any
				if err := json.NewDecoder(r.Body).Decode(&in); err == nil {
					cmds, _ := in["commands"].([]any)
					for _, c := range cmds {
						delete(c.(map[string]any), "dependencies")
					}
					b, _ := json.Marshal(in)
					r.Body = io.NopCloser(bytes.NewReader(b))
					r.ContentLength = int64(len(b))
				}
			}
			h.ServeHTTP(w, r)
		})
	})).Client
	res, err := Run(context.Background(), c, Config{Scenario: "dependencies", Producers: 1, Resources: 2, Agents: 1, Size: 4, Commands: 40, Protocol: "inline"})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK() || !strings.Contains(strings.Join(res.Violations, "\n"), "dependencies") {
		t.Fatalf("a broker that dropped every dependency passed the dependencies run: %q", res.Violations)
	}
	t.Log(res.Violations)
}

// A broker that queues a package's commands in the reverse of the order
// they were given in, and tells the seqs it gave them: every queue hands
// them out in the order of those seqs, and the check, which compared the
// deliveries with the broker's own seqs alone, passed the run. Within a
// package, a queue's commands must come in the order they were added.
func TestFaulty_PackageOrderIsChecked(t *testing.T) {
	c := brokertest.Start(t, brokertest.Wrap(func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost && r.URL.Path == "/packages" {
				var in map[string]any
				if err := json.NewDecoder(r.Body).Decode(&in); err == nil {
					cmds, _ := in["commands"].([]any)
					slices.Reverse(cmds)
					b, _ := json.Marshal(in)
					r.Body = io.NopCloser(bytes.NewReader(b))
					r.ContentLength = int64(len(b))
				}
			}
			h.ServeHTTP(w, r)
		})
	})).Client
	res, err := Run(context.Background(), c, Config{Scenario: "throughput", Producers: 1, Resources: 2, Agents: 1, Size: 6, Commands: 60, Protocol: "inline"})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK() {
		t.Fatal("a broker that queued each package's commands in reverse passed the run")
	}
	t.Log(res.Violations)
}
