//go:build unix

package emulation

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spin-broker/spinbroker/agent"
)

// splitQEMU splits a QEMU option string at its single commas; ",," is a
// comma inside a value.
func splitQEMU(s string) []string {
	var out []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == ',' {
			if i+1 < len(s) && s[i+1] == ',' {
				cur.WriteByte(',')
				i++
				continue
			}
			out = append(out, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(s[i])
	}
	return append(out, cur.String())
}

// FuzzVMConfig decodes write_config's parameters as the agent SDK does,
// validates them, resolves the images under an images root with links
// planted inside that lead out, and builds QEMU's command line: nothing
// panics, no image resolves outside the root, and every value reaches
// QEMU as one option value (a comma in a name or path adds no option).
func FuzzVMConfig(f *testing.F) {
	for _, s := range []string{
		`{"id": "web", "vm": {"Name": "web", "Cpus": 2, "Memory": 512, "Images": [{"Path": "v/disk.raw"}, {"Path": "boot.iso", "Cdrom": true}]}}`,
		`{"id": "a", "vm": {"Name": "a,b", "Cpus": 1, "Memory": 16, "Images": [{"Path": "disk.raw", "Volume": "v"}]}}`,
		`{"id": "x", "vm": {"Name": "x", "Cpus": 1, "Memory": 16, "Images": [{"Path": "out/passwd"}]}}`,
		`{"id": "x", "vm": {"Name": "x", "Cpus": 1, "Memory": 16, "Images": [{"Path": "../outside/f.raw"}]}}`,
		`{"id": "x", "vm": {"Name": "x", "Cpus": 1, "Memory": 16, "Images": [{"Path": "f.raw,readonly=off", "Volume": "v"}]}}`,
		`{"id": "x", "vm": {"Name": "x", "Cpus": 1, "Memory": 16, "Images": [{"Path": "/etc/passwd"}]}}`,
		`{"id": "x", "vm": {"Name": "x", "Cpus": 1, "Memory": 16, "Images": [{"Path": "disk.raw", "Volume": "up/.."}]}}`,
		`{"id": "-x", "vm": {"Name": "\u0085", "Cpus": 256, "Memory": 1e30}}`,
		`{"id": "x", "vm": null}`, `{"ID": "x"}`, `{"id": "h", "vm": {"Name": "h", "Cpus": 1, "Memory": 16, "Images": [{"Path": "hard.raw"}]}}`, `{"id": "x", "vm": {"Name": "x", "Cpus": 1, "Memory": 16, "Images": [{"Path": "linked.qcow2"}]}}`,
	} {
		f.Add([]byte(s))
	}
	base := f.TempDir()
	root := filepath.Join(base, "root")
	outside := filepath.Join(base, "outside")
	for _, d := range []string{filepath.Join(root, "v", "sub"), outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			f.Fatal(err)
		}
	}
	for _, p := range []string{filepath.Join(root, "v", "disk.raw"), filepath.Join(root, "boot.iso"), filepath.Join(root, "disk.raw"),
		filepath.Join(root, "v", "f.raw,readonly=off"), filepath.Join(outside, "f.raw"), filepath.Join(outside, "secret.qcow2")} {
		os.WriteFile(p, []byte("x"), 0o644)
	}
	os.Symlink(outside, filepath.Join(root, "out"))
	os.Symlink(filepath.Join(outside, "secret.qcow2"), filepath.Join(root, "linked.qcow2"))
	os.Symlink("..", filepath.Join(root, "v", "up"))
	os.Symlink("../..", filepath.Join(root, "v", "sub", "top"))
	os.Link(filepath.Join(outside, "f.raw"), filepath.Join(root, "hard.raw"))
	rootReal, err := filepath.EvalSymlinks(root)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, params []byte) {
		var p WriteConfig
		if agent.Decode(params, &p) != nil {
			return
		}
		if p.Validate() != nil {
			return
		}
		if CheckID(p.ID) == nil && (strings.ContainsAny(p.ID, "/\\\x00 ") || p.ID[0] == '-' || p.ID[0] == '.') {
			t.Fatalf("CheckID accepted %q", p.ID)
		}
		images, err := resolveImages(p.VM.Images, root)
		if err != nil {
			return
		}
		for _, im := range images {
			if r, err := filepath.Rel(rootReal, im.Path); err != nil || !filepath.IsLocal(r) {
				t.Fatalf("image %+v resolved outside the root: %q", p.VM.Images, im.Path)
			}
			if strings.HasPrefix(im.Path, outside) {
				t.Fatalf("image %+v resolved to %q", p.VM.Images, im.Path)
			}
		}
		vm := *p.VM
		vm.Images = images
		args := QEMUArgs(&vm, Host{QEMU: "qemu", QMP: "/run/a,b.qmp", Accel: "tcg"})
		for i, a := range args {
			if i > 0 && args[i-1] == "-name" {
				if parts := splitQEMU(a); len(parts) != 1 || parts[0] != "guest="+vm.Name {
					t.Fatalf("-name %q splits into %q", a, parts)
				}
			}
			if i > 0 && args[i-1] == "-drive" {
				parts := splitQEMU(a)
				n := 0
				for _, im := range images {
					if parts[0] == "file="+im.Path {
						n++
					}
				}
				if n == 0 || len(parts) < 4 || !strings.HasPrefix(parts[1], "format=") {
					t.Fatalf("-drive %q splits into %q", a, parts)
				}
			}
		}
	})
}

var qmpSockets atomic.Int64

// FuzzQMP: whatever a QMP peer answers (a greeting, then one reply to each
// command, "$ID" standing for the command's id), the client neither panics
// nor hangs past its timeout, and what it decodes is what was sent.
func FuzzQMP(f *testing.F) {
	greeting := `{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": []}}`
	for _, s := range []struct{ greeting, reply string }{
		{greeting, `{"return": {"status": "running", "running": true}, "id": "$ID"}`},
		{greeting, `{"event": "STOP"}` + "\n" + `{"return": {"status": "paused", "running": false}, "id": "$ID"}`},
		{greeting, `{"error": {"class": "GenericError", "desc": "no"}, "id": "$ID"}`},
		{greeting, `{"return": {"status": 1}, "id": "$ID"}`},
		{greeting, `{"return": {}, "id": 7}`},
		{`{"QMP": null}`, ``},
		{`{"QMP": {"version": {"qemu": {"major": "7"}}}}`, ``},
		{`not json`, ``},
		{greeting, strings.Repeat("x", 70000)},
		{greeting, `{"return": [], "id": "$ID"}`},
		{greeting, `{"id": "$ID"}`},
		// The late answer to another command comes first: not the status.
		{greeting, `{"return": {"status": "late", "running": true}, "id": "spin-1"}` + "\n" + `{"return": {"status": "running", "running": true}, "id": "$ID"}`},
		// Two "return"s: the client keeps the last, as encoding/json does.
		{greeting, `{"return": {"status": "a"}, "return": {"running": true}, "id": "$ID"}`},
		// A greeting that answers the capabilities and the query before
		// they are asked: the client cannot tell, and takes its answers.
		{greeting + "\n" + `{"return": {}, "id": "spin-1"}` + "\n" + `{"return": {"status": "early"}, "id": "spin-2"}`, ``},
	} {
		f.Add(s.greeting, s.reply)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, greeting, reply string) {
		path := filepath.Join(dir, fmt.Sprintf("%d.qmp", qmpSockets.Add(1)))
		l, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		var mu sync.Mutex
		var sent []string  // the replies as written, "$ID" replaced
		var asked []string // the ids of the commands answered with them
		done := make(chan struct{})
		go func() {
			defer close(done)
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(2 * time.Second))
			w := bufio.NewWriter(c)
			w.WriteString(greeting + "\n")
			w.Flush()
			sc := bufio.NewScanner(c)
			for sc.Scan() {
				var req struct {
					Execute string `json:"execute"`
					ID      string `json:"id"`
				}
				json.Unmarshal(sc.Bytes(), &req)
				if req.Execute == "qmp_capabilities" {
					w.WriteString(`{"return": {}, "id": "` + req.ID + `"}` + "\n")
				} else {
					r := strings.ReplaceAll(reply, "$ID", req.ID)
					mu.Lock()
					sent = append(sent, r)
					asked = append(asked, req.ID)
					mu.Unlock()
					w.WriteString(r + "\n")
				}
				w.Flush()
			}
		}()
		const timeout = 200 * time.Millisecond
		start := time.Now()
		q, err := DialQMP(context.Background(), path, timeout)
		if err == nil {
			st, err := q.QueryStatus(context.Background())
			if err == nil && st == nil {
				t.Fatal("QueryStatus: no status and no error")
			}
			q.Close()
			l.Close()
			<-done
			// The greeting's lines are the peer's too: it may answer ahead.
			said := append([]string{greeting}, sent...)
			if err == nil && !saidBy(*st, said, asked) {
				t.Fatalf("QueryStatus = %+v, which no line of %q says as the answer to one of %q", *st, said, asked)
			}
		}
		if d := time.Since(start); d > 4*timeout+time.Second {
			t.Fatalf("took %s, timeout %s", d, timeout)
		}
	})
}

// saidBy reports whether a line of the replies returns st as the answer
// to one of the commands asked (by its id: an answer to another command,
// or an event, is not the status), or, st being the zero Status, whether
// nothing did.
func saidBy(st Status, replies, asked []string) bool {
	if st == (Status{}) {
		return true
	}
	for _, r := range replies {
		for line := range strings.SplitSeq(r, "\n") {
			// The return is decoded on its own, as the client does: of
			// two "return" keys the last wins whole, where decoding into
			// a *Status would merge the two objects.
			var answer struct {
				Return json.RawMessage `json:"return"`
				Event  string          `json:"event"`
				ID     any             `json:"id"`
			}
			var said Status
			if json.Unmarshal([]byte(line), &answer) == nil && len(answer.Return) > 0 && answer.Event == "" &&
				slices.Contains(asked, fmt.Sprint(answer.ID)) && isString(answer.ID) &&
				json.Unmarshal(answer.Return, &said) == nil && said == st {
				return true
			}
		}
	}
	return false
}

func isString(v any) bool { _, ok := v.(string); return ok }
