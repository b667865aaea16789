package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/client"
	"github.com/spin-broker/spinbroker/internal/brokertest"
)

// TestSeed runs the seed's script: build a package step by step, enqueue
// it, follow it with status, settle its commands by hand.
func TestSeed(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	ctx := context.Background()

	pkg := b.id("message", "new")
	vol := b.id("message", "add", pkg, "storage", "add_volume", "path=vm1", "--key", "vol")
	img := b.id("message", "add", pkg, "storage", "create_image",
		"volume_path=vm1", "image_name=disk.raw", "image_size=10", "sparse=true", "label=null",
		`tags=["a", "b"]`, `owner="42"`, "--dep", "vol")
	vm := b.id("message", "add", pkg, "emulation", "start", "id=vm1", `vm={"name":"vm1","cpus":2,"memory":2048}`,
		"--dep", img, "--dep", vol, "--max-attempts", "1")

	// What the broker got: typed values, dependencies as ids.
	c, err := b.cl.Command(ctx, img)
	if err != nil {
		t.Fatal(err)
	}
	var params map[string]any
	if err := json.Unmarshal(c.Parameters, &params); err != nil {
		t.Fatal(err)
	}
	wantParams := map[string]any{
		"volume_path": "vm1", "image_name": "disk.raw", "image_size": 10.0, "sparse": true, "label": nil,
		"tags": []any{"a", "b"}, "owner": "42",
	}
	if !reflect.DeepEqual(params, wantParams) {
		t.Errorf("parameters = %s, want %v", c.Parameters, wantParams)
	}
	if !reflect.DeepEqual(c.Dependencies, []string{vol}) {
		t.Errorf("dependencies = %v, want [%s]", c.Dependencies, vol)
	}
	if c, err := b.cl.Command(ctx, vm); err != nil {
		t.Fatal(err)
	} else if !reflect.DeepEqual(c.Dependencies, []string{img, vol}) || c.MaxAttempts != 1 {
		t.Errorf("vm command: dependencies %v, max_attempts %d", c.Dependencies, c.MaxAttempts)
	}

	status := func(wantCode int, wantOut string) {
		t.Helper()
		r := b.spin("message", "status", pkg)
		if r.code != wantCode || r.stdout != wantOut || r.stderr != "" {
			t.Fatalf("status: %s\nwant exit %d, stdout %q", r, wantCode, wantOut)
		}
	}
	status(3, "staging: 0/3 done\n")
	if out := b.ok("message", "enqueue", pkg); out != "package "+pkg+": queued, 0/3 done\n" {
		t.Errorf("enqueue printed %q", out)
	}
	status(3, "queued: 0/3 done\n")

	// A blocked command cannot be settled yet.
	r := b.spin("message", "complete", img, "true")
	if r.code != 1 || !strings.Contains(r.stderr, "(conflict)") {
		t.Errorf("complete of a blocked command: %s", r)
	}
	if out := b.ok("message", "complete", vol, "true"); out != "command "+vol+": succeeded\n" {
		t.Errorf("complete printed %q", out)
	}
	status(3, "running: 1/3 done\n")
	b.ok("message", "complete", img, "true", "made by hand")
	b.ok("message", "complete", vm, "1")
	status(0, "succeeded: 3/3 done\n")

	// The same result again changes nothing; the other one is a conflict.
	b.ok("message", "complete", vm, "true")
	if r := b.spin("message", "complete", vm, "false"); r.code != 1 || !strings.Contains(r.stderr, "(conflict)") {
		t.Errorf("a second, different result: %s", r)
	}

	r = b.spin("message", "status", pkg, "-o", "json")
	if r.code != 0 {
		t.Fatalf("status -o json: %s", r)
	}
	var p spinbroker.Package
	decodeJSON(t, r.stdout, &p)
	if p.ID != pkg || p.State != spinbroker.PackageSucceeded || len(p.Commands) != 3 || p.Counts.Succeeded != 3 {
		t.Errorf("status -o json = %+v", p)
	}
	if !strings.HasPrefix(r.stdout, "{\n  \"id\": ") {
		t.Errorf("status -o json is not indented:\n%s", r.stdout)
	}
}

// TestSeedFailure: a command fails; status names it and its reason, exit 1,
// and the command that depended on it is cancelled.
func TestSeedFailure(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	pkg := b.id("message", "new")
	vol := b.id("message", "add", pkg, "storage", "add_volume", "path=vm1", "--key", "vol")
	img := b.id("message", "add", pkg, "storage", "create_image", "volume_path=vm1", "--dep", "vol")
	b.ok("message", "enqueue", pkg)
	if out := b.ok("message", "complete", vol, "false", "disk full"); out != "command "+vol+": failed (disk full)\n" {
		t.Errorf("complete printed %q", out)
	}
	r := b.spin("message", "status", pkg)
	want := "failed: 2/2 done\ncauser: " + vol + "\nreason: disk full\n"
	if r.code != 1 || r.stdout != want {
		t.Fatalf("status: %s\nwant exit 1 and %q", r, want)
	}
	c, err := b.cl.Command(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	if c.State != spinbroker.Cancelled {
		t.Errorf("dependent command is %s, want cancelled", c.State)
	}
}

// waitRun is a 'message status --wait' running in the background.
type waitRun struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdout bytes.Buffer
	stderr bytes.Buffer
	done   chan struct{}
	err    error
}

func (b *broker) startWait(args ...string) *waitRun {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	b.t.Cleanup(cancel)
	w := &waitRun{t: b.t, done: make(chan struct{})}
	w.cmd = command(ctx, nil, append(append([]string{"message", "status", "--wait"}, args...), "--url", b.url)...)
	w.cmd.Stdout, w.cmd.Stderr = &w.stdout, &w.stderr
	if err := w.cmd.Start(); err != nil {
		b.t.Fatal(err)
	}
	go func() {
		w.err = w.cmd.Wait()
		close(w.done)
	}()
	return w
}

// stillWaiting fails the test if the wait has ended within d.
func (w *waitRun) stillWaiting(d time.Duration) {
	w.t.Helper()
	select {
	case <-w.done:
		w.t.Fatalf("status --wait returned before the package finished: %v\n%s%s", w.err, w.stdout.String(), w.stderr.String())
	case <-time.After(d):
	}
}

// result waits at most within for the wait to end.
func (w *waitRun) result(within time.Duration) result {
	w.t.Helper()
	select {
	case <-w.done:
	case <-time.After(within):
		w.cmd.Process.Kill()
		<-w.done
		w.t.Fatalf("status --wait did not return within %s after the package finished\n%s", within, w.stderr.String())
	}
	r := result{stdout: w.stdout.String(), stderr: w.stderr.String()}
	var ee *exec.ExitError
	if errors.As(w.err, &ee) {
		r.code = ee.ExitCode()
	} else if w.err != nil {
		w.t.Fatal(w.err)
	}
	return r
}

func TestStatusWait(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	setup := func(t *testing.T, b *broker) (pkg, cmd string) {
		pkg = b.id("message", "new")
		cmd = b.id("message", "add", pkg, "storage", "add_volume", "path=vm1")
		b.id("message", "add", pkg, "storage", "add_volume", "path=vm2")
		b.ok("message", "enqueue", pkg)
		return pkg, cmd
	}
	yes, no := true, false
	reason := "no space left"

	t.Run("Succeeds", func(t *testing.T) {
		t.Parallel()
		b := newBroker(t)
		pkg, first := setup(t, b)
		w := b.startWait(pkg)
		w.stillWaiting(time.Second)
		if _, err := b.cl.Complete(ctx, first, spinbroker.Result{Status: &yes}); err != nil {
			t.Fatal(err)
		}
		w.stillWaiting(500 * time.Millisecond) // one of two is not the end
		p, err := b.cl.Package(ctx, pkg)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if _, err := b.cl.Complete(ctx, p.Commands[1].ID, spinbroker.Result{Status: &yes}); err != nil {
			t.Fatal(err)
		}
		r := w.result(15 * time.Second)
		t.Logf("returned %s after the last completion", time.Since(start).Round(time.Millisecond))
		if r.code != 0 || r.stdout != "succeeded: 2/2 done\n" {
			t.Errorf("status --wait: %s", r)
		}
	})
	t.Run("Fails", func(t *testing.T) {
		t.Parallel()
		b := newBroker(t)
		pkg, first := setup(t, b)
		w := b.startWait(pkg, "-o", "json")
		w.stillWaiting(time.Second)
		if _, err := b.cl.Complete(ctx, first, spinbroker.Result{Status: &no, Reason: &reason}); err != nil {
			t.Fatal(err)
		}
		// The other command is independent: it still has to finish.
		w.stillWaiting(500 * time.Millisecond)
		p, _ := b.cl.Package(ctx, pkg)
		if _, err := b.cl.Complete(ctx, p.Commands[1].ID, spinbroker.Result{Status: &yes}); err != nil {
			t.Fatal(err)
		}
		r := w.result(15 * time.Second)
		if r.code != 1 {
			t.Fatalf("status --wait: %s", r)
		}
		decodeJSON(t, r.stdout, &p)
		if p.State != spinbroker.PackageFailed || p.Causer == nil || *p.Causer != first || *p.Reason != reason {
			t.Errorf("status --wait -o json = %+v", p)
		}
	})
	t.Run("Cancelled", func(t *testing.T) {
		t.Parallel()
		b := newBroker(t)
		pkg, _ := setup(t, b)
		w := b.startWait(pkg)
		w.stillWaiting(time.Second)
		b.ok("package", "cancel", pkg)
		r := w.result(15 * time.Second)
		if r.code != 1 || !strings.HasPrefix(r.stdout, "cancelled: 2/2 done\n") {
			t.Errorf("status --wait: %s", r)
		}
	})
	// A signal ends the wait with the shell's code for it.
	for _, sig := range []struct {
		name string
		sig  os.Signal
		code int
	}{{"interrupted", os.Interrupt, 130}, {"terminated", syscall.SIGTERM, 143}} {
		t.Run(sig.name, func(t *testing.T) {
			t.Parallel()
			b := newBroker(t)
			pkg, _ := setup(t, b)
			w := b.startWait(pkg)
			w.stillWaiting(time.Second)
			if err := w.cmd.Process.Signal(sig.sig); err != nil {
				t.Fatal(err)
			}
			r := w.result(15 * time.Second)
			if r.code != sig.code || r.stdout != "" || r.stderr != "spinbroker: "+sig.name+"\n" {
				t.Errorf("status --wait, %s: %s", sig.name, r)
			}
		})
	}
	t.Run("Timeout", func(t *testing.T) {
		t.Parallel()
		b := newBroker(t)
		pkg, _ := setup(t, b)
		start := time.Now()
		r := b.spin("message", "status", pkg, "--wait", "--timeout", "1500ms")
		if r.code != 3 || r.stdout != "queued: 0/2 done\n" {
			t.Errorf("status --wait --timeout: %s", r)
		}
		if d := time.Since(start); d < 1500*time.Millisecond {
			t.Errorf("returned after %s, before its timeout", d)
		}
	})
	t.Run("Staging", func(t *testing.T) {
		t.Parallel()
		// A package not enqueued yet: --wait says why nothing moves, once,
		// and goes on waiting for whoever enqueues it.
		b := newBroker(t)
		pkg := b.id("message", "new")
		b.id("message", "add", pkg, "storage", "add_volume", "path=vm1")
		w := b.startWait(pkg)
		w.stillWaiting(1500 * time.Millisecond)
		b.ok("message", "enqueue", pkg)
		w.stillWaiting(500 * time.Millisecond)
		b.ok("package", "cancel", pkg)
		r := w.result(15 * time.Second)
		want := "spinbroker: package " + pkg + " is in staging: none of its commands runs until it is enqueued (spinbroker message enqueue " + pkg + "); waiting\n"
		if r.code != 1 || !strings.HasPrefix(r.stdout, "cancelled: ") || r.stderr != want {
			t.Errorf("status --wait on a staging package: %s", r)
		}
	})
	t.Run("AlreadyFinished", func(t *testing.T) {
		t.Parallel()
		b := newBroker(t)
		pkg, _ := setup(t, b)
		b.ok("package", "cancel", pkg)
		if r := b.spin("message", "status", pkg, "--wait"); r.code != 1 || !strings.HasPrefix(r.stdout, "cancelled: ") {
			t.Errorf("status --wait: %s", r)
		}
	})
	t.Run("UnknownPackage", func(t *testing.T) {
		t.Parallel()
		b := newBroker(t)
		r := b.spin("message", "status", "0190c3e4-7a6b-7c1d-9e2f-3a4b5c6d7e8f", "--wait")
		if r.code != 1 || !strings.Contains(r.stderr, "(not_found)") {
			t.Errorf("status --wait: %s", r)
		}
	})
	t.Run("PollsWithoutEvents", func(t *testing.T) {
		t.Parallel()
		// A broker (or a proxy in front of it) without the event stream:
		// --wait falls back to reading the package every second.
		b := serveBroker(t, brokertest.WithClock(), brokertest.Wrap(func(h http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/events" {
					http.Error(w, "no events here", http.StatusBadGateway)
					return
				}
				h.ServeHTTP(w, r)
			})
		}))
		pkg, _ := setup(t, b)
		w := b.startWait(pkg)
		w.stillWaiting(1500 * time.Millisecond)
		if _, err := b.cl.CancelPackage(ctx, pkg); err != nil {
			t.Fatal(err)
		}
		r := w.result(15 * time.Second)
		if r.code != 1 || !strings.HasPrefix(r.stdout, "cancelled: 2/2 done\n") || r.stderr != "" {
			t.Errorf("status --wait: %s", r)
		}
	})
}

// TestStatusWaitTerminal runs --wait on a terminal (script(1) gives it one)
// and checks the live progress line.
func TestStatusWaitTerminal(t *testing.T) {
	t.Parallel()
	script, err := exec.LookPath("script")
	if err != nil {
		t.Skip("no script(1) to run the binary on a terminal")
	}
	b := newBroker(t)
	pkg := b.id("message", "new")
	first := b.id("message", "add", pkg, "storage", "add_volume", "path=vm1")
	second := b.id("message", "add", pkg, "storage", "add_volume", "path=vm2")
	b.ok("message", "enqueue", pkg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// -q: no banner; -e: the child's exit code; -f: flush as it comes.
	cmd := exec.CommandContext(ctx, script, "-qef", "-c", binary+" message status --wait "+pkg+" --url "+b.url, "/dev/null")
	cmd.Env = command(ctx, nil).Env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	yes := true
	go func() {
		time.Sleep(time.Second)
		b.cl.Complete(ctx, first, spinbroker.Result{Status: &yes})
		time.Sleep(500 * time.Millisecond)
		b.cl.Complete(ctx, second, spinbroker.Result{Status: &yes})
	}()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("status --wait on a terminal: %v\n%q", err, out.String())
	}
	got := out.String()
	wantContains(t, "the terminal", got, "\r\x1b[Kqueued: 0/2 done", "\r\x1b[Krunning: 1/2 done", "\r\x1b[Ksucceeded: 2/2 done\r\n")
}

// TestStatusWait_SaysWhyNothingMoves: a package whose ready work sits
// untaken gets a word on stderr (no agent, or a paused queue), and a wait
// that times out says so before it exits 3.
func TestStatusWait_SaysWhyNothingMoves(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	pkg := b.id("message", "new")
	b.id("message", "add", pkg, "storage", "add_volume", "path=vm1")
	b.ok("message", "enqueue", pkg)
	// The hint comes 5s after the first read, which may wait 2s for the
	// event stream: the timeouts leave room on a loaded machine.
	r := b.startWait(pkg, "--timeout", "12s").result(30 * time.Second)
	if r.code != 3 || !strings.Contains(r.stderr, "queue storage has 1 ready") || !strings.Contains(r.stderr, "is an agent for storage running?") ||
		!strings.Contains(r.stderr, "package "+pkg+" is still queued (0/1 done) after 12s") {
		t.Errorf("a wait on work nobody takes:\n%s", r)
	}
	b.ok("queue", "pause", "storage")
	r = b.startWait(pkg, "--timeout", "11s").result(30 * time.Second)
	if r.code != 3 || !strings.Contains(r.stderr, "queue storage is paused") || strings.Contains(r.stderr, "is an agent") {
		t.Errorf("a wait on a paused queue:\n%s", r)
	}
}

// countingTransport counts the requests that go through it.
type countingTransport struct{ n atomic.Int32 }

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return http.DefaultTransport.RoundTrip(r)
}

// TestWaiter_BrokerAwayPastTheStall: a broker that stops answering after a
// package's last change is polled at the poll's pace, not in a tight loop
// once the stall hint's time has passed.
func TestWaiter_BrokerAwayPastTheStall(t *testing.T) {
	const id = "0190c3e4-7a6b-7c1d-9e2f-3a4b5c6d7e8f"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id": %q, "state": "queued", "total": 1, "counts": {"ready": 1}, "commands": []}`, id)
	}))
	var rt countingTransport
	cl, err := client.New(srv.URL, client.WithHTTPClient(&http.Client{Transport: &rt}))
	if err != nil {
		t.Fatal(err)
	}
	w := &waiter{cl: cl, id: id, poll: 100 * time.Millisecond, stall: 300 * time.Millisecond,
		show: func(p *spinbroker.Package) {
			if srv != nil {
				srv.Close() // gone after the first answer
				srv = nil
			}
		},
		note: func(string) {}}
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	if _, err := w.wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait = %v", err)
	}
	if n := rt.n.Load(); n > 40 {
		t.Errorf("%d requests in 1.5s to a broker that is away; the poll is every 100ms", n)
	}
}

// TestStatusWait_BrokerRestarts: a broker stopped and started again on the
// same address and database during a wait is said to have gone away, and to
// be back, and the wait goes on; "is it running" is for a broker never
// reached, not for a planned restart.
func TestStatusWait_BrokerRestarts(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "broker.db")
	addr := loopbackAddr(t)
	sp := startBroker(t, db, "--addr", addr)
	cl, err := client.New(sp.url)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	p, err := cl.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true,
		Commands: []spinbroker.NewCommand{{Resource: "storage", Action: "add_volume"}}})
	if err != nil {
		t.Fatal(err)
	}
	w := (&broker{t: t, url: sp.url}).startWait(p.ID)
	// Stopped only once the wait has read the package: a broker stopped
	// before that was never reached, which is another test's case (on a
	// loaded machine the waiter's start can take over a second).
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(sp.logs.String(), "path=/packages/"+p.ID); {
		if time.Now().After(deadline) {
			t.Fatalf("the wait did not read the package within 30s:\n%s", sp.logs)
		}
		w.stillWaiting(20 * time.Millisecond)
	}
	w.stillWaiting(500 * time.Millisecond)

	if err := sp.stop(t); err != nil {
		t.Fatalf("serve exited with %v:\n%s", err, sp.logs)
	}
	w.stillWaiting(2500 * time.Millisecond) // polled every second meanwhile
	startBroker(t, db, "--addr", addr)      // the same address and database
	w.stillWaiting(2500 * time.Millisecond)
	if _, err := cl.CancelPackage(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	r := w.result(15 * time.Second)
	if r.code != 1 || !strings.HasPrefix(r.stdout, "cancelled: ") {
		t.Fatalf("status --wait across a restart: %s", r)
	}
	away := strings.Index(r.stderr, "spinbroker: the broker went away (")
	back := strings.Index(r.stderr, "spinbroker: the broker is back\n")
	if away < 0 || back < away || !strings.Contains(r.stderr, "; waiting for it to come back\n") {
		t.Errorf("status --wait did not say the broker went away and came back:\n%s", r)
	}
	if strings.Contains(r.stderr, "is it running") {
		t.Errorf("a broker that answered earlier in the wait is asked about as if never reached:\n%s", r)
	}
}

// TestMessage_IdempotencyKey: with --idempotency-key, 'message new' and
// 'message add' run twice make one package and one command (a script that
// got exit 4 repeats the command line as it was); other arguments with the
// same key are refused; a key the broker would refuse is a usage error.
func TestMessage_IdempotencyKey(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	pkg := b.id("message", "new", "--idempotency-key", "build-42")
	if again := b.id("message", "new", "--idempotency-key", "build-42"); again != pkg {
		t.Errorf("message new again with the same key: %s, want %s", again, pkg)
	}
	if other := b.id("message", "new", "--idempotency-key", "build-43"); other == pkg {
		t.Errorf("another key made no new package: %s", other)
	}
	add := []string{"message", "add", pkg, "storage", "add_volume", "path=vm1", "--idempotency-key", "vol-1"}
	cmd := b.id(add...)
	if again := b.id(add...); again != cmd {
		t.Errorf("message add again with the same key: %s, want %s", again, cmd)
	}
	p, err := b.cl.Package(context.Background(), pkg)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Commands) != 1 {
		t.Errorf("the package has %d commands, want 1", len(p.Commands))
	}
	r := b.spin("message", "add", pkg, "storage", "add_volume", "path=vm2", "--idempotency-key", "vol-1")
	if r.code != 1 || !strings.Contains(r.stderr, "byte for byte") {
		t.Errorf("other arguments with the same key: %s, want exit 1 and the broker's 409", r)
	}
	for _, key := range []string{"", "tab\there", "é", strings.Repeat("k", 256)} {
		r := b.spin("message", "new", "--idempotency-key", key)
		if r.code != 2 || !strings.Contains(r.stderr, "--idempotency-key: Idempotency-Key") {
			t.Errorf("--idempotency-key %q: %s, want exit 2 and why", key, r)
		}
	}
}

// TestMessageAdd_DepIsAPackage: --dep given a package's id (the other id a
// script holds) was refused with the broker's "names no existing command"
// alone, which sent the operator looking for a lost command. It says the id
// is a package's, and what --dep takes instead.
func TestMessageAdd_DepIsAPackage(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	other := b.id("message", "new")
	b.id("message", "add", other, "storage", "add_volume", "--key", "vol")
	pkg := b.id("message", "new")
	r := b.spin("message", "add", pkg, "storage", "create_image", "--dep", other)
	want := other + " is a package's id, not a command's: --dep takes a command's id or the --key of one added earlier to this package (spinbroker package show " + other + " lists its commands)"
	if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, "(unknown_dependency)") || !strings.Contains(r.stderr, want) {
		t.Errorf("message add --dep with a package's id: %s\nwant exit 1 and stderr with %q", r, want)
	}
	// An id that names nothing is the broker's refusal alone.
	r = b.spin("message", "add", pkg, "storage", "create_image", "--dep", "01a22249-3f52-7506-bbb5-534b4fea8262")
	if r.code != 1 || strings.Contains(r.stderr, "package's id") {
		t.Errorf("message add --dep with an unknown id: %s", r)
	}
}

// TestStatusWait_TimeoutWhileBrokerAway: a --timeout that runs out while the
// broker is away printed the package as last read, before the broker went,
// as if it were its state now, and exited 3, "not finished", which the broker
// never said. The state is not known then: exit 4, as for a broker that
// cannot be asked, nothing on stdout, and stderr says what was last read.
func TestStatusWait_TimeoutWhileBrokerAway(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "broker.db")
	sp := startBroker(t, db)
	cl, err := client.New(sp.url)
	if err != nil {
		t.Fatal(err)
	}
	p, err := cl.CreatePackage(context.Background(), spinbroker.NewPackage{Enqueue: true,
		Commands: []spinbroker.NewCommand{{Resource: "storage", Action: "add_volume"}}})
	if err != nil {
		t.Fatal(err)
	}
	w := (&broker{t: t, url: sp.url}).startWait(p.ID, "--timeout", "10s", "-o", "json")
	for deadline := time.Now().Add(8 * time.Second); !strings.Contains(sp.logs.String(), "path=/packages/"+p.ID); {
		if time.Now().After(deadline) {
			t.Fatalf("the wait did not read the package within 8s:\n%s", sp.logs)
		}
		w.stillWaiting(20 * time.Millisecond)
	}
	if err := sp.stop(t); err != nil {
		t.Fatalf("serve exited with %v:\n%s", err, sp.logs)
	}
	r := w.result(30 * time.Second)
	want := "the broker is away, so package " + p.ID + "'s state is not known: it was queued (0/1 done) when last read"
	if r.code != exitTryAgain || r.stdout != "" || !strings.Contains(r.stderr, want) {
		t.Errorf("status --wait --timeout with the broker away: %s\nwant exit 4, nothing on stdout, and stderr with %q", r, want)
	}
}

// TestStatusWait_PackageDeleted: a package deleted while waited for (by a
// client, or by the sweep of packages left in staging) ends the wait
// saying so, with its state as last read. It said only "package … not
// found", which reads as a wrong id given.
func TestStatusWait_PackageDeleted(t *testing.T) {
	t.Parallel()
	read := make(chan struct{}, 100)
	b := serveBroker(t, brokertest.WithClock(), brokertest.Wrap(func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h.ServeHTTP(w, r)
			if r.Method == http.MethodGet && strings.Count(r.URL.Path, "/") == 2 && strings.HasPrefix(r.URL.Path, "/packages/") {
				select {
				case read <- struct{}{}:
				default:
				}
			}
		})
	}))
	pkg := b.id("message", "new")
	w := b.startWait(pkg)
	select {
	case <-read:
	case <-w.done:
		t.Fatalf("status --wait returned before reading the package: %v\n%s", w.err, w.stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatal("status --wait never read the package")
	}
	if err := b.cl.DeletePackage(context.Background(), pkg); err != nil {
		t.Fatal(err)
	}
	r := w.result(30 * time.Second)
	want := "package " + pkg + " was deleted while waited for: it was staging (0/0 done) when last read"
	if r.code != exitFailed || r.stdout != "" || !strings.Contains(r.stderr, want) {
		t.Errorf("status --wait on a package deleted meanwhile: %s\nwant exit 1, nothing on stdout, and stderr with %q", r, want)
	}
}
