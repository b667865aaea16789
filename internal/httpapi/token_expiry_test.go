package httpapi_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/httpapi"
	"github.com/spin-broker/spinbroker/internal/syncbuf"
)

// TestAuth_ExpiredToken: a request with a token past its end is answered
// 401 unauthorized saying that it expired, and when, whether the broker had
// checked the token before (and trusts it for a few seconds) or not; a
// mistyped token is still "not valid". A client author can tell "renew
// your token" from "fix your token".
func TestAuth_ExpiredToken(t *testing.T) {
	e := newEnv(t, httpapi.Options{Auth: true, TokenCacheTTL: time.Hour})
	start := e.clock.Now()
	_, used, err := e.db.CreateExpiringToken(ctx, spinbroker.RoleAdmin, "", "used", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, unused, err := e.db.CreateExpiringToken(ctx, spinbroker.RoleViewer, "", "unused", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	as := func(secret string) *env { c := *e; c.token = secret; return &c }
	as(used).want(as(used).do("GET", "/packages", ""), 200, "")

	e.clock.Add(time.Hour)
	want := "expired at " + start.Add(time.Hour).Format(time.RFC3339)
	for name, secret := range map[string]string{"Cached": used, "Unread": unused} {
		r := as(secret).do("GET", "/packages", "")
		as(secret).want(r, 401, spinbroker.EUNAUTHORIZED)
		var b spinbroker.ErrorBody
		if err := json.Unmarshal(r.body, &b); err != nil || !strings.Contains(b.Error.Message, want) {
			t.Errorf("%s: %s, want a message with %q", name, r.body, want)
		}
		if r.header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: 401 without WWW-Authenticate", name)
		}
	}
	// The dashboard's login form says so too.
	login, err := e.srv.Client().PostForm(e.srv.URL+"/ui/login", url.Values{"token": {unused}})
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(login.Body)
	login.Body.Close()
	if login.StatusCode != 401 || !strings.Contains(string(page), "The token "+want) {
		t.Errorf("logging in with an expired token: %d, the page does not say %q", login.StatusCode, "The token "+want)
	}
	r := as("sbt_mistyped").do("GET", "/packages", "")
	if r.status != 401 || !strings.Contains(string(r.body), "the token is not valid or was revoked") || strings.Contains(string(r.body), "expired") {
		t.Errorf("a mistyped token: %d %s", r.status, r.body)
	}
}

// TestAuth_ExpiredWhileWaiting: a long-poll whose token reaches its end
// while it waits ends with 401 saying the token expired, not that it was
// revoked.
func TestAuth_ExpiredWhileWaiting(t *testing.T) {
	e := newEnv(t, httpapi.Options{Auth: true, TokenCacheTTL: 20 * time.Millisecond})
	_, secret, err := e.db.CreateExpiringToken(ctx, spinbroker.RoleAgent, "work", "a", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	polled := make(chan response, 1)
	go func() {
		req, _ := http.NewRequest("POST", e.srv.URL+"/queues/work/next?wait=30s", nil)
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			polled <- response{status: -1}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		polled <- response{status: resp.StatusCode, body: b}
	}()
	admin := *e
	admin.token = e.secret(spinbroker.RoleAdmin, "", "admin")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		m := admin.do("GET", "/metrics", "")
		if strings.Contains(string(m.body), `spinbroker_http_waits 1`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the long-poll never waited:\n%s", m.body)
		}
	}
	e.clock.Add(time.Hour)
	select {
	case r := <-polled:
		if r.status != 401 || !strings.Contains(string(r.body), "expired at") || strings.Contains(string(r.body), "revoked") {
			t.Errorf("the long-poll of a token that expired while it waited: %d %s", r.status, r.body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the long-poll of an expired token went on waiting")
	}
}

// TestAuth_ExpiredStreamSendsNothing: an event stream whose token reaches
// its end sends not one event more (SECURITY.md: from its end on, "to the
// second and whatever the cache holds", it is refused, and event streams
// end too). Before, the stream went on delivering every change until the
// next re-check of its token, up to the token cache's 5 seconds later.
func TestAuth_ExpiredStreamSendsNothing(t *testing.T) {
	e := newEnv(t, httpapi.Options{Auth: true, TokenCacheTTL: time.Hour})
	_, secret, err := e.db.CreateExpiringToken(ctx, spinbroker.RoleViewer, "", "v", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", e.srv.URL+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+secret)
	stream, err := e.srv.Client().Do(req)
	if err != nil || stream.StatusCode != 200 {
		t.Fatalf("events: %v %v", stream, err)
	}
	defer stream.Body.Close()
	var got syncbuf.Buffer
	ended := make(chan struct{})
	go func() { io.Copy(&got, stream.Body); close(ended) }()
	// The stream works while the token does: a change before its end is
	// sent.
	admin := *e
	admin.token = e.secret(spinbroker.RoleAdmin, "", "admin")
	before := admin.createPackage(`[{"resource": "work", "action": "before"}]`, true)
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(got.String(), before.ID); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the stream sent nothing while its token worked:\n%s", got.String())
		}
	}
	e.clock.Add(time.Hour)
	after := admin.createPackage(`[{"resource": "work", "action": "after"}]`, true)
	select {
	case <-ended:
		if strings.Contains(got.String(), after.ID) {
			t.Errorf("the stream of an expired token sent a change made after its end:\n%s", got.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the event stream of an expired token goes on")
	}
}
