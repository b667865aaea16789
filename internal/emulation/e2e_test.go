//go:build unix

package emulation_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/client"
	"github.com/spin-broker/spinbroker/internal/brokertest"
	"github.com/spin-broker/spinbroker/internal/syncbuf"
)

// The seed's scenario for real: a broker in this process, sa-host-path and
// sa-emulation as processes, and a real qemu-system-x86_64 (TCG, booting
// nothing). Storage makes a volume and a disk image, emulation writes the
// VM's config and starts it; QMP says it runs; the agent restarts and adopts
// it; shutdown (graceful only) fails because no guest answers ACPI; stop
// forces it off within its timeout.
func TestE2E_SeedScenario(t *testing.T) {
	f := startFleet(t)
	b, bins, root, state, emuArgs, emu := f.b, f.bins, f.root, f.state, f.emuArgs, f.emu

	vm := `{"Name":"seed vm","Cpus":1,"Memory":64,"Images":[{"Path":"disk.img","Volume":"vol1"}]}`
	pkg := b.run(t, 60*time.Second,
		command("vol", "storage", "add_volume", `{"path":"vol1"}`),
		command("img", "storage", "create_image", `{"volume_path":"vol1","image_name":"disk.img","image_size":1}`, "vol"),
		command("cfg", "emulation", "write_config", `{"id":"vm1","vm":`+vm+`}`, "img"),
		command("start", "emulation", "start", `{"id":"vm1"}`, "cfg"),
	)
	var img struct {
		HostPath string `json:"host_path"`
		Size     int64  `json:"size"`
	}
	decode(t, pkg.Commands[1].Output, &img)
	if img.Size != 1<<30 || img.HostPath != filepath.Join(root, "vol1", "disk.img") {
		t.Errorf("create_image output %s", pkg.Commands[1].Output)
	}
	var started vmOutput
	decode(t, pkg.Commands[3].Output, &started)
	if !started.Running || started.Status == nil || started.Status.Status != "running" || started.PID == 0 || started.Accel != "tcg" || !strings.HasPrefix(started.VNC, "127.0.0.1:") {
		t.Fatalf("start output %s", pkg.Commands[3].Output)
	}
	pid := started.PID
	t.Logf("start: %s", pkg.Commands[3].Output)
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	// QEMU is given the agent's open file of the image (/proc/PID/fd/N):
	// the image must be among the files it has open.
	if !holds(pid, img.HostPath) {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		t.Errorf("qemu (command line %q) does not have the image %s open", cmdline, img.HostPath)
	}

	st := b.status(t, "vm1")
	if !st.Running || st.Status == nil || st.Status.Status != "running" || st.PID != pid {
		t.Errorf("status: %+v", st)
	}

	// QEMU's lock on the disk keeps sa-host-path from deleting it under
	// the VM.
	if c := b.runFailing(t, command("", "storage", "delete_image", `{"image_path":"vol1/disk.img"}`)); !strings.Contains(*c.Reason, "in use by a running VM") {
		t.Errorf("delete_image of a running VM's disk: %q", *c.Reason)
	}
	if _, err := os.Stat(img.HostPath); err != nil {
		t.Errorf("the running VM's disk: %v", err)
	}

	// The agent restarts; the VM goes on, and the new agent adopts it.
	emu.stop(t)
	if !alive(pid) {
		t.Fatal("the VM ended with the agent")
	}
	startAgent(t, "emulation2", bins, b.url, "sa-emulation", emuArgs...)
	pkg = b.run(t, 30*time.Second, command("", "emulation", "start", `{"id":"vm1"}`))
	decode(t, pkg.Commands[0].Output, &started)
	if started.Changed || started.PID != pid || !started.Running {
		t.Errorf("start after the restart did not find the running VM: %s", pkg.Commands[0].Output)
	}
	// A second agent on the same state dir (the one above serves: it has
	// just answered) would not know this VM: it exits instead of serving.
	second := exec.Command(filepath.Join(bins, "sa-emulation"), append([]string{"--url", b.url}, emuArgs...)...)
	if out, err := runFor(second, 30*time.Second); err == nil || !strings.Contains(out, "one agent per state dir") {
		t.Errorf("a second sa-emulation on %s: %v\n%s", state, err, out)
	}

	// shutdown only asks: no guest answers the power button.
	c := b.runFailing(t, command("", "emulation", "shutdown", `{"id":"vm1","timeout":"1s"}`))
	if !strings.Contains(*c.Reason, "did not power off within 1s") || !strings.Contains(*c.Reason, "pressed once") || !alive(pid) {
		t.Errorf("shutdown: %q, VM alive %v", *c.Reason, alive(pid))
	}

	// stop asks, then forces within its timeout.
	begin := time.Now()
	pkg = b.run(t, 30*time.Second, command("", "emulation", "stop", `{"id":"vm1","timeout":"2s"}`))
	took := time.Since(begin)
	t.Logf("stop took %s: %s", took, pkg.Commands[0].Output)
	var stopped vmOutput
	decode(t, pkg.Commands[0].Output, &stopped)
	if !stopped.Forced || stopped.Running || alive(pid) {
		t.Errorf("stop output %s; VM alive %v", pkg.Commands[0].Output, alive(pid))
	}
	if took < 2*time.Second || took > 8*time.Second {
		t.Errorf("stop took %s, want the 2s timeout and a little", took)
	}
	if st := b.status(t, "vm1"); st.Running || !st.Configured {
		t.Errorf("status after stop: %+v", st)
	}
}

// TestE2E_GracefulShutdown is the half of shutdown and stop that
// TestE2E_SeedScenario cannot show: a guest that answers the ACPI power
// button (a boot sector the test writes into the VM's disk, see
// powerButtonGuest) powers off when shutdown asks, and shutdown says so
// (not forced); the VM is then stopped and its QEMU gone. After the agent
// restarts, stop of the VM it adopted is as graceful.
func TestE2E_GracefulShutdown(t *testing.T) {
	f := startFleet(t)
	b, bins, state, emuArgs, emu := f.b, f.bins, f.state, f.emuArgs, f.emu

	vm := `{"Name":"acpi vm","Cpus":1,"Memory":64,"Images":[{"Path":"disk.img","Volume":"vol1"}]}`
	pkg := b.run(t, 60*time.Second,
		command("vol", "storage", "add_volume", `{"path":"vol1"}`),
		command("img", "storage", "create_image", `{"volume_path":"vol1","image_name":"disk.img","image_size":1}`, "vol"),
		command("", "emulation", "write_config", `{"id":"vm1","vm":`+vm+`}`, "img"),
	)
	var img struct {
		HostPath string `json:"host_path"`
	}
	decode(t, pkg.Commands[1].Output, &img)
	qemuLog := filepath.Join(state, "proc", "vm1.log")

	// start makes the disk boot guest and starts the VM; it returns
	// QEMU's pid.
	start := func(guest []byte) int {
		t.Helper()
		writePowerButtonGuest(t, img.HostPath, guest)
		pkg := b.run(t, 60*time.Second, command("", "emulation", "start", `{"id":"vm1"}`))
		var started vmOutput
		decode(t, pkg.Commands[0].Output, &started)
		if !started.Changed || !started.Running || started.PID == 0 {
			t.Fatalf("start output %s", pkg.Commands[0].Output)
		}
		pid := started.PID
		t.Cleanup(func() {
			if alive(pid) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		})
		return pid
	}
	// boot starts the VM and waits until its guest has armed the power
	// button, so that the press is not lost; it returns QEMU's pid.
	boot := func() int {
		t.Helper()
		pid := start(powerButtonGuest)
		awaitArmed(t, img.HostPath, qemuLog, 2*time.Minute)
		return pid
	}
	// poweredOff checks the output of a graceful shutdown or stop, and
	// that the VM is gone.
	poweredOff := func(action string, pid int, raw json.RawMessage) {
		t.Helper()
		var out vmOutput
		decode(t, raw, &out)
		if !out.Changed || out.Forced || out.Running || out.Took == "" || out.Presses < 1 {
			t.Errorf("%s output %s: want changed, not forced, not running, with took and presses", action, raw)
		}
		if alive(pid) {
			t.Errorf("after %s, QEMU (process %d) still runs", action, pid)
		}
		if st := b.status(t, "vm1"); st.Running || !st.Configured || st.PID != 0 {
			t.Errorf("status after %s: %+v", action, st)
		}
	}

	// The guest powers off when shutdown presses the button; shutdown
	// would fail, and the VM run on, had it not.
	pid := boot()
	pkg = b.run(t, 3*time.Minute, command("", "emulation", "shutdown", `{"id":"vm1","timeout":"2m"}`))
	t.Logf("shutdown: %s", pkg.Commands[0].Output)
	poweredOff("shutdown", pid, pkg.Commands[0].Output)

	// Started again, and adopted by a new agent: stop powers it off
	// gracefully, without forcing it.
	pid = boot()
	emu.stop(t)
	if !alive(pid) {
		t.Fatal("the VM ended with the agent")
	}
	startAgent(t, "emulation2", bins, b.url, "sa-emulation", emuArgs...)
	pkg = b.run(t, 3*time.Minute, command("", "emulation", "stop", `{"id":"vm1","timeout":"2m"}`))
	t.Logf("stop: %s", pkg.Commands[0].Output)
	poweredOff("stop", pid, pkg.Commands[0].Output)

	// A guest that arms the button only seconds after it boots, as an OS
	// whose ACPI driver is not up yet, misses a press made before: a
	// shutdown sent right after start used to wait its whole timeout and
	// fail. shutdown presses again while it waits, and says how many
	// presses it took: more than one, the first lost.
	pid = start(powerButtonGuestAfter(lateTicks))
	pkg = b.run(t, 3*time.Minute, command("", "emulation", "shutdown", `{"id":"vm1","timeout":"2m"}`))
	t.Logf("shutdown before the guest listens: %s", pkg.Commands[0].Output)
	poweredOff("shutdown before the guest listens", pid, pkg.Commands[0].Output)
	var late vmOutput
	decode(t, pkg.Commands[0].Output, &late)
	if late.Presses < 2 {
		t.Errorf("shutdown before the guest listens: presses %d, want 2 or more (the first, made before the guest armed the button %d timer ticks after it booted, is lost)", late.Presses, lateTicks)
	}
	awaitArmed(t, img.HostPath, qemuLog, time.Second) // it armed, then powered off
}

// TestE2E_VNC: with --vnc socket a VM's console is a unix socket in the
// state dir's private run/, which start and status report as "unix:PATH",
// and which answers with VNC's greeting; QEMU listens on no TCP port for
// it. A VM started so keeps its socket after the agent restarts with --vnc
// off, until it is stopped and started again: then it has no console, and
// the outputs no "vnc".
func TestE2E_VNC(t *testing.T) {
	f := startFleet(t, "--vnc", "socket")
	b := f.b
	vm := `{"Name":"vnc vm","Cpus":1,"Memory":64,"Images":[{"Path":"disk.img","Volume":"vol1"}]}`
	pkg := b.run(t, 60*time.Second,
		command("vol", "storage", "add_volume", `{"path":"vol1"}`),
		command("img", "storage", "create_image", `{"volume_path":"vol1","image_name":"disk.img","image_size":1}`, "vol"),
		command("cfg", "emulation", "write_config", `{"id":"vm1","vm":`+vm+`}`, "img"),
		command("start", "emulation", "start", `{"id":"vm1"}`, "cfg"),
	)
	sock := filepath.Join(f.state, "run", "vm1.vnc")
	var started vmOutput
	decode(t, pkg.Commands[3].Output, &started)
	if !started.Running || started.PID == 0 || started.VNC != "unix:"+sock {
		t.Fatalf("start output %s, want vnc unix:%s", pkg.Commands[3].Output, sock)
	}
	pid := started.PID
	t.Cleanup(func() {
		if alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); !bytes.Contains(cmdline, []byte("\x00-vnc\x00unix:"+sock+"\x00")) || bytes.Contains(cmdline, []byte("127.0.0.1")) {
		t.Errorf("qemu's command line %q: want -vnc unix:%s and no loopback address", cmdline, sock)
	}
	if fi, err := os.Stat(filepath.Dir(sock)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("the VNC socket's folder: %v, mode %v; want 0700", err, fi.Mode().Perm())
	}
	readRFB(t, sock)
	if st := b.status(t, "vm1"); st.VNC != "unix:"+sock {
		t.Errorf("status: vnc %q, want unix:%s", st.VNC, sock)
	}

	// The agent comes back with --vnc off: the running VM keeps its
	// console until it is started again.
	f.emu.stop(t)
	startAgent(t, "emulation2", f.bins, b.url, "sa-emulation", append(f.emuArgs, "--vnc", "off")...)
	if st := b.status(t, "vm1"); st.PID != pid || st.VNC != "unix:"+sock {
		t.Errorf("status of the VM started with a socket, after a restart with --vnc off: %+v", st)
	}
	readRFB(t, sock)
	b.run(t, 30*time.Second, command("", "emulation", "stop", `{"id":"vm1","timeout":"1s"}`))
	pkg = b.run(t, 60*time.Second, command("", "emulation", "start", `{"id":"vm1"}`))
	decode(t, pkg.Commands[0].Output, &started)
	if !started.Running || started.PID == 0 || started.PID == pid || bytes.Contains(pkg.Commands[0].Output, []byte(`"vnc"`)) {
		t.Fatalf("start with --vnc off: %s, want a new VM without vnc", pkg.Commands[0].Output)
	}
	pid2 := started.PID
	t.Cleanup(func() {
		if alive(pid2) {
			_ = syscall.Kill(pid2, syscall.SIGKILL)
		}
	})
	if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid2)); bytes.Contains(cmdline, []byte("-vnc")) {
		t.Errorf("qemu's command line with --vnc off: %q", cmdline)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the old VNC socket is still there: %v", err)
	}
	pkg = b.run(t, 30*time.Second, command("", "emulation", "status", `{"id":"vm1"}`))
	if out := pkg.Commands[0].Output; !bytes.Contains(out, []byte(`"running":true`)) || bytes.Contains(out, []byte(`"vnc"`)) {
		t.Errorf("status with --vnc off: %s", out)
	}
	b.run(t, 30*time.Second, command("", "emulation", "stop", `{"id":"vm1","timeout":"1s"}`))
}

// readRFB connects to the VNC unix socket at path and checks that it
// greets with VNC's protocol version, "RFB 003.00x".
func readRFB(t *testing.T, path string) {
	t.Helper()
	conn, err := net.DialTimeout("unix", path, 30*time.Second)
	if err != nil {
		t.Fatalf("connect to the VNC socket: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	greeting := make([]byte, 12)
	if _, err := io.ReadFull(conn, greeting); err != nil || !bytes.HasPrefix(greeting, []byte("RFB 003.00")) {
		t.Fatalf("the VNC socket greeted with %q: %v", greeting, err)
	}
}

type vmOutput struct {
	Changed    bool `json:"changed"`
	Running    bool `json:"running"`
	Configured bool `json:"configured"`
	Status     *struct {
		Status  string `json:"status"`
		Running bool   `json:"running"`
	} `json:"status"`
	PID     int    `json:"pid"`
	Accel   string `json:"accel"`
	VNC     string `json:"vnc"`
	Forced  bool   `json:"forced"`
	Took    string `json:"took"`
	Presses int    `json:"presses"`
}

func decode(t *testing.T, raw json.RawMessage, v any) {
	t.Helper()
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("output %s: %v", raw, err)
	}
}

// alive reports whether pid runs (a zombie does not).
// holds reports whether process pid has the file path open.
func holds(pid int, path string) bool {
	want, err := os.Stat(path)
	if err != nil {
		return false
	}
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if fi, err := os.Stat(filepath.Join(dir, e.Name())); err == nil && os.SameFile(fi, want) {
			return true
		}
	}
	return false
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}

// powerButtonGuest is a boot sector (16-bit real mode, loaded at 0x7c00)
// whose guest answers the ACPI power button, as an OS does, on the q35
// machine sa-emulation runs: it arms the button, says so by writing
// itself to the disk's second sector, sleeps until the button is pressed,
// then powers the machine off. SeaBIOS puts q35's (ICH9's) PM I/O base at
// 0x600 (QEMU's "info mtree": ich9-pm): PM1a_STS is at 0x600, PM1a_EN at
// 0x602, PM1a_CNT at 0x604, and the power button is bit 8 of STS and EN.
// QEMU sets the button's status only while it is enabled: a press before
// the guest armed it is lost, hence the sign on the disk (awaitArmed).
// SLP_EN with SLP_TYP 0 is soft off (S5): QEMU ends, as on a guest's
// poweroff. Checked with GNU as (.code16) and objdump -mi8086.
var powerButtonGuest = []byte{
	0x89, 0xd6, // 00: mov si,dx ; the boot drive (DL), kept
	0xba, 0x02, 0x06, // 02: mov dx,0x602 ; PM1a_EN
	0xb8, 0x00, 0x01, // 05: mov ax,0x100 ; PWRBTN_EN
	0xef,       // 08: out dx,ax ; armed
	0x31, 0xc0, // 09: xor ax,ax
	0x8e, 0xc0, // 0b: mov es,ax
	0xbb, 0x00, 0x7c, // 0d: mov bx,0x7c00 ; es:bx: this sector
	0xb8, 0x01, 0x03, // 10: mov ax,0x301 ; write (ah 3) one sector (al 1)
	0xb9, 0x02, 0x00, // 13: mov cx,2 ; cylinder 0, sector 2
	0x89, 0xf2, // 16: mov dx,si ; the boot drive
	0x30, 0xf6, // 18: xor dh,dh ; head 0
	0xcd, 0x13, // 1a: int 0x13 ; the BIOS writes the sign
	0xfb,             // 1c: sti ; the BIOS's timer wakes hlt
	0xf4,             // 1d: wait: hlt
	0xba, 0x00, 0x06, // 1e: mov dx,0x600 ; PM1a_STS
	0xed,             // 21: in ax,dx
	0xa9, 0x00, 0x01, // 22: test ax,0x100 ; PWRBTN_STS
	0x74, 0xf6, // 25: jz wait ; 0x1d - 0x27 = -10
	0xba, 0x04, 0x06, // 27: mov dx,0x604 ; PM1a_CNT
	0xb8, 0x00, 0x20, // 2a: mov ax,0x2000 ; SLP_EN, SLP_TYP 0 (soft off)
	0xef,       // 2d: out dx,ax ; QEMU powers off
	0xfa,       // 2e: cli
	0xf4,       // 2f: halt: hlt
	0xeb, 0xfd, // 30: jmp halt ; 0x2f - 0x32 = -3
}

// lateTicks is how long powerButtonGuestAfter's guest of
// TestE2E_GracefulShutdown waits before it arms the button: 91 of the
// BIOS's timer ticks (18.2 a second), 5s, after SeaBIOS's own boot; a
// shutdown sent as start returns is pressed well before.
const lateTicks = 91

// powerButtonGuestAfter is powerButtonGuest that arms the power button
// only after ticks of the BIOS's timer (18.2 a second), as an OS whose
// ACPI driver is not up yet: it sleeps in hlt, which each tick wakes,
// counting them down in CX, then goes on as powerButtonGuest (its jumps
// are relative, so it runs as well 7 bytes further on). Checked with
// objdump -mi8086.
func powerButtonGuestAfter(ticks uint16) []byte {
	wait := []byte{
		0xb9, byte(ticks), byte(ticks >> 8), // 02: mov cx,ticks
		0xfb,       // 05: sti ; the BIOS's timer wakes hlt
		0xf4,       // 06: delay: hlt
		0xe2, 0xfd, // 07: loop delay ; 0x06 - 0x09 = -3
	}
	guest := append([]byte{}, powerButtonGuest[:2]...) // mov si,dx
	guest = append(guest, wait...)
	return append(guest, powerButtonGuest[2:]...)
}

// writePowerButtonGuest makes the raw disk image at path boot guest (the
// boot signature 55 AA ends its first sector), and clears its second
// sector, where the guest signs that it is armed.
func writePowerButtonGuest(t *testing.T, path string, guest []byte) {
	t.Helper()
	sectors := make([]byte, 1024)
	copy(sectors, guest)
	sectors[510], sectors[511] = 0x55, 0xaa
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(sectors, 0); err != nil {
		f.Close()
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// awaitArmed waits up to d until the powerButtonGuest booted from the
// image at path has armed the power button: its second sector holds its
// first. A guest that never does fails the test with QEMU's log.
func awaitArmed(t *testing.T, path, qemuLog string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	b := make([]byte, 1024)
	for {
		n, err := readAt(path, b)
		if n == len(b) && bytes.Equal(b[512:], b[:512]) {
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(qemuLog)
			t.Fatalf("the guest did not arm the power button within %s (read %s: %v); QEMU's log:\n%s", d, path, err, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// readAt reads the start of the file at path into b (not the whole of a
// 1 GiB image).
func readAt(path string, b []byte) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.ReadAt(b, 0)
}

// requireQEMU installs qemu where it is missing; in CI a missing qemu is a
// failure, never a skip.
func requireQEMU(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("qemu-system-x86_64"); err == nil {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("qemu-system-x86_64 is missing in CI: run internal/emulation/testdata/install-qemu.sh first")
	}
	out, err := exec.Command("bash", "testdata/install-qemu.sh").CombinedOutput()
	if _, lerr := exec.LookPath("qemu-system-x86_64"); lerr != nil {
		t.Skipf("qemu-system-x86_64 is missing and could not be installed: %v\n%s", err, out)
	}
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// buildAgents builds the two agents and the CLI once for the test binary's
// life.
// fleet is a broker in this process with the two agents as processes:
// sa-host-path on root (its URL from --url), sa-emulation (from
// SPINBROKER_URL) running VMs as its own children under TCG, its state in
// state; emuArgs are its flags (startFleet's own after the usual ones),
// for a second agent.
type fleet struct {
	b                 *broker
	bins, root, state string
	emuArgs           []string
	emu               *agentProc
}

func startFleet(t *testing.T, emuArgs ...string) *fleet {
	t.Helper()
	requireQEMU(t)
	f := &fleet{bins: buildAgents(t), b: startBroker(t)}
	dir := t.TempDir()
	f.root, f.state = filepath.Join(dir, "images"), filepath.Join(dir, "state")
	startAgent(t, "storage", f.bins, "", "sa-host-path", "--url", f.b.url, "--root", f.root)
	f.emuArgs = append([]string{"--supervisor", "process", "--state-dir", f.state, "--images-root", f.root, "--accel", "tcg", "--grace", "5s"}, emuArgs...)
	f.emu = startAgent(t, "emulation", f.bins, f.b.url, "sa-emulation", f.emuArgs...)
	return f
}

func buildAgents(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "spin-agents-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+"/",
			"github.com/spin-broker/spinbroker/cmd/sa-host-path",
			"github.com/spin-broker/spinbroker/cmd/sa-emulation",
			"github.com/spin-broker/spinbroker/cmd/spinbroker")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

func TestMain(m *testing.M) {
	if sock := os.Getenv(endsAtQMPEnv); sock != "" {
		os.Exit(qemuThatEndsAtQMP(sock))
	}
	if sock := os.Getenv(listensEnv); sock != "" {
		os.Exit(qemuThatListens(sock))
	}
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

type broker struct {
	c   *client.Client
	url string
}

func startBroker(t *testing.T) *broker {
	t.Helper()
	b := brokertest.Start(t)
	return &broker{c: b.Client, url: b.URL}
}

func command(key, resource, action, params string, deps ...string) spinbroker.NewCommand {
	return spinbroker.NewCommand{Key: key, Resource: resource, Action: action, Parameters: json.RawMessage(params), Dependencies: deps}
}

// enqueue enqueues a package and waits until it is finished.
func (b *broker) enqueue(t *testing.T, timeout time.Duration, cmds ...spinbroker.NewCommand) *spinbroker.Package {
	t.Helper()
	ctx := context.Background()
	p, err := b.c.CreatePackage(ctx, spinbroker.NewPackage{Commands: cmds, Enqueue: true})
	if err != nil {
		t.Fatalf("create package: %v", err)
	}
	deadline := time.Now().Add(timeout)
	for !p.State.Terminal() {
		if time.Now().After(deadline) {
			t.Fatalf("package still %s after %s: %+v", p.State, timeout, p.Counts)
		}
		time.Sleep(50 * time.Millisecond)
		if p, err = b.c.Package(ctx, p.ID); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// run enqueues a package that must succeed.
func (b *broker) run(t *testing.T, timeout time.Duration, cmds ...spinbroker.NewCommand) *spinbroker.Package {
	t.Helper()
	p := b.enqueue(t, timeout, cmds...)
	if p.State != spinbroker.PackageSucceeded {
		for _, c := range p.Commands {
			t.Logf("%s %s: %s %s", c.Resource, c.Action, c.State, deref(c.Reason))
		}
		t.Fatalf("package %s", p.State)
	}
	return p
}

// runFailing runs one command that must fail, and returns it.
func (b *broker) runFailing(t *testing.T, cmd spinbroker.NewCommand) *spinbroker.Command {
	t.Helper()
	one := 1
	cmd.MaxAttempts = &one
	p := b.enqueue(t, 30*time.Second, cmd)
	if c := p.Commands[0]; c.State != spinbroker.Failed || c.Reason == nil {
		t.Fatalf("%s: %s, %s", cmd.Action, c.State, c.Output)
	}
	return &p.Commands[0]
}

func (b *broker) status(t *testing.T, id string) vmOutput {
	t.Helper()
	p := b.run(t, 30*time.Second, command("", "emulation", "status", `{"id":"`+id+`"}`))
	var out vmOutput
	decode(t, p.Commands[0].Output, &out)
	return out
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// agentProc is an agent running as a process, its log in a file shown when
// the test fails.
type agentProc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// startAgent runs prog with args and SPINBROKER_URL set to url.
func startAgent(t *testing.T, name, bins, url, prog string, args ...string) *agentProc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(bins, prog), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "SPINBROKER_URL="+url)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a := &agentProc{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(a.done) }()
	t.Cleanup(func() {
		a.stop(t)
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("%s log:\n%s", name, b)
		}
	})
	return a
}

// stop sends SIGTERM and waits for the graceful exit.
func (a *agentProc) stop(t *testing.T) {
	select {
	case <-a.done:
		return
	default:
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
		if code := a.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("%s exited with %d after SIGTERM", a.cmd.Path, code)
		}
	case <-time.After(15 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.done
		t.Errorf("%s did not stop within 15s of SIGTERM", a.cmd.Path)
	}
}

// TestAgents_UsageErrors: a command line an agent cannot run with stops it
// at once with exit 2 and the flag named, before it polls the broker (a
// lease out of range used to be found only by the broker's 400, and an
// unknown flag printed the whole help).
func TestAgents_UsageErrors(t *testing.T) {
	bin := buildAgents(t)
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"sa-host-path", "extra"}, `unexpected arguments ["extra"]`},
		{[]string{"sa-host-path", "-bogus"}, "not defined: -bogus"},
		{[]string{"sa-host-path"}, "-url (or SPINBROKER_URL) is required"},
		{[]string{"sa-host-path", "-url", "ftp://x"}, "-url"},
		{[]string{"sa-host-path", "-url", "http://x", "-grace", "-1s"}, "-grace"},
		{[]string{"sa-host-path", "-url", "http://x", "-lease", "0s"}, "-lease must be between 1s"},
		{[]string{"sa-host-path", "-url", "http://x", "-lease", "48h"}, "-lease must be between 1s"},
		{[]string{"sa-host-path", "-url", "http://x", "-log-level", "loud"}, "-log-level"},
		{[]string{"sa-host-path", "-url", "http://x", "-qemu-img", "/nonexistent/qemu-img"}, "-qemu-img"},
		{[]string{"sa-emulation", "-url", "http://x", "-supervisor", "docker"}, "-supervisor must be process or systemd"},
		{[]string{"sa-emulation", "-url", "http://x", "-accel", "fast"}, "-accel"},
		{[]string{"sa-emulation", "-url", "http://x", "-vnc", "public"}, "-vnc must be loopback, socket or off"},
		{[]string{"sa-emulation", "-url", "http://x", "-qemu", "/nonexistent/qemu"}, "-qemu"},
		{[]string{"sa-emulation", "-url", "http://x", "-images-root", notDir}, "-images-root: " + notDir + " is not a folder"},
		{[]string{"sa-emulation", "-url", "http://x", "-state-dir", notDir}, "-state-dir: " + notDir + " is not a folder"},
		{[]string{"sa-emulation", "-url", "http://x", "-supervisor", "systemd", "-unit-dir", notDir}, "-unit-dir: " + notDir + " is not a folder"},
		{[]string{"sa-host-path", "-url", "http://x", "-root", notDir}, "-root: " + notDir + " is not a folder"},
		{[]string{"sa-host-path", "-url", "http://x", "-root", ""}, "-root is empty"},
		{[]string{"sa-emulation", "-url", "http://x", "-state-dir", ""}, "-state-dir is empty"},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			cmd := exec.Command(filepath.Join(bin, c.args[0]), c.args[1:]...)
			cmd.Env = append(os.Environ(), "SPINBROKER_URL=", "HOME="+t.TempDir(), "XDG_DATA_HOME=", "XDG_STATE_HOME=")
			var stderr strings.Builder
			cmd.Stderr = &stderr
			done := make(chan error, 1)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			go func() { done <- cmd.Wait() }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
				<-done
				t.Fatalf("still running after 30s; stderr:\n%s", stderr.String())
			}
			if code := cmd.ProcessState.ExitCode(); code != 2 {
				t.Errorf("exit %d, want 2; stderr:\n%s", code, stderr.String())
			}
			if out := stderr.String(); !strings.Contains(out, c.want) || !strings.Contains(out, "-help") || strings.Contains(out, "Flags:") {
				t.Errorf("stderr does not name %q and point to -help (without printing it):\n%s", c.want, out)
			}
		})
	}
	for _, name := range []string{"sa-host-path", "sa-emulation"} {
		out, err := exec.Command(filepath.Join(bin, name), "-help").Output() // stdout: -help | less works
		if err != nil || !strings.Contains(string(out), "Flags:") || !strings.Contains(string(out), "-lease") {
			t.Errorf("%s -help: %v\n%s", name, err, out)
		}
	}
}

// runUntil starts cmd, waits until its output holds want (or d passes, or
// it ends), then stops it with SIGTERM and returns its output.
func runUntil(cmd *exec.Cmd, want string, d time.Duration) (string, error) {
	var out syncbuf.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.Now().Add(d)
	for !strings.Contains(out.String(), want) && time.Now().Before(deadline) {
		select {
		case err := <-done:
			return out.String(), err
		case <-time.After(20 * time.Millisecond):
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
	}
	return out.String(), nil
}

// runFor runs cmd to its end, killing it after d, and returns its output.
func runFor(cmd *exec.Cmd, d time.Duration) (string, error) {
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return "", err
	}
	timer := time.AfterFunc(d, func() { cmd.Process.Kill() })
	defer timer.Stop()
	err := cmd.Wait()
	return out.String(), err
}

// TestReadme_CLITour runs the README's CLI tour as a newcomer would, up to
// its status --wait, against both agents: the package it builds must
// succeed (it once raced: the VM's config waited only for the volume, not
// for its image).
func TestReadme_CLITour(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "### With the CLI")
	if !ok {
		t.Fatal(`the README has no "### With the CLI"`)
	}
	_, rest, _ = strings.Cut(rest, "```sh\n")
	block, _, _ := strings.Cut(rest, "```")
	var script []string
	for _, line := range strings.Split(block, "\n") {
		if strings.HasPrefix(line, "make build") {
			continue // the binaries are built here
		}
		script = append(script, line)
		if strings.Contains(line, "message status") && strings.Contains(line, "--wait") {
			break
		}
	}
	if !strings.Contains(strings.Join(script, "\n"), "--wait") {
		t.Fatalf("the tour has no status --wait:\n%s", block)
	}

	bins := buildAgents(t)
	b := startBroker(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "images")
	startAgent(t, "storage", bins, b.url, "sa-host-path", "--root", root)
	startAgent(t, "emulation", bins, b.url, "sa-emulation", "--supervisor", "process", "--state-dir", filepath.Join(dir, "state"), "--images-root", root)

	cmd := exec.Command("bash", "-eu", "-o", "pipefail", "-c", strings.Join(script, "\n"))
	cmd.Env = append(os.Environ(), "PATH="+bins+":"+os.Getenv("PATH"), "SPINBROKER_URL="+b.url)
	if out, err := runFor(cmd, 3*time.Minute); err != nil {
		t.Fatalf("the README's CLI tour: %v\n%s\n%s", err, strings.Join(script, "\n"), out)
	}
}
