package agent_test

import (
	"context"
	"errors"
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

// TestRun_TokenRevokedMidCommand: a heartbeat refused with 401 (the
// agent's token revoked while a command runs) is not a network failure.
// It was logged as one and retried until the lease ran out, and the
// handler stopped with "the broker could not be reached". Now the log
// says the broker refused the token, the handler is stopped at once with
// ErrRefused (its result could not be reported anyway), and Run stops with
// the error, as it does when next is refused.
func TestRun_TokenRevokedMidCommand(t *testing.T) {
	b, c, tokID := startAuthBroker(t, httpapi.Options{TokenCacheTTL: 100 * time.Millisecond}, "revoked")
	ctx := context.Background()
	started := make(chan struct{})
	cause := make(chan error, 1)
	block := agent.Handle("block", func(ctx context.Context, p struct{}) (any, error) {
		close(started)
		<-ctx.Done()
		cause <- context.Cause(ctx)
		return nil, context.Cause(ctx)
	})
	var logs syncbuf.Buffer
	done := make(chan error, 1)
	go func() {
		done <- agent.Run(ctx, c, "test", []agent.Handler{block}, agent.Options{
			Lease: 6 * time.Second, MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
			Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		})
	}()
	b.enqueue(t, cmd("block", `{}`))
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the command did not start")
	}
	if _, _, err := b.db.RevokeToken(ctx, tokID); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	// The next heartbeat comes 2s into the 6s lease; the lease would run
	// out by the agent's clock at 6s.
	select {
	case err := <-cause:
		if !errors.Is(err, agent.ErrRefused) || errors.Is(err, agent.ErrLeaseExpired) {
			t.Errorf("cause = %v, want ErrRefused", err)
		}
		if d := time.Since(revoked); d > 3500*time.Millisecond {
			t.Errorf("the handler was stopped %s after the token was revoked, want at the first refused heartbeat", d.Round(time.Millisecond))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the handler still runs 10s after its token was revoked")
	}
	select {
	case err := <-done:
		if spinbroker.ErrorCode(err) != spinbroker.EUNAUTHORIZED {
			t.Errorf("Run returned %v, want the 401", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run goes on with a revoked token")
	}
	got := logs.String()
	if strings.Contains(got, "could not be reached") || strings.Contains(got, "heartbeat failed; retrying") || !strings.Contains(got, "the broker refuses this agent's heartbeat") {
		t.Errorf("the agent's log:\n%s", got)
	}
}

// TestRun_BatchTokenRevoked: the agent's token is revoked while a batch
// runs: Run stops with the 401, and the log says so once for the batch.
// Every command's heartbeat is refused, and each wrote the same error line:
// a batch of 100 wrote 100 of them.
func TestRun_BatchTokenRevoked(t *testing.T) {
	b, c, tokID := startAuthBroker(t, httpapi.Options{TokenCacheTTL: 100 * time.Millisecond}, "revoked")
	b.setConcurrency(t, 5)
	ctx := context.Background()
	var began atomic.Int32
	all := make(chan struct{})
	block := agent.Handle("block", func(ctx context.Context, p struct{}) (any, error) {
		if began.Add(1) == 5 {
			close(all)
		}
		<-ctx.Done()
		return nil, context.Cause(ctx)
	})
	var logs syncbuf.Buffer
	done := make(chan error, 1)
	go func() {
		done <- agent.Run(ctx, c, "test", []agent.Handler{block}, agent.Options{
			Claim: 5, Lease: 3 * time.Second, MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
			Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		})
	}()
	var cmds []spinbroker.NewCommand
	for range 5 {
		cmds = append(cmds, cmd("block", `{}`))
	}
	b.enqueue(t, cmds...)
	select {
	case <-all:
	case <-time.After(10 * time.Second):
		t.Fatal("the batch did not start")
	}
	if _, _, err := b.db.RevokeToken(ctx, tokID); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if spinbroker.ErrorCode(err) != spinbroker.EUNAUTHORIZED {
			t.Errorf("Run returned %v, want the 401", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run goes on with a revoked token")
	}
	got := logs.String()
	if n := strings.Count(got, "refuses this agent's heartbeats"); n != 1 || !strings.Contains(got, "batch=5") {
		t.Errorf("%d lines say the broker refuses the heartbeats, want 1 for the batch of 5:\n%s", n, got)
	}
	if n := strings.Count(got, "not delivered"); n != 1 || !strings.Contains(got, "commands=5") {
		t.Errorf("%d lines say results were not delivered, want 1 for the 5 commands:\n%s", n, got)
	}
}
