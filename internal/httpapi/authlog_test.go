package httpapi_test

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/httpapi"
	"github.com/spin-broker/spinbroker/internal/syncbuf"
)

// TestAuth_RequestLogSaysWhyRefused: the log line of a 401 says why the
// token was refused, in auth: none sent, malformed (not a Bearer header, a
// secret no token could have), unknown, revoked, expired, revoked while
// the request waited. It had only code=unauthorized, the same for all: an
// operator could not tell a client with a stale token from one sending
// garbage, while the client was told. The secret is never in it.
func TestAuth_RequestLogSaysWhyRefused(t *testing.T) {
	var log syncbuf.Buffer
	e := newEnvLogging(t, httpapi.Options{Auth: true, TokenCacheTTL: 20 * time.Millisecond}, &log)
	_, revokedSecret := e.revokedSecret(spinbroker.RoleAdmin, "", "old")
	_, expiredSecret, err := e.db.CreateExpiringToken(ctx, spinbroker.RoleAdmin, "", "short", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	waiter, waiterSecret, err := e.db.CreateToken(ctx, spinbroker.RoleAgent, "work", "waiter")
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Add(time.Hour)
	long := "sbt_" + strings.Repeat("x", 200)

	// The long-poll is revoked while it waits.
	polled := make(chan response, 1)
	go func() {
		c := *e
		c.token = waiterSecret
		polled <- c.do("POST", "/queues/work/next?wait=30s", "", "X-Request-Id", "waiting")
	}()
	admin := *e
	admin.token = e.secret(spinbroker.RoleAdmin, "", "admin")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if m := admin.do("GET", "/metrics", ""); strings.Contains(string(m.body), `spinbroker_http_waits 1`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the long-poll never waited")
		}
	}
	if _, _, err := e.db.RevokeToken(ctx, waiter.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-polled:
		if r.status != 401 {
			t.Fatalf("the long-poll of a token revoked while it waited: %d %s", r.status, r.body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the long-poll of a revoked token went on waiting")
	}

	cases := []struct {
		id, auth string
		header   []string
	}{
		{"missing", "missing", nil},
		{"basic", "malformed", []string{"Authorization", "Basic dXNlcjpwYXNz"}},
		{"empty-bearer", "malformed", []string{"Authorization", "Bearer "}},
		{"too-long", "malformed", []string{"Authorization", "Bearer " + long}},
		{"typo", "unknown", []string{"Authorization", "Bearer sbt_mistyped"}},
		{"revoked", "revoked", []string{"Authorization", "Bearer " + revokedSecret}},
		{"expired", "expired", []string{"Authorization", "Bearer " + expiredSecret}},
	}
	for _, c := range cases {
		e.want(e.do("GET", "/packages", "", append([]string{"X-Request-Id", c.id}, c.header...)...), 401, spinbroker.EUNAUTHORIZED)
	}
	// The dashboard's login form refuses a token as the API does.
	if resp, err := e.srv.Client().PostForm(e.srv.URL+"/ui/login", url.Values{"token": {"sbt_mistyped"}}); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != 401 {
		t.Fatalf("login with a mistyped token: %d", resp.StatusCode)
	}
	cases = append(cases, struct {
		id, auth string
		header   []string
	}{"waiting", "revoked_while_waiting", nil})

	lines := map[string]map[string]any{}
	var login map[string]any
	for deadline := time.Now().Add(5 * time.Second); len(lines) < len(cases) || login == nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("request lines missing from the log (%d of %d):\n%s", len(lines), len(cases), log.String())
		}
		for l := range strings.Lines(log.String()) {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) != nil || m["msg"] != "request" {
				continue
			}
			if m["path"] == "/ui/login" && m["method"] == "POST" {
				login = m
			} else if id, _ := m["request_id"].(string); m["status"] == float64(401) {
				lines[id] = m
			}
		}
	}
	for _, c := range cases {
		if got := lines[c.id]; got["auth"] != c.auth || got["code"] != spinbroker.EUNAUTHORIZED {
			t.Errorf("%s: auth=%v code=%v, want auth=%s code=%s\n%v", c.id, got["auth"], got["code"], c.auth, spinbroker.EUNAUTHORIZED, got)
		}
	}
	if got := lines["waiting"]; got["token_id"] != waiter.ID {
		t.Errorf("the line of the long-poll revoked while it waited does not name its token: %v", got)
	}
	if login["status"] != float64(401) || login["auth"] != "unknown" {
		t.Errorf("the refused login's line: %v", login)
	}
	for _, secret := range []string{revokedSecret, expiredSecret, waiterSecret, long, "sbt_mistyped"} {
		if strings.Contains(log.String(), strings.TrimPrefix(secret, "sbt_")) {
			t.Errorf("the log holds the secret %s", secret)
		}
	}
}
