package main

import (
	"encoding/json"
	"strings"
	"testing"

	spinbroker "github.com/spin-broker/spinbroker"
)

func TestCommandCommands(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	pkg := b.id("message", "new")
	vol := b.id("message", "add", pkg, "storage", "add_volume", "path=/srv/a b", "size=10", "--key", "vol", "--lease-duration", "5m")
	img := b.id("message", "add", pkg, "storage", "create_image", `vm={"cpus": 2}`, "--dep", "vol", "--not-before", "2026-01-01t00:00:00+01:00") // a lower-case t, as RFC 3339 allows
	b.ok("message", "enqueue", pkg)
	b.ok("message", "complete", vol, "false", "boom")

	t.Run("ShowTable", func(t *testing.T) {
		out := b.ok("command", "show", img)
		for name, want := range map[string]string{
			"ID": img, "Package": pkg, "Key": "-", "Resource": "storage", "Action": "create_image",
			"Parameters": `{"vm":{"cpus":2}}`, "Dependencies": vol, "State": "cancelled", "Attempts": "0/3",
			"Seq": "2", "Not before": "2025-12-31 23:00:00Z", "Reason": "dependency " + vol + " failed",
			"Output": "-", "Created": "2026-01-02 03:04:05Z", "Started": "-",
		} {
			if got := fieldOf(t, out, name); got != want {
				t.Errorf("%s: %q, want %q", name, got, want)
			}
		}
		out = b.ok("command", "show", vol)
		for name, want := range map[string]string{
			"Key": "vol", "Parameters": `{"path":"/srv/a b","size":10}`, "Dependencies": "-",
			"State": "failed", "Lease duration": "5m0s", "Reason": "boom", "Finished": "2026-01-02 03:04:05Z",
		} {
			if got := fieldOf(t, out, name); got != want {
				t.Errorf("%s: %q, want %q", name, got, want)
			}
		}
	})
	t.Run("ShowJSON", func(t *testing.T) {
		var c spinbroker.Command
		decodeJSON(t, b.ok("command", "show", vol, "-o", "json"), &c)
		if c.ID != vol || c.State != spinbroker.Failed || *c.Key != "vol" || *c.Reason != "boom" {
			t.Errorf("command show -o json = %+v", c)
		}
		var params map[string]any
		if err := json.Unmarshal(c.Parameters, &params); err != nil || params["size"] != 10.0 {
			t.Errorf("parameters = %s", c.Parameters)
		}
	})
	t.Run("Retry", func(t *testing.T) {
		// The cancelled dependent cannot run before its dependency does.
		if r := b.spin("command", "retry", img); r.code != 1 || !strings.Contains(r.stderr, "(conflict)") {
			t.Errorf("retry of a command whose dependency failed: %s", r)
		}
		if out := b.ok("command", "retry", vol); out != "command "+vol+": ready\n" {
			t.Errorf("retry printed %q", out)
		}
		var c spinbroker.Command
		decodeJSON(t, b.ok("command", "show", img, "-o", "json"), &c)
		if c.State != spinbroker.Blocked {
			t.Errorf("the dependent is %s after the retry, want blocked", c.State)
		}
		if r := b.spin("message", "status", pkg); r.code != 3 || r.stdout != "queued: 0/2 done\n" {
			t.Errorf("status after the retry: %s", r)
		}
		if r := b.spin("command", "retry", vol, "-o", "json"); r.code != 1 || !strings.Contains(r.stderr, "(conflict)") || r.stdout != "" {
			t.Errorf("retry of a ready command: %s", r)
		}
	})
}
