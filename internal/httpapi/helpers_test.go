package httpapi_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/httpapi"
	"github.com/spin-broker/spinbroker/internal/store"
	"github.com/spin-broker/spinbroker/internal/store/storetest"
)

var ctx = context.Background()

// env is a real broker: a SQLite file in a temp dir behind an httptest
// server.
type env struct {
	t     testing.TB
	db    *store.DB
	api   *httpapi.Server
	srv   *httptest.Server
	clock *storetest.Clock
	token string // sent as a bearer token when set
}

func newEnv(t testing.TB, opts httpapi.Options) *env {
	t.Helper()
	return newEnvLogging(t, opts, io.Discard)
}

// newEnvLogging is newEnv with the broker's log written to log as JSON lines.
func newEnvLogging(t testing.TB, opts httpapi.Options, log io.Writer) *env {
	t.Helper()
	return newEnvLogger(t, opts, slog.New(slog.NewJSONHandler(log, nil)))
}

// newEnvLogger is newEnv with the broker's logger.
func newEnvLogger(t testing.TB, opts httpapi.Options, logger *slog.Logger) *env {
	t.Helper()
	db, clock := storetest.MustOpen(t, store.Options{})
	if opts.Now == nil {
		opts.Now = clock.Now
	}
	api := httpapi.New(db, logger, opts)
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(func() {
		api.Shutdown()
		srv.Close()
	})
	return &env{t: t, db: db, api: api, srv: srv, clock: clock}
}

// revokedSecret creates a token, revokes it, and returns it as revoked,
// with its secret.
func (e *env) revokedSecret(role, resource, name string) (*spinbroker.Token, string) {
	e.t.Helper()
	tok, secret, err := e.db.CreateToken(ctx, role, resource, name)
	if err != nil {
		e.t.Fatal(err)
	}
	revoked, _, err := e.db.RevokeToken(ctx, tok.ID)
	if err != nil {
		e.t.Fatal(err)
	}
	return revoked, secret
}

// secret creates a token and returns its secret.
func (e *env) secret(role, resource, name string) string {
	e.t.Helper()
	_, secret, err := e.db.CreateToken(ctx, role, resource, name)
	if err != nil {
		e.t.Fatal(err)
	}
	return secret
}

// response is an answer, read whole.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) code() string {
	var e spinbroker.ErrorBody
	if json.Unmarshal(r.body, &e) != nil || e.Error == nil {
		return ""
	}
	return e.Error.Code
}

func (r response) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

func (e *env) do(method, path, body string, header ...string) response {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if e.token != "" {
		req.Header.Set("Authorization", "Bearer "+e.token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// want checks an answer's status (and error code when code is set).
func (e *env) want(r response, status int, code string) {
	e.t.Helper()
	if r.status != status || code != "" && r.code() != code {
		e.t.Fatalf("got %d %s, want %d %s: %s", r.status, r.code(), status, code, r.body)
	}
	if r.status >= 400 {
		if ct := r.header.Get("Content-Type"); ct != "application/json" {
			e.t.Fatalf("an error answered with Content-Type %q", ct)
		}
		var b spinbroker.ErrorBody
		if err := json.Unmarshal(r.body, &b); err != nil || b.Error == nil || b.Error.Message == "" {
			e.t.Fatalf("error body not in API shape: %s", r.body)
		}
	}
}

// createPackage creates (and enqueues) a package from JSON commands.
func (e *env) createPackage(commands string, enqueue bool) spinbroker.Package {
	e.t.Helper()
	body := `{"commands": ` + commands + `, "enqueue": ` + map[bool]string{true: "true", false: "false"}[enqueue] + `}`
	r := e.do("POST", "/packages", body)
	e.want(r, 201, "")
	var p spinbroker.Package
	r.decode(e.t, &p)
	return p
}

func (e *env) next(resource string) *spinbroker.Command {
	e.t.Helper()
	r := e.do("POST", "/queues/"+resource+"/next", "")
	if r.status == 204 {
		return nil
	}
	e.want(r, 200, "")
	var c spinbroker.Command
	r.decode(e.t, &c)
	return &c
}

func (e *env) complete(c *spinbroker.Command, ok bool) response {
	e.t.Helper()
	return e.do("POST", "/commands/"+c.ID+"/complete", `{"status": `+map[bool]string{true: "true", false: "false"}[ok]+`, "lease": "`+c.Lease.Token+`"}`)
}

// lockDatabase takes the database's write lock on a connection of its own,
// so that the store's writer waits (its busy timeout is 10s); the returned
// func releases it.
func (e *env) lockDatabase() (unlock func()) {
	e.t.Helper()
	db, err := sql.Open("sqlite", "file:"+e.db.Path())
	if err != nil {
		e.t.Fatal(err)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		e.t.Fatal(err)
	}
	var once sync.Once
	unlock = func() {
		once.Do(func() {
			conn.ExecContext(ctx, "ROLLBACK")
			conn.Close()
			db.Close()
		})
	}
	e.t.Cleanup(unlock)
	return unlock
}

// startCreate sends POST /packages with body, and answers its status (-1
// when it failed) on the returned channel.
func (e *env) startCreate(body io.Reader) <-chan int {
	status := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("POST", e.srv.URL+"/packages", body)
		req.Header.Set("Content-Type", "application/json")
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			status <- -1
			return
		}
		resp.Body.Close()
		status <- resp.StatusCode
	}()
	return status
}

// waitWritesInFlight waits until n writes hold a turn.
func (e *env) waitWritesInFlight(n int) {
	e.t.Helper()
	want := fmt.Sprintf("\nspinbroker_http_writes_in_flight %d\n", n)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(string(e.do("GET", "/metrics", "").body), want) {
		if time.Now().After(deadline) {
			e.t.Fatalf("%d writes never held a turn", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
