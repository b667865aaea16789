package client

import (
	"context"
	"strings"
	"testing"

	spinbroker "github.com/spin-broker/spinbroker"
)

// TestHeaderValues_RefusedNotTemporary: a header value with a control
// character in it (a key or a user agent read from a file, its newline
// kept) cannot be sent; net/http refuses it below HTTP, an error that
// Temporary read as a network's, so that a caller retrying while
// Temporary retried for ever. The client refuses it itself, before
// anything is sent, with an error that Temporary does not report.
func TestHeaderValues_RefusedNotTemporary(t *testing.T) {
	c, _, srv := newBroker(t)
	ctx := context.Background()
	in := spinbroker.NewPackage{Commands: []spinbroker.NewCommand{{Resource: "r", Action: "a"}}}
	for _, key := range []string{"key\n", "k\r\ney", "k\x00"} {
		_, err := c.CreatePackage(ctx, in, IdempotencyKey(key))
		if err == nil || Temporary(err) {
			t.Errorf("Idempotency-Key %q: %v (temporary %v), want a refusal that is not temporary", key, err, Temporary(err))
		}
	}
	list, err := c.Packages(ctx, ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Packages) != 0 {
		t.Errorf("%d packages created with refused keys", len(list.Packages))
	}
	if _, err := c.CreatePackage(ctx, in, IdempotencyKey(" spaced key ")); err != nil {
		t.Errorf("a key with spaces (which HTTP drops around it): %v", err)
	}
	for _, ua := range []string{"agent/1\n", "a\rb"} {
		if _, err := New(srv.URL, WithUserAgent(ua)); err == nil {
			t.Errorf("New accepted the user agent %q, which no request can carry", ua)
		}
	}
	if _, err := New(srv.URL, WithUserAgent("agent/1 (tab\tok)")); err != nil {
		t.Errorf("a user agent with a tab, which HTTP allows: %v", err)
	}
}

// TestNew_TokenWithScheme: a token given with its header's scheme
// ("Bearer sbt_…", copied from a curl line) was sent as "Bearer Bearer
// sbt_…", and every call answered 401 with nothing to say why. New
// refuses it, saying to give the token alone.
func TestNew_TokenWithScheme(t *testing.T) {
	_, _, srv := newBroker(t)
	for _, tok := range []string{"Bearer sbt_x", "bearer sbt_x", "  BEARER   sbt_x"} {
		_, err := New(srv.URL, WithToken(tok))
		if err == nil || !strings.Contains(err.Error(), `without "Bearer "`) {
			t.Errorf("New with the token %q: %v, want a refusal that says to give it without \"Bearer \"", tok, err)
		}
	}
	if _, err := New(srv.URL, WithToken("sbt_bearer")); err != nil {
		t.Errorf("a token that merely holds the word: %v", err)
	}
}
