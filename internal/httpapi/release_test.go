package httpapi_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/httpapi"
	"github.com/spin-broker/spinbroker/internal/store"
	"github.com/spin-broker/spinbroker/internal/store/storetest"
)

// leavingClient is the store with a client that goes away just as its
// long-poll is answered: once a lease is taken for it, it hangs up, and
// the lease returns only when the server has seen it go.
type leavingClient struct {
	*store.DB
	hangUp func()
}

func (l *leavingClient) Next(ctx context.Context, resource string, lease time.Duration) (*spinbroker.Command, time.Time, error) {
	c, wake, err := l.DB.Next(ctx, resource, lease)
	if c != nil {
		l.hangUp()
		<-ctx.Done()
	}
	return c, wake, err
}

func (l *leavingClient) Claim(ctx context.Context, resource string, max int, lease time.Duration) ([]spinbroker.Command, time.Time, error) {
	cs, wake, err := l.DB.Claim(ctx, resource, max, lease)
	if len(cs) > 0 {
		l.hangUp()
		<-ctx.Done()
	}
	return cs, wake, err
}

// TestRelease_AnswerNobodyRead: the commands leased for a next or a claim
// whose client went away before the answer was written go back to ready,
// their attempts not counted, so that the queue need not wait out their
// leases (a minute by default) before anyone gets them.
func TestRelease_AnswerNobodyRead(t *testing.T) {
	for _, path := range []string{"/queues/r/next?wait=5s", "/queues/r/claim"} {
		t.Run(path, func(t *testing.T) {
			db, _ := storetest.MustOpen(t, store.Options{Now: time.Now})
			ctx, hangUp := context.WithCancel(context.Background())
			api := httpapi.New(&leavingClient{DB: db, hangUp: hangUp}, slog.New(slog.NewTextHandler(io.Discard, nil)), httpapi.Options{Now: time.Now})
			srv := httptest.NewServer(api.Handler())
			t.Cleanup(func() { api.Shutdown(); srv.Close() })
			p, _, err := db.CreatePackage(context.Background(), spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{{Resource: "r", Action: "a"}}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			id := p.Commands[0].ID
			var body io.Reader
			if path == "/queues/r/claim" {
				body = strings.NewReader(`{"max": 10, "wait": "5s"}`)
			}
			req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+path, body)
			if _, err := http.DefaultClient.Do(req); err == nil {
				t.Fatal("the client that hung up got an answer")
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				c, err := db.Command(context.Background(), id)
				if err != nil {
					t.Fatal(err)
				}
				if c.State == spinbroker.Ready && c.Attempts == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the command of the answer nobody read is %s, %d attempts; want ready, 0", c.State, c.Attempts)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}
