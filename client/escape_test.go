package client

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestPath_EscapedOnce: an id or a resource name goes into the path
// escaped once, so that the broker reads what the caller gave (and names
// it so in its refusal), and a base path's own escapes (a proxy's prefix)
// are kept. They were escaped twice: "a b" reached the broker as "a%20b".
func TestPath_EscapedOnce(t *testing.T) {
	var (
		mu   sync.Mutex
		sent []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		sent = append(sent, r.URL.EscapedPath())
		mu.Unlock()
		w.WriteHeader(http.StatusNotFound)
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		base string
		call func(*Client) error
		want string
	}{
		{"", func(c *Client) error { _, err := c.Package(ctx, "a b/c?d"); return err }, "/packages/a%20b%2Fc%3Fd"},
		{"", func(c *Client) error { _, err := c.Queue(ctx, "Foo Bar"); return err }, "/queues/Foo%20Bar"},
		{"", func(c *Client) error { _, err := c.Next(ctx, "x%y", 0, 0); return err }, "/queues/x%25y/next"},
		{"/spin", func(c *Client) error { _, err := c.Command(ctx, "a/b"); return err }, "/spin/commands/a%2Fb"},
		{"/a%2Fb/spin/", func(c *Client) error { return c.Health(ctx) }, "/a%2Fb/spin/healthz"},
		{"/a%2Fb", func(c *Client) error { _, err := c.Package(ctx, "x y"); return err }, "/a%2Fb/packages/x%20y"},
		{"/a%2Fb", func(c *Client) error { return c.Events(ctx, func(Event) error { return nil }) }, "/a%2Fb/events"},
	} {
		c, err := New(srv.URL + tc.base)
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		sent = nil
		mu.Unlock()
		_ = tc.call(c)
		mu.Lock()
		got := strings.Join(sent, " ")
		mu.Unlock()
		if got != tc.want {
			t.Errorf("base %q: sent %q, want %q", tc.base, got, tc.want)
		}
	}

	// The real broker names what it was given.
	c, _, _ := newBroker(t)
	if _, err := c.Queue(ctx, "Foo Bar"); err == nil || !strings.Contains(err.Error(), `"Foo Bar"`) {
		t.Errorf("a bad resource's refusal: %v, want it to name \"Foo Bar\"", err)
	}
}
