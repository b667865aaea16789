//go:build unix

package emulation

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spin-broker/spinbroker/agent"
)

// Supervisor runs VMs: the systemd one as user units, the process one as
// children of the agent.
type Supervisor interface {
	// Start starts the VM id, called name, with the command line argv.
	Start(ctx context.Context, id, name string, argv []string) error
	// Kill ends the VM at once (the power cord), and waits until it has.
	Kill(ctx context.Context, id string) error
	// Running reports whether the VM's process is alive.
	Running(ctx context.Context, id string) (bool, error)
	// Remove forgets a stopped VM's files (a unit, a pid file).
	Remove(ctx context.Context, id string) error
	// PID is the process id of a running VM, 0 when not known.
	PID(ctx context.Context, id string) int
}

// Process is the Supervisor that runs qemu itself, for hosts without
// systemd. Each VM's process id and start time, and the host's boot, are
// kept in a pid file in the state dir, so a restarted agent adopts the VMs
// still alive and forgets those that exited meanwhile, or with a reboot. VMs run in their own process group:
// a Ctrl-C meant for the agent does not reach them.
type Process struct {
	dir  string // pid files and logs
	log  *slog.Logger
	boot string // the host's boot id (bootID), empty where it has none

	mu    sync.Mutex
	procs map[string]*proc
}

// proc is a VM's process: a child (exited closes when it is reaped) or one
// adopted from an earlier agent (exited is nil: its liveness is polled).
type proc struct {
	pid    int
	start  string // the process's start time, from /proc, against pid reuse
	boot   string // the boot it ran in (bootID); empty in an older pid file
	group  bool   // it leads its own process group (VMs started here do)
	exited chan struct{}
}

// bootIDFile holds the id of the host's current boot (Linux).
const bootIDFile = "/proc/sys/kernel/random/boot_id"

// bootID is the id of the host's current boot, or "" where there is none.
// A pid file keeps it: a pid and its start time (clock ticks since boot)
// name a process of one boot only, and after a reboot another process can
// have both, one started as early in this boot as the VM was in that one.
func bootID() string {
	b, err := os.ReadFile(bootIDFile)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// NewProcess returns a process supervisor keeping its files in dir, and
// adopts the VMs whose pid files name live processes.
func NewProcess(dir string, log *slog.Logger) (*Process, error) {
	if err := privateDir(dir); err != nil {
		return nil, fmt.Errorf("emulation: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	s := &Process{dir: dir, log: log, boot: bootID(), procs: map[string]*proc{}}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".pid")
		if !ok || CheckID(id) != nil {
			continue
		}
		p, err := s.readPID(id)
		switch {
		case err != nil:
			// Nothing here says whether its VM runs: a QEMU still
			// running is found by its QMP socket (Emulator.running).
			log.Warn("a VM's pid file is damaged: a QEMU of it still running is found by its QMP socket at the VM's next command",
				"vm_id", id, "file", s.pidFile(id), "err", err)
		case p.boot != "" && p.boot != s.boot:
			// Its VM ended with the boot it ran in; its pid and start
			// time may now be another process's.
			log.Info("forgot a VM that exited while the agent was away", "vm_id", id, "boot", p.boot)
		case p.alive():
			_, _, pgrp, _ := procStatGroup(p.pid)
			p.group = pgrp == p.pid
			s.procs[id] = p
			log.Info("adopted a running VM", "vm_id", id, "pid", p.pid)
			continue
		default:
			log.Info("forgot a VM that exited while the agent was away", "vm_id", id)
		}
		_ = os.Remove(s.pidFile(id))
	}
	return s, nil
}

func (s *Process) pidFile(id string) string { return filepath.Join(s.dir, id+".pid") }

// LogFile is where a VM's qemu writes its output.
func (s *Process) LogFile(id string) string { return filepath.Join(s.dir, id+".log") }

func (s *Process) readPID(id string) (*proc, error) {
	b, err := os.ReadFile(s.pidFile(id))
	if err != nil {
		return nil, err
	}
	// "PID START BOOT"; BOOT is missing from the files of older agents,
	// and where the host has no boot id.
	f := strings.Split(strings.TrimSpace(string(b)), " ")
	pid, err := strconv.Atoi(f[0])
	// The agent writes the start time: a pid file without it would take
	// whatever process has the pid now, and pid 1 (init) is never a VM.
	if err != nil || pid <= 1 || len(f) < 2 || len(f) > 3 || slices.ContainsFunc(f[1:], func(w string) bool { return w == "" || strings.ContainsAny(w, "\t\n") }) {
		if len(b) > 64 {
			b = b[:64]
		}
		return nil, fmt.Errorf("it holds %q, not a process id and its start time", b)
	}
	p := &proc{pid: pid, start: f[1]}
	if len(f) == 3 {
		p.boot = f[2]
	}
	return p, nil
}

// procStat returns a process's state letter and start time from
// /proc/PID/stat, or ok false when there is no such process.
func procStat(pid int) (state byte, start string, ok bool) {
	state, start, _, ok = procStatGroup(pid)
	return state, start, ok
}

// procStatGroup is procStat with the process group's id.
func procStatGroup(pid int) (state byte, start string, pgrp int, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, "", 0, false
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, "", 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, "", 0, false
	}
	pgrp, _ = strconv.Atoi(f[2])
	return f[0][0], f[19], pgrp, true // fields 3, 22 and 5
}

// groupAlive reports whether process group pgid has a member that is not a
// zombie. Zombies are dead: under an agent that is PID 1 in a container,
// qemu orphaned by its wrapper becomes the agent's child, and nothing reaps
// it.
func groupAlive(pgid int) bool {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if state, _, pgrp, ok := procStatGroup(pid); ok && pgrp == pgid && state != 'Z' && state != 'X' {
			return true
		}
	}
	return false
}

// alive reports whether p's process still runs: it exists, is the same
// process (same start time) and is not a zombie waiting for a parent that
// is not this agent. The VM is its process; what else its group holds is
// only swept up at a stop (see Kill): a helper a wrapper left behind must
// not keep a powered-off VM "running", and a group whose leader is gone
// cannot be told from a stranger's.
func (p *proc) alive() bool {
	if p.exited != nil {
		select {
		case <-p.exited:
			return false
		default:
			return true
		}
	}
	state, start, ok := procStat(p.pid)
	return ok && state != 'Z' && state != 'X' && (p.start == "" || start == p.start)
}

// Start starts argv in its own process group, its output in the VM's log.
func (s *Process) Start(ctx context.Context, id, name string, argv []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.procs[id]; p != nil && p.alive() {
		return nil
	}
	logf, err := os.OpenFile(s.LogFile(id), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	// Not CommandContext: the VM outlives the command that starts it.
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", argv[0], err)
	}
	p := &proc{pid: cmd.Process.Pid, boot: s.boot, group: true, exited: make(chan struct{})}
	_, p.start, _ = procStat(p.pid)
	go func() {
		err := cmd.Wait() // reaps the child
		s.log.Info("VM process exited", "vm_id", id, "pid", p.pid, "err", err)
		close(p.exited)
		s.mu.Lock()
		if s.procs[id] == p {
			delete(s.procs, id)
			_ = os.Remove(s.pidFile(id))
		}
		s.mu.Unlock()
	}()
	s.procs[id] = p
	if err := s.writePID(id, p); err != nil {
		// Without its pid file a restarted agent would not find the VM:
		// better no VM than one nobody tracks.
		p.signal(syscall.SIGKILL)
		return err
	}
	return nil
}

func (s *Process) writePID(id string, p *proc) error {
	line := fmt.Sprintf("%d %s", p.pid, p.start)
	if p.boot != "" {
		line += " " + p.boot
	}
	if err := writeFile(s.pidFile(id), []byte(line+"\n"), 0o600); err != nil {
		return fmt.Errorf("VM %s: write its pid file: %w", id, err)
	}
	return nil
}

// Adopt makes the running process pid VM id's, found otherwise than by
// its pid file (which was lost or damaged), and writes that file anew.
// It fails when the supervisor runs another process for the VM, or when
// pid is not a live process.
func (s *Process) Adopt(id string, pid int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.procs[id]; p != nil && p.alive() {
		if p.pid == pid {
			return nil
		}
		return fmt.Errorf("VM %s runs as process %d, not %d", id, p.pid, pid)
	}
	state, start, pgrp, ok := procStatGroup(pid)
	if pid <= 1 || !ok || state == 'Z' || state == 'X' {
		return fmt.Errorf("VM %s: process %d is not running", id, pid)
	}
	p := &proc{pid: pid, start: start, boot: s.boot, group: pgrp == pid}
	if err := s.writePID(id, p); err != nil {
		return err
	}
	s.procs[id] = p
	return nil
}

// signal sends sig to the VM: to its whole process group when it leads
// one, so that a --qemu wrapper that runs qemu as its child, rather than
// exec'ing it, does not leave qemu running.
func (p *proc) signal(sig syscall.Signal) {
	if p.pid <= 1 {
		return // kill(-1) would signal every process the agent may
	}
	if p.group {
		_ = syscall.Kill(-p.pid, sig)
		return
	}
	_ = syscall.Kill(p.pid, sig)
}

func (s *Process) get(id string) *proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.procs[id]
	if p != nil && !p.alive() {
		// An adopted VM that exited: nobody reaps it here, so forget it.
		delete(s.procs, id)
		_ = os.Remove(s.pidFile(id))
		return nil
	}
	return p
}

// Running reports whether the VM's process is alive.
func (s *Process) Running(ctx context.Context, id string) (bool, error) {
	return s.get(id) != nil, nil
}

// PID is the running VM's process id, or 0.
func (s *Process) PID(ctx context.Context, id string) int {
	if p := s.get(id); p != nil {
		return p.pid
	}
	return 0
}

// Kill sends SIGTERM (QEMU stops the VM at once and closes its images
// cleanly), then SIGKILL after a few seconds, and waits for the end.
func (s *Process) Kill(ctx context.Context, id string) error {
	p := s.get(id)
	if p == nil {
		return nil
	}
	defer s.get(id) // forgets an adopted VM that ended
	ended := func() bool { return !p.alive() }
	p.signal(syscall.SIGTERM)
	if until(ctx, 3*time.Second, 20*time.Millisecond, ended) {
		s.sweepGroup(ctx, id, p)
		return nil
	}
	p.signal(syscall.SIGKILL)
	if until(ctx, 5*time.Second, 20*time.Millisecond, ended) {
		s.sweepGroup(ctx, id, p)
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return fmt.Errorf("VM process %d did not end after SIGKILL", p.pid)
}

// sweepGroup ends what is left of a stopped VM's process group: qemu under
// a --qemu wrapper that did not exec it outlives the wrapper's quick end on
// SIGTERM. It had the signal too; it gets a few seconds, then SIGKILL.
// Safe although the leader is gone: Linux reuses no pid that still names a
// group with members, so a group found here is the VM's. Zombies are not
// waited for (groupAlive).
func (s *Process) sweepGroup(ctx context.Context, id string, p *proc) {
	if !p.group {
		return
	}
	empty := func() bool { return !groupAlive(p.pid) }
	if !until(ctx, 3*time.Second, 20*time.Millisecond, empty) {
		_ = syscall.Kill(-p.pid, syscall.SIGKILL)
		if !until(ctx, 2*time.Second, 20*time.Millisecond, empty) {
			// Past SIGKILL (or the command ended meanwhile): stuck in
			// the kernel, state D, on a hung disk or NFS mount, say. The
			// VM is stopped; its group id is the operator's one handle
			// on what is left of it.
			agent.LoggerOr(ctx, s.log).Warn("processes of a stopped VM's group are still there after SIGKILL: pgrep -a -g PGID lists them (ps state D: stuck on I/O); kill -KILL -- -PGID ends them once they can end",
				"vm_id", id, "pid", p.pid, "pgid", p.pid)
		}
	}
}

// until asks done every period until it says yes (true), d runs out or
// ctx ends (false).
func until(ctx context.Context, d, every time.Duration, done func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if done() {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(every)
	}
}

// Remove forgets a VM that is not running.
func (s *Process) Remove(ctx context.Context, id string) error {
	if s.get(id) != nil {
		return fmt.Errorf("VM %s is running", id)
	}
	err := os.Remove(s.LogFile(id))
	if errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	return err
}
