package agent_test

import (
	"context"
	"log/slog"
	"runtime"
	"strings"
	"testing"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/agent"
	"github.com/spin-broker/spinbroker/internal/httpapi"
	"github.com/spin-broker/spinbroker/internal/syncbuf"
)

// TestRun_HandlerGoexit: a handler that ends its goroutine with
// runtime.Goexit (t.FailNow in code lifted from a test, a library that
// calls it) fails its command for good, saying so, and the agent goes on.
// Neither returning nor panicking, it left the agent waiting for a result
// that never came: the command held, and the queue behind it, until the
// agent stopped.
func TestRun_HandlerGoexit(t *testing.T) {
	for _, claim := range []int{0, 4} {
		t.Run(map[int]string{0: "Single", 4: "Batch"}[claim], func(t *testing.T) {
			b := startBroker(t, httpapi.Options{}, nil)
			b.setConcurrency(t, 4)
			work := agent.Handle("work", func(ctx context.Context, p struct{ Goexit bool }) (any, error) {
				if p.Goexit {
					runtime.Goexit()
				}
				return map[string]bool{"done": true}, nil
			})
			var logs syncbuf.Buffer
			runAgent(t, b, []agent.Handler{work}, agent.Options{Claim: claim, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			ids := b.enqueue(t, cmd("work", `{}`), cmd("work", `{"Goexit":true}`), cmd("work", `{}`))
			for i, id := range ids {
				c := b.await(t, id)
				switch {
				case i == 1 && (c.State != spinbroker.Failed || c.Attempts != 1 || !strings.Contains(deref(c.Reason), "runtime.Goexit")):
					t.Errorf("the command whose handler called runtime.Goexit: %s after %d attempts, %q; want failed once, saying so", c.State, c.Attempts, deref(c.Reason))
				case i != 1 && (c.State != spinbroker.Succeeded || c.Attempts != 1):
					t.Errorf("command %d: %s after %d attempts", i, c.State, c.Attempts)
				}
			}
			if !strings.Contains(logs.String(), "runtime.Goexit") {
				t.Errorf("the log does not say the handler called runtime.Goexit:\n%s", logs.String())
			}
		})
	}
}
