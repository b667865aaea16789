//go:build unix

package emulation

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"
)

func TestVMValidate(t *testing.T) {
	ok := VM{Name: "web", Cpus: 1, Memory: 16}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(*VM)
		want string
	}{
		{"EmptyName", func(v *VM) { v.Name = "" }, "empty"},
		{"NewlineInName", func(v *VM) { v.Name = "a\nb" }, "control character"},
		{"EscapeInName", func(v *VM) { v.Name = "a\x1b[31m" }, "control character"},
		{"NoCpus", func(v *VM) { v.Cpus = 0 }, "vm.Cpus must be between 1"},
		{"LittleMemory", func(v *VM) { v.Memory = 15 }, "vm.Memory is in MiB and must be between 16"},
		{"EmptyImagePath", func(v *VM) { v.Images = []Image{{}} }, "vm.Images[0].Path"},
		{"NULInImagePath", func(v *VM) { v.Images = []Image{{Path: "a\x00b"}} }, "vm.Images[0].Path is empty or holds a NUL"},
		{"NULInVolume", func(v *VM) { v.Images = []Image{{Path: "a.img"}, {Path: "a.img", Volume: "v\x00"}} }, "vm.Images[1].Volume holds a NUL"},
		{"SevenCdroms", func(v *VM) {
			for range MaxCdroms + 1 {
				v.Images = append(v.Images, Image{Path: "x.iso", Cdrom: true})
			}
		}, "7 CD-ROMs; the machine takes at most 6"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vm := ok
			tc.edit(&vm)
			if err := vm.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate = %v, want %q", err, tc.want)
			}
		})
	}
	for _, id := range []string{"", "-a", "a/b", "a b", "a\nb", strings.Repeat("a", 65), ".."} {
		if CheckID(id) == nil {
			t.Errorf("CheckID(%q) passed", id)
		}
	}
}

func TestResolveImages(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	for _, f := range []string{filepath.Join(root, "vol", "a.img"), filepath.Join(outside, "b.img")} {
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join(outside, "b.img"), filepath.Join(root, "vol", "link.img")); err != nil {
		t.Fatal(err)
	}
	// Files through which QEMU would reach outside the root: a hard link
	// to a file outside, a qcow2 image naming a backing file.
	if err := os.Link(filepath.Join(outside, "b.img"), filepath.Join(root, "vol", "hard.img")); err != nil {
		t.Fatal(err)
	}
	backed := make([]byte, 104)
	copy(backed, "QFI\xfb")
	binary.BigEndian.PutUint32(backed[4:], 3)
	binary.BigEndian.PutUint64(backed[8:], 0x200) // backing_file_offset
	if err := os.WriteFile(filepath.Join(root, "vol", "backed.qcow2"), backed, 0o644); err != nil {
		t.Fatal(err)
	}
	real := func(p string) string { r, _ := filepath.EvalSymlinks(p); return r }
	got, err := resolveImages([]Image{
		{Path: "a.img", Volume: "vol"},
		{Path: "vol/a.img", Cdrom: true},
		{Path: filepath.Join(root, "vol", "a.img")},
	}, root)
	if err != nil {
		t.Fatal(err)
	}
	want := real(filepath.Join(root, "vol", "a.img"))
	if got[0].Path != want || got[1].Path != want || !got[1].Cdrom || got[2].Path != want {
		t.Errorf("resolved %+v, want %s", got, want)
	}
	for _, tc := range []struct {
		im   Image
		root string
		want string
	}{
		{Image{Path: "missing.img", Volume: "vol"}, root, "does not exist"},
		{Image{Path: "../b.img", Volume: "vol/.."}, root, "leaves the images root"},
		{Image{Path: "link.img", Volume: "vol"}, root, "outside the images root"},
		{Image{Path: filepath.Join(outside, "b.img")}, root, "outside the images root"},
		{Image{Path: "a.img", Volume: "vol"}, "", "no --images-root"},
		{Image{Path: filepath.Join(root, "vol"), Volume: ""}, root, "not a file"},
		{Image{Path: "hard.img", Volume: "vol"}, root, "hard links"},
		{Image{Path: "backed.qcow2", Volume: "vol"}, root, "backing file"},
	} {
		if _, err := resolveImages([]Image{tc.im}, tc.root); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("resolve %+v in %q: %v, want %q", tc.im, tc.root, err, tc.want)
		}
	}
	// Without a root, an absolute path anywhere is taken; but a character
	// device is no disk, and a path through a file is not a missing one.
	if _, err := resolveImages([]Image{{Path: filepath.Join(outside, "b.img")}}, ""); err != nil {
		t.Error(err)
	}
	if _, err := resolveImages([]Image{{Path: "/dev/null"}}, ""); err == nil || !strings.Contains(err.Error(), "is not a file or a block device") {
		t.Errorf("/dev/null as a disk: %v", err)
	}
	through := filepath.Join(root, "vol", "a.img", "x.img")
	if _, err := resolveImages([]Image{{Path: through}}, ""); err == nil || strings.Contains(err.Error(), "does not exist") || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("an image path through a file: %v", err)
	}
}

func TestQEMUArgs(t *testing.T) {
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk,format=raw.qcow2")
	guest := filepath.Join(dir, "guest.raw") // its guest wrote a qcow2 header into it
	iso := filepath.Join(dir, "boot.iso")
	os.WriteFile(disk, []byte("QFI\xfb rest of a header"), 0o644)
	os.WriteFile(guest, []byte("QFI\xfb backing file: /etc/shadow"), 0o644)
	os.WriteFile(iso, nil, 0o644)
	vm := &VM{Name: "a,b", Cpus: 2, Memory: 512, Images: []Image{{Path: disk}, {Path: iso, Cdrom: true}, {Path: guest}}}
	got := QEMUArgs(vm, Host{QEMU: "/usr/bin/qemu-system-x86_64", QMP: "/run/x.qmp", Accel: "kvm", CPU: "host"})
	want := []string{
		"/usr/bin/qemu-system-x86_64",
		"-name", "guest=a,,b",
		"-machine", "q35",
		"-accel", "kvm",
		"-smp", "2",
		"-m", "512M",
		"-nodefaults", "-no-user-config",
		"-display", "none",
		"-vnc", "127.0.0.1:0,to=99",
		"-qmp", "unix:/run/x.qmp,server=on,wait=off",
		"-cpu", "host",
		"-drive", "file=" + filepath.Join(dir, "disk,,format=raw.qcow2") + ",format=qcow2,id=drive0,media=disk,if=virtio",
		"-drive", "file=" + iso + ",format=raw,id=drive1,media=cdrom,readonly=on,if=ide",
		// The format is the name's, whatever the image holds.
		"-drive", "file=" + guest + ",format=raw,id=drive2,media=disk,if=virtio",
	}
	if !slices.Equal(got, want) {
		t.Errorf("QEMUArgs =\n%q\nwant\n%q", got, want)
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// The process supervisor, with sleep standing in for qemu: start, adopt
// from a second supervisor (an agent restart), kill, forget.
func TestProcess(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep program")
	}
	ctx := context.Background()
	dir := t.TempDir()
	// A pid file of a process long gone is forgotten at start-up.
	os.WriteFile(filepath.Join(dir, "gone.pid"), []byte("999999999 1\n"), 0o600)
	s1, err := NewProcess(dir, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "gone.pid")); !os.IsNotExist(err) {
		t.Errorf("the stale pid file is still there: %v", err)
	}
	if err := s1.Start(ctx, "vm1", "vm one", []string{sleep, "60"}); err != nil {
		t.Fatal(err)
	}
	pid := s1.PID(ctx, "vm1")
	if running, _ := s1.Running(ctx, "vm1"); !running || pid == 0 {
		t.Fatalf("running %v, pid %d", running, pid)
	}
	if err := s1.Start(ctx, "vm1", "vm one", []string{sleep, "60"}); err != nil || s1.PID(ctx, "vm1") != pid {
		t.Errorf("a second start made another process: %v", err)
	}
	// Its own process group: a signal to the agent's group spares it.
	if pgid, _ := syscall.Getpgid(pid); pgid != pid {
		t.Errorf("process group %d, want its own (%d)", pgid, pid)
	}

	s2, err := NewProcess(dir, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if running, _ := s2.Running(ctx, "vm1"); !running || s2.PID(ctx, "vm1") != pid {
		t.Fatalf("the second supervisor did not adopt pid %d", pid)
	}
	if err := s2.Kill(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	if running, _ := s2.Running(ctx, "vm1"); running {
		t.Error("still running after Kill")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if running, _ := s1.Running(ctx, "vm1"); !running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first supervisor did not reap its child")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(dir, "vm1.pid")); !os.IsNotExist(err) {
		t.Errorf("the pid file outlived the VM: %v", err)
	}
	if err := s2.Remove(ctx, "vm1"); err != nil {
		t.Error(err)
	}
}

// childPID waits for a wrapper under test to write its child's pid to file.
func childPID(t *testing.T, file string) int {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		b, _ := os.ReadFile(file)
		if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid > 0 {
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatal("the wrapper did not start its child")
		}
	}
}

// TestProcess_KillsTheGroup: a --qemu wrapper that runs qemu as its child
// instead of exec'ing it does not leave qemu running after a stop.
func TestProcess_KillsTheGroup(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	ctx := context.Background()
	dir := t.TempDir()
	s, err := NewProcess(dir, quiet())
	if err != nil {
		t.Fatal(err)
	}
	childFile := filepath.Join(dir, "child")
	if err := s.Start(ctx, "vm1", "vm one", []string{sh, "-c", `sleep 60 & echo $! > ` + childFile + `; wait`}); err != nil {
		t.Fatal(err)
	}
	child := childPID(t, childFile)
	// An agent restarted meanwhile adopts the wrapper, and knows its group.
	s2, err := NewProcess(dir, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Kill(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	if state, _, ok := procStat(child); ok && state != 'Z' && state != 'X' {
		syscall.Kill(child, syscall.SIGKILL)
		t.Errorf("the wrapper's child %d outlived Kill (state %c)", child, state)
	}
}

// TestLockStateDir: one agent per state dir.
func TestLockStateDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	first, err := LockStateDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if second, err := LockStateDir(dir); !errors.Is(err, ErrInUse) {
		if second != nil {
			second.Close()
		}
		t.Fatalf("a second lock on %s: %v, want ErrInUse", dir, err)
	}
	first.Close()
	again, err := LockStateDir(dir)
	if err != nil {
		t.Fatalf("the lock once let go: %v", err)
	}
	again.Close()
}

// The emulator's actions that need no QEMU: configs and their checks.
func TestEmulator_Config(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "vol"), 0o755)
	os.WriteFile(filepath.Join(root, "vol", "disk.img"), nil, 0o644)
	sup, err := NewProcess(filepath.Join(t.TempDir(), "proc"), quiet())
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(Options{StateDir: t.TempDir(), ImagesRoot: root, Supervisor: sup, Accel: "tcg", Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	handlers := map[string]func(string) (json.RawMessage, error){}
	for _, h := range e.Handlers() {
		handlers[h.Action()] = func(p string) (json.RawMessage, error) { return h.Call(ctx, json.RawMessage(p)) }
	}
	params := `{"id":"vm1","vm":{"Name":"web","Cpus":1,"Memory":64,"Images":[{"Path":"disk.img","Volume":"vol"}]}}`
	out, err := handlers["write_config"](params)
	if err != nil || !strings.Contains(string(out), `"changed":true`) {
		t.Fatalf("write_config = %s, %v", out, err)
	}
	if out, err := handlers["write_config"](params); err != nil || !strings.Contains(string(out), `"changed":false`) {
		t.Errorf("write_config again = %s, %v", out, err)
	}
	// DESIGN.md spells the seed's names in lower case; both decode alike.
	lower := `{"id":"vm1","vm":{"name":"web","cpus":1,"memory":64,"images":[{"path":"disk.img","volume":"vol"}]}}`
	if out, err := handlers["write_config"](lower); err != nil || !strings.Contains(string(out), `"changed":false`) {
		t.Errorf("write_config in lower case = %s, %v", out, err)
	}
	for _, tc := range []struct{ params, want string }{
		{`{"id":"vm1","vm":{"Name":"w","Cpus":0,"Memory":64}}`, "vm.Cpus must be between 1"},
		{`{"id":"vm1","vm":{"Name":"w","Cpus":1,"Memory":8}}`, "vm.Memory is in MiB"},
		{`{"id":"vm1","vm":{"Name":"w\n","Cpus":1,"Memory":64}}`, "control character"},
		{`{"id":"vm1","vm":{"Name":"w","Cpus":1,"Memory":64,"Images":[{"Path":"nope.img"}]}}`, "does not exist"},
		{`{"id":"vm1","vm":{"Name":"w","Cpus":1,"Memory":64,"Images":[{"Path":"/etc/passwd"}]}}`, "outside the images root"},
		{`{"id":"vm1","vm":{"Name":"w","Cpus":"1","Memory":64}}`, `invalid parameter "vm.Cpus": want an integer`},
		{`{"id":"vm1","vm":{"Name":"w","Memory":64}}`, `invalid parameter "vm.Cpus": required`},
		{`{"id":"../x","vm":{"Name":"w","Cpus":1,"Memory":64}}`, "id"},
		{`{"id":"vm1","vm":{"Name":"w","Cpus":1,"Memory":64,"Disk":1}}`, `"vm.Disk": unknown parameter`},
	} {
		if _, err := handlers["write_config"](tc.params); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("write_config %s: %v, want %q", tc.params, err, tc.want)
		}
	}
	if out, err := handlers["status"](`{"id":"vm1"}`); err != nil || !strings.Contains(string(out), `"running":false`) || !strings.Contains(string(out), `"configured":true`) {
		t.Errorf("status = %s, %v", out, err)
	}
	if out, err := handlers["stop"](`{"id":"vm1","timeout":"1s"}`); err != nil || !strings.Contains(string(out), `"changed":false`) {
		t.Errorf("stop of a stopped VM = %s, %v", out, err)
	}
	if _, err := handlers["stop"](`{"id":"vm1","timeout":"-1s"}`); err == nil {
		t.Error("stop with a negative timeout passed")
	}
	if _, err := handlers["start"](`{"id":"vm2"}`); err == nil || !strings.Contains(err.Error(), "write_config first") {
		t.Errorf("start without a config: %v", err)
	}
	// A socket left by a VM that ended goes with its config.
	if err := os.WriteFile(e.QMPPath("vm1"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := handlers["remove_config"](`{"id":"vm1"}`); err != nil || !strings.Contains(string(out), `"changed":true`) {
		t.Errorf("remove_config = %s, %v", out, err)
	}
	if _, err := os.Stat(e.QMPPath("vm1")); !os.IsNotExist(err) {
		t.Errorf("the QMP socket outlived remove_config: %v", err)
	}
	if out, err := handlers["remove_config"](`{"id":"vm1"}`); err != nil || !strings.Contains(string(out), `"changed":false`) {
		t.Errorf("remove_config again = %s, %v", out, err)
	}
}

// TestNew_StateDirRoom: a state dir too long for any QMP socket stops the
// agent at start-up; one that leaves room for short ids only says so.
func TestNew_StateDirRoom(t *testing.T) {
	sup, err := NewProcess(filepath.Join(t.TempDir(), "proc"), quiet())
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	long := filepath.Join(base, strings.Repeat("d", maxSocketPath-len(base)))
	if _, err := New(Options{StateDir: long, Supervisor: sup, Accel: "tcg", Logger: quiet()}); err == nil || !strings.Contains(err.Error(), "too long for any VM's QMP socket") {
		t.Errorf("New with a state dir of %d bytes: %v", len(long), err)
	}
	var logs strings.Builder
	medium := filepath.Join(base, strings.Repeat("m", maxSocketPath-len(base)-len("/run/.qmp")-30))
	if _, err := New(Options{StateDir: medium, Supervisor: sup, Accel: "tcg", Logger: slog.New(slog.NewTextHandler(&logs, nil))}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "longest_id=29") {
		t.Errorf("New with room for 29-character ids logged:\n%s", logs.String())
	}
}

// TestProcess_GroupsNotItsOwn: a VM is its process. A stale pid file whose
// process is gone adopts nothing, even while processes of that group id
// live on (a daemon's, after a double fork), and a stop then signals none
// of them; a helper left in a VM's group does not keep the VM running.
func TestProcess_GroupsNotItsOwn(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	// A stranger: a group whose leader has exited, its member still there.
	stranger := exec.Command("sh", "-c", `sleep 300 >/dev/null 2>&1 & echo $!`)
	stranger.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := stranger.Output()
	if err != nil {
		t.Fatal(err)
	}
	member, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	t.Cleanup(func() { syscall.Kill(member, syscall.SIGKILL) })
	os.WriteFile(filepath.Join(dir, "vm1.pid"), fmt.Appendf(nil, "%d 12345\n", stranger.Process.Pid), 0o600)
	s, err := NewProcess(dir, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if running, _ := s.Running(ctx, "vm1"); running {
		t.Error("a pid file of a process gone adopted a stranger's group")
	}
	if err := s.Kill(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	if state, _, ok := procStat(member); !ok || state == 'Z' {
		t.Error("a stop killed a stranger's process")
	}

	// A VM whose process ended, leaving a helper in its group, is over.
	if err := s.Start(ctx, "vm2", "two", []string{"sh", "-c", `sleep 300 >/dev/null 2>&1 & echo $! > ` + filepath.Join(dir, "helper")}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if running, _ := s.Running(ctx, "vm2"); !running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a VM whose process ended still runs, for a helper left in its group")
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "helper")); err == nil {
		if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid > 0 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// TestProcess_StopSweepsTheGroup: qemu under a wrapper that ends at once on
// SIGTERM, itself slower to go, is ended with the group at a stop.
func TestProcess_StopSweepsTheGroup(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := NewProcess(dir, quiet())
	if err != nil {
		t.Fatal(err)
	}
	childFile := filepath.Join(dir, "child")
	// The child ignores SIGTERM (as a VM finishing its writes might, for a
	// while); the wrapper does not.
	if err := s.Start(ctx, "vm1", "one", []string{"sh", "-c", `(trap "" TERM; exec sleep 60) & echo $! > ` + childFile + `; wait`}); err != nil {
		t.Fatal(err)
	}
	child := childPID(t, childFile)
	t.Cleanup(func() { syscall.Kill(child, syscall.SIGKILL) })
	if err := s.Kill(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	if state, _, ok := procStat(child); ok && state != 'Z' && state != 'X' {
		t.Errorf("the child that ignored SIGTERM outlived the stop (state %c)", state)
	}
}

// TestEmulator_ImagesNotItsOwnFiles: with the state dir (or the pid files,
// or the unit dir) inside the images root, a VM's disk could be the
// agent's own file, a pid file say, which its guest would then rewrite:
// the agent would signal whatever pid the guest wrote. Such images are
// refused, by whatever path they are named.
func TestEmulator_ImagesNotItsOwnFiles(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "vol"), 0o755)
	os.WriteFile(filepath.Join(root, "vol", "disk.img"), nil, 0o644)
	state := filepath.Join(root, "state")
	procDir := filepath.Join(root, "proc")
	units := filepath.Join(root, "units")
	if err := os.Symlink(state, filepath.Join(root, "vol", "st")); err != nil {
		t.Fatal(err)
	}
	lock, err := LockStateDir(state)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	for _, f := range []string{filepath.Join(procDir, "vm9.log"), filepath.Join(units, "spin-vm-vm9.service")} {
		os.MkdirAll(filepath.Dir(f), 0o755)
		if err := os.WriteFile(f, []byte("1 2\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	procSup, err := NewProcess(procDir, quiet())
	if err != nil {
		t.Fatal(err)
	}
	unitSup, err := NewSystemd(units, quiet())
	if err != nil {
		t.Fatal(err)
	}
	for _, sup := range []Supervisor{procSup, unitSup} {
		e, err := New(Options{StateDir: state, ImagesRoot: root, Supervisor: sup, Accel: "tcg", Logger: quiet()})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.WriteConfig(ctx, WriteConfig{ID: "vm1", VM: &VM{Name: "w", Cpus: 1, Memory: 64, Images: []Image{{Path: "disk.img", Volume: "vol"}}}}); err != nil {
			t.Fatal(err)
		}
		own := []Image{
			{Path: "state/vms/vm1.json"},
			{Path: "st/vms/vm1.json", Volume: "vol"},
			{Path: filepath.Join(state, LockName)},
		}
		if sup == Supervisor(procSup) {
			own = append(own, Image{Path: "proc/vm9.log"})
		} else {
			own = append(own, Image{Path: "units/spin-vm-vm9.service"})
		}
		for _, im := range own {
			_, err := e.WriteConfig(ctx, WriteConfig{ID: "vm2", VM: &VM{Name: "w", Cpus: 1, Memory: 64, Images: []Image{im}}})
			if err == nil || !strings.Contains(err.Error(), "agent's own files") {
				t.Errorf("%T: an image at %+v: %v, want it refused", sup, im, err)
			}
		}
	}
}

// TestProcess_PIDFilesWithoutStartTime: the agent writes a VM's pid with
// its start time; a pid file without one, or naming pid 1, is damaged, not
// a VM to adopt: it would take whatever process has the pid now, and a
// stop of pid 1 as a group would be kill(-1), every process the agent may
// signal.
func TestProcess_PIDFilesWithoutStartTime(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	stranger := exec.Command("sleep", "300")
	if err := stranger.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stranger.Process.Kill(); stranger.Wait() })
	_, start, _ := procStat(1)
	os.WriteFile(filepath.Join(dir, "vm1.pid"), fmt.Appendf(nil, "%d\n", stranger.Process.Pid), 0o600)
	os.WriteFile(filepath.Join(dir, "vm2.pid"), []byte("1\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "vm3.pid"), fmt.Appendf(nil, "1 %s\n", start), 0o600)
	s, err := NewProcess(dir, quiet())
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"vm1", "vm2", "vm3"} {
		if running, _ := s.Running(ctx, id); running {
			t.Fatalf("%s: a damaged pid file was adopted as a running VM", id)
		}
	}
	if err := s.Kill(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	if state, _, ok := procStat(stranger.Process.Pid); !ok || state == 'Z' {
		t.Error("a stop killed the process a pid file without a start time named")
	}
}

// TestEmulator_DamagedConfig: a config file that is cut short, garbage, or
// JSON that is not a valid VM (a hand edit, a disk that lost its end) is
// named, with what is wrong, and starts no QEMU: "{}" used to start one
// with -smp 0 -m 0M and no name.
func TestEmulator_DamagedConfig(t *testing.T) {
	ctx := context.Background()
	e := noQEMU(t)
	path := e.configPath("vm1")
	for _, tc := range []struct{ content, want string }{
		{``, "unexpected end of JSON input"},
		{`{"id":"vm1","vm":{"Na`, "unexpected end of JSON input"},
		{"\x00\x01garbage", "invalid character"},
		{`null`, `it is VM ""'s`},
		{`{}`, `it is VM ""'s`},
		{`{"id":"vm2","vm":{"Name":"w","Cpus":1,"Memory":64}}`, `it is VM "vm2"'s`},
		{`{"id":"vm1","vm":{"Name":"w","Cpus":0,"Memory":64}}`, "vm.Cpus must be between 1"},
		{`{"id":"vm1","vm":{"Name":"","Cpus":1,"Memory":64}}`, "vm.Name is empty"},
	} {
		if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := e.Start(ctx, ID{ID: "vm1"})
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "is damaged") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("start with the config %q: %v, want it named (%s) as damaged: %s", tc.content, err, path, tc.want)
		}
		if running, _ := e.sup.Running(ctx, "vm1"); running {
			t.Fatalf("start with the config %q started a VM", tc.content)
		}
	}
}

// TestProcess_DamagedPIDFile: a pid file cut short or garbage is named in
// the agent's log as damaged, with what it holds, not reported as a VM
// "that exited while the agent was away": nobody knows that it did.
func TestProcess_DamagedPIDFile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for id, content := range map[string]string{"vm1": "", "vm2": "12", "vm3": "\x00garbage\n"} {
		if err := os.WriteFile(filepath.Join(dir, id+".pid"), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var logs strings.Builder
	s, err := NewProcess(dir, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"vm1", "vm2", "vm3"} {
		if running, _ := s.Running(ctx, id); running {
			t.Errorf("%s: a damaged pid file was adopted", id)
		}
		file := filepath.Join(dir, id+".pid")
		if !strings.Contains(logs.String(), "damaged") || !strings.Contains(logs.String(), "file="+file) {
			t.Errorf("the log does not name %s as damaged:\n%s", file, logs.String())
		}
	}
	if strings.Contains(logs.String(), "exited while the agent was away") {
		t.Errorf("damaged pid files were logged as VMs that exited:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), `\x00garbage`) {
		t.Errorf("the log does not say what the damaged file held:\n%s", logs.String())
	}
}

// TestEmulator_StatusOfADamagedConfig: status of a VM whose config file is
// damaged says so, naming the file and what is wrong, so that an operator
// sees it before a start fails on it; a sound config has no config_error.
func TestEmulator_StatusOfADamagedConfig(t *testing.T) {
	ctx := context.Background()
	e := noQEMU(t)
	status := func() *Output {
		t.Helper()
		out, err := e.Status(ctx, ID{ID: "vm1"})
		if err != nil {
			t.Fatalf("status: %v", err)
		}
		return out.(*Output)
	}
	if out := status(); out.Configured || out.ConfigError != "" {
		t.Errorf("status without a config = %+v, want neither configured nor a config_error", out)
	}
	path := e.configPath("vm1")
	for _, tc := range []struct{ content, want string }{
		{`{"id":"vm1","vm":{"Na`, "unexpected end of JSON input"},
		{`{}`, `it is VM ""'s`},
		{`{"id":"vm2","vm":{"Name":"w","Cpus":1,"Memory":64}}`, `it is VM "vm2"'s`},
	} {
		if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		out := status()
		if !out.Configured || !strings.Contains(out.ConfigError, path) || !strings.Contains(out.ConfigError, "is damaged") || !strings.Contains(out.ConfigError, tc.want) {
			t.Errorf("status with the config %q = %+v, want configured with a config_error naming %s as damaged: %s", tc.content, out, path, tc.want)
		}
	}
	if _, err := e.WriteConfig(ctx, WriteConfig{ID: "vm1", VM: &VM{Name: "w", Cpus: 1, Memory: 64}}); err != nil {
		t.Fatal(err)
	}
	if out := status(); !out.Configured || out.ConfigError != "" {
		t.Errorf("status once write_config wrote it anew = %+v, want configured without a config_error", out)
	}
}

// noQEMU is an emulator with the process supervisor whose "qemu" is true:
// a start that gets as far as running it fails with "exited as it
// started", so what a test sees before that is the emulator's own.
func noQEMU(t *testing.T) *Emulator {
	t.Helper()
	sup, err := NewProcess(filepath.Join(t.TempDir(), "proc"), quiet())
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(Options{StateDir: t.TempDir(), QEMU: "true", Supervisor: sup, Accel: "tcg", Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestResolveImages_OutsideTheRootSaysNothingOfIt: under --images-root, an
// absolute path outside it is refused before it is looked at, with the
// same reason whether the file is there or not: a token holder must not
// learn, from write_config's reasons, which files the host has
// ("/root/.ssh/id_ed25519" outside vs. does not exist) or what blocks the
// agent from them (permission denied, not a directory).
func TestResolveImages_OutsideTheRootSaysNothingOfIt(t *testing.T) {
	root, outside := t.TempDir(), t.TempDir()
	there := filepath.Join(outside, "there.img")
	if err := os.WriteFile(there, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, p := range []string{there, filepath.Join(outside, "missing.img"), filepath.Join(there, "x.img"), root + "/../" + filepath.Base(outside) + "/there.img"} {
		_, err := resolveImages([]Image{{Path: p}}, root)
		if err == nil {
			t.Fatalf("%s outside the root was taken", p)
		}
		reason := strings.ReplaceAll(err.Error(), p, "PATH")
		if !strings.Contains(reason, "outside the images root") {
			t.Errorf("%s: %v, want it outside the images root", p, err)
		}
		reasons = append(reasons, reason)
	}
	for _, r := range reasons[1:] {
		if r != reasons[0] {
			t.Errorf("the reasons tell the paths apart: %q", reasons)
			break
		}
	}
	// A path into the root by the root's own name, not its real one (a
	// root reached through a symbolic link), is still inside.
	link := filepath.Join(t.TempDir(), "images")
	if err := os.Symlink(root, link); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "a.img"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ root, path string }{{link, filepath.Join(link, "a.img")}, {link, filepath.Join(root, "a.img")}, {root, filepath.Join(root, "a.img")}} {
		if _, err := resolveImages([]Image{{Path: tc.path}}, tc.root); err != nil {
			t.Errorf("%s under the root %s: %v", tc.path, tc.root, err)
		}
	}
}

// TestNew_PrivateFolders: the folders of QMP sockets, configs and pid files
// are the agent's alone even when they were made before it, with a loose
// mode: whoever can connect to a VM's QMP socket controls the VM (and runs
// programs as the agent's user through its migrate command), and whoever
// can write a config or a pid file chooses the images QEMU opens or the
// process a stop kills. A folder another user owns is refused.
func TestNew_PrivateFolders(t *testing.T) {
	state, proc := t.TempDir(), filepath.Join(t.TempDir(), "proc")
	for _, d := range []string{filepath.Join(state, "run"), filepath.Join(state, "vms"), proc} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	sup, err := NewProcess(proc, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{StateDir: state, Supervisor: sup, Accel: "tcg", Logger: quiet()}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{filepath.Join(state, "run"), filepath.Join(state, "vms"), proc} {
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v, mode %v; want 0700", d, err, fi.Mode().Perm())
		}
	}

	if os.Geteuid() != 0 {
		t.Skip("giving a folder to another user takes root")
	}
	state = t.TempDir()
	run := filepath.Join(state, "run")
	if err := os.Mkdir(run, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(run, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{StateDir: state, Supervisor: sup, Accel: "tcg", Logger: quiet()}); err == nil || !strings.Contains(err.Error(), "belongs to user 65534") {
		t.Errorf("New with a run folder of another user's: %v", err)
	}
	if err := os.Chown(proc, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, err := NewProcess(proc, quiet()); err == nil || !strings.Contains(err.Error(), "belongs to user 65534") {
		t.Errorf("NewProcess with a folder of another user's: %v", err)
	}
}

// TestEmulator_StartFailureQuotesWholeCharacters: the end of QEMU's output
// that a failed start quotes is cut on a character's boundary: an image
// path or a message in UTF-8 cut in the middle of a character made the
// reason start with a replacement character, or bytes that are not text.
func TestEmulator_StartFailureQuotesWholeCharacters(t *testing.T) {
	qemu := filepath.Join(t.TempDir(), "qemu")
	// 2×600 + 1 bytes: the last 1000 start in the middle of an "é".
	script := "#!/bin/sh\ni=0\nwhile [ $i -lt 600 ]; do printf '\\303\\251'; i=$((i+1)); done\nprintf 'x'\nexit 1\n"
	if err := os.WriteFile(qemu, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	sup, err := NewProcess(filepath.Join(t.TempDir(), "proc"), quiet())
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(Options{StateDir: t.TempDir(), QEMU: qemu, Supervisor: sup, Accel: "tcg", Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := e.WriteConfig(ctx, WriteConfig{ID: "vm1", VM: &VM{Name: "u", Cpus: 1, Memory: 64}}); err != nil {
		t.Fatal(err)
	}
	_, err = e.Start(ctx, ID{ID: "vm1"})
	if err == nil || !strings.Contains(err.Error(), "exited as it started: ééé") || !utf8.ValidString(err.Error()) {
		t.Errorf("start of a QEMU that printed UTF-8 and exited: %q", err)
	}
}

// TestLockStateDir_OfItsOwn: whoever can write the state dir can rename its
// run/, vms/ and proc/ away while the agent serves and put folders of
// their own in their place (a QMP socket the agent trusts, configs, pid
// files): a state dir others may write loses that access when the agent
// locks it; one another user owns, or a shared one (sticky, as /tmp), is
// refused.
func TestLockStateDir_OfItsOwn(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	f, err := LockStateDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("%s: %v, mode %v; want 0755", dir, err, fi.Mode().Perm())
	}
	if err := os.Chmod(dir, 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	if f, err := LockStateDir(dir); err == nil || !strings.Contains(err.Error(), "sticky bit") {
		if f != nil {
			f.Close()
		}
		t.Errorf("LockStateDir of a shared folder: %v", err)
	}
	if os.Geteuid() != 0 {
		t.Skip("giving a folder to another user takes root")
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if f, err := LockStateDir(dir); err == nil || !strings.Contains(err.Error(), "belongs to user 65534") {
		if f != nil {
			f.Close()
		}
		t.Errorf("LockStateDir of another user's folder: %v", err)
	}
}

// TestNew_RelativeStateDir: a relative --state-dir is made absolute at
// start-up: a systemd unit's QEMU runs in the user's home, not in the
// agent's working dir, and would make its QMP socket where the agent never
// looks (a start then waited its whole timeout and failed).
func TestNew_RelativeStateDir(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	sup, err := NewProcess(filepath.Join(dir, "proc"), quiet())
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(Options{StateDir: "state", Supervisor: sup, Accel: "tcg", Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := e.QMPPath("vm1"), filepath.Join(dir, "state", "run", "vm1.qmp"); got != want {
		t.Errorf("QMPPath = %q, want %q", got, want)
	}
}

// TestQEMUArgs_VNC: the VNC console by the agent's --vnc: on loopback's
// ports (the default), on a unix socket (its path's commas doubled, as
// every path's), or none.
func TestQEMUArgs_VNC(t *testing.T) {
	vm := &VM{Name: "v", Cpus: 1, Memory: 64}
	vnc := func(h Host) []string {
		args := QEMUArgs(vm, h)
		i := slices.Index(args, "-vnc")
		if i < 0 {
			return nil
		}
		if i+1 == len(args) {
			t.Fatalf("-vnc without a value: %q", args)
		}
		return args[i : i+2]
	}
	h := Host{QEMU: "/usr/bin/qemu-system-x86_64", QMP: "/s,t/run/x.qmp", Accel: "tcg"}
	for _, mode := range []string{"", VNCLoopback} {
		h.VNC = mode
		if got := vnc(h); !slices.Equal(got, []string{"-vnc", "127.0.0.1:0,to=99"}) {
			t.Errorf("VNC %q: %q", mode, got)
		}
	}
	h.VNC, h.VNCSocket = VNCSocket, "/s,t/run/x.vnc"
	if got := vnc(h); !slices.Equal(got, []string{"-vnc", "unix:/s,,t/run/x.vnc"}) {
		t.Errorf("VNC socket: %q", got)
	}
	h.VNC = VNCOff
	if got := vnc(h); got != nil {
		t.Errorf("VNC off: %q", got)
	}
}

// TestNew_VNC: an unknown VNC mode stops the agent at start-up; with
// socket, a state dir too long for the VNC socket of any VM does too, and
// the VNC socket takes no more room than the QMP socket beside it, so
// that no VM whose QMP socket fits fails later on its VNC socket's.
func TestNew_VNC(t *testing.T) {
	sup, err := NewProcess(filepath.Join(t.TempDir(), "proc"), quiet())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{StateDir: t.TempDir(), VNC: "public", Supervisor: sup, Accel: "tcg", Logger: quiet()}); err == nil || !strings.Contains(err.Error(), `vnc "public" is not loopback, socket or off`) {
		t.Errorf("New with VNC public: %v", err)
	}
	state := t.TempDir()
	e, err := New(Options{StateDir: state, VNC: VNCSocket, Supervisor: sup, Accel: "tcg", Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	id := strings.Repeat("i", maxIDLen)
	if got, want := e.VNCPath(id), filepath.Join(state, "run", id+".vnc"); got != want {
		t.Errorf("VNCPath = %q, want %q", got, want)
	}
	if len(e.VNCPath(id)) > len(e.QMPPath(id)) {
		t.Errorf("the VNC socket %q is longer than the QMP socket %q", e.VNCPath(id), e.QMPPath(id))
	}
	base := t.TempDir()
	long := filepath.Join(base, strings.Repeat("d", maxSocketPath-len(base)-len("/run/.vnc")))
	if _, err := New(Options{StateDir: long, VNC: VNCSocket, Supervisor: sup, Accel: "tcg", Logger: quiet()}); err == nil || !strings.Contains(err.Error(), "too long for any VM's") {
		t.Errorf("New with socket and a state dir of %d bytes: %v", len(long), err)
	}
}

// TestEmulator_OneFileOneDisk: QEMU locks a disk's file against every
// other drive that would write it or read it as a disk, its own VM's
// included, so a VM whose images name one file twice (by one path, or by
// two: a symbolic link, the Volume form) never starts, and QEMU's reason
// ("Failed to get \"write\" lock. Is another process using the image?")
// sends the operator looking for a process that is not there.
// write_config refuses such a VM, naming both images, as does start of a
// config file that holds one; the same image as two CD-ROMs (read-only)
// is fine.
func TestEmulator_OneFileOneDisk(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "vol"), 0o755)
	os.WriteFile(filepath.Join(root, "vol", "disk.img"), nil, 0o644)
	os.WriteFile(filepath.Join(root, "vol", "boot.iso"), nil, 0o644)
	if err := os.Symlink("disk.img", filepath.Join(root, "vol", "link.img")); err != nil {
		t.Fatal(err)
	}
	sup, err := NewProcess(filepath.Join(t.TempDir(), "proc"), quiet())
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(Options{StateDir: t.TempDir(), ImagesRoot: root, QEMU: "true", Supervisor: sup, Accel: "tcg", Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	disk, cdrom := Image{Path: "disk.img", Volume: "vol"}, Image{Path: "vol/disk.img", Cdrom: true}
	for name, images := range map[string][]Image{
		"TheSamePathTwice":   {disk, disk},
		"ByASymbolicLink":    {disk, {Path: "vol/boot.iso", Cdrom: true}, {Path: "link.img", Volume: "vol"}},
		"ADiskAndACDROM":     {disk, cdrom},
		"ACDROMAndADisk":     {cdrom, {Path: filepath.Join(root, "vol", "disk.img")}},
		"ByItsAbsolutePath":  {{Path: filepath.Join(root, "vol", "link.img")}, disk},
		"AndAnotherCDROMToo": {cdrom, cdrom, disk},
	} {
		vm := &VM{Name: "w", Cpus: 1, Memory: 64, Images: images}
		_, err := e.WriteConfig(ctx, WriteConfig{ID: "vm1", VM: vm})
		if err == nil || !strings.Contains(err.Error(), "the same file") || !strings.Contains(err.Error(), "vm.Images[") {
			t.Errorf("%s: write_config %+v: %v, want it refused as the same file twice", name, images, err)
		}
	}
	if _, err := os.Stat(e.configPath("vm1")); !os.IsNotExist(err) {
		t.Errorf("a refused write_config left a config: %v", err)
	}
	// Two CD-ROMs of one image, and a disk beside them, are one VM.
	ok := &VM{Name: "w", Cpus: 1, Memory: 64, Images: []Image{cdrom, cdrom, {Path: "boot.iso", Volume: "vol"}}}
	if _, err := e.WriteConfig(ctx, WriteConfig{ID: "vm1", VM: ok}); err != nil {
		t.Errorf("write_config of one image as two CD-ROMs: %v", err)
	}
	// A config file that holds one (written by an agent before this
	// check, or by hand) is refused by start, before QEMU is run.
	b, err := json.Marshal(stored{ID: "vm2", VM: VM{Name: "w", Cpus: 1, Memory: 64, Images: []Image{disk, cdrom}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.configPath("vm2"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Start(ctx, ID{ID: "vm2"}); err == nil || !strings.Contains(err.Error(), "the same file") {
		t.Errorf("start of a config naming one disk's file twice: %v", err)
	}
	if _, err := os.Stat(sup.LogFile("vm2")); !os.IsNotExist(err) {
		t.Errorf("start ran QEMU for a config naming one disk's file twice: %v", err)
	}
}

// TestProcess_PIDFileOfAnotherBoot: a pid file written before the host
// rebooted names a process of that boot. After the reboot its pid, and
// even its start time (clock ticks since boot), can be another process's:
// one started as early in this boot as the VM was in that one (the agent
// and its VMs come up in the same order at each boot). Adopted, it would
// be reported as the VM running, and a stop would signal its process
// group. It is forgotten; a pid file of this boot is adopted, and a VM
// started now writes the boot in its pid file.
func TestProcess_PIDFileOfAnotherBoot(t *testing.T) {
	boot := bootID()
	if boot == "" {
		t.Skipf("no boot id on this system (%s)", bootIDFile)
	}
	ctx := context.Background()
	dir := t.TempDir()
	stranger := exec.Command("sleep", "300")
	stranger.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := stranger.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stranger.Process.Kill(); stranger.Wait() })
	pid := stranger.Process.Pid
	_, start, ok := procStat(pid)
	if !ok {
		t.Fatal("no start time for the stranger")
	}
	other := "00000000-0000-4000-8000-000000000000"
	os.WriteFile(filepath.Join(dir, "vm1.pid"), fmt.Appendf(nil, "%d %s %s\n", pid, start, other), 0o600)
	os.WriteFile(filepath.Join(dir, "vm2.pid"), fmt.Appendf(nil, "%d %s %s\n", pid, start, boot), 0o600)
	var logs strings.Builder
	s, err := NewProcess(dir, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if running, _ := s.Running(ctx, "vm1"); running {
		t.Error("a pid file of another boot adopted this boot's process of that pid and start time")
	}
	if !strings.Contains(logs.String(), `msg="forgot a VM that exited while the agent was away" vm_id=vm1`) {
		t.Errorf("the VM of another boot is not said to be forgotten:\n%s", logs.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "vm1.pid")); !os.IsNotExist(err) {
		t.Errorf("the pid file of another boot is still there: %v", err)
	}
	if err := s.Kill(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	if state, _, ok := procStat(pid); !ok || state == 'Z' {
		t.Fatal("a stop killed the process a pid file of another boot named")
	}
	if running, _ := s.Running(ctx, "vm2"); !running || s.PID(ctx, "vm2") != pid {
		t.Error("a pid file of this boot was not adopted")
	}

	if err := s.Start(ctx, "vm3", "three", []string{"sleep", "60"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Kill(ctx, "vm3") })
	b, err := os.ReadFile(filepath.Join(dir, "vm3.pid"))
	if err != nil {
		t.Fatal(err)
	}
	if f := strings.Fields(string(b)); len(f) != 3 || f[2] != boot {
		t.Errorf("the pid file of a VM started now holds %q, want its pid, start time and boot %s", b, boot)
	}
}
