package client_test

import (
	"context"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/client"
	"github.com/spin-broker/spinbroker/internal/brokertest"
)

// The examples read the broker's address from the environment, so go test
// only compiles them. These tests run them against a real broker, so that
// what go doc shows an SDK user keeps working.

// startExampleBroker serves a broker on a temporary database and points
// SPINBROKER_URL at it.
func startExampleBroker(t *testing.T) *client.Client {
	t.Helper()
	b := brokertest.Start(t)
	t.Setenv("SPINBROKER_URL", b.URL)
	return b.Client
}

// stdoutOf runs f and returns what it printed on standard output.
func stdoutOf(t *testing.T, f func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stdout
	os.Stdout = w
	read := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		read <- string(b)
	}()
	defer func() { os.Stdout = saved }()
	f()
	os.Stdout = saved
	w.Close()
	return <-read
}

// serveStorage completes every command of the resource "storage" until ctx
// ends, as the storage agent would.
func serveStorage(ctx context.Context, t *testing.T, c *client.Client) {
	for ctx.Err() == nil {
		cmd, err := c.Next(ctx, "storage", time.Second, 30*time.Second)
		if err != nil || cmd == nil {
			continue
		}
		ok := true
		if _, err := c.Complete(ctx, cmd.ID, spinbroker.Result{Status: &ok, Lease: cmd.Lease.Token}); err != nil && ctx.Err() == nil {
			t.Errorf("complete %s: %v", cmd.ID, err)
		}
	}
}

func TestExample_Runs(t *testing.T) {
	c := startExampleBroker(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); serveStorage(ctx, t, c) }()
	defer func() { cancel(); <-done }()

	out := stdoutOf(t, Example)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if last := lines[len(lines)-1]; last != "finished: succeeded" {
		t.Fatalf("Example printed %q, want its last line to be %q", out, "finished: succeeded")
	}
	if !strings.Contains(out, "2/2 succeeded") {
		t.Errorf("Example printed %q, want the package's progress ending at 2/2", out)
	}

	// The same package again: the idempotency key returns it, creating nothing.
	pkgs, err := c.Packages(context.Background(), client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs.Packages) != 1 {
		t.Fatalf("%d packages after one run, want 1", len(pkgs.Packages))
	}
	if out := stdoutOf(t, Example); !strings.HasSuffix(out, "finished: succeeded\n") {
		t.Fatalf("Example again printed %q", out)
	}
	if pkgs, err = c.Packages(context.Background(), client.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	if len(pkgs.Packages) != 1 {
		t.Fatalf("%d packages after running Example twice, want the first one only", len(pkgs.Packages))
	}
	t.Setenv("PKG", pkgs.Packages[0].ID)
	if out := stdoutOf(t, ExampleClient_WaitPackage); out != "done\n" {
		t.Errorf("ExampleClient_WaitPackage printed %q, want %q", out, "done\n")
	}
}

func TestExampleError_Runs(t *testing.T) {
	startExampleBroker(t)
	if out := stdoutOf(t, ExampleError); !strings.Contains(out, "not found") {
		t.Errorf("ExampleError against a broker without that command printed %q, want a not-found error", out)
	}

	// Nothing listens at the address: the broker is away, and the call may
	// succeed later.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	t.Setenv("SPINBROKER_URL", "http://"+addr)
	if out := stdoutOf(t, ExampleError); !strings.HasPrefix(out, "the broker is away or busy; try again:") {
		t.Errorf("ExampleError without a broker printed %q, want the temporary branch", out)
	}
}
