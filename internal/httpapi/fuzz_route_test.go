package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/store"
	"github.com/spin-broker/spinbroker/internal/store/storetest"
)

// FuzzRoute sends any method to any request target, as net/http parses
// them off the wire, through the real router and a real store: what no
// route takes (an unknown path, a wrong method, a path ending in a slash)
// is answered with the API's own errors, never a 5xx or a panic. Unlike
// FuzzQuery, whose paths are the routes', this reaches the 404 and 405
// handlers, /events, /metrics and /healthz.
func FuzzRoute(f *testing.F) {
	for _, seed := range []struct{ method, target string }{
		{"GET", "/"}, {"GET", "/packages/"}, {"PUT", "/packages"}, {"FOO", "/commands/complete"},
		{"GET", "/commands/complete"}, {"DELETE", "/queues/"}, {"GET", "/queues/a/next"}, {"POST", "/queues//claim"},
		{"GET", "/events?package=%zz"}, {"GET", "/events?package=0190c3a4-5a6b-7c8d-9e0f-a1b2c3d4e5f6&package=x"},
		{"HEAD", "/metrics?x"}, {"OPTIONS", "/healthz"}, {"GET", "/packages/{pkg}/commands/"}, {"POST", "/packages/{pkg}/cancel"},
		{"PATCH", "/commands/{cmd}"}, {"GET", "//packages"}, {"GET", "/packages/../queues"}, {"GET", "/%2e%2e/ui/"},
		{"GET", "/ui"}, {"POST", "/ui/"}, {"GET", "/queues?limit=x"}, {"GET", "/packages/a%2Fb/commands"},
		{"POST", "/queues/x%2Fnext"}, {"GET", "/%70ackages"}, {"POST", "/commands/%63omplete"},
	} {
		f.Add(seed.method, seed.target)
	}
	db, _ := storetest.MustOpen(f, store.Options{Now: time.Now})
	s := New(db, slog.New(slog.NewTextHandler(io.Discard, nil)), Options{})
	h := s.Handler()
	p, _, err := db.CreatePackage(f.Context(), spinbroker.NewPackage{Commands: []spinbroker.NewCommand{{Key: "k", Resource: "fuzz", Action: "a"}}}, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, method, target string) {
		if method == "" || strings.ContainsFunc(method, func(r rune) bool { return r <= ' ' || r > '~' || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, r) }) {
			return // net/http answers 400 itself
		}
		target = strings.ReplaceAll(target, "{pkg}", p.ID)
		target = strings.ReplaceAll(target, "{cmd}", p.Commands[0].ID)
		if !strings.HasPrefix(target, "/") {
			target = "/" + target
		}
		u, err := url.ParseRequestURI(target)
		if err != nil || strings.ContainsAny(target, " \r\n") {
			return // not a request line net/http reads
		}
		// /events never ends: its first flush, the stream's opening, is
		// all there is to check. A generated "wait" may ask for a minute;
		// an abandoned request answers nothing.
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		req := httptest.NewRequestWithContext(ctx, "GET", "/", nil)
		req.Method, req.URL, req.RequestURI = method, u, target
		w := httptest.NewRecorder()
		h.ServeHTTP(cancelOnFlush{w, cancel}, req)
		if ctx.Err() != nil && w.Body.Len() == 0 {
			return
		}
		if w.Code >= 500 {
			t.Fatalf("%s %q: %d %s", method, target, w.Code, w.Body)
		}
		if w.Code == http.StatusMethodNotAllowed {
			allow := w.Header().Get("Allow")
			if allow == "" || strings.Contains(", "+allow+",", ", "+method+",") {
				t.Fatalf("%s %q: 405 with Allow %q", method, target, allow)
			}
		}
		if u.Path == "/" || strings.HasPrefix(u.Path, "/ui/") || method == http.MethodHead || w.Code < 400 {
			return // the dashboard's pages, and the successes of the API that FuzzQuery checks
		}
		var e spinbroker.ErrorBody
		if json.Unmarshal(w.Body.Bytes(), &e) != nil || e.Error == nil || StatusOf(e.Error.Code) != w.Code || strings.TrimSpace(e.Error.Message) == "" {
			t.Fatalf("%s %q: error body %s does not match status %d", method, target, w.Body, w.Code)
		}
	})
}

// cancelOnFlush ends a request once its handler flushes: an event stream
// has answered its status then, and would otherwise hold the fuzzer until
// the request's deadline.
type cancelOnFlush struct {
	*httptest.ResponseRecorder
	cancel func()
}

func (c cancelOnFlush) Flush() {
	c.ResponseRecorder.Flush()
	c.cancel()
}
