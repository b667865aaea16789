//go:build unix

// Package emulation is the VM side of sa-emulation: it keeps each VM's
// config in a state dir, builds QEMU's command line from it (as a list,
// never a shell string), has a Supervisor run it (systemd user units, or
// the agent's own child processes), and talks to the running VM over QMP.
//
// stop presses the ACPI power button (again while it waits: a guest still
// booting misses a press) and, when the guest has not powered off within
// the timeout, pulls the plug; shutdown only presses the button.
package emulation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
	"unicode/utf8"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/agent"
	"github.com/spin-broker/spinbroker/internal/flock"
)

// Resource is the queue sa-emulation serves.
const Resource = "emulation"

// DefaultStopTimeout is how long stop and shutdown wait for the guest to
// power off.
const DefaultStopTimeout = 30 * time.Second

// Options configure an Emulator.
type Options struct {
	// StateDir holds the configs (vms/) and the QMP sockets (run/); a
	// relative one is made absolute.
	StateDir string
	// ImagesRoot, when set, confines every image to it, and relative
	// image paths are resolved in it.
	ImagesRoot string
	// QEMU is the qemu-system-x86_64 program; found on $PATH when empty.
	QEMU string
	// Accel is "kvm", "tcg", or "" to choose kvm when /dev/kvm is usable.
	Accel string
	// CPU is QEMU's -cpu model; empty for QEMU's default.
	CPU string
	// VNC is the VMs' console: VNCLoopback (also when empty), VNCSocket
	// or VNCOff. A VM keeps the console it was started with.
	VNC string
	// Supervisor runs the VMs.
	Supervisor Supervisor
	// Logger receives the emulator's log lines; slog.Default when nil.
	Logger *slog.Logger
	// QMPTimeout bounds each QMP exchange (default 5s); StartTimeout how
	// long start waits for a new VM's QMP socket (default 15s).
	QMPTimeout, StartTimeout time.Duration
}

// Emulator runs the emulation actions.
type Emulator struct {
	opts Options
	sup  Supervisor
	log  *slog.Logger
}

// LockName is the lock file in the state dir that keeps a second agent off
// it.
const LockName = ".sa-emulation.lock"

// ErrInUse is the error (matched with errors.Is) of LockStateDir on a state
// dir that another sa-emulation holds.
var ErrInUse = errors.New("another sa-emulation serves this state dir")

// LockStateDir makes the state dir if need be and locks it for this agent
// until the returned file is closed (or the process ends). Two agents on
// one state dir would each believe only in the VMs it started itself: one
// would report another's VM stopped while it runs, remove its QMP socket
// on a start, and forget it.
func LockStateDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("emulation: %w", err)
	}
	// Whoever may write it could put folders of their own in place of
	// its run/, vms/ and proc/ while the agent serves.
	if err := ownDir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("emulation: the state dir: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, LockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("emulation: the state dir's lock file: %w", err)
	}
	held, err := flock.TryLock(f)
	if err != nil || !held {
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("emulation: lock the state dir: %w", err)
		}
		return nil, fmt.Errorf("emulation: %s: %w; one agent per state dir", dir, ErrInUse)
	}
	return f, nil
}

// privateDir makes dir if need be and keeps it the agent's alone: one made
// before the agent with a looser mode (by hand, under a umask of 0) is
// narrowed to 0700, and one another user owns is refused. What these
// folders hold is trusted: QMP sockets, through which whoever connects
// controls a VM (and, with its migrate command, runs programs as the
// agent's user), configs that choose the images QEMU opens, and pid files
// that choose the process a stop kills.
func privateDir(dir string) error { return ownDir(dir, 0o700) }

// ownDir makes dir with mode perm if need be, narrows the mode of one that
// has more than perm to perm, and refuses one another user owns, or a
// folder shared on purpose (the sticky bit, /tmp's), which it never
// narrows.
func ownDir(dir string, perm fs.FileMode) error {
	if err := os.MkdirAll(dir, perm); err != nil {
		return err
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%s belongs to user %d, not to the agent's (%d): that user could replace what the agent keeps there; remove it, or give it to the agent's user", dir, st.Uid, os.Geteuid())
	}
	if fi.Mode()&fs.ModeSticky != 0 {
		return fmt.Errorf("%s is a folder shared with other users (its sticky bit is set): give the agent one of its own", dir)
	}
	if fi.Mode().Perm()&^perm != 0 {
		return os.Chmod(dir, fi.Mode().Perm()&perm)
	}
	return nil
}

// New checks opts and makes the state dir.
func New(opts Options) (*Emulator, error) {
	if opts.StateDir == "" {
		return nil, errors.New("emulation: no state dir")
	}
	if opts.Supervisor == nil {
		return nil, errors.New("emulation: no supervisor")
	}
	// Absolute: QEMU under systemd runs in the user's home, not in the
	// agent's working dir, and the sockets' paths are reported.
	abs, err := filepath.Abs(opts.StateDir)
	if err != nil {
		return nil, fmt.Errorf("emulation: the state dir: %w", err)
	}
	opts.StateDir = abs
	for _, d := range []string{"vms", "run"} {
		if err := privateDir(filepath.Join(opts.StateDir, d)); err != nil {
			return nil, fmt.Errorf("emulation: %w", err)
		}
	}
	if opts.ImagesRoot != "" {
		abs, err := filepath.Abs(opts.ImagesRoot)
		if err != nil {
			return nil, err
		}
		opts.ImagesRoot = abs
	}
	if opts.Accel == "" || opts.Accel == "auto" {
		opts.Accel = Accel()
	}
	if opts.Accel != "kvm" && opts.Accel != "tcg" {
		return nil, fmt.Errorf("emulation: accel %q is not kvm or tcg", opts.Accel)
	}
	switch opts.VNC {
	case "":
		opts.VNC = VNCLoopback
	case VNCLoopback, VNCSocket, VNCOff:
	default:
		return nil, fmt.Errorf("emulation: vnc %q is not loopback, socket or off", opts.VNC)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.QMPTimeout <= 0 {
		opts.QMPTimeout = 5 * time.Second
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 15 * time.Second
	}
	e := &Emulator{opts: opts, sup: opts.Supervisor, log: opts.Logger}
	// Found at start-up, not at the first start of a VM with a long id.
	// The VNC socket's name is as long as the QMP socket's: a VM whose
	// QMP socket fits has room for its console too.
	kind, room := "QMP", maxSocketPath-len(e.QMPPath(""))
	if opts.VNC == VNCSocket {
		kind, room = "QMP and VNC", min(room, maxSocketPath-len(e.VNCPath("")))
	}
	switch {
	case room < 1:
		return nil, fmt.Errorf("emulation: the state dir %s is too long for any VM's %s socket (a unix socket path holds %d bytes): use a shorter one", opts.StateDir, kind, maxSocketPath)
	case room < maxIDLen:
		opts.Logger.Warn("VMs whose id is longer than this cannot start: their QMP socket path would pass a unix socket's limit; a shorter --state-dir makes room for every id",
			"longest_id", room, "state_dir", opts.StateDir)
	}
	return e, nil
}

// VNC is the console the VMs get when they start: VNCLoopback, VNCSocket
// or VNCOff.
func (e *Emulator) VNC() string { return e.opts.VNC }

// Accel is the accelerator the VMs get.
func (e *Emulator) Accel() string { return e.opts.Accel }

// Handlers are the emulation actions, for agent.Run.
func (e *Emulator) Handlers() []agent.Handler {
	return []agent.Handler{
		agent.Handle("write_config", e.WriteConfig),
		agent.Handle("remove_config", e.RemoveConfig),
		agent.Handle("start", e.Start),
		agent.Handle("stop", e.Stop),
		agent.Handle("shutdown", e.Shutdown),
		agent.Handle("status", e.Status),
	}
}

// private are the agent's own folders, which no image may be in: an image
// in the images root that is the agent's pid file, a config or a unit
// would let its guest write what the agent trusts (a pid it signals, a
// command systemd runs).
func (e *Emulator) private() []string {
	dirs := []string{e.opts.StateDir}
	switch s := e.sup.(type) {
	case *Process:
		dirs = append(dirs, s.dir)
	case *Systemd:
		dirs = append(dirs, s.unitDir)
	}
	return dirs
}

func (e *Emulator) configPath(id string) string {
	return filepath.Join(e.opts.StateDir, "vms", id+".json")
}

// startedPath keeps a copy of the config a running VM was started with.
func (e *Emulator) startedPath(id string) string {
	return filepath.Join(e.opts.StateDir, "run", id+".json")
}

// restartNeeded reports whether the running VM id was started with another
// config than config, its config file's now. A VM started by an agent that
// kept no copy is not known to differ.
func (e *Emulator) restartNeeded(id string, config []byte) bool {
	started, err := os.ReadFile(e.startedPath(id))
	return err == nil && config != nil && !bytes.Equal(started, config)
}

// QMPPath is the QMP socket of VM id.
func (e *Emulator) QMPPath(id string) string {
	return filepath.Join(e.opts.StateDir, "run", id+".qmp")
}

// VNCPath is the VNC socket of VM id, under --vnc socket: in run/, which
// only the agent's user may enter.
func (e *Emulator) VNCPath(id string) string {
	return filepath.Join(e.opts.StateDir, "run", id+".vnc")
}

// maxSocketPath is the longest unix socket path Linux takes (sun_path less
// its NUL).
const maxSocketPath = 107

// stored is a VM's config file: the VM with its images resolved to host
// paths.
type stored struct {
	ID string `json:"id"`
	VM VM     `json:"vm"`
}

// ID is the one parameter of most actions.
type ID struct {
	ID string `json:"id" spin:"required"`
}

// Validate checks the id.
func (p ID) Validate() error { return CheckID(p.ID) }

// WriteConfig is the parameters of write_config.
type WriteConfig struct {
	ID string `json:"id" spin:"required"`
	VM *VM    `json:"vm" spin:"required"`
}

// Validate checks the id and the VM.
func (p WriteConfig) Validate() error {
	if err := CheckID(p.ID); err != nil {
		return err
	}
	return p.VM.Validate()
}

// Output reports on a VM after an action.
type Output struct {
	ID string `json:"id"`
	// Changed is false when the action found its result already there.
	Changed bool   `json:"changed"`
	Config  string `json:"config,omitempty"`
	Running bool   `json:"running"`
	// Status is QMP's query-status of a running VM.
	Status *Status `json:"status,omitempty"`
	PID    int     `json:"pid,omitempty"`
	Accel  string  `json:"accel,omitempty"`
	// VNC is the running VM's console, as QEMU reports it: "HOST:PORT"
	// on loopback, "unix:PATH" on a unix socket, empty for none.
	VNC string `json:"vnc,omitempty"`
	QMP string `json:"qmp,omitempty"`
	// Forced is true when stop had to pull the plug.
	Forced bool `json:"forced,omitempty"`
	// Took is how long a stop or shutdown took.
	Took string `json:"took,omitempty"`
	// Presses is how many times stop or shutdown pressed the ACPI power
	// button: more than one when the guest missed the first, its OS not
	// yet listening.
	Presses int `json:"presses,omitempty"`
	// Images are the resolved host paths of the VM's images.
	Images []string `json:"images,omitempty"`
	// Configured is whether a config exists for the VM.
	Configured bool `json:"configured"`
	// ConfigError, from status, says why the VM's config file cannot be
	// used (cut short, not JSON, another VM's, invalid), naming it: the
	// next start would fail with the same reason.
	ConfigError string `json:"config_error,omitempty"`
	QMPError    string `json:"qmp_error,omitempty"`
	// RestartNeeded is true when the VM runs with another config than
	// its config file's: a write_config after its start takes effect at
	// its next start, after a stop.
	RestartNeeded bool `json:"restart_needed,omitempty"`
}

// WriteConfig validates a VM's config and writes it to the state dir. The
// same config again is success without a change; a running VM keeps its
// old config until it is started again.
func (e *Emulator) WriteConfig(ctx context.Context, p WriteConfig) (any, error) {
	images, err := resolveImages(p.VM.Images, e.opts.ImagesRoot, e.private()...)
	if err == nil {
		err = oneFileOneDisk(images)
	}
	if err != nil {
		return nil, err
	}
	vm := *p.VM
	vm.Images = images
	b, err := json.MarshalIndent(stored{ID: p.ID, VM: vm}, "", "  ")
	if err != nil {
		return nil, err
	}
	b = append(b, '\n')
	out := &Output{ID: p.ID, Config: e.configPath(p.ID), Configured: true}
	for _, im := range images {
		out.Images = append(out.Images, im.Path)
	}
	out.Running, _ = e.running(ctx, p.ID)
	out.RestartNeeded = out.Running && e.restartNeeded(p.ID, b)
	if old, err := os.ReadFile(out.Config); err == nil && bytes.Equal(old, b) {
		return out, nil
	}
	if err := writeFile(out.Config, b, 0o600); err != nil {
		return nil, err
	}
	out.Changed = true
	return out, nil
}

// writeFile replaces the file at path with b, made with perm, never
// leaving it half written (nor a temporary file beside it, the disk full),
// and synced, its name too, before it answers: a write_config reported
// done is what the package's start is delivered on, and a power cut must
// not take the config back.
func writeFile(path string, b []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = syncFile(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	if err := syncFile(d); err != nil && !errors.Is(err, syscall.EINVAL) {
		return err // EINVAL: a file system that cannot sync a folder
	}
	return nil
}

// synced, set by tests, is told of each file and folder writeFile syncs.
var synced func(name string)

func syncFile(f *os.File) error {
	if synced != nil {
		synced(f.Name())
	}
	return f.Sync()
}

// load reads VM id's config. The file is checked as write_config checks
// its parameters: one cut short or edited by hand must not reach QEMU's
// command line (an empty one would start a nameless VM with -smp 0 -m 0M).
func (e *Emulator) load(id string) (*VM, []byte, error) {
	path := e.configPath(id)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("VM %s has no config (write_config first)", id)
	} else if err != nil {
		return nil, nil, fmt.Errorf("the config of VM %s: %w", id, err)
	}
	var s stored
	err = json.Unmarshal(b, &s)
	switch {
	case err != nil:
	case s.ID != id:
		err = fmt.Errorf("it is VM %q's", s.ID)
	default:
		err = s.VM.Validate()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("the config of VM %s, %s, is damaged (%w): write_config writes it anew", id, path, err)
	}
	return &s.VM, b, nil
}

// RemoveConfig removes a stopped VM's config; a config that is gone is
// success.
func (e *Emulator) RemoveConfig(ctx context.Context, p ID) (any, error) {
	running, err := e.running(ctx, p.ID)
	if err != nil {
		return nil, err
	}
	if running {
		return nil, fmt.Errorf("VM %s is running: stop it first", p.ID)
	}
	if err := e.sup.Remove(ctx, p.ID); err != nil {
		return nil, err
	}
	// The socket of a VM that ended, or failed to start, goes with it,
	// and so does the copy of the config it was started with.
	for _, f := range []string{e.QMPPath(p.ID), e.VNCPath(p.ID), e.startedPath(p.ID)} {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	err = os.Remove(e.configPath(p.ID))
	if errors.Is(err, fs.ErrNotExist) {
		return &Output{ID: p.ID}, nil
	} else if err != nil {
		return nil, err
	}
	return &Output{ID: p.ID, Changed: true}, nil
}

// Start starts a configured VM and waits until its QMP socket answers; a
// VM that runs already is success without a change.
func (e *Emulator) Start(ctx context.Context, p ID) (any, error) {
	vm, config, err := e.load(p.ID)
	if err != nil {
		return nil, err
	}
	out := &Output{ID: p.ID, Configured: true, Accel: e.opts.Accel, QMP: e.QMPPath(p.ID)}
	running, err := e.running(ctx, p.ID)
	if err != nil {
		return nil, err
	}
	if running {
		out.RestartNeeded = e.restartNeeded(p.ID, config)
		return e.describe(ctx, out), nil
	}
	host := Host{QMP: out.QMP, Accel: e.opts.Accel, CPU: e.opts.CPU, VNC: e.opts.VNC}
	if host.VNC == VNCSocket {
		host.VNCSocket = e.VNCPath(p.ID)
	}
	for _, sock := range []struct{ kind, path string }{{"QMP", host.QMP}, {"VNC", host.VNCSocket}} {
		if len(sock.path) > maxSocketPath {
			return nil, fmt.Errorf("the %s socket path %q is longer than %d bytes: use a shorter --state-dir", sock.kind, sock.path, maxSocketPath)
		}
	}
	// The images are resolved again: they may have moved since the config.
	if vm.Images, err = resolveImages(vm.Images, e.opts.ImagesRoot, e.private()...); err != nil {
		return nil, err
	}
	if err := oneFileOneDisk(vm.Images); err != nil {
		return nil, err
	}
	// Held open until QEMU has opened them (awaitQMP), and given to it so
	// when it is the agent's child: what it opens is what was judged. Not
	// under systemd: its unit outlives this start, and an operator's
	// `systemctl --user restart` would run QEMU on whatever /proc/PID/fd/N
	// is by then (another VM's image, a log), so the unit names the images
	// by their paths, judged as opened all the same.
	_, child := e.sup.(*Process)
	held, err := holdImages(vm.Images, e.opts.ImagesRoot, child)
	if err != nil {
		return nil, err
	}
	defer closeAll(held)
	qemu := e.opts.QEMU
	if qemu == "" {
		qemu = "qemu-system-x86_64"
	}
	if qemu, err = exec.LookPath(qemu); err != nil {
		return nil, fmt.Errorf("qemu-system-x86_64 is not installed on this host (install qemu-system-x86): %w", err)
	}
	if qemu, err = filepath.Abs(qemu); err != nil {
		return nil, err
	}
	// A VNC socket left by an earlier start under --vnc socket goes too:
	// QEMU leaves it when it ends.
	_ = os.Remove(out.QMP)
	_ = os.Remove(e.VNCPath(p.ID))
	host.QEMU = qemu
	// The copy of the config the VM starts with is made before QEMU runs,
	// and one that cannot be is not left from an earlier run: it would
	// tell of that run's config (restart_needed), as it would if the agent
	// were killed before QEMU answered.
	copyErr := writeFile(e.startedPath(p.ID), config, 0o600)
	if copyErr != nil {
		_ = os.Remove(e.startedPath(p.ID))
	}
	argv := QEMUArgs(vm, host)
	agent.LoggerOr(ctx, e.log).Info("starting VM", "vm_id", p.ID, "argv", argv)
	if err := e.sup.Start(ctx, p.ID, vm.Name, argv); err != nil {
		return nil, err
	}
	if err := e.awaitQMP(ctx, p.ID); err != nil {
		_ = e.sup.Kill(context.WithoutCancel(ctx), p.ID)
		_ = os.Remove(out.QMP)
		return nil, err
	}
	if copyErr != nil {
		// The VM runs; only restart_needed cannot be told.
		agent.LoggerOr(ctx, e.log).Warn("could not keep a copy of a started VM's config", "vm_id", p.ID, "err", copyErr)
	}
	out.Changed = true
	return e.describe(ctx, out), nil
}

// running asks the supervisor whether VM id runs. The process supervisor
// knows a VM by its pid file; one whose file was damaged, or never written
// (the agent killed between QEMU's start and the file's write), is found
// by the QEMU that listens on its QMP socket, and adopted: otherwise
// status would call it stopped, stop would leave it running, and start
// would delete its socket and run a second QEMU on its disks.
func (e *Emulator) running(ctx context.Context, id string) (bool, error) {
	running, err := e.sup.Running(ctx, id)
	sup, ok := e.sup.(*Process)
	if err != nil || running || !ok {
		return running, err
	}
	pid := QMPPeer(ctx, e.QMPPath(id), e.opts.QMPTimeout)
	if pid == 0 {
		return false, nil
	}
	if err := sup.Adopt(id, pid); err != nil {
		return false, fmt.Errorf("VM %s: a QEMU (process %d) listens on its QMP socket %s, unknown to the agent: %w", id, pid, e.QMPPath(id), err)
	}
	agent.LoggerOr(ctx, e.log).Warn("adopted a running VM whose pid file was lost: its QEMU listens on the VM's QMP socket", "vm_id", id, "pid", pid)
	return true, nil
}

// awaitQMP waits until a starting VM's QMP socket answers.
func (e *Emulator) awaitQMP(ctx context.Context, id string) error {
	deadline := time.Now().Add(e.opts.StartTimeout)
	for {
		q, err := DialQMP(ctx, e.QMPPath(id), e.opts.QMPTimeout)
		if err == nil {
			q.Close()
			return nil
		}
		running, _ := e.sup.Running(ctx, id)
		switch {
		case !running:
			return fmt.Errorf("VM %s exited as it started%s", id, e.logTail(id))
		case time.Now().After(deadline):
			return fmt.Errorf("VM %s started but its QMP socket did not answer within %s: %v", id, e.opts.StartTimeout, err)
		case ctx.Err() != nil:
			return ctx.Err()
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// logTail is the end of a VM's qemu output, when the supervisor keeps one.
func (e *Emulator) logTail(id string) string {
	var b []byte
	switch s := e.sup.(type) {
	case *Process:
		b, _ = os.ReadFile(s.LogFile(id))
	case *Systemd:
		b = s.journal(id)
	}
	if len(b) == 0 {
		return ""
	}
	if len(b) > 1000 {
		b = b[len(b)-1000:]
		// From a character's first byte: an image path or a message in
		// UTF-8 is not to begin with the tail of a character.
		for i := 0; i < utf8.UTFMax && len(b) > 0 && !utf8.RuneStart(b[0]); i++ {
			b = b[1:]
		}
	}
	return ": " + string(bytes.TrimSpace(b))
}

// describe fills in what QMP and the supervisor say of a running VM.
func (e *Emulator) describe(ctx context.Context, out *Output) *Output {
	out.Running = true
	out.PID = e.sup.PID(ctx, out.ID)
	q, err := DialQMP(ctx, e.QMPPath(out.ID), e.opts.QMPTimeout)
	if err != nil {
		out.QMPError = err.Error()
		return out
	}
	defer q.Close()
	if out.Status, err = q.QueryStatus(ctx); err != nil {
		out.QMPError = err.Error()
		return out
	}
	// What the VM has, which is what it was started with: a change of
	// --vnc since takes effect at its next start.
	var vnc struct {
		Enabled bool   `json:"enabled"`
		Family  string `json:"family"`
		Host    string `json:"host"`
		Service string `json:"service"`
	}
	switch {
	case q.Execute(ctx, "query-vnc", nil, &vnc) != nil || !vnc.Enabled:
	case vnc.Family == "unix":
		out.VNC = "unix:" + vnc.Service // the socket's path
	default:
		out.VNC = vnc.Host + ":" + vnc.Service
	}
	return out
}

// Stop is the parameters of stop and shutdown: Timeout (default 30s) is how
// long the guest has to power off after the ACPI power button.
type Stop struct {
	ID      string               `json:"id" spin:"required"`
	Timeout *spinbroker.Duration `json:"timeout"`
}

// Validate checks the id and the timeout.
func (p Stop) Validate() error {
	if err := CheckID(p.ID); err != nil {
		return err
	}
	if p.Timeout != nil && (p.Timeout.D() <= 0 || p.Timeout.D() > 10*time.Minute) {
		return fmt.Errorf("timeout must be more than 0 and at most 10m, not %s", p.Timeout)
	}
	return nil
}

func (p Stop) timeout() time.Duration {
	if p.Timeout == nil {
		return DefaultStopTimeout
	}
	return p.Timeout.D()
}

// Stop powers a VM down: the ACPI power button, pressed again while it
// waits (see pressEvery), then, when the guest has not powered off within
// the timeout, a forced stop. A VM that is not running is success without
// a change.
func (e *Emulator) Stop(ctx context.Context, p Stop) (any, error) {
	return e.stop(ctx, p, true)
}

// Shutdown presses a VM's ACPI power button, again while it waits (see
// pressEvery), until the guest powers off; it fails when the guest has not
// within the timeout (the VM goes on running: stop forces it).
func (e *Emulator) Shutdown(ctx context.Context, p Stop) (any, error) {
	return e.stop(ctx, p, false)
}

func (e *Emulator) stop(ctx context.Context, p Stop, force bool) (any, error) {
	out := &Output{ID: p.ID}
	_, err := os.Stat(e.configPath(p.ID))
	out.Configured = err == nil
	running, err := e.running(ctx, p.ID)
	if err != nil {
		return nil, err
	}
	if !running {
		return out, nil
	}
	log := agent.LoggerOr(ctx, e.log).With("vm_id", p.ID)
	begin := time.Now()
	err = e.powerDown(ctx, p.ID)
	if err != nil && e.awaitStopped(ctx, p.ID, qmpGoneGrace) {
		// The guest powered off on its own since running said the VM
		// ran: its QEMU, ending, no longer answers. The VM is stopped,
		// as one found stopped: no failure, nothing forced.
		log.Info("VM powered off on its own as it was to be stopped", "qmp_err", err)
		return out, nil
	}
	out.Changed = true
	if err != nil {
		log.Warn("ACPI power-down failed", "err", err)
		if !force {
			return nil, fmt.Errorf("VM %s: ACPI power-down failed: %w", p.ID, err)
		}
	} else {
		out.Presses = 1
		if e.awaitPowerOff(ctx, log, p.ID, p.timeout(), &out.Presses) {
			out.Took = time.Since(begin).Round(time.Millisecond).String()
			log.Info("VM powered off", "took", out.Took, "presses", out.Presses)
			return out, nil
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !force {
		return nil, fmt.Errorf("VM %s did not power off within %s (the guest ignored the ACPI power button, pressed %s); stop forces it", p.ID, p.timeout(), times(out.Presses))
	}
	log.Warn("VM did not power off in time; forcing it", "timeout", p.timeout().String(), "presses", out.Presses)
	if err := e.sup.Kill(ctx, p.ID); err != nil {
		return nil, err
	}
	out.Forced = true
	out.Took = time.Since(begin).Round(time.Millisecond).String()
	return out, nil
}

// powerDown presses the VM's ACPI power button over QMP.
func (e *Emulator) powerDown(ctx context.Context, id string) error {
	q, err := DialQMP(ctx, e.QMPPath(id), e.opts.QMPTimeout)
	if err != nil {
		return err
	}
	defer q.Close()
	return q.PowerDown(ctx)
}

// qmpGoneGrace is how long stop and shutdown, when QMP fails, wait for
// the VM's process to end: QEMU closes its QMP socket shortly before it
// ends, when its guest powered off.
const qmpGoneGrace = 2 * time.Second

// times is "once" or "n times".
func times(n int) string {
	if n == 1 {
		return "once"
	}
	return fmt.Sprintf("%d times", n)
}

// pressEvery is how often stop and shutdown press the power button again
// while the guest has not powered off within a timeout of d: every 10s,
// or three times in a shorter timeout, but not more than once a second.
// A press before the guest listens is lost (QEMU records it only while
// the guest has enabled the button: an OS still booting, or whose ACPI
// driver is not up, never sees it), as with a real machine's button; one
// more to a guest already powering off changes nothing (QEMU sets the
// button's status bit again and raises another SCI).
func pressEvery(d time.Duration) time.Duration {
	return min(10*time.Second, max(d/3, time.Second))
}

// awaitPowerOff waits up to d for the VM to stop running after its power
// button was pressed, pressing it again every pressEvery(d); presses
// counts them. A press that fails (QMP not answering) is not counted:
// the VM's process tells whether it ended.
func (e *Emulator) awaitPowerOff(ctx context.Context, log *slog.Logger, id string, d time.Duration, presses *int) bool {
	deadline := time.Now().Add(d)
	every := pressEvery(d)
	for {
		if e.awaitStopped(ctx, id, min(every, time.Until(deadline))) {
			return true
		}
		if ctx.Err() != nil || !time.Now().Before(deadline) {
			return false
		}
		// Within the timeout: a QMP that hangs does not stretch it.
		pctx, cancel := context.WithDeadline(ctx, deadline)
		err := e.powerDown(pctx, id)
		cancel()
		if err != nil {
			log.Debug("pressing the ACPI power button again failed", "err", err)
			continue
		}
		*presses++
		log.Debug("pressed the ACPI power button again: the guest has not powered off yet", "presses", *presses)
	}
}

// awaitStopped waits up to d for the VM to stop running.
func (e *Emulator) awaitStopped(ctx context.Context, id string, d time.Duration) bool {
	return until(ctx, d, 100*time.Millisecond, func() bool {
		running, err := e.sup.Running(ctx, id)
		return err == nil && !running
	})
}

// Status reports whether a VM is configured and running, with QMP's
// query-status of a running one. A config file that start would refuse is
// reported in config_error, so that it is seen before a start fails on it.
func (e *Emulator) Status(ctx context.Context, p ID) (any, error) {
	out := &Output{ID: p.ID}
	_, err := os.Stat(e.configPath(p.ID))
	out.Configured = err == nil
	_, config, err := e.load(p.ID)
	if err != nil && out.Configured {
		out.ConfigError = err.Error()
	}
	running, err := e.running(ctx, p.ID)
	if err != nil {
		return nil, err
	}
	if running {
		// A damaged config is no newer config to restart with.
		out.RestartNeeded = e.restartNeeded(p.ID, config)
		e.describe(ctx, out)
	}
	return out, nil
}
