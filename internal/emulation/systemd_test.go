//go:build unix

package emulation

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/coreos/go-systemd/v22/unit"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// hostileVM is a VM whose name and image path try every way out of a value.
var hostileVM = &VM{
	Name:   "evil\nExecStartPre=/bin/rm -rf ~\n[Install]\\",
	Cpus:   2,
	Memory: 256,
	Images: []Image{{Path: "/images/100% $HOME ${USER} \"q\" 'q' back\\slash,format=qcow2\n[Service]\nExecStart=/bin/sh\\"}},
}

func TestRenderUnit_Golden(t *testing.T) {
	cases := []struct {
		name string
		id   string
		vm   *VM
		vnc  string // the agent's --vnc
	}{
		{"plain", "vm1", &VM{Name: "web server", Cpus: 1, Memory: 64}, ""},
		{"hostile", "vm-2.x", hostileVM, ""},
		{"vnc-socket", "vm1", &VM{Name: "web server", Cpus: 1, Memory: 64}, VNCSocket},
		{"vnc-off", "vm1", &VM{Name: "web server", Cpus: 1, Memory: 64}, VNCOff},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := Host{QEMU: "/usr/bin/qemu-system-x86_64", QMP: "/state/run/" + tc.id + ".qmp", Accel: "tcg", VNC: tc.vnc}
			if tc.vnc == VNCSocket {
				h.VNCSocket = "/state/run/" + tc.id + ".vnc"
			}
			argv := QEMUArgs(tc.vm, h)
			got, err := RenderUnit(tc.id, tc.vm.Name, argv)
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", "units", tc.name+".service")
			if *update {
				if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to write it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("unit differs from %s:\n%s", golden, got)
			}
			checkUnit(t, got, tc.vm.Name, argv)
		})
	}
}

// checkUnit parses a rendered unit as systemd would and checks that it
// holds exactly the expected directives, with ExecStart unquoting to argv
// and the description showing name.
func checkUnit(t *testing.T, rendered []byte, name string, argv []string) {
	t.Helper()
	for i, line := range strings.Split(string(rendered), "\n") {
		if strings.HasSuffix(line, `\`) {
			t.Errorf("line %d ends in a backslash, which would continue it: %q", i+1, line)
		}
	}
	opts, err := unit.DeserializeOptions(bytes.NewReader(rendered))
	if err != nil {
		t.Fatalf("the unit does not parse: %v", err)
	}
	var keys []string
	vals := map[string]string{}
	for _, o := range opts {
		keys = append(keys, o.Section+"."+o.Name)
		vals[o.Name] = o.Value
	}
	want := []string{"Unit.Description", "Service.Type", "Service.ExecStart", "Service.KillMode", "Service.TimeoutStopSec", "Service.Restart"}
	if !slices.Equal(keys, want) {
		t.Fatalf("directives %q, want %q", keys, want)
	}
	words, err := systemdSplit(vals["ExecStart"])
	if err != nil {
		t.Fatalf("ExecStart: %v", err)
	}
	if !slices.Equal(words, argv) {
		t.Errorf("ExecStart runs %q, want %q", words, argv)
	}
	desc, ok := strings.CutPrefix(vals["Description"], "spin-broker VM ")
	if !ok {
		t.Fatalf("Description = %q", vals["Description"])
	}
	if got, err := strconv.Unquote(strings.ReplaceAll(desc, "%%", "%")); err != nil || got != name && utf8.ValidString(name) {
		t.Errorf("Description shows %q (%v), want %q", got, err, name)
	}
}

// systemdSplit splits an ExecStart value into words as systemd does for
// the forms RenderUnit writes: double-quoted words with C escapes, %%
// for % and $$ for $.
func systemdSplit(v string) ([]string, error) {
	var words []string
	for i := 0; i < len(v); {
		if v[i] == ' ' {
			i++
			continue
		}
		if v[i] != '"' {
			return nil, fmt.Errorf("unquoted word at %d in %q", i, v)
		}
		i++
		var w []byte
		for {
			if i >= len(v) {
				return nil, fmt.Errorf("unterminated quote in %q", v)
			}
			c := v[i]
			switch {
			case c == '"':
				i++
				words = append(words, string(w))
				goto next
			case c == '%' || c == '$':
				if i+1 >= len(v) || v[i+1] != c {
					return nil, fmt.Errorf("a lone %c at %d in %q would be expanded", c, i, v)
				}
				w = append(w, c)
				i += 2
			case c == '\\':
				if i+1 >= len(v) {
					return nil, fmt.Errorf("trailing backslash in %q", v)
				}
				switch e := v[i+1]; e {
				case '\\', '"':
					w = append(w, e)
					i += 2
				case 'x':
					n, err := strconv.ParseUint(v[i+2:i+4], 16, 8)
					if err != nil {
						return nil, err
					}
					w = append(w, byte(n))
					i += 4
				case 'u':
					n, err := strconv.ParseUint(v[i+2:i+6], 16, 32)
					if err != nil {
						return nil, err
					}
					w = utf8.AppendRune(w, rune(n))
					i += 6
				default:
					return nil, fmt.Errorf("unexpected escape \\%c in %q", e, v)
				}
			case c < 0x20 || c == 0x7f:
				return nil, fmt.Errorf("raw control character %#x in %q", c, v)
			default:
				w = append(w, c)
				i++
			}
		}
	next:
	}
	return words, nil
}

func TestRenderUnit_Refuses(t *testing.T) {
	if _, err := RenderUnit("bad\nid", "n", []string{"/bin/qemu"}); err == nil {
		t.Error("rendered a unit with a newline in its id")
	}
	if _, err := RenderUnit("vm", "n", []string{"qemu"}); err == nil {
		t.Error("rendered a unit with a relative command")
	}
}

func TestSystemctlArgs(t *testing.T) {
	for _, tc := range []struct {
		got, want []string
	}{
		{SystemctlArgs("start", UnitName("vm1")), []string{"--user", "start", "spin-vm-vm1.service"}},
		{SystemctlArgs("is-active", UnitName("a.b-c")), []string{"--user", "is-active", "spin-vm-a.b-c.service"}},
		{SystemctlArgs("daemon-reload"), []string{"--user", "daemon-reload"}},
	} {
		if !slices.Equal(tc.got, tc.want) {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

// FuzzRenderUnit: no name and no argument can add, drop or change a
// directive, and ExecStart always runs exactly the given arguments.
func FuzzRenderUnit(f *testing.F) {
	f.Add("web", "/images/a.img")
	f.Add(hostileVM.Name, hostileVM.Images[0].Path)
	f.Add("a\\", "b\\\n")
	f.Add("%i %n $$", "\x00\xff\u2028")
	f.Fuzz(func(t *testing.T, name, arg string) {
		if len(name)+len(arg) > 250 {
			t.Skip("the parser checking the unit takes lines of 2048 bytes at most")
		}
		argv := []string{"/usr/bin/qemu-system-x86_64", "-name", name, arg}
		rendered, err := RenderUnit("vm", name, argv)
		if err != nil {
			t.Fatal(err)
		}
		checkUnit(t, rendered, name, argv)
	})
}

// TestSystemd_Running: only systemctl's "not running" answers mean that a
// VM is stopped; systemctl failing (no user bus) is an error, never a VM
// reported stopped while it may run on.
func TestSystemd_Running(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "systemctl")
	script := `#!/bin/sh
case "$*" in
*spin-vm-up.service*) echo active ;;
*spin-vm-down.service*) echo inactive; exit 3 ;;
*spin-vm-gone.service*) echo inactive; exit 4 ;;
*) echo "Failed to connect to bus: No medium found" >&2; exit 1 ;;
esac
`
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	s := &Systemd{unitDir: dir, systemctl: fake, log: quiet()}
	ctx := t.Context()
	for id, want := range map[string]bool{"up": true, "down": false, "gone": false} {
		if running, err := s.Running(ctx, id); err != nil || running != want {
			t.Errorf("Running(%s) = %v, %v; want %v", id, running, err, want)
		}
	}
	if running, err := s.Running(ctx, "nobus"); err == nil || !strings.Contains(err.Error(), "Failed to connect to bus") {
		t.Errorf("Running without a bus = %v, %v; want the error", running, err)
	}
}

// TestSystemd_RunningWhileItChangesState: systemctl is-active counts only
// active (and reloading) as active and answers 3, "not running", for a
// unit systemd is still stopping (its QEMU has had SIGTERM and may take
// up to TimeoutStopSec) or still starting; such a VM runs. A retried stop
// that took it for stopped answered changed: false with QEMU still up.
// The fake prints what systemctl prints for each state.
func TestSystemd_RunningWhileItChangesState(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "systemctl")
	script := `#!/bin/sh
for state in active reloading refreshing activating deactivating inactive failed maintenance; do
	case "$*" in
	*spin-vm-$state.service*) echo $state; [ $state = active ] || [ $state = reloading ] || [ $state = refreshing ] || exit 3; exit 0 ;;
	esac
done
echo "Failed to connect to bus: No medium found" >&2; exit 1
`
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	s := &Systemd{unitDir: dir, systemctl: fake, log: quiet()}
	for state, want := range map[string]bool{
		"active": true, "reloading": true, "refreshing": true,
		"activating": true, "deactivating": true,
		"inactive": false, "failed": false, "maintenance": false,
	} {
		if running, err := s.Running(t.Context(), state); err != nil || running != want {
			t.Errorf("Running of a unit %s = %v, %v; want %v", state, running, err, want)
		}
	}
}

// TestNewSystemd_UnitDirOfItsOwn: a unit others may write is a command
// they choose, run by the agent's user manager at the VM's next start. A
// unit dir writable by others is narrowed (never widened) at start, and
// one another user owns is refused.
func TestNewSystemd_UnitDirOfItsOwn(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "units")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := NewSystemd(dir, quiet()); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("%s: %v, mode %v; want 0755", dir, err, fi.Mode().Perm())
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := NewSystemd(dir, quiet()); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("%s: %v, mode %v; want 0700 kept", dir, err, fi.Mode().Perm())
	}
	// A folder shared on purpose, as /tmp, is refused, never narrowed.
	shared := filepath.Join(t.TempDir(), "tmp")
	if err := os.Mkdir(shared, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(shared, 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	if _, err := NewSystemd(shared, quiet()); err == nil || !strings.Contains(err.Error(), "sticky bit") {
		t.Errorf("NewSystemd with a shared unit dir: %v", err)
	}
	if fi, err := os.Stat(shared); err != nil || fi.Mode() != os.ModeDir|os.ModeSticky|0o777 {
		t.Errorf("the shared folder %s: %v, mode %v; want it untouched", shared, err, fi.Mode())
	}
	if os.Geteuid() != 0 {
		t.Skip("giving a folder to another user takes root")
	}
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, err := NewSystemd(dir, quiet()); err == nil || !strings.Contains(err.Error(), "belongs to user 65534") {
		t.Errorf("NewSystemd with a unit dir of another user's: %v", err)
	}
}
