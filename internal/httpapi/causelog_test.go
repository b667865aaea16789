package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/store"
	"github.com/spin-broker/spinbroker/internal/store/storetest"
	"github.com/spin-broker/spinbroker/internal/syncbuf"
)

// TestCauseLog_ForgetsCausesThatStop: the log of 503 causes remembers a
// cause while its 503s go on, to count those it leaves out. A cause whose
// 503s stop for good (a token refused for --max-waits-per-token, then
// revoked: its name is in the cause) was remembered for ever once one of
// its 503s had been left out, so a broker whose tokens come and go grew
// an entry per token. It is forgotten an interval after its last line,
// and the count it held is logged then rather than lost.
func TestCauseLog_ForgetsCausesThatStop(t *testing.T) {
	db, clock := storetest.MustOpen(t, store.Options{})
	var log syncbuf.Buffer
	s := New(db, slog.New(slog.NewJSONHandler(&log, nil)), Options{Auth: true, MaxWaitsPerToken: 1, Now: clock.Now})
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		s.Shutdown()
		hs.Close()
	})
	srv := hs.URL
	ctx := context.Background()

	next := func(ctx context.Context, secret string) int {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, "POST", srv+"/queues/r/next?wait=30s", nil)
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return -1
			}
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	held := func(id string) int {
		s.waits.mu.Lock()
		defer s.waits.mu.Unlock()
		return s.waits.held[id]
	}
	// refuse has the token named name refused twice for holding a
	// long-poll already: the first refusal's cause is logged, the second
	// left out.
	refuse := func(name string) {
		t.Helper()
		tok, secret, err := db.CreateToken(ctx, spinbroker.RoleAgent, "r", name)
		if err != nil {
			t.Fatal(err)
		}
		pctx, cancel := context.WithCancel(ctx)
		done := make(chan int, 1)
		go func() { done <- next(pctx, secret) }()
		for deadline := time.Now().Add(10 * time.Second); held(tok.ID) != 1; {
			if time.Now().After(deadline) {
				t.Fatalf("the long-poll of %s never waited", name)
			}
			time.Sleep(time.Millisecond)
		}
		for range 2 {
			if code := next(ctx, secret); code != http.StatusServiceUnavailable {
				t.Fatalf("a second long-poll of %s: %d, want 503", name, code)
			}
		}
		cancel()
		<-done
	}

	const tokens = 20
	for i := range tokens {
		refuse(fmt.Sprintf("gone-%d", i))
	}
	clock.Add(causeLogEvery + time.Second)
	refuse("late") // a new cause, an interval later

	s.causes.mu.Lock()
	n := len(s.causes.causes)
	s.causes.mu.Unlock()
	if n != 1 {
		t.Errorf("%d causes remembered, want 1 (the late token's): the others stopped an interval ago", n)
	}
	left := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(log.String()), "\n") {
		var line struct {
			Msg        string `json:"msg"`
			Err        string `json:"err"`
			Suppressed int    `json:"suppressed_since_last_line"`
		}
		if err := json.Unmarshal([]byte(l), &line); err != nil {
			t.Fatalf("%v: %s", err, l)
		}
		if line.Msg == "unavailable" && line.Suppressed > 0 {
			left[line.Err] += line.Suppressed
		}
	}
	for i := range tokens {
		cause := fmt.Sprintf("the token %q holds", fmt.Sprintf("gone-%d", i))
		found := false
		for err, n := range left {
			if strings.Contains(err, cause) && n == 1 {
				found = true
			}
		}
		if !found {
			t.Errorf("the 503 left out for token gone-%d was never counted in a line; counted: %v", i, left)
		}
	}
}
