package main

import (
	"context"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/brokertest"
	"github.com/spin-broker/spinbroker/internal/httpapi"
	"github.com/spin-broker/spinbroker/internal/tlsalert"
)

// pinged is ping's -o json output, decoded.
func pinged(t *testing.T, r result) pingReport {
	t.Helper()
	var rep pingReport
	decodeJSON(t, r.stdout, &rep)
	return rep
}

// TestPing_NoAuth: a healthy broker without auth is reachable, spin-broker,
// ok, and needs no token; a token given to it is not needed either.
func TestPing_NoAuth(t *testing.T) {
	t.Parallel()
	b := serveBroker(t)
	r := b.spin("ping")
	if r.code != 0 {
		t.Fatalf("ping of a healthy broker: %s", r)
	}
	wantContains(t, "stdout", r.stdout, "URL:     "+b.url+"\n", "Broker:  reachable, spin-broker, ", " ms\n",
		"Health:  ok\n", "Token:   none needed: auth is off\n")
	if r.stderr != "" {
		t.Errorf("stderr of a good ping: %q", r.stderr)
	}

	// SPINBROKER_URL and SPINBROKER_TOKEN are what other hosts set.
	r = spinEnv(t, []string{"SPINBROKER_URL=" + b.url, "SPINBROKER_TOKEN=sbt_whatever"}, "ping", "-o", "json")
	if r.code != 0 {
		t.Fatalf("ping -o json with a token: %s", r)
	}
	rep := pinged(t, r)
	if !rep.Reached || rep.Health != "ok" || rep.Auth != "off" || rep.Token != "accepted" || rep.RoundTripMS == nil || *rep.RoundTripMS <= 0 || rep.Error != "" {
		t.Errorf("ping -o json of a broker without auth, with a token: %+v", rep)
	}
}

// TestPing_Tokens: with auth on, ping says whether the broker takes the
// token: a viewer's is accepted, an agent's too, and ping says what an
// agent token may read; a revoked or bogus token, or none, is refused with
// the broker's reason, exit 1.
func TestPing_Tokens(t *testing.T) {
	t.Parallel()
	b := serveBroker(t, brokertest.WithAPI(httpapi.Options{Auth: true, TokenCacheTTL: time.Millisecond}))
	ctx := context.Background()
	_, viewer, err := b.db.CreateToken(ctx, spinbroker.RoleViewer, "", "dashboard")
	if err != nil {
		t.Fatal(err)
	}
	_, agent, err := b.db.CreateToken(ctx, spinbroker.RoleAgent, "storage", "storage")
	if err != nil {
		t.Fatal(err)
	}
	old, revoked, err := b.db.CreateToken(ctx, spinbroker.RoleAdmin, "", "old")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.db.RevokeToken(ctx, old.ID); err != nil {
		t.Fatal(err)
	}

	r := b.spin("ping", "--token", viewer)
	if r.code != 0 {
		t.Fatalf("ping with a viewer token: %s", r)
	}
	wantContains(t, "stdout", r.stdout, "Health:  ok\n", "Token:   accepted\n")
	rep := pinged(t, b.spin("ping", "--token", viewer, "-o", "json"))
	if rep.Auth != "on" || rep.Token != "accepted" || rep.AgentToken {
		t.Errorf("ping -o json with a viewer token: %+v", rep)
	}

	r = b.spin("ping", "--token", agent)
	if r.code != 0 {
		t.Fatalf("ping with an agent token: %s", r)
	}
	wantContains(t, "stdout", r.stdout, "Token:   accepted (an agent token: it may read only its own resource's queue and commands)\n")
	rep = pinged(t, b.spin("ping", "--token", agent, "-o", "json"))
	if rep.Auth != "on" || rep.Token != "accepted" || !rep.AgentToken {
		t.Errorf("ping -o json with an agent token: %+v", rep)
	}

	for _, tc := range []struct{ name, token, row, stderr string }{
		{"Revoked", revoked, "Token:   refused: the token was revoked at ", "the token was revoked at "},
		{"Bogus", "sbt_NOTATOKEN", "Token:   refused: ", "the token given with --token was refused"},
		{"None", "", "Token:   none given, and auth is on\n", "give --token or set SPINBROKER_TOKEN"},
	} {
		args := []string{"ping"}
		if tc.token != "" {
			args = append(args, "--token", tc.token)
		}
		r := b.spin(args...)
		if r.code != 1 {
			t.Errorf("%s: exit %d, want 1\n%s", tc.name, r.code, r)
		}
		wantContains(t, tc.name+" stdout", r.stdout, "Broker:  reachable, spin-broker", "Health:  ok\n", tc.row)
		wantContains(t, tc.name+" stderr", r.stderr, "(unauthorized)", tc.stderr)
		if tc.name == "Revoked" && strings.Contains(r.stderr, "mistyped") {
			t.Errorf("a revoked token is told to look for a typo: %s", r.stderr)
		}
		rep := pinged(t, b.spin(append(args, "-o", "json")...))
		if rep.Auth != "on" || !rep.Reached || rep.Health != "ok" || !strings.Contains(rep.Error, tc.stderr) {
			t.Errorf("%s: ping -o json = %+v", tc.name, rep)
		}
	}
}

// TestPing_Unreachable: nothing listening, or a broker that answers 503
// (its database gone), is "try again later": exit 4.
func TestPing_Unreachable(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	r := spin(t, "ping", "--url", "http://"+addr)
	if r.code != exitTryAgain {
		t.Errorf("ping of a closed port: exit %d, want %d\n%s", r.code, exitTryAgain, r)
	}
	wantContains(t, "stdout", r.stdout, "Broker:  not reached\n")
	wantContains(t, "stderr", r.stderr, "cannot reach the broker", "connection refused")
	if rep := pinged(t, spin(t, "ping", "--url", "http://"+addr, "-o", "json")); rep.Reached || !strings.Contains(rep.Error, "cannot reach the broker") {
		t.Errorf("ping -o json of a closed port: %+v", rep)
	}

	b := serveBroker(t)
	if err := b.db.Close(); err != nil {
		t.Fatal(err)
	}
	r = b.spin("ping")
	if r.code != exitTryAgain {
		t.Errorf("ping of a broker without its database: exit %d, want %d\n%s", r.code, exitTryAgain, r)
	}
	wantContains(t, "stdout", r.stdout, "Broker:  reachable, spin-broker\n", "Health:  unavailable\n")
	wantContains(t, "stderr", r.stderr, "(unavailable, request ")
}

// TestPing_NotTheBroker: another server at the address (a 404, a page, its
// own health check) is a configuration problem, exit 1, said as the other
// commands say it; so are a wrong scheme and an untrusted certificate.
func TestPing_NotTheBroker(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		h    http.HandlerFunc
	}{
		{"NotFound", http.NotFound},
		{"Page", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("<html>OK</html>")) }},
		{"OtherHealth", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"status": "UP"}`))
		}},
		// Its /healthz reads as the broker's; the rest does not.
		{"SameHealth", func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/healthz" {
				http.NotFound(w, r)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"status": "ok"}`))
		}},
	} {
		srv := httptest.NewServer(tc.h)
		t.Cleanup(srv.Close)
		r := spin(t, "ping", "--url", srv.URL)
		if r.code != 1 {
			t.Errorf("%s: exit %d, want 1\n%s", tc.name, r.code, r)
		}
		wantContains(t, tc.name+" stdout", r.stdout, "Broker:  not usable from here\n")
		wantContains(t, tc.name+" stderr", r.stderr, "is not spin-broker")
		if strings.Contains(r.stdout, "Health:") || strings.Contains(r.stdout, "Token:") {
			t.Errorf("%s: stdout tells of checks not made:\n%s", tc.name, r.stdout)
		}
		if rep := pinged(t, spin(t, "ping", "--url", srv.URL, "-o", "json")); rep.Reached || rep.Health != "" || !strings.Contains(rep.Error, "is not spin-broker") {
			t.Errorf("%s: ping -o json = %+v", tc.name, rep)
		}
	}

	// A broker over TLS: trusted through SSL_CERT_FILE it is fine;
	// otherwise, or at http://, it is not.
	var handler http.Handler
	brokertest.Start(t, brokertest.Wrap(func(h http.Handler) http.Handler { handler = h; return h }))
	tlsSrv := httptest.NewTLSServer(handler)
	t.Cleanup(tlsSrv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsSrv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := spinEnv(t, []string{"SSL_CERT_FILE=" + ca}, "ping", "--url", tlsSrv.URL); r.code != 0 || !strings.Contains(r.stdout, "reachable, spin-broker") {
		t.Errorf("ping of a trusted TLS broker: %s", r)
	}
	for _, tc := range []struct{ url, want string }{
		{tlsSrv.URL, "TLS certificate is not trusted here"},
		{strings.Replace(tlsSrv.URL, "https://", "http://", 1), "speaks HTTPS, not plain HTTP"},
		{"http://" + tlsalert.Listen(t), "speaks HTTPS, not plain HTTP"},
	} {
		r := spin(t, "ping", "--url", tc.url)
		if r.code != 1 {
			t.Errorf("%s: exit %d, want 1\n%s", tc.url, r.code, r)
		}
		wantContains(t, tc.url+" stderr", r.stderr, tc.want)
	}
}

// TestPing_Usage: ping takes no arguments, and -o only table or json.
func TestPing_Usage(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"ping", "extra"}, {"ping", "-o", "yaml"}} {
		if r := spin(t, args...); r.code != 2 || r.stdout != "" {
			t.Errorf("%v: %s", args, r)
		}
	}
}
