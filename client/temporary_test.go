package client

import (
	"context"
	"io"
	"log"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/spin-broker/spinbroker/internal/httpapi"
	"github.com/spin-broker/spinbroker/internal/store"
	"github.com/spin-broker/spinbroker/internal/store/storetest"
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
