package client

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/httpapi"
	"github.com/spin-broker/spinbroker/internal/store"
	"github.com/spin-broker/spinbroker/internal/store/storetest"
)

// TestErrors: the broker's error bodies, and answers that are not the
// broker's (a proxy's page), come back as codes.
func TestErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/commands/0190c3a4-5a6b-7c8d-9e0f-a1b2c3d4e5f6":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(409)
			w.Write([]byte(`{"error": {"code": "stale_lease", "message": "not your lease"}}`))
		case "/queues":
			w.WriteHeader(502)
			w.Write([]byte("<html>bad gateway</html>"))
		default:
			w.WriteHeader(404)
		}
	}))
	defer srv.Close()
	c, err := New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Command(context.Background(), "0190c3a4-5a6b-7c8d-9e0f-a1b2c3d4e5f6")
	var ce *Error
	if spinbroker.ErrorCode(err) != spinbroker.ESTALE || !errors.As(err, &ce) || ce.StatusCode != 409 || ce.Err.Message != "not your lease" {
		t.Fatalf("API error: %v", err)
	}
	if Temporary(err) {
		t.Fatal("a 409 is not temporary")
	}
	_, err = c.Queues(context.Background())
	if spinbroker.ErrorCode(err) != spinbroker.EUNAVAILABLE || !Temporary(err) {
		t.Fatalf("a proxy's 502: %v (%s)", err, spinbroker.ErrorCode(err))
	}
	if _, err := c.Package(context.Background(), "x"); spinbroker.ErrorCode(err) != spinbroker.ENOTFOUND {
		t.Fatalf("a bare 404: %v", err)
	}
	// An unreachable broker is temporary.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	gone, _ := New("http://" + addr)
	if err := gone.Health(context.Background()); err == nil || !Temporary(err) {
		t.Fatalf("unreachable: %v", err)
	}
	if Temporary(context.Canceled) {
		t.Fatal("a cancelled context is not temporary")
	}
	// A file that is missing is not a broker that is away: its errno
	// looks like a net.Error, and once made a broker's bad --tls-cert read
	// "cannot reach the broker".
	if _, err := os.Open(filepath.Join(t.TempDir(), "missing.pem")); err == nil || Temporary(err) {
		t.Fatalf("a missing file is temporary: %v", err)
	}
	for _, bad := range []string{"", "localhost:8080", "ftp://x", "http://", "127.0.0.1:8080", "10.0.0.5:8080/", "http://localhost:8080/?token=x", "http://localhost:8080#top"} {
		_, err := New(bad)
		if err == nil {
			t.Errorf("New(%q) accepted", bad)
			continue
		}
		// Each says what a broker URL is: "first path segment in URL
		// cannot contain colon" does not tell that http:// is missing.
		if msg := err.Error(); !strings.Contains(msg, "http://") {
			t.Errorf("New(%q) = %q, which does not say what a broker URL looks like", bad, msg)
		}
	}
}

// newBroker serves a real broker, a SQLite file in a temp dir, until the
// test ends, and returns a client of it and the API (to shut it down).
func newBroker(t *testing.T) (*Client, *httpapi.Server, *httptest.Server) {
	t.Helper()
	db, _ := storetest.MustOpen(t, store.Options{Now: time.Now})
	api := httpapi.New(db, slog.New(slog.NewTextHandler(io.Discard, nil)), httpapi.Options{})
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(func() {
		api.Shutdown()
		srv.Close()
	})
	c, err := New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return c, api, srv
}

// TestEventsEndedByBroker: a broker that stops (to restart) ends its event
// streams cleanly. Events must not then return nil, which reads as "done":
// a follower that reconnects while Temporary(err) would stop following.
func TestEventsEndedByBroker(t *testing.T) {
	c, api, _ := newBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	got := make(chan Event, 16)
	go func() {
		done <- c.Events(ctx, func(ev Event) error { got <- ev; return nil })
	}()
	// Wait until the stream carries an event, so that it is open.
	for {
		if _, err := c.CreatePackage(ctx, spinbroker.NewPackage{Commands: []spinbroker.NewCommand{{Resource: "r", Action: "a"}}, Enqueue: true}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-got:
		case <-time.After(200 * time.Millisecond):
			continue
		}
		break
	}
	api.Shutdown()
	select {
	case err := <-done:
		if err == nil || !Temporary(err) {
			t.Fatalf("Events after the broker ended the stream = %v, want a Temporary error", err)
		}
	case <-ctx.Done():
		t.Fatal("Events did not return when the broker ended the stream")
	}
}

// TestEventsOnOpen: OnOpen says when the stream is open, before any event,
// so that a change made right after it is seen; a refused subscription
// never calls it.
func TestEventsOnOpen(t *testing.T) {
	c, _, _ := newBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := c.CreatePackage(ctx, spinbroker.NewPackage{Commands: []spinbroker.NewCommand{{Resource: "r", Action: "a"}}})
	if err != nil {
		t.Fatal(err)
	}
	opened := make(chan struct{})
	var openedFirst, calls int
	got := make(chan Event, 16)
	done := make(chan error, 1)
	go func() {
		done <- c.Events(ctx, func(ev Event) error {
			if calls == 0 {
				openedFirst = -1 // an event before OnOpen
			}
			got <- ev
			return nil
		}, ForPackage(p.ID), OnOpen(func() {
			calls++
			openedFirst = 1
			close(opened)
		}))
	}()
	select {
	case <-opened:
	case err := <-done:
		t.Fatalf("Events ended before it opened: %v", err)
	case <-ctx.Done():
		t.Fatal("OnOpen was not called")
	}
	// Made at once after OnOpen: the stream must carry it.
	if _, err := c.Enqueue(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-got:
		if !strings.Contains(string(ev.Data), p.ID) {
			t.Fatalf("first event %s %s is not about package %s", ev.Type, ev.Data, p.ID)
		}
	case <-ctx.Done():
		t.Fatal("no event for a change made right after OnOpen")
	}
	cancel()
	<-done
	if calls != 1 || openedFirst != 1 {
		t.Fatalf("OnOpen called %d times (first before events: %v)", calls, openedFirst == 1)
	}

	// A refused subscription does not open.
	refused := false
	err = c.Events(context.Background(), func(Event) error { return nil }, ForPackage("not-an-id"), OnOpen(func() { refused = true }))
	if spinbroker.ErrorCode(err) != spinbroker.EINVALID || refused {
		t.Fatalf("Events of a bad package id = %v (OnOpen called: %v), want invalid and no call", err, refused)
	}
}

// TestRedirectedWrite: a proxy that redirects (http to https, say) makes
// Go's HTTP client send a POST again as a GET, without its body. The GET
// answers 200 with something else, and CreatePackage returned an empty
// package and no error: a create that never happened looked done.
func TestRedirectedWrite(t *testing.T) {
	_, _, broker := newBroker(t)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, broker.URL+r.URL.RequestURI(), http.StatusFound)
	}))
	defer proxy.Close()
	c, err := New(proxy.URL)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	p, err := c.CreatePackage(ctx, spinbroker.NewPackage{Commands: []spinbroker.NewCommand{{Resource: "r", Action: "a"}}, Enqueue: true})
	if err == nil {
		t.Fatalf("CreatePackage through a redirect = %+v, nil; want an error", p)
	}
	if Temporary(err) {
		t.Fatalf("a redirect is not temporary: %v", err)
	}
	if !strings.Contains(err.Error(), broker.URL) {
		t.Fatalf("the error does not name where the broker redirects: %v", err)
	}
	// Reads follow redirects as before.
	if _, err := c.Packages(ctx, ListOptions{}); err != nil {
		t.Fatalf("a read through a redirect: %v", err)
	}
}

// TestRedirectedWrite_NotSent: the write a redirect would turn into a GET
// is stopped before anything reaches where it points, with the default
// http.Client, with one of WithHTTPClient that has no CheckRedirect (which
// stays as it was), and is still refused, after the fact, by one whose own
// CheckRedirect follows it.
func TestRedirectedWrite_NotSent(t *testing.T) {
	var mu sync.Mutex
	var reached []string
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		reached = append(reached, r.Method+" "+r.URL.Path)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{}`)
	}))
	defer target.Close()
	for _, code := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther} {
		proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target.URL+r.URL.RequestURI(), code)
		}))
		own := &http.Client{}
		follows := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return nil }}
		for name, opts := range map[string][]Option{"default": nil, "WithHTTPClient": {WithHTTPClient(own)}, "own CheckRedirect": {WithHTTPClient(follows)}} {
			mu.Lock()
			reached = nil
			mu.Unlock()
			c, err := New(proxy.URL+"/prefix", opts...)
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.CreatePackage(context.Background(), spinbroker.NewPackage{Commands: []spinbroker.NewCommand{{Resource: "r", Action: "a"}}})
			var re *RedirectError
			if !errors.As(err, &re) {
				t.Fatalf("%d, %s: CreatePackage through a redirect: %v, want a *RedirectError", code, name, err)
			}
			if re.Method != http.MethodPost || re.Path != "/prefix/packages" || re.As != http.MethodGet || re.To.String() != target.URL+"/prefix/packages" {
				t.Errorf("%d, %s: %+v, want POST /prefix/packages to %s/prefix/packages as GET", code, name, re, target.URL)
			}
			if Temporary(err) {
				t.Errorf("%d, %s: a redirect is not temporary: %v", code, name, err)
			}
			mu.Lock()
			got := reached
			mu.Unlock()
			if name == "own CheckRedirect" {
				if len(got) != 1 || got[0] != "GET /prefix/packages" {
					t.Errorf("%d, %s: the target saw %q, want the one GET its CheckRedirect let through", code, name, got)
				}
			} else if len(got) != 0 {
				t.Errorf("%d, %s: the target saw %q, want nothing", code, name, got)
			}
		}
		if own.CheckRedirect != nil {
			t.Errorf("%d: WithHTTPClient changed the caller's http.Client", code)
		}
		proxy.Close()
	}
}

// TestNew_BadPort: a port no host can have is refused by New, as a URL
// without a scheme is, rather than at every request as a network failure
// ("dial tcp: address 99999: invalid port"), which an agent retries for
// ever and the CLI reported as a broker it could not reach.
func TestNew_BadPort(t *testing.T) {
	for _, u := range []string{"http://localhost:99999", "http://127.0.0.1:0", "https://[::1]:65536", "http://h:00000"} {
		if _, err := New(u); err == nil || !strings.Contains(err.Error(), "port") {
			t.Errorf("New(%q) = %v, want an error about its port", u, err)
		}
	}
	for _, u := range []string{"http://localhost:65535", "http://localhost:1", "https://broker.example", "http://[::1]:8080/"} {
		if _, err := New(u); err != nil {
			t.Errorf("New(%q): %v", u, err)
		}
	}
}

// TestNew_ErrorsMaskPassword: a broker URL New refuses is named in its
// error, but never with the password of its user info (a proxy's basic
// auth): the CLI prints the error, an agent logs it to the journal, and
// either may be pasted into an issue. The log lines and the help already
// mask it; the refusal printed it whole.
func TestNew_ErrorsMaskPassword(t *testing.T) {
	for _, u := range []string{
		"ftp://ops:hunter2@localhost/",                 // scheme
		"http://ops:hunter2@localhost:8080:99",         // does not parse
		"http://ops:hunter2@localhost:99999",           // port
		"http://ops:hunter2@localhost:8080/?x=1",       // query
		"ops:hunter2@localhost:8080",                   // no scheme
		"http://ops:hun/ter2@localhost:8080",           // a '/' in the password
		"http://ops:hunter2@broker@localhost:8080:999", // an '@' in it
	} {
		_, err := New(u)
		if err == nil {
			t.Errorf("New(%q) = nil error, want a refusal", u)
			continue
		}
		if msg := err.Error(); strings.Contains(msg, "hunter2") || strings.Contains(msg, "ter2") || !strings.Contains(msg, "ops:xxxxx@") {
			t.Errorf("New(%q): %v\nwant the URL named with its password masked (ops:xxxxx@)", u, err)
		}
	}
}

func TestMaskURL(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"http://ops:hunter2@localhost:8080/p", "http://ops:xxxxx@localhost:8080/p"},
		{"http://ops@localhost:8080", "http://ops@localhost:8080"},
		{"http://localhost:8080/a@b", "http://localhost:8080/a@b"},
		{"localhost:8080", "localhost:8080"},
		{"ops:pw@host:1", "ops:xxxxx@host:1"},
		{"ops:p/w@host:1", "ops:xxxxx@host:1"},
		{"", ""},
	} {
		if got := MaskURL(c.in); got != c.want {
			t.Errorf("MaskURL(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestAnswerTooLarge: an answer past what the client reads is an error
// that says so, not JSON cut off in the middle ("unexpected end of JSON
// input"). Not parallel: it lowers maxAnswer.
func TestAnswerTooLarge(t *testing.T) {
	c, _, _ := newBroker(t)
	ctx := context.Background()
	p := packageOver1000Bytes(t, c)
	defer func(n int) { maxAnswer = n }(maxAnswer)
	maxAnswer = 1000
	_, err := c.Package(ctx, p.ID)
	if err == nil || !strings.Contains(err.Error(), "larger than 1000 bytes") || !strings.Contains(err.Error(), "GET /packages/"+p.ID) {
		t.Fatalf("a package answer over the client's limit: %v", err)
	}
	if tl, ok := err.(*AnswerTooLargeError); !ok || tl.Done {
		t.Fatalf("a read whose answer is over the client's limit: %#v, want an *AnswerTooLargeError without Done", err)
	}
	if _, err := c.Queues(ctx); err != nil {
		t.Fatalf("a small answer under the same limit: %v", err)
	}
}

// packageOver1000Bytes creates a package (in staging) whose answer is over
// 1,000 bytes.
func packageOver1000Bytes(t *testing.T, c *Client) *spinbroker.Package {
	t.Helper()
	in := spinbroker.NewPackage{}
	for range 20 {
		in.Commands = append(in.Commands, spinbroker.NewCommand{Resource: "storage", Action: "add_volume", Parameters: []byte(`{"path": "` + strings.Repeat("v", 100) + `"}`)})
	}
	p, err := c.CreatePackage(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAnswerTooLarge_WriteDone: a write whose answer is past what the
// client reads was carried out all the same (an enqueue answers its whole
// package); the error says so, rather than "ask for less", which read as a
// refusal and had a caller make again what was already done. Not parallel:
// it lowers maxAnswer.
func TestAnswerTooLarge_WriteDone(t *testing.T) {
	c, _, _ := newBroker(t)
	ctx := context.Background()
	p := packageOver1000Bytes(t, c)
	var err error
	func() {
		defer func(n int) { maxAnswer = n }(maxAnswer)
		maxAnswer = 1000
		_, err = c.Enqueue(ctx, p.ID)
	}()
	if err == nil || !strings.Contains(err.Error(), "POST /packages/"+p.ID+"/enqueue was done (200)") || strings.Contains(err.Error(), "ask for less") {
		t.Fatalf("an enqueue whose answer is over the client's limit: %v", err)
	}
	var tl *AnswerTooLargeError
	if !errors.As(err, &tl) || !tl.Done {
		t.Fatalf("an enqueue whose answer is over the client's limit: %#v, want an *AnswerTooLargeError with Done", err)
	}
	got, err := c.Package(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != spinbroker.PackageQueued {
		t.Fatalf("the package is %s, want queued", got.State)
	}
}

// TestEventsRefused_LikeOtherCalls: a refused subscription is an *Error
// with the broker's request id and Retry-After, as any other call's: the
// CLI took a refusal of the broker's without its id for a proxy's page,
// and a follower could not honour the wait a 503 asked for.
func TestEventsRefused_LikeOtherCalls(t *testing.T) {
	c, _, _ := newBroker(t)
	err := c.Events(context.Background(), func(Event) error { return nil }, ForPackage("not-an-id"))
	var ce *Error
	if !errors.As(err, &ce) || ce.StatusCode != http.StatusBadRequest || ce.RequestID == "" {
		t.Fatalf("Events of a bad package id = %#v, want a 400 *Error with the broker's request id", err)
	}

	busy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Request-Id", "req-1")
		w.Header().Set("Retry-After", "7")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `{"error": {"code": "unavailable", "message": "too many waits"}}`)
	}))
	t.Cleanup(busy.Close)
	bc, err := New(busy.URL)
	if err != nil {
		t.Fatal(err)
	}
	err = bc.Events(context.Background(), func(Event) error { return nil })
	if !errors.As(err, &ce) || ce.RequestID != "req-1" || ce.RetryAfter != 7*time.Second {
		t.Fatalf("Events answered 503 with Retry-After: 7 = %#v, want request id req-1 and RetryAfter 7s", err)
	}
}

// TestEvents_NotAStream: a 200 that is no event stream (a web server's
// page, a proxy's login page, some JSON) is refused at once with an error
// that says what answered, and that Temporary does not report: it was
// read as a stream that ended, which a follower opened again and again.
// The broker's own Content-Type, with parameters or in capitals, is one.
func TestEvents_NotAStream(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name  string
		ctype []string // nil: no Content-Type at all
		body  string
		want  string // what the error says of it
	}{
		{"HTML", []string{"text/html; charset=utf-8"}, "<html><body>It works!</body></html>\n", `"text/html; charset=utf-8"`},
		{"JSON", []string{"application/json"}, `{"status": "ok"}`, `"application/json"`},
		{"None", nil, "event: command\ndata: {}\n\n", "no Content-Type"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header()["Content-Type"] = tt.ctype // nil: not sniffed either
				io.WriteString(w, tt.body)
				w.(http.Flusher).Flush()
				<-r.Context().Done() // a stream would end here: not a page
			}))
			t.Cleanup(srv.Close)
			c, err := New(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			opened, events := false, 0
			err = c.Events(ctx, func(Event) error { events++; return nil }, OnOpen(func() { opened = true }))
			if ctx.Err() != nil {
				t.Fatal("Events still reads an answer that is no event stream after 10s")
			}
			host := strings.TrimPrefix(srv.URL, "http://")
			if err == nil || Temporary(err) || opened || events != 0 {
				t.Fatalf("Events of a 200 %s = %v (temporary %v, opened %v, %d events); want a refusal, not temporary, before any event", tt.ctype, err, Temporary(err), opened, events)
			}
			var ne *NotStreamError
			if !errors.As(err, &ne) || ne.StatusCode != http.StatusOK || ne.Host != host || ne.ContentType != strings.Join(tt.ctype, "") {
				t.Errorf("Events of a 200 %s = %#v, want a *NotStreamError of it", tt.ctype, err)
			}
			for _, s := range []string{"200 OK", tt.want, host, "not an event stream"} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("Events of a 200 %s: %q does not say %s", tt.ctype, err, s)
				}
			}
		})
	}

	// The broker's own, as a proxy may spell it.
	for _, ct := range []string{"text/event-stream", "text/event-stream; charset=utf-8", "Text/Event-Stream", " text/event-stream;;"} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", ct)
			io.WriteString(w, "event: command\ndata: {}\n\n")
		}))
		c, err := New(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		events := 0
		err = c.Events(context.Background(), func(Event) error { events++; return nil })
		srv.Close()
		if events != 1 || !errors.Is(err, io.EOF) {
			t.Errorf("Events of a stream sent as %q: %d events, %v; want 1 and the broker's end", ct, events, err)
		}
	}
}

// TestHealthStatus: HealthStatus says what the broker's /healthz answer
// says.
func TestHealthStatus(t *testing.T) {
	c, _, _ := newBroker(t)
	h, err := c.HealthStatus(context.Background())
	if err != nil || h.Status != "ok" || h.Writes != "" {
		t.Fatalf("HealthStatus of a healthy broker = %+v, %v; want status ok", h, err)
	}
}
