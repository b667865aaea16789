package client

import (
	"context"
	"net/http"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
)

// TestLongPollWithinHTTPTimeout: an http.Client with a Timeout (the
// common advice for any HTTP client) shorter than a long-poll's wait cut
// every idle Next and Claim off with "Client.Timeout exceeded", which an
// agent logged as the broker being away, over and over; and a command the
// broker leased as the timeout struck stayed leased to no one until its
// lease ran out, an attempt spent. The wait is kept within the Timeout, so
// an idle long-poll ends with nothing, as it does without one.
func TestLongPollWithinHTTPTimeout(t *testing.T) {
	_, _, srv := newBroker(t)
	c, err := New(srv.URL, WithHTTPClient(&http.Client{Timeout: time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if cmd, err := c.Next(ctx, "idle", 10*time.Second, 0); err != nil || cmd != nil {
		t.Fatalf("Next on an idle queue = %v, %v; want nothing and no error", cmd, err)
	}
	if cmds, err := c.Claim(ctx, "idle", 5, 10*time.Second, 0); err != nil || len(cmds) != 0 {
		t.Fatalf("Claim on an idle queue = %v, %v; want nothing and no error", cmds, err)
	}
	// Work is still delivered.
	if _, err := c.CreatePackage(ctx, spinbroker.NewPackage{Commands: []spinbroker.NewCommand{{Resource: "idle", Action: "a"}}, Enqueue: true}); err != nil {
		t.Fatal(err)
	}
	if cmd, err := c.Next(ctx, "idle", 10*time.Second, 0); err != nil || cmd == nil || cmd.Lease == nil {
		t.Fatalf("Next with a command ready = %v, %v; want it leased", cmd, err)
	}
}
