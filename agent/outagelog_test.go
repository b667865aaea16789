package agent

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spin-broker/spinbroker/client"
	"github.com/spin-broker/spinbroker/internal/syncbuf"
)

// TestLoop_OutageLoggedSparingly: through a long outage the agent tries
// the broker again every few seconds, but its log keeps to the first few
// failures and then a line per outageLogEvery, counting the failures left
// out; the line that says the broker answers again counts them all. Every
// try wrote a warning: a broker stopped for an hour left up to 720
// identical lines per agent.
func TestLoop_OutageLoggedSparingly(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // the broker is down
	c, err := client.New("http://" + addr)
	if err != nil {
		t.Fatal(err)
	}
	var logs syncbuf.Buffer
	a, err := newRunner(c, "r", []Handler{Handle("x", func(context.Context, struct{}) (any, error) { return nil, nil })}, Options{
		Logger:     slog.New(slog.NewTextHandler(&logs, nil)),
		MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond, Wait: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	a.outageLogEvery = 300 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.loop(ctx) }()

	const outage = time.Second
	time.Sleep(outage)
	// The broker comes back: every next finds nothing.
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen again on %s: %v", addr, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })}
	go srv.Serve(ln)
	defer srv.Close()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "taking commands again") {
		if time.Now().After(deadline) {
			t.Fatalf("the agent does not say it takes commands again:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	got := logs.String()
	lines := strings.Count(got, "cannot take commands; retrying")
	// The first outageLinesInFull, then one per 300ms of a 1s outage, and
	// room for a slow machine.
	if lines > outageLinesInFull+int(outage/a.outageLogEvery)+2 {
		t.Errorf("%d warnings for one outage:\n%s", lines, got)
	}
	if lines <= outageLinesInFull {
		t.Errorf("no line after the first %d failures of a %v outage, logged every %v:\n%s", outageLinesInFull, outage, a.outageLogEvery, got)
	}
	m := regexp.MustCompile(`suppressed_since_last_line=(\d+)`).FindAllStringSubmatch(got, -1)
	if len(m) == 0 {
		t.Fatalf("no line counts the failures it left out:\n%s", got)
	}
	left := 0
	for _, s := range m {
		n, _ := strconv.Atoi(s[1])
		left += n
	}
	after := regexp.MustCompile(`after_failures=(\d+)`).FindStringSubmatch(got)
	if after == nil {
		t.Fatalf("no after_failures:\n%s", got)
	}
	total, _ := strconv.Atoi(after[1])
	// Every failure is a line or counted in one (those after the last
	// line are counted by after_failures alone).
	if total < lines+left {
		t.Errorf("after_failures=%d, but %d lines and %d left out:\n%s", total, lines, left, got)
	}
	if total < 50 {
		t.Errorf("after_failures=%d: the agent did not try again every few milliseconds:\n%s", total, got)
	}
}
