package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/store"
	"github.com/spin-broker/spinbroker/internal/store/storetest"
)

// fuzzQueryRoutes are the routes that read a query string or a path
// parameter; {seg} is replaced with the fuzzed path segment, {pkg} and
// {cmd} with a package and a command that exist.
var fuzzQueryRoutes = []struct{ method, path string }{
	{"GET", "/packages"},
	{"GET", "/packages/{seg}"},
	{"GET", "/commands/{seg}"},
	{"POST", "/commands/{seg}/retry"},
	{"POST", "/packages/{seg}/enqueue"},
	{"GET", "/queues/{seg}"},
	{"POST", "/queues/{seg}/next"},
	{"POST", "/queues/fuzz/next"},
	{"POST", "/queues/{seg}/claim"},
	{"HEAD", "/packages"},
	{"DELETE", "/packages/{seg}"},
	{"GET", "/ui/search"},
	{"GET", "/ui/packages"},
	{"GET", "/ui/queues/{seg}"},
	{"GET", "/ui/packages/{seg}"},
	{"GET", "/ui/commands/{seg}"},
	{"GET", "/ui/login"},
	{"POST", "/packages"}, // with an Idempotency-Key from the fuzzed header
	// The dashboard's forms: the query string is the form's body.
	{"POST", "/ui/queues/{seg}/concurrency"},
	{"POST", "/ui/commands/{seg}/retry"},
	{"POST", "/ui/login"},
}

// FuzzQuery sends arbitrary query strings, path segments and the headers
// the broker reads itself (Idempotency-Key, X-Request-Id) to the routes
// that parse them, through the real router and a real store: the answer is
// never a 5xx or a panic, an API answer is JSON in the API's shape, and
// X-Request-Id is always printable and short.
func FuzzQuery(f *testing.F) {
	for i := range fuzzQueryRoutes {
		for _, seed := range []struct{ seg, query, header string }{
			{"storage", "", ""},
			{"0190c3a4-5a6b-7c8d-9e0f-a1b2c3d4e5f6", "state=queued&limit=2", "k1"},
			{"{pkg}", "cursor=MTIzLzAxOTBjM2E0LTVhNmItN2M4ZC05ZTBmLWExYjJjM2Q0ZTVmNg&limit=99999999999", "req-1"},
			{"{cmd}", "wait=1ms&lease=10s", ""},
			{"BAD RES", "wait=99999999999h&lease=0s", "\x00"},
			{"..", "state=a&state=b", strings.Repeat("x", 300)},
			{"%zz", "q=%zz;x", "é"},
			{"a%2fb", "next=//evil.example/ui/&q=0190", "  "},
			{"ui", "max=1000&wait=-1s&package=x", ""},
		} {
			f.Add(uint8(i), seed.seg, seed.query, seed.header)
		}
	}
	db, _ := storetest.MustOpen(f, store.Options{Now: time.Now})
	s := New(db, slog.New(slog.NewTextHandler(io.Discard, nil)), Options{})
	h := s.Handler()
	p, _, err := db.CreatePackage(f.Context(), spinbroker.NewPackage{Commands: []spinbroker.NewCommand{{Key: "k", Resource: "fuzz", Action: "a"}}, Enqueue: true}, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, route uint8, seg, rawQuery, header string) {
		rt := fuzzQueryRoutes[int(route)%len(fuzzQueryRoutes)]
		seg = strings.ReplaceAll(seg, "{pkg}", p.ID)
		seg = strings.ReplaceAll(seg, "{cmd}", p.Commands[0].ID)
		path := strings.ReplaceAll(rt.path, "{seg}", seg)
		// A generated "wait" may ask for a minute; the request gives up
		// sooner, and an abandoned long-poll answers nothing.
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		var body io.Reader
		if rt.method == "POST" && rt.path == "/packages" {
			body = strings.NewReader(`{"commands": [{"resource": "fuzz", "action": "a"}]}`)
		}
		form := rt.method == "POST" && strings.HasPrefix(rt.path, "/ui/")
		if form {
			body = strings.NewReader(rawQuery)
		}
		req := httptest.NewRequestWithContext(ctx, rt.method, "/", body)
		req.URL = &url.URL{Path: path, RawQuery: rawQuery}
		if form {
			req.URL.RawQuery = ""
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		req.RequestURI = req.URL.RequestURI()
		req.Header.Set("Idempotency-Key", header)
		req.Header.Set("X-Request-Id", header)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if id := w.Header().Get("X-Request-Id"); id == "" || len(id) > 64 || strings.ContainsFunc(id, func(r rune) bool { return r <= ' ' || r > '~' }) {
			t.Fatalf("X-Request-Id %q", id)
		}
		if ctx.Err() != nil && w.Body.Len() == 0 {
			return
		}
		if w.Code >= 500 {
			t.Fatalf("%s %q ? %q: %d %s", rt.method, path, rawQuery, w.Code, w.Body)
		}
		if strings.HasPrefix(path, "/ui/") || w.Code == http.StatusNoContent || rt.method == "HEAD" || w.Code == http.StatusSeeOther {
			return
		}
		if !json.Valid(w.Body.Bytes()) {
			t.Fatalf("%s %q ? %q: answer is not JSON: %s", rt.method, path, rawQuery, w.Body)
		}
		if w.Code >= 400 {
			var e spinbroker.ErrorBody
			if json.Unmarshal(w.Body.Bytes(), &e) != nil || e.Error == nil || StatusOf(e.Error.Code) != w.Code {
				t.Fatalf("%s %q: error body %s does not match status %d", rt.method, path, w.Body, w.Code)
			}
		}
	})
}

// FuzzHeaders runs the parsers of the headers the broker trusts for its
// decisions: the request id it logs and echoes, the Host it answers only
// when local (DNS rebinding), and the bearer token from the Authorization
// header or the dashboard's cookie.
func FuzzHeaders(f *testing.F) {
	for _, s := range []string{"", "localhost", "localhost:8080", "LOCALHOST.", "a.localhost", "127.0.0.1:1", "[::1]:80", "::1",
		"[::ffff:127.0.0.1]", "127.1", "localhost.evil.example", "evil.example", "0x7f.0.0.1", "[fe80::1%lo]:1", "Bearer sbt_x", "bearer  x ", "Basic Zm9v"} {
		f.Add(s, s)
	}
	f.Fuzz(func(t *testing.T, value, cookie string) {
		if id := requestID(value); id == "" || len(id) > 64 || strings.ContainsFunc(id, func(r rune) bool { return r <= ' ' || r > '~' }) {
			t.Fatalf("requestID(%q) = %q", value, id)
		}
		if LocalHost(value) {
			// Whatever the spelling, the name is localhost's or a loopback
			// address.
			host := value
			if h, _, err := net.SplitHostPort(value); err == nil {
				host = h
			}
			ip, err := netip.ParseAddr(strings.Trim(host, "[]"))
			if !strings.Contains(strings.ToLower(host), "localhost") && (err != nil || !ip.IsLoopback()) {
				t.Fatalf("LocalHost(%q) is true", value)
			}
		}
		r := httptest.NewRequest("GET", "/", nil)
		r.Header["Authorization"] = []string{value}
		r.Header["Cookie"] = []string{cookie}
		if secret, fromCookie := bearer(r); fromCookie || (value != "" && secret != "" && !strings.Contains(value, secret)) {
			t.Fatalf("bearer(%q, cookie %q) = %q, %v", value, cookie, secret, fromCookie)
		}
		r.Header.Del("Authorization")
		if secret, fromCookie := bearer(r); secret != "" && !fromCookie {
			t.Fatalf("bearer(cookie %q) = %q, not from the cookie", cookie, secret)
		}
	})
}

// FuzzSafeNext: wherever a login link says to go next, the redirect stays
// on the broker, on a dashboard page.
func FuzzSafeNext(f *testing.F) {
	for _, s := range []string{"/ui/", "/ui/packages?state=failed", "//evil.example", "https://evil.example/ui/", "/ui/login?next=/ui/",
		"/ui/\\evil", "/ui/..//evil.example", "/ui/../metrics", "/ui/%2e%2e/metrics", "/ui/.\t./metrics", "/ui/%2f%2fevil", "/ui/\t/evil", "/ui/@evil.example", "/ui/\r\nSet-Cookie: x=1"} {
		f.Add(s)
	}
	base, _ := url.Parse("https://broker.example:8443/ui/login")
	f.Fuzz(func(t *testing.T, next string) {
		got := safeNext(next)
		if !strings.HasPrefix(got, "/ui/") {
			t.Fatalf("safeNext(%q) = %q", next, got)
		}
		// What a browser does with the Location header: strip tabs and
		// newlines, resolve against the page.
		loc := strings.NewReplacer("\t", "", "\n", "", "\r", "").Replace(got)
		u, err := url.Parse(loc)
		if err != nil {
			return // the browser would not follow it either
		}
		if r := base.ResolveReference(u); r.Host != base.Host || r.Scheme != base.Scheme || !strings.HasPrefix(r.Path, "/ui/") {
			t.Fatalf("safeNext(%q) = %q leads to %s, not a dashboard page", next, got, r)
		}
		// And the redirect itself, as the login answers it.
		w := httptest.NewRecorder()
		http.Redirect(w, httptest.NewRequest("POST", "/ui/login", nil), got, http.StatusSeeOther)
		if l := w.Header().Get("Location"); !strings.HasPrefix(l, "/") || strings.HasPrefix(l, "//") || strings.HasPrefix(l, "/\\") || bytes.ContainsAny([]byte(l), "\r\n") {
			t.Fatalf("Location %q for next %q", l, next)
		}
	})
}
