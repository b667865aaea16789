package httpapi_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/httpapi"
)

// waiter is a request sent in the background that may be held open.
type waiter struct {
	cancel context.CancelFunc
	status chan int // its status once answered (the headers of a stream), -1 when it failed
	done   chan struct{}
}

// hold sends method path with the token secret (from the dashboard's
// cookie when cookie is set) and answers at once; the request runs until
// it is answered or w.cancel is called.
func (e *env) hold(secret, method, path, body string, cookie bool) *waiter {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &waiter{cancel: cancel, status: make(chan int, 1), done: make(chan struct{})}
	e.t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, method, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if cookie {
		req.AddCookie(&http.Cookie{Name: httpapi.TokenCookie, Value: secret})
	} else {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	go func() {
		defer close(w.done)
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			w.status <- -1
			return
		}
		defer resp.Body.Close()
		w.status <- resp.StatusCode
		io.Copy(io.Discard, resp.Body)
	}()
	return w
}

// metric is the value of a series of the broker's /metrics, read with the
// admin token secret; -1 when there is none.
func (e *env) metric(secret, name string) float64 {
	e.t.Helper()
	saved := e.token
	e.token = secret
	defer func() { e.token = saved }()
	v, ok := metricValue(string(e.do("GET", "/metrics", "").body), name)
	if !ok {
		return -1
	}
	return v
}

// waitMetric waits until the series name reads want.
func (e *env) waitMetric(secret, name string, want float64) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := e.metric(secret, name)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s is %v, want %v", name, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestWaits_CappedPerToken: a token holds at most MaxWaitsPerToken
// requests open waiting (long-polls that block, event streams, the
// dashboard's stream from its cookie alike); past it a request that would
// wait is answered 503 unavailable at once, with Retry-After and a message
// that names the flag, while one that would not wait (wait=0) and another
// token's are served as ever. Every way a wait ends gives its place back.
func TestWaits_CappedPerToken(t *testing.T) {
	var log bytes.Buffer
	e := newEnvLogging(t, httpapi.Options{Auth: true, MaxWaitsPerToken: 2}, &log)
	admin := e.secret(spinbroker.RoleAdmin, "", "admin")
	// Tokens that may both long-poll and stream (an agent's may not
	// stream, a viewer's may not poll).
	a := e.secret(spinbroker.RoleAdmin, "", "ops-a")
	b := e.secret(spinbroker.RoleAdmin, "", "ops-b")
	const waits, refused = "spinbroker_http_waits", "spinbroker_http_waits_refused_total"
	if got := e.metric(admin, refused); got != 0 {
		t.Fatalf("%s is %v before any refusal, want 0", refused, got)
	}

	// refusedAtOnce sends a request of a that must be refused now.
	refusedAtOnce := func(method, path, body string, cookie bool) {
		t.Helper()
		start := time.Now()
		w := e.hold(a, method, path, body, cookie)
		select {
		case <-w.done:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s %s over the cap was not answered at once", method, path)
		}
		if got := <-w.status; got != 503 {
			t.Fatalf("%s %s over the cap answered %d, want 503", method, path, got)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("%s %s over the cap took %s", method, path, d)
		}
		// The answer itself, read again for its headers and body.
		saved := e.token
		e.token = a
		if cookie {
			e.token = ""
		}
		var r response
		if cookie {
			r = e.do(method, path, body, "Cookie", httpapi.TokenCookie+"="+a)
		} else {
			r = e.do(method, path, body)
		}
		e.token = saved
		e.want(r, 503, spinbroker.EUNAVAILABLE)
		if r.header.Get("Retry-After") == "" {
			t.Errorf("%s %s: a 503 without Retry-After", method, path)
		}
		if msg := string(r.body); !strings.Contains(msg, "holds 2 waiting requests") || !strings.Contains(msg, "--max-waits-per-token") {
			t.Errorf("%s %s: the refusal does not say why: %s", method, path, msg)
		}
	}

	// Two long-polls of a's hold; a third, and a's event stream, are
	// refused at once.
	next := e.hold(a, "POST", "/queues/work/next?wait=30s", "", false)
	e.hold(a, "POST", "/queues/work/claim", `{"max": 5, "wait": "30s"}`, false)
	e.waitMetric(admin, waits, 2)
	refusedAtOnce("POST", "/queues/work/next?wait=30s", "", false)
	refusedAtOnce("POST", "/queues/work/claim", `{"max": 1, "wait": "30s"}`, false)
	refusedAtOnce("GET", "/events", "", false)
	refusedAtOnce("GET", "/events", "", true) // the dashboard's, from its cookie
	if got := e.metric(admin, refused); got != 8 {
		t.Errorf("%s is %v after 8 refusals, want 8", refused, got)
	}
	// A request that does not wait is not capped.
	saved := e.token
	e.token = a
	e.want(e.do("POST", "/queues/work/next?wait=0s", ""), 204, "")
	e.want(e.do("POST", "/queues/work/next", ""), 204, "")
	e.want(e.do("POST", "/queues/work/claim", `{"max": 1}`), 200, "")
	e.token = saved
	// Another token has its own cap.
	other := e.hold(b, "GET", "/events", "", false)
	if got := <-other.status; got != 200 {
		t.Fatalf("another token's event stream answered %d, want 200", got)
	}
	e.hold(b, "POST", "/queues/work/next?wait=30s", "", false)
	e.waitMetric(admin, waits, 4)

	// A client that goes away gives its place back: a's event stream is
	// then accepted, and counts as the long-polls do.
	next.cancel()
	<-next.done
	e.waitMetric(admin, waits, 3)
	stream := e.hold(a, "GET", "/events", "", true)
	if got := <-stream.status; got != 200 {
		t.Fatalf("a's event stream after a long-poll ended answered %d, want 200", got)
	}
	e.waitMetric(admin, waits, 4)
	refusedAtOnce("POST", "/queues/work/next?wait=30s", "", false)
	// A stream that ends gives it back too.
	stream.cancel()
	<-stream.done
	e.waitMetric(admin, waits, 3)
	// So does a long-poll whose wait runs out.
	short := e.hold(a, "POST", "/queues/work/next?wait=300ms", "", false)
	select {
	case <-short.done:
	case <-time.After(10 * time.Second):
		t.Fatal("a short long-poll never ended")
	}
	if got := <-short.status; got != 204 {
		t.Fatalf("a short long-poll answered %d, want 204", got)
	}
	e.waitMetric(admin, waits, 3)
	// And one that is given work.
	e.token = admin
	e.createPackage(`[{"resource": "work", "action": "go"}]`, true)
	e.token = saved
	e.waitMetric(admin, waits, 2) // one of claim and otherPoll got the command
	// Shutdown ends the rest, and leaves nothing counted.
	e.api.Shutdown()
	e.waitMetric(admin, waits, 0)

	// The cause is logged at warn, once for a burst of refusals, not once
	// per request.
	lines := 0
	for _, l := range strings.Split(log.String(), "\n") {
		if strings.Contains(l, `"msg":"unavailable"`) && strings.Contains(l, "max-waits-per-token") {
			lines++
			if !strings.Contains(l, `"level":"WARN"`) {
				t.Errorf("the refusal's cause is not logged at warn: %s", l)
			}
		}
	}
	if lines != 1 {
		t.Errorf("%d lines give the refusals' cause, want 1 (rate-limited):\n%s", lines, log.String())
	}
}

// TestWaits_NoCapWithoutAuth: a broker without auth has no tokens to
// count under (everyone is the one anonymous admin, on a loopback
// address); MaxWaitsPerToken caps nothing there.
func TestWaits_NoCapWithoutAuth(t *testing.T) {
	e := newEnv(t, httpapi.Options{MaxWaitsPerToken: 1})
	var ws []*waiter
	for i := range 3 {
		ws = append(ws, e.hold("", "POST", fmt.Sprintf("/queues/q%d/next?wait=30s", i), "", false))
	}
	ws = append(ws, e.hold("", "GET", "/events", "", false))
	if got := <-ws[3].status; got != 200 {
		t.Fatalf("an event stream without auth answered %d, want 200", got)
	}
	e.waitMetric("", "spinbroker_http_waits", 4)
	if got := e.metric("", "spinbroker_http_waits_refused_total"); got != 0 {
		t.Errorf("%v refusals without auth, want 0", got)
	}
}
