package hostpath

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"

	"github.com/spin-broker/spinbroker/agent"
)

// decodes decodes raw as agent.Run would for an action whose parameters
// are a P.
func decodes[P any](raw []byte) error {
	var p P
	return agent.Decode(raw, &p)
}

// FuzzHandlers sends arbitrary parameters to every action, as the broker
// delivers them to sa-host-path: parameters that do not decode into the
// action's type fail it with a *agent.ParamError before it runs, nothing
// outside the root is touched, and what an action reports is inside the
// root, its host path the same file as its path.
func FuzzHandlers(f *testing.F) {
	actions := []struct {
		name   string
		decode func([]byte) error
	}{
		{"add_volume", decodes[AddVolume]},
		{"remove_volume", decodes[RemoveVolume]},
		{"create_image", decodes[CreateImage]},
		{"delete_image", decodes[DeleteImage]},
		{"resize_image", decodes[ResizeImage]},
		{"move_image", decodes[MoveImage]},
		{"copy_image", decodes[CopyImage]},
	}
	for i := range actions {
		for _, s := range []string{
			`{"path": "v/new", "force": true}`, `{"path": "escape", "force": true}`, `{"path": "v/out/x"}`,
			`{"volume_path": "v", "image_name": "d.raw", "image_size": 1, "format": "raw"}`,
			`{"volume_path": "v", "image_name": "d.qcow2", "image_size": 1e3, "shrink": true}`,
			`{"volume_path": "v/up/..", "image_name": "secret", "image_size": 9223372036854775807}`,
			`{"image_path": "v/secret"}`, `{"image_path": "v/dangle"}`,
			`{"image_name": "secret", "volume": "v", "target_volume": "v/rel"}`,
			`{"image_name": "secret", "volume": "v/out", "target_volume": "v"}`,
			`{"PATH": "v", "path": "w"}`, `{"path": null}`, `{"path": 1}`, `[]`, `null`, ``, `{"path": "v"} {}`,
		} {
			f.Add(uint8(i), []byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, action uint8, raw []byte) {
		a := actions[int(action)%len(actions)]
		s, outside := hostile(t)
		var h agent.Handler
		for _, x := range s.Handlers() {
			if x.Action() == a.name {
				h = x
			}
		}
		out, err := h.Call(ctx, raw)
		outsideUnchanged(t, outside)
		if derr := a.decode(raw); derr != nil {
			var pe *agent.ParamError
			if !errors.As(err, &pe) || err.Error() != derr.Error() {
				t.Fatalf("%s %q: %v, want the decoding's %v", a.name, raw, err, derr)
			}
			return
		}
		if err != nil {
			return
		}
		var o Output
		if err := json.Unmarshal(out, &o); err != nil {
			t.Fatalf("%s %q: output %s: %v", a.name, raw, out, err)
		}
		if !filepath.IsLocal(o.Path) || o.HostPath != filepath.Join(s.Dir(), o.Path) {
			t.Fatalf("%s %q: output %s is not inside the root %s", a.name, raw, out, s.Dir())
		}
	})
}
