package agent_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/agent"
	"github.com/spin-broker/spinbroker/internal/httpapi"
	"github.com/spin-broker/spinbroker/internal/syncbuf"
)

// TestRun_WaitsCapRefusalIsRetried: an agent whose token holds the
// broker's --max-waits-per-token already (another agent with the same
// token) has its long-poll refused 503 with Retry-After: it backs off and
// asks again, rather than stop, and takes work once a place is free.
func TestRun_WaitsCapRefusalIsRetried(t *testing.T) {
	b, c, _ := startAuthBroker(t, httpapi.Options{MaxWaitsPerToken: 1}, "fleet")
	ctx := context.Background()
	// Another agent of the token holds its one place.
	holdCtx, release := context.WithCancel(ctx)
	defer release()
	held := make(chan error, 1)
	go func() {
		_, err := c.Next(holdCtx, "test", time.Minute, 0)
		held <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(metrics(t, b), "\nspinbroker_http_waits 1\n"); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first long-poll never waited")
		}
	}
	var logs syncbuf.Buffer
	done := make(chan error, 1)
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		done <- agent.Run(runCtx, c, "test", []agent.Handler{greeter(nil)}, agent.Options{
			Wait: 5 * time.Second, MinBackoff: 10 * time.Millisecond, MaxBackoff: 2 * time.Second,
			Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		})
	}()
	awaitLog(t, &logs, "max-waits-per-token") // the agent's long-poll refused
	release()
	if err := <-held; !errors.Is(err, context.Canceled) {
		t.Fatalf("the held long-poll ended with %v", err)
	}
	ids := b.enqueue(t, cmd("greet", `{"name":"later"}`))
	if got := b.await(t, ids[0]); got.State != spinbroker.Succeeded {
		t.Fatalf("command %s (%q)", got.State, deref(got.Reason))
	}
	select {
	case err := <-done:
		t.Fatalf("Run stopped after the refusal: %v\n%s", err, logs.String())
	default:
	}
	if !strings.Contains(logs.String(), "cannot take commands; retrying") {
		t.Errorf("the refusal was not logged as a retry:\n%s", logs.String())
	}
}

// metrics is the broker's /metrics, read with the token secret.
func metrics(t *testing.T, b *broker) string {
	t.Helper()
	req, err := http.NewRequest("GET", b.url+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+b.admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}
