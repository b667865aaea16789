package agent_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/spin-broker/spinbroker/agent"
)

// TestWithTimeout_Cause: a handler tells why its context was cancelled with
// errors.Is(context.Cause(ctx), …), as the package doc says; for its own
// time limit that is context.DeadlineExceeded, as for any deadline, and
// none of the agent's causes. The cause was an unexported error that
// matched nothing a handler could name.
func TestWithTimeout_Cause(t *testing.T) {
	var cause, ctxErr error
	h := agent.Handle("slow", func(ctx context.Context, p struct{}) (any, error) {
		<-ctx.Done()
		cause, ctxErr = context.Cause(ctx), ctx.Err()
		return nil, ctx.Err()
	}).WithTimeout(20 * time.Millisecond)
	_, err := h.Call(context.Background(), nil)
	if !agent.IsTransient(err) {
		t.Errorf("Call = %v, want a transient error", err)
	}
	if !errors.Is(ctxErr, context.DeadlineExceeded) {
		t.Errorf("ctx.Err() = %v, want context.DeadlineExceeded", ctxErr)
	}
	if !errors.Is(cause, context.DeadlineExceeded) {
		t.Errorf("context.Cause(ctx) = %v (%T), want one that errors.Is finds context.DeadlineExceeded in", cause, cause)
	}
	for _, other := range []error{agent.ErrLeaseLost, agent.ErrLeaseExpired, agent.ErrStopped, agent.ErrRefused} {
		if errors.Is(cause, other) {
			t.Errorf("context.Cause(ctx) = %v, which errors.Is takes for %v", cause, other)
		}
	}
	if cause == nil || cause.Error() != "the handler timed out after 20ms" {
		t.Errorf("context.Cause(ctx) says %v, want the time limit named", cause)
	}
}

// TestWithTimeout_CauseReturned: a handler that returns the cause of its
// context's end, as the README shows it asking for, fails the command with
// the time limit named once, not "the handler timed out after 20ms: the
// handler timed out after 20ms".
func TestWithTimeout_CauseReturned(t *testing.T) {
	h := agent.Handle("slow", func(ctx context.Context, p struct{}) (any, error) {
		<-ctx.Done()
		return nil, context.Cause(ctx)
	}).WithTimeout(20 * time.Millisecond)
	_, err := h.Call(context.Background(), nil)
	if !agent.IsTransient(err) {
		t.Errorf("Call = %v, want a transient error", err)
	}
	if err == nil || err.Error() != "the handler timed out after 20ms" {
		t.Errorf("Call = %v, want the time limit named once", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Call = %v, which errors.Is does not take for context.DeadlineExceeded", err)
	}
}
