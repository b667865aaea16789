package agent_test

import (
	"context"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/agent"
	"github.com/spin-broker/spinbroker/internal/httpapi"
	"github.com/spin-broker/spinbroker/internal/syncbuf"
)

// TestRun_BatchHeartbeatOutageLogsOnce: with Options.Claim, an outage of
// heartbeats is one warning per round of retries and one line when they
// get through again, not one of each per command of the batch (a batch of
// 100 wrote 100 lines a round, burying everything else). Unreachable: a
// broker that does not answer at all fails each heartbeat with an error
// that names the request's URL, and so its command: told apart by that,
// every command's failure of a round was a line of its own.
func TestRun_BatchHeartbeatOutageLogsOnce(t *testing.T) {
	for _, drop := range []bool{false, true} {
		t.Run(map[bool]string{false: "Unavailable", true: "Unreachable"}[drop], func(t *testing.T) {
			testBatchHeartbeatOutage(t, drop)
		})
	}
}

func testBatchHeartbeatOutage(t *testing.T, drop bool) {
	o := &outage{drop: drop, match: func(r *http.Request) bool { return strings.HasSuffix(r.URL.Path, "/heartbeat") }}
	o.down.Store(true)
	b := startBroker(t, httpapi.Options{}, o.wrap)
	const n = 4
	conc := n
	if _, err := b.c.SetQueue(context.Background(), "test", spinbroker.QueueSettings{Concurrency: &conc}); err != nil {
		t.Fatal(err)
	}
	slow := agent.Handle("slow", func(ctx context.Context, p struct{}) (any, error) {
		time.Sleep(2500 * time.Millisecond)
		return nil, nil
	})
	var cmds []spinbroker.NewCommand
	for range n {
		cmds = append(cmds, cmd("slow", `{}`))
	}
	ids := b.enqueue(t, cmds...)
	var logs syncbuf.Buffer
	runAgent(t, b, []agent.Handler{slow}, agent.Options{Claim: n, Lease: 3 * time.Second, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	// Heartbeats come 1s in; let every command fail a few rounds.
	for o.seen.Load() < 3*n {
		time.Sleep(10 * time.Millisecond)
	}
	o.down.Store(false)
	for _, id := range ids {
		if c := b.await(t, id); c.State != spinbroker.Succeeded || c.Attempts != 1 {
			t.Errorf("command %s after %d attempts", c.State, c.Attempts)
		}
	}
	got := logs.String()
	rounds := map[string]int{}
	for _, m := range regexp.MustCompile(`msg="heartbeat failed; retrying".* failures=(\d+) `).FindAllStringSubmatch(got, -1) {
		rounds[m[1]]++
	}
	if len(rounds) < 2 {
		t.Fatalf("want warnings of at least two rounds of failed heartbeats:\n%s", got)
	}
	for r, k := range rounds {
		if k != 1 {
			t.Errorf("%d warnings for round %s of failed heartbeats of one batch, want 1", k, r)
		}
	}
	if k := strings.Count(got, `msg="heartbeats get through again"`); k != 1 {
		t.Errorf("%d lines saying heartbeats get through again, want 1:\n%s", k, got)
	}
	if !strings.Contains(got, "batch=4") {
		t.Errorf("the warning does not say it stands for the batch's 4 commands:\n%s", got)
	}
}
