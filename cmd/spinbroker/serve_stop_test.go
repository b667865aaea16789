package main

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// TestServe_StoppedBeforeServing: a broker told to stop while it opens or
// checks its database (SIGTERM during a long --check) stops cleanly: exit
// 0 and a line that says so, not "spinbroker: context canceled" and exit 1,
// which a supervisor takes for a failure.
func TestServe_StoppedBeforeServing(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(errors.New("SIGTERM"))
	var stdout, stderr bytes.Buffer
	code := run(ctx, []string{"serve", "--check", "--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "b.db")}, nil, &stdout, &stderr)
	if code != 0 || strings.Contains(stderr.String(), "context canceled") || !strings.Contains(stderr.String(), "before serving") {
		t.Fatalf("exit %d:\n%s", code, stderr.String())
	}
}
