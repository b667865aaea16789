package agent_test

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/httpapi"
)

// TestExample_Runs runs the package's Example, which go test only
// compiles (it reads the broker's address from the environment and runs
// until a signal), against a real broker: it serves a greet command, and
// SIGINT stops it gracefully, so that Example returns instead of exiting 1.
func TestExample_Runs(t *testing.T) {
	b := startBroker(t, httpapi.Options{}, nil)
	t.Setenv("SPINBROKER_URL", b.url)
	t.Setenv("SPINBROKER_TOKEN", "")

	returned := make(chan struct{})
	go func() { defer close(returned); Example() }()

	greet := cmd("greet", `{"name": "world"}`)
	greet.Resource = "greeter"
	c := b.await(t, b.enqueue(t, greet)[0])
	if c.State != spinbroker.Succeeded || string(c.Output) != `{"greeting":"hello, world"}` {
		t.Fatalf("greet is %s with output %s, want succeeded with the greeting", c.State, c.Output)
	}

	// The command succeeded, so Run is running and the example's signal
	// handler is in place: SIGINT goes to it, not to the test binary.
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-returned:
	case <-time.After(20 * time.Second):
		t.Fatal("Example still runs 20s after SIGINT")
	}
}

// TestExampleOptions_claim_Runs runs ExampleOptions_claim against a real
// broker whose queue "greeter" allows 5 commands at once: 5 greet commands
// succeed, their results reported in batched completions (none alone),
// and SIGINT stops the agent gracefully.
func TestExampleOptions_claim_Runs(t *testing.T) {
	var batched, single atomic.Int32
	b := startBroker(t, httpapi.Options{}, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch {
			case r.URL.Path == "/commands/complete":
				batched.Add(1)
			case strings.HasSuffix(r.URL.Path, "/complete"):
				single.Add(1)
			}
			h.ServeHTTP(w, r)
		})
	})
	t.Setenv("SPINBROKER_URL", b.url)
	t.Setenv("SPINBROKER_TOKEN", "")
	conc := 5
	if _, err := b.c.SetQueue(context.Background(), "greeter", spinbroker.QueueSettings{Concurrency: &conc}); err != nil {
		t.Fatal(err)
	}

	returned := make(chan struct{})
	go func() { defer close(returned); ExampleOptions_claim() }()

	var greets []spinbroker.NewCommand
	for _, name := range []string{"ann", "bob", "cy", "di", "ed"} {
		g := cmd("greet", `{"name": "`+name+`"}`)
		g.Resource = "greeter"
		greets = append(greets, g)
	}
	for i, id := range b.enqueue(t, greets...) {
		c := b.await(t, id)
		want := `{"greeting":"hello, ` + []string{"ann", "bob", "cy", "di", "ed"}[i] + `"}`
		if c.State != spinbroker.Succeeded || string(c.Output) != want {
			t.Errorf("greet %d is %s with output %s, want succeeded with %s", i, c.State, c.Output, want)
		}
	}
	if n, s := batched.Load(), single.Load(); n == 0 || s != 0 {
		t.Errorf("%d batched and %d single completions, want batched ones only", n, s)
	}

	if err := syscall.Kill(syscall.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-returned:
	case <-time.After(20 * time.Second):
		t.Fatal("ExampleOptions_claim still runs 20s after SIGINT")
	}
}
