package httpapi_test

import (
	"encoding/json"
	"io"
	"net/url"
	"strings"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/httpapi"
	"github.com/spin-broker/spinbroker/internal/syncbuf"
)

// TestAuth_RevokedToken: a request with a revoked token is answered 401
// unauthorized saying it was revoked, and when, not "not valid or was
// revoked" as a mistyped one is; the refusal is remembered like any other
// (answered the same until the cache forgets it, the token deleted
// meanwhile), the dashboard's login says it as a sentence, and the request
// log says auth=revoked, and auth=unknown for a secret no one made. A token
// trusted before its revocation is refused so once the broker's trust in
// it runs out.
func TestAuth_RevokedToken(t *testing.T) {
	var log syncbuf.Buffer
	e := newEnvLogging(t, httpapi.Options{Auth: true, TokenCacheTTL: time.Hour}, &log)
	revoked, secret := e.revokedSecret(spinbroker.RoleAdmin, "", "old")
	want := "the token was revoked at " + revoked.RevokedAt.UTC().Format(time.RFC3339) + ": ask for a new one (spinbroker token create)"
	as := func(secret string) *env { c := *e; c.token = secret; return &c }
	check := func(name string, r response) {
		t.Helper()
		as(secret).want(r, 401, spinbroker.EUNAUTHORIZED)
		var b spinbroker.ErrorBody
		if err := json.Unmarshal(r.body, &b); err != nil || b.Error.Message != want {
			t.Errorf("%s: %s, want the message %q", name, r.body, want)
		}
		if r.header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: 401 without WWW-Authenticate", name)
		}
	}
	check("Unread", as(secret).do("GET", "/packages", "", "X-Request-Id", "revoked"))
	// Deleted now: the store would say "not valid"; the remembered refusal
	// is answered as it was.
	if _, err := e.db.DeleteToken(ctx, revoked.ID); err != nil {
		t.Fatal(err)
	}
	check("Cached", as(secret).do("GET", "/packages", ""))

	r := as("sbt_mistyped").do("GET", "/packages", "", "X-Request-Id", "typo")
	if r.status != 401 || !strings.Contains(string(r.body), "the token is not valid or was revoked") {
		t.Errorf("a mistyped token: %d %s", r.status, r.body)
	}

	// The dashboard's login form, with a token revoked and not yet deleted.
	goneRevoked, goneSecret := e.revokedSecret(spinbroker.RoleViewer, "", "gone")
	login, err := e.srv.Client().PostForm(e.srv.URL+"/ui/login", url.Values{"token": {goneSecret}})
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(login.Body)
	login.Body.Close()
	sentence := "The token was revoked at " + goneRevoked.RevokedAt.UTC().Format(time.RFC3339) + ": ask for a new one (spinbroker token create)."
	if login.StatusCode != 401 || !strings.Contains(string(page), sentence) {
		t.Errorf("logging in with a revoked token: %d, the page does not say %q", login.StatusCode, sentence)
	}

	lines := map[string]map[string]any{}
	var loginLine map[string]any
	for deadline := time.Now().Add(5 * time.Second); len(lines) < 2 || loginLine == nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("request lines missing from the log:\n%s", log.String())
		}
		for l := range strings.Lines(log.String()) {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) != nil || m["msg"] != "request" {
				continue
			}
			if m["path"] == "/ui/login" && m["method"] == "POST" {
				loginLine = m
			} else if id, _ := m["request_id"].(string); id != "" && m["status"] == float64(401) {
				lines[id] = m
			}
		}
	}
	for id, auth := range map[string]string{"revoked": "revoked", "typo": "unknown"} {
		if got := lines[id]; got["auth"] != auth || got["code"] != spinbroker.EUNAUTHORIZED {
			t.Errorf("%s: auth=%v code=%v, want auth=%s", id, got["auth"], got["code"], auth)
		}
	}
	if loginLine["status"] != float64(401) || loginLine["auth"] != "revoked" {
		t.Errorf("the refused login's line: %v", loginLine)
	}
}

// TestAuth_RevokedWhileTrusted: a token the broker checked and trusts for
// a few seconds is refused, saying it was revoked, once that trust runs out
// (and not before, as ever: the cache spares the database a read a
// request).
func TestAuth_RevokedWhileTrusted(t *testing.T) {
	e := newEnv(t, httpapi.Options{Auth: true, TokenCacheTTL: 50 * time.Millisecond})
	tok, secret, err := e.db.CreateToken(ctx, spinbroker.RoleViewer, "", "v")
	if err != nil {
		t.Fatal(err)
	}
	c := *e
	c.token = secret
	c.want(c.do("GET", "/packages", ""), 200, "")
	revoked, _, err := e.db.RevokeToken(ctx, tok.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := "the token was revoked at " + revoked.RevokedAt.UTC().Format(time.RFC3339)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		r := c.do("GET", "/packages", "")
		if r.status == 401 {
			if !strings.Contains(string(r.body), want) {
				t.Errorf("a token revoked while trusted: %s, want %q", r.body, want)
			}
			break
		}
		if r.status != 200 || time.Now().After(deadline) {
			t.Fatalf("a token revoked while trusted: %d %s", r.status, r.body)
		}
	}
}
