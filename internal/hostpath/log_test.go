package hostpath

import (
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/agent"
	"github.com/spin-broker/spinbroker/internal/brokertest"
	"github.com/spin-broker/spinbroker/internal/syncbuf"
)

// TestLog_ActionLinesNameTheirCommand: served by the agent, an action's
// own log lines ("image created", "image copied", …) carry the command's
// command_id, resource, action and attempt, as the agent's "command
// started" and "command finished" do, and as sa-emulation's own lines do.
// They had only the path: with claim or a queue's concurrency above 1, a
// reader could not tell which command made which image.
func TestLog_ActionLinesNameTheirCommand(t *testing.T) {
	c := brokertest.Start(t).Client
	var logs syncbuf.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	s, err := Open(filepath.Join(t.TempDir(), "images"), Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- agent.Run(ctx, c, Resource, s.Handlers(), agent.Options{Logger: log, Wait: time.Second})
	}()
	t.Cleanup(func() { cancel(); <-done })

	p, err := c.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{
		{Key: "vol", Resource: Resource, Action: "add_volume", Parameters: json.RawMessage(`{"path":"v1"}`)},
		{Key: "img", Resource: Resource, Action: "create_image", Parameters: json.RawMessage(`{"volume_path":"v1","image_name":"d.raw","image_size":1}`), Dependencies: []string{"vol"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); !p.State.Terminal(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("package still %s after 30s:\n%s", p.State, logs.String())
		}
		if p, err = c.Package(ctx, p.ID); err != nil {
			t.Fatal(err)
		}
	}
	if p.State != spinbroker.PackageSucceeded {
		t.Fatalf("package %s: %v\n%s", p.State, p.Reason, logs.String())
	}
	img := p.Commands[1]
	var line map[string]any
	for l := range strings.Lines(logs.String()) {
		if strings.Contains(l, `"msg":"image created"`) {
			if err := json.Unmarshal([]byte(l), &line); err != nil {
				t.Fatal(err)
			}
		}
	}
	if line == nil {
		t.Fatalf("no image created line:\n%s", logs.String())
	}
	for k, want := range map[string]any{"command_id": img.ID, "resource": Resource, "action": "create_image", "attempt": float64(1), "path": "v1/d.raw"} {
		if line[k] != want {
			t.Errorf("image created: %s=%v, want %v\n%v", k, line[k], want, line)
		}
	}
}
