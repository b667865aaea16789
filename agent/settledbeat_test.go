package agent_test

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/agent"
	"github.com/spin-broker/spinbroker/internal/httpapi"
	"github.com/spin-broker/spinbroker/internal/syncbuf"
)

// heldAnswer lets the first completion (single or batched) reach the
// broker, which records it, and holds back its answer until a heartbeat
// of a command it settled has been refused as a stale lease; then it
// gives the answer, or (lose) drops the connection instead.
type heldAnswer struct {
	lose      bool
	completed atomic.Bool
	refused   chan struct{}
	once      sync.Once
}

func (h *heldAnswer) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case isComplete(r) && h.completed.CompareAndSwap(false, true):
			rec := httptest.NewRecorder()
			next.ServeHTTP(rec, r)
			select {
			case <-h.refused:
			case <-time.After(10 * time.Second):
			}
			if h.lose {
				if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
					conn.Close()
				}
				return
			}
			replay(w, rec)
		case strings.HasSuffix(r.URL.Path, "/heartbeat") && h.completed.Load():
			rec := httptest.NewRecorder()
			next.ServeHTTP(rec, r)
			replay(w, rec)
			if strings.Contains(rec.Body.String(), spinbroker.ESTALE) {
				h.once.Do(func() { close(h.refused) })
			}
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// replay writes the answer rec recorded to w.
func replay(w http.ResponseWriter, rec *httptest.ResponseRecorder) {
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

// TestRun_HeartbeatRefusedAfterResult: a heartbeat that goes out while the
// result is on its way, and that the broker refuses because it has
// recorded the result (the completion ended the lease), is no lost lease.
// The agent said "lease lost" of a command that had succeeded, and when
// the completion's answer was lost too it dropped the result as "not
// delivered: the lease was lost" though the broker had it.
func TestRun_HeartbeatRefusedAfterResult(t *testing.T) {
	for _, tc := range []struct {
		name  string
		claim int
		lose  bool
	}{
		{"Single", 0, false},
		{"SingleAnswerLost", 0, true},
		{"Batch", 4, false},
		{"BatchAnswerLost", 4, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &heldAnswer{lose: tc.lose, refused: make(chan struct{})}
			b := startBroker(t, httpapi.Options{}, h.wrap)
			var logs syncbuf.Buffer
			runAgent(t, b, []agent.Handler{greeter(nil)}, agent.Options{Claim: tc.claim, Lease: time.Second,
				Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			ids := b.enqueue(t, cmd("greet", `{"name":"settled"}`))
			if c := b.await(t, ids[0]); c.State != spinbroker.Succeeded || c.Attempts != 1 {
				t.Fatalf("command %s after %d attempts", c.State, c.Attempts)
			}
			select {
			case <-h.refused:
			case <-time.After(10 * time.Second):
				t.Fatal("no heartbeat was refused while the completion's answer was held")
			}
			awaitLog(t, &logs, `msg="command finished"`)
			if got := logs.String(); strings.Contains(got, "lease lost") || strings.Contains(got, "not delivered") {
				t.Errorf("a heartbeat refused once the result was recorded was taken for a lost lease:\n%s", got)
			}
		})
	}
}
