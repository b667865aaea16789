package emulation

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestStart_ImageSwappedAsQEMUStarts: whoever may write in the images root
// can swap a folder on a VM's image path for a symbolic link between the
// agent's look at the image and QEMU's open of it. Given the path, QEMU
// would open the file the link leads to, outside the root (the host's disk,
// /etc/shadow), and hand it to the guest. The "qemu" here does that swap as
// it starts, then records the file its -drive names: it must be the image
// judged in the root.
func TestStart_ImageSwappedAsQEMUStarts(t *testing.T) {
	base := t.TempDir()
	root, outside := filepath.Join(base, "root"), filepath.Join(base, "outside")
	for _, d := range []string{filepath.Join(root, "v"), outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	inside, secret := filepath.Join(root, "v", "disk.raw"), filepath.Join(outside, "disk.raw")
	for _, p := range []string{inside, secret} {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	opened := filepath.Join(base, "opened")
	qemu := filepath.Join(base, "qemu")
	script := fmt.Sprintf(`#!/bin/sh
mv %[1]s/v %[1]s/hidden && ln -s %[2]s %[1]s/v || exit 2
for a; do
	case "$a" in file=*) f=${a#file=}; stat -L -c %%d:%%i "${f%%%%,format=*}" > %[3]s;; esac
done
exit 1
`, root, outside, opened)
	if err := os.WriteFile(qemu, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	sup, err := NewProcess(filepath.Join(base, "proc"), quiet())
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(Options{StateDir: filepath.Join(base, "state"), ImagesRoot: root, QEMU: qemu, Supervisor: sup, Accel: "tcg", Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	vm := &VM{Name: "v", Cpus: 1, Memory: 64, Images: []Image{{Path: "disk.raw", Volume: "v"}}}
	if _, err := e.WriteConfig(ctx, WriteConfig{ID: "vm1", VM: vm}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Start(ctx, ID{ID: "vm1"}); err == nil || !strings.Contains(err.Error(), "exited as it started") {
		t.Fatalf("start: %v", err)
	}
	got, err := os.ReadFile(opened)
	if err != nil {
		t.Fatal(err)
	}
	id := func(p string) string {
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%d:%d", st.Dev, st.Ino)
	}
	switch strings.TrimSpace(string(got)) {
	case id(filepath.Join(root, "hidden", "disk.raw")):
	case id(secret):
		t.Fatalf("QEMU was given %s, outside the images root, through a link swapped in as it started", secret)
	default:
		t.Fatalf("QEMU opened %q, neither the image nor the file outside", got)
	}
}

// TestStart_SystemdUnitNamesImagesByPath: a systemd unit outlives the
// start that wrote it: an operator's `systemctl --user restart` runs its
// ExecStart again, after the agent closed the files it held for QEMU (or
// exited). A unit naming /proc/PID/fd/N would then give QEMU whatever that
// number is by then, another VM's image or a log, or nothing. Under systemd
// the unit names each image by its path, as it did.
func TestStart_SystemdUnitNamesImagesByPath(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "root")
	if err := os.MkdirAll(filepath.Join(root, "v"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "v", "disk.raw"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	units := filepath.Join(base, "units")
	if err := os.Mkdir(units, 0o755); err != nil {
		t.Fatal(err)
	}
	fake := filepath.Join(base, "systemctl")
	// The VM is not running, daemon-reload works, and start fails.
	script := "#!/bin/sh\ncase \"$2\" in daemon-reload) exit 0;; is-active) echo inactive; exit 3;; esac\nexit 1\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	sup := &Systemd{unitDir: units, systemctl: fake, log: quiet()}
	e, err := New(Options{StateDir: filepath.Join(base, "state"), ImagesRoot: root, QEMU: "/bin/true", Supervisor: sup, Accel: "tcg", Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	vm := &VM{Name: "v", Cpus: 1, Memory: 64, Images: []Image{{Path: "disk.raw", Volume: "v"}}}
	if _, err := e.WriteConfig(ctx, WriteConfig{ID: "vm1", VM: vm}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Start(ctx, ID{ID: "vm1"}); err == nil {
		t.Fatal("start succeeded with a systemctl that cannot start")
	}
	unit, err := os.ReadFile(filepath.Join(units, UnitName("vm1")))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(unit), "/proc/") || !strings.Contains(string(unit), filepath.Join(root, "v", "disk.raw")) {
		t.Errorf("the unit does not name the image by its path:\n%s", unit)
	}
}
