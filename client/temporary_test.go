package client

import (
	"context"
	"errors"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/httpapi"
	"github.com/spin-broker/spinbroker/internal/store"
	"github.com/spin-broker/spinbroker/internal/store/storetest"
	"github.com/spin-broker/spinbroker/internal/tlsalert"
)

// TestTemporary_UntrustedCertificate: a broker whose TLS certificate this
// host does not trust answers the same refusal however often it is asked
// (only a change of configuration mends it, as Untrusted says), so
// Temporary, which reports what may go away if the call is made again,
// does not report it. It once did, as for any error below HTTP: a
// WaitPackage, or any caller that retries what is Temporary, asked again
// for ever.
func TestTemporary_UntrustedCertificate(t *testing.T) {
	db, _ := storetest.MustOpen(t, store.Options{Now: time.Now})
	api := httpapi.New(db, slog.New(slog.NewTextHandler(io.Discard, nil)), httpapi.Options{})
	srv := httptest.NewUnstartedServer(api.Handler())
	// The refused handshakes are the test, not news.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(func() {
		api.Shutdown()
		srv.Close()
	})
	ctx := context.Background()

	trusting, err := New(srv.URL, WithHTTPClient(srv.Client()))
	if err != nil {
		t.Fatal(err)
	}
	if err := trusting.Health(ctx); err != nil {
		t.Fatalf("a client that trusts the broker's certificate: %v", err)
	}

	c, err := New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Health(ctx)
	if err == nil || !Untrusted(err) {
		t.Fatalf("Health of a broker whose certificate is not trusted = %v, want an error Untrusted reports", err)
	}
	if Temporary(err) {
		t.Errorf("Temporary(%v) = true; want false: asking again gets the same refusal", err)
	}
}

// TestTemporary_NewRefusal: a broker URL that New refuses is a mistake of
// the caller's, not an outage: Temporary does not report it. The refusal
// of a URL that does not parse wraps url.Parse's *url.Error, the type an
// unreachable broker's error has too, and Temporary once took it for one.
func TestTemporary_NewRefusal(t *testing.T) {
	for _, bad := range []string{"http://broker host:8080", "http://[::1", "http://%zz", "ftp://x", "127.0.0.1:8080"} {
		_, err := New(bad)
		if err == nil {
			t.Errorf("New(%q) accepted", bad)
			continue
		}
		if Temporary(err) {
			t.Errorf("Temporary(New(%q)'s refusal %q) = true; want false: the same URL is refused again", bad, err)
		}
	}
}

// looping is a server at which every request is redirected without end:
// to itself (a proxy whose http-to-https rule also matches https), or,
// with chain, one hop further each time. A write gets 307, which keeps its
// method and body, so that it is the count that stops it.
func looping(t *testing.T, chain bool) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		to := r.URL.Path
		if chain {
			n, _ := strconv.Atoi(r.URL.Query().Get("hop"))
			to += "?hop=" + strconv.Itoa(n+1)
		}
		code := http.StatusFound
		if r.Method != http.MethodGet {
			code = http.StatusTemporaryRedirect
		}
		http.Redirect(w, r, to, code)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestTemporary_RedirectLoop: a broker URL that redirects in a loop, or
// more than 10 times, is stopped by the client after 10 redirects, and
// asking again loops again: Temporary does not report it, and the error is
// a *RedirectError that says so. It was net/http's "stopped after 10
// redirects" in a *url.Error, which Temporary took for a network that may
// come back: an agent polled it for ever, a WaitPackage waited for ever.
func TestTemporary_RedirectLoop(t *testing.T) {
	ctx := context.Background()
	for _, chain := range []bool{false, true} {
		srv := looping(t, chain)
		c, err := New(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		calls := map[string]func() error{
			"GET":    func() error { return c.Health(ctx) },
			"POST":   func() error { _, err := c.Enqueue(ctx, "pkg_1"); return err },
			"PATCH":  func() error { _, err := c.SetQueue(ctx, "r", spinbroker.QueueSettings{}); return err },
			"Events": func() error { return c.Events(ctx, func(Event) error { return nil }) },
		}
		for name, call := range calls {
			err := call()
			if err == nil {
				t.Fatalf("chain %v, %s: no error from a URL that redirects without end", chain, name)
			}
			if Temporary(err) {
				t.Errorf("chain %v, %s: Temporary(%v) = true; want false: asking again loops again", chain, name, err)
			}
			var re *RedirectError
			if !errors.As(err, &re) || !re.Loop || re.To == nil || re.To.Host != srv.Listener.Addr().String() {
				t.Errorf("chain %v, %s: %v (%+v): want a *RedirectError of a loop, to the server", chain, name, err, re)
			}
			if msg := err.Error(); !strings.Contains(msg, "redirected 10 times") || !strings.Contains(msg, "use the URL the broker answers at") {
				t.Errorf("chain %v, %s: %q does not say it was redirected 10 times and which URL to use", chain, name, msg)
			}
		}
	}
}

// TestWaitPackage_RedirectLoop: a broker URL that starts to redirect in a
// loop once the package was read (a proxy's new rule) ends WaitPackage
// with the error: it took it for a broker away, and waited for ever.
func TestWaitPackage_RedirectLoop(t *testing.T) {
	var loop atomic.Bool
	direct, c, srv := fronted(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if loop.Load() {
				http.Redirect(w, r, r.URL.RequestURI(), http.StatusFound)
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := onePackage(t, direct)
	reads, result := startWait(ctx, c, p.ID, PollEvery(50*time.Millisecond))
	firstRead(t, ctx, reads, result)
	loop.Store(true)
	srv.CloseClientConnections() // the event stream too: WaitPackage reads at once
	select {
	case r := <-result:
		if re := (*RedirectError)(nil); !errors.As(r.err, &re) || !re.Loop {
			t.Errorf("WaitPackage at a URL that loops = %+v, %v; want a *RedirectError of a loop", r.p, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WaitPackage at a URL that redirects in a loop did not return")
	}
}

// TestTemporary_PlainHTTPAtHTTPS: an https:// URL whose server speaks plain
// HTTP (net/http's "server gave HTTP response to HTTPS client") gets the
// same answer however often it is asked: Temporary does not report it,
// and the error, a *SchemeError, names the http:// URL to give instead.
// It was a *url.Error Temporary reported: an agent polled it for ever.
func TestTemporary_PlainHTTPAtHTTPS(t *testing.T) {
	_, api, _ := newBroker(t)
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()
	c, err := New("https://" + addr + "/prefix")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	calls := map[string]func() error{
		"GET":    func() error { return c.Health(ctx) },
		"POST":   func() error { _, err := c.Enqueue(ctx, "pkg_1"); return err },
		"Events": func() error { return c.Events(ctx, func(Event) error { return nil }) },
	}
	for name, call := range calls {
		err := call()
		if err == nil {
			t.Fatalf("%s: no error from a plain HTTP server at an https:// URL", name)
		}
		if Temporary(err) {
			t.Errorf("%s: Temporary(%v) = true; want false: it answers in plain HTTP every time", name, err)
		}
		var se *SchemeError
		if !errors.As(err, &se) || se.Want != "http" || !errors.Is(err, http.ErrSchemeMismatch) {
			t.Errorf("%s: %v (%+v): want a *SchemeError that wants http, wrapping net/http's", name, err, se)
		}
		if msg := err.Error(); !strings.Contains(msg, "plain HTTP") || !strings.Contains(msg, "http://"+addr+"/prefix") {
			t.Errorf("%s: %q does not say the server speaks plain HTTP and name the http:// URL", name, msg)
		}
	}
}

// TestSchemeError_DefaultPort: the URL a *SchemeError names instead keeps
// the port the call went to: the scheme's own when the URL named none,
// which the other scheme would not have.
func TestSchemeError_DefaultPort(t *testing.T) {
	for _, tt := range []struct{ url, want, instead string }{
		{"https://broker.example", "http", "http://broker.example:443"},
		{"http://broker.example/sb", "https", "https://broker.example:80/sb"},
		{"https://[::1]:8443", "http", "http://[::1]:8443"},
		{"https://u:secret@broker.example:8443", "http", "http://u:xxxxx@broker.example:8443"},
	} {
		u, err := url.Parse(tt.url)
		if err != nil {
			t.Fatal(err)
		}
		msg := (&SchemeError{URL: u, Want: tt.want, Err: io.EOF}).Error()
		if !strings.Contains(msg, "("+tt.instead+")") || strings.Contains(msg, "secret") {
			t.Errorf("SchemeError of %s: %q, want it to name %s (and no password)", tt.url, msg, tt.instead)
		}
	}
}

// TestTemporary_TLSAtHTTP: an http:// URL whose server speaks TLS gets the
// same answer however often it is asked: Temporary does not report it,
// and the error, a *SchemeError, names the https:// URL to give instead.
// A TLS server that answers with an alert record was "malformed HTTP
// response" in a *url.Error, which Temporary reported (an agent polled it
// for ever); Go's answers a 400 page of its own, which said nothing of
// the scheme to anyone but the CLI, which matched its text itself.
func TestTemporary_TLSAtHTTP(t *testing.T) {
	goTLS := httptest.NewUnstartedServer(http.NotFoundHandler())
	goTLS.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are the test
	goTLS.StartTLS()
	t.Cleanup(goTLS.Close)
	ctx := context.Background()
	for name, addr := range map[string]string{"alert": tlsalert.Listen(t), "Go": goTLS.Listener.Addr().String()} {
		c, err := New("http://" + addr)
		if err != nil {
			t.Fatal(err)
		}
		calls := map[string]func() error{
			"GET":    func() error { return c.Health(ctx) },
			"POST":   func() error { _, err := c.Enqueue(ctx, "pkg_1"); return err },
			"Events": func() error { return c.Events(ctx, func(Event) error { return nil }) },
		}
		for call, f := range calls {
			err := f()
			if err == nil {
				t.Fatalf("%s, %s: no error from a TLS server at an http:// URL", name, call)
			}
			if Temporary(err) {
				t.Errorf("%s, %s: Temporary(%v) = true; want false: it answers in TLS every time", name, call, err)
			}
			var se *SchemeError
			if !errors.As(err, &se) || se.Want != "https" {
				t.Errorf("%s, %s: %v (%+v): want a *SchemeError that wants https", name, call, err, se)
			}
			if msg := err.Error(); !strings.Contains(msg, "TLS") || !strings.Contains(msg, "(https://"+addr+")") {
				t.Errorf("%s, %s: %q does not say the server speaks TLS and name the https:// URL", name, call, msg)
			}
		}
	}
}
