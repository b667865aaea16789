package httpapi_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

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
	db, clock := storetest.MustOpen(t, store.Options{})
	if opts.Now == nil {
		opts.Now = clock.Now
	}
	api := httpapi.New(db, slog.New(slog.NewJSONHandler(log, nil)), opts)
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(func() {
		api.Shutdown()
		srv.Close()
	})
	return &env{t: t, db: db, api: api, srv: srv, clock: clock}
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
		req.Header.Set(header[i], header[i+1])
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
