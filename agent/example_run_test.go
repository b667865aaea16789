package agent_test

import (
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
