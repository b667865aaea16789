package agent_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/agent"
	"github.com/spin-broker/spinbroker/internal/httpapi"
	"github.com/spin-broker/spinbroker/internal/syncbuf"
)

// TestRun_BatchLargeParameters: a batch agent of Claim 64 on a queue of 64
// commands of about 1 MiB of parameters each runs every one of them, once.
// The claim answered them all at once, 64 MiB and more, past what the
// client reads: the agent never saw them, they sat leased until their
// leases ran out, and each try cost an attempt, so that they failed
// "lease expired" without ever running.
func TestRun_BatchLargeParameters(t *testing.T) {
	b := startBroker(t, httpapi.Options{}, nil)
	b.setConcurrency(t, 64)
	big := strings.Repeat("x", spinbroker.MaxBodyBytes-300)
	var ids []string
	for range 64 {
		ids = append(ids, b.enqueue(t, cmd("work", `{"p":"`+big+`"}`))...)
	}
	var runs atomic.Int32
	// Raw parameters: decoding 64 MiB into a struct, checked field by
	// field, takes a while under the race detector, and is not the point.
	work := agent.Handle("work", func(ctx context.Context, p json.RawMessage) (any, error) {
		runs.Add(1)
		if len(p) < len(big) {
			t.Errorf("parameters of %d bytes, want %d and more", len(p), len(big))
		}
		return nil, nil
	})
	var logs syncbuf.Buffer
	runAgent(t, b, []agent.Handler{work}, agent.Options{Claim: 64, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	// Generously: 64 MiB go through, slowly under the race detector.
	for deadline := time.Now().Add(2 * time.Minute); runs.Load() < 64; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d runs of 64 commands after 2 minutes:\n%s", runs.Load(), logs.String())
		}
	}
	for i, id := range ids {
		c := b.await(t, id)
		if c.State != spinbroker.Succeeded || c.Attempts != 1 {
			t.Errorf("command %d: %s after %d attempts (%q)", i, c.State, c.Attempts, deref(c.Reason))
		}
	}
	if n := runs.Load(); n != 64 {
		t.Errorf("%d runs of 64 commands", n)
	}
	if l := grepLine(logs.String(), "cannot take commands"); l != "" {
		t.Errorf("the agent could not take the commands: %s", l)
	}
}
