package httpapi_test

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/httpapi"
	"github.com/spin-broker/spinbroker/internal/store"
	"github.com/spin-broker/spinbroker/internal/store/storetest"
	"github.com/spin-broker/spinbroker/internal/syncbuf"
)

// replaceFile puts a copy of the database in its place, as a restore done
// without stopping the broker would: every write is refused from then on,
// and the store's cause names the file's path.
func (e *env) replaceFile() {
	e.t.Helper()
	dir := e.t.TempDir()
	if err := store.Backup(ctx, e.db.Path(), filepath.Join(dir, "copy.db")); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "copy.db"), e.db.Path()); err != nil {
		e.t.Fatal(err)
	}
}

// TestHealth_CauseOnlyToTokens: with auth on, /healthz is open to anyone
// who can reach the port, and a monitor polls it without a token; it tells
// that writes fail, but only a request with a token that works learns why
// (the store's cause names the database file's path and SQLite's errors).
// A bogus, revoked or expired token counts as none: the same answer, never
// a 401.
func TestHealth_CauseOnlyToTokens(t *testing.T) {
	e := newEnv(t, httpapi.Options{Auth: true})
	viewer := e.secret(spinbroker.RoleViewer, "", "monitor")
	agent := e.secret(spinbroker.RoleAgent, "storage", "agent")
	_, revoked := e.revokedSecret(spinbroker.RoleAdmin, "", "old")
	_, expired, err := e.db.CreateExpiringToken(ctx, spinbroker.RoleAdmin, "", "short", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Add(2 * time.Hour)
	e.replaceFile()
	path := e.db.Path()

	health := func(token string, header ...string) (response, map[string]string) {
		t.Helper()
		c := *e
		c.token = token
		r := c.do("GET", "/healthz", "", header...)
		var h map[string]string
		r.decode(t, &h)
		if head := c.do("HEAD", "/healthz", "", header...); head.status != r.status || len(head.body) != 0 {
			t.Errorf("HEAD /healthz: %d %q, GET answered %d", head.status, head.body, r.status)
		}
		return r, h
	}
	for name, token := range map[string]string{"none": "", "bogus": "sbt_not-a-real-token", "revoked": revoked, "expired": expired, "too long": strings.Repeat("x", 500)} {
		r, h := health(token)
		if r.status != 200 || h["status"] != "degraded" || h["writes"] != "failing" {
			t.Errorf("%s: /healthz while writes fail: %d %s, want 200 degraded, writes failing", name, r.status, r.body)
		}
		if strings.Contains(string(r.body), path) || strings.Contains(string(r.body), filepath.Base(path)) || strings.Contains(string(r.body), "replaced") {
			t.Errorf("%s: /healthz tells its cause to a request without a valid token: %s", name, r.body)
		}
	}
	for name, token := range map[string]string{"viewer": viewer, "agent": agent} {
		r, h := health(token)
		if r.status != 200 || h["status"] != "degraded" || !strings.HasPrefix(h["writes"], "failing: ") || !strings.Contains(h["writes"], path) {
			t.Errorf("%s: /healthz while writes fail: %d %s, want the cause", name, r.status, r.body)
		}
	}
	// The dashboard's cookie is a token too.
	if r, h := health("", "Cookie", httpapi.TokenCookie+"="+viewer); !strings.Contains(h["writes"], "replaced") {
		t.Errorf("with the dashboard's cookie: %d %s, want the cause", r.status, r.body)
	}
}

// TestHealth_UnavailableCauseOnlyToTokens: the 503 of a database that does
// not answer reads keeps its code for everyone, and its cause for a token
// the broker still trusts (from its cache: the database cannot be asked).
func TestHealth_UnavailableCauseOnlyToTokens(t *testing.T) {
	var log syncbuf.Buffer
	e := newEnvLogging(t, httpapi.Options{Auth: true, TokenCacheTTL: time.Hour}, &log)
	viewer := *e
	viewer.token = e.secret(spinbroker.RoleViewer, "", "monitor")
	viewer.want(viewer.do("GET", "/queues", ""), 200, "") // the broker checks, and caches, the token
	if err := e.db.Close(); err != nil {
		t.Fatal(err)
	}
	const cause = "the broker is shutting down" // the closed store's
	for name, token := range map[string]string{"none": "", "bogus": "sbt_not-a-real-token"} {
		c := *e
		c.token = token
		r := c.do("GET", "/healthz", "")
		c.want(r, 503, spinbroker.EUNAVAILABLE)
		if strings.Contains(string(r.body), cause) || r.header.Get("Retry-After") == "" {
			t.Errorf("%s: %s (Retry-After %q), want a generic message", name, r.body, r.header.Get("Retry-After"))
		}
		if head := c.do("HEAD", "/healthz", ""); head.status != 503 || len(head.body) != 0 {
			t.Errorf("%s: HEAD /healthz: %d %q", name, head.status, head.body)
		}
	}
	if !strings.Contains(log.String(), cause) {
		t.Errorf("the log does not keep the cause:\n%s", log.String())
	}
	r := viewer.do("GET", "/healthz", "")
	viewer.want(r, 503, spinbroker.EUNAVAILABLE)
	if !strings.Contains(string(r.body), cause) || strings.Contains(string(r.body), "spinbroker: unavailable") {
		t.Errorf("viewer: %s, want the cause in plain words", r.body)
	}
}

// TestHealth_CauseWithoutAuth: without auth everyone is trusted, as before.
func TestHealth_CauseWithoutAuth(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	e.replaceFile()
	r := e.do("GET", "/healthz", "")
	var h map[string]string
	r.decode(t, &h)
	if r.status != 200 || h["status"] != "degraded" || !strings.Contains(h["writes"], e.db.Path()) {
		t.Errorf("/healthz without auth while writes fail: %d %s, want the cause", r.status, r.body)
	}
	e = newEnv(t, httpapi.Options{})
	if err := e.db.Close(); err != nil {
		t.Fatal(err)
	}
	r = e.do("GET", "/healthz", "")
	e.want(r, 503, spinbroker.EUNAVAILABLE)
	if !strings.Contains(string(r.body), "shutting down") {
		t.Errorf("/healthz without auth, database closed: %s, want the cause", r.body)
	}
}

// failingTokens is the store with a database that fails as tokens are
// checked, as a disk that returns I/O errors does; everything else works.
type failingTokens struct {
	*store.DB
	err error
}

func (f *failingTokens) Authenticate(context.Context, string) (*spinbroker.Token, error) {
	return nil, f.err
}

// TestAuth_UncheckedTokenGetsNoCause: with auth on, a request whose token
// cannot be checked (the database fails) is answered 503 with Retry-After,
// as any request is while the database fails; but its sender is nobody
// yet, and is not told the cause (the database file's path, SQLite's
// words), which the log keeps, as /healthz does for a request without a
// token that works.
func TestAuth_UncheckedTokenGetsNoCause(t *testing.T) {
	const cause = "reading /var/lib/spinbroker/broker.db: disk I/O error (10)"
	db, _ := storetest.MustOpen(t, store.Options{Now: time.Now})
	var log syncbuf.Buffer
	api := httpapi.New(&failingTokens{DB: db, err: spinbroker.Errorf(spinbroker.EUNAVAILABLE, cause)},
		slog.New(slog.NewJSONHandler(&log, nil)), httpapi.Options{Auth: true, Now: time.Now})
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(func() { api.Shutdown(); srv.Close() })
	e := &env{t: t, db: db, api: api, srv: srv, token: "sbt_whatever-it-is"}
	r := e.do("GET", "/queues", "")
	e.want(r, 503, spinbroker.EUNAVAILABLE)
	if strings.Contains(string(r.body), "disk I/O") || r.header.Get("Retry-After") == "" {
		t.Errorf("%s (Retry-After %q), want a generic message", r.body, r.header.Get("Retry-After"))
	}
	if !strings.Contains(log.String(), "disk I/O error") {
		t.Errorf("the log does not keep the cause:\n%s", log.String())
	}
}
