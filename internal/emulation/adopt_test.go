//go:build unix

package emulation_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/emulation"
)

// TestEmulator_AdoptsAVMWhosePIDFileWasLost: a real QEMU runs, and its pid
// file is damaged while the agent is away (or was never written: the agent
// killed between QEMU's start and the file's write). The restarted agent
// used to call the VM stopped, and a start deleted its QMP socket and ran a
// second QEMU on its disks; now the VM is known by the QEMU that answers on
// its QMP socket: status says it runs, start finds it, stop ends it.
func TestEmulator_AdoptsAVMWhosePIDFileWasLost(t *testing.T) {
	requireQEMU(t)
	ctx := context.Background()
	state := t.TempDir()
	procDir := filepath.Join(state, "proc")
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	emulator := func() (*emulation.Emulator, *emulation.Process) {
		t.Helper()
		sup, err := emulation.NewProcess(procDir, discard)
		if err != nil {
			t.Fatal(err)
		}
		e, err := emulation.New(emulation.Options{StateDir: state, Supervisor: sup, Accel: "tcg", Logger: discard})
		if err != nil {
			t.Fatal(err)
		}
		return e, sup
	}
	e1, s1 := emulator()
	vm := &emulation.VM{Name: "lost", Cpus: 1, Memory: 32}
	if _, err := e1.WriteConfig(ctx, emulation.WriteConfig{ID: "vm1", VM: vm}); err != nil {
		t.Fatal(err)
	}
	if _, err := e1.Start(ctx, emulation.ID{ID: "vm1"}); err != nil {
		t.Fatal(err)
	}
	pid := s1.PID(ctx, "vm1")
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })

	if err := os.WriteFile(filepath.Join(procDir, "vm1.pid"), []byte("garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e2, s2 := emulator()
	t.Cleanup(func() {
		if other := s2.PID(ctx, "vm1"); other != 0 && other != pid {
			_ = syscall.Kill(other, syscall.SIGKILL)
		}
	})

	out, err := e2.Status(ctx, emulation.ID{ID: "vm1"})
	if st := out.(*emulation.Output); err != nil || !st.Running || st.PID != pid {
		t.Errorf("status of the VM whose pid file was lost: %+v, %v; want running as pid %d", out, err, pid)
	}
	out, err = e2.Start(ctx, emulation.ID{ID: "vm1"})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	if st := out.(*emulation.Output); st.Changed || st.PID != pid || st.Status == nil || st.Status.Status != "running" {
		t.Errorf("start of the VM whose pid file was lost: %+v; want it found running as pid %d", st, pid)
	}
	if b, err := os.ReadFile(filepath.Join(procDir, "vm1.pid")); err != nil || len(b) < 4 {
		t.Errorf("the pid file was not written anew: %q, %v", b, err)
	}
	timeout := spinbroker.Duration(time.Second)
	out, err = e2.Stop(ctx, emulation.Stop{ID: "vm1", Timeout: &timeout})
	if st, _ := out.(*emulation.Output); err != nil || !st.Changed || !st.Forced || alive(pid) {
		t.Errorf("stop: %+v, %v; QEMU %d alive %v", out, err, pid, alive(pid))
	}
}

// TestEmulator_ConfigOfARunningVM: write_config on a running VM takes
// effect at its next start after a stop, and until then write_config (its
// retry too, which changes nothing), start and status say so; they used to
// answer "running" as if the VM ran with the new config.
func TestEmulator_ConfigOfARunningVM(t *testing.T) {
	requireQEMU(t)
	ctx := context.Background()
	sup, err := emulation.NewProcess(filepath.Join(t.TempDir(), "proc"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	stateDir := t.TempDir()
	e, err := emulation.New(emulation.Options{StateDir: stateDir, Supervisor: sup, Accel: "tcg", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if pid := sup.PID(ctx, "vm1"); pid != 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	write := func(memory int64) *emulation.Output {
		t.Helper()
		out, err := e.WriteConfig(ctx, emulation.WriteConfig{ID: "vm1", VM: &emulation.VM{Name: "cfg", Cpus: 1, Memory: memory}})
		if err != nil {
			t.Fatal(err)
		}
		return out.(*emulation.Output)
	}
	do := func(action func(context.Context, emulation.ID) (any, error)) *emulation.Output {
		t.Helper()
		out, err := action(ctx, emulation.ID{ID: "vm1"})
		if err != nil {
			t.Fatal(err)
		}
		return out.(*emulation.Output)
	}
	cmdline := func() string {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", sup.PID(ctx, "vm1")))
		return string(b)
	}

	write(32)
	if out := do(e.Start); !out.Running || out.RestartNeeded {
		t.Fatalf("start: %+v", out)
	}
	for i, want := range []bool{true, false} { // the retry changes nothing
		if out := write(48); out.Changed != want || !out.Running || !out.RestartNeeded {
			t.Errorf("write_config #%d of a new config while the VM runs: %+v; want changed %v, restart_needed", i+1, out, want)
		}
	}
	if out := do(e.Start); out.Changed || !out.RestartNeeded {
		t.Errorf("start of the running VM with a new config: %+v; want unchanged, restart_needed", out)
	}
	if out := do(e.Status); !out.Running || !out.RestartNeeded {
		t.Errorf("status: %+v; want running, restart_needed", out)
	}
	if out := write(32); !out.Changed || out.RestartNeeded {
		t.Errorf("write_config of the config the VM runs with: %+v; want no restart_needed", out)
	}
	write(48)
	timeout := spinbroker.Duration(time.Second)
	if _, err := e.Stop(ctx, emulation.Stop{ID: "vm1", Timeout: &timeout}); err != nil {
		t.Fatal(err)
	}
	if out := do(e.Start); !out.Changed || out.RestartNeeded || !strings.Contains(cmdline(), "48M") {
		t.Errorf("start after the stop: %+v, %q; want it started with -m 48M", out, cmdline())
	}
	if out := do(e.Status); out.RestartNeeded {
		t.Errorf("status after the restart: %+v", out)
	}
	// A config damaged while the VM runs is no new config to restart
	// with: status says what is wrong with it instead.
	if err := os.WriteFile(filepath.Join(stateDir, "vms", "vm1.json"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := do(e.Status); !out.Running || out.RestartNeeded || !strings.Contains(out.ConfigError, "is damaged") {
		t.Errorf("status with a damaged config: %+v; want running, a config_error, no restart_needed", out)
	}
}

// TestEmulator_RestartNeededOfAStartThatKeptNoCopy: start keeps a copy of
// the config a VM starts with, which restart_needed compares with the
// config file. A start that could not write it (the state dir full, say),
// or whose agent was killed before it did, used to leave the copy of the
// VM's run before: the VM, running with the new config, was then said to
// need a restart to take it (or, with the old config back in the file,
// not to need one to leave it). The copy now speaks only for the run it
// was made for.
func TestEmulator_RestartNeededOfAStartThatKeptNoCopy(t *testing.T) {
	requireQEMU(t)
	ctx := context.Background()
	sup, err := emulation.NewProcess(filepath.Join(t.TempDir(), "proc"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	stateDir := t.TempDir()
	var logs strings.Builder
	e, err := emulation.New(emulation.Options{StateDir: stateDir, Supervisor: sup, Accel: "tcg", Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if pid := sup.PID(ctx, "vm1"); pid != 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	write := func(memory int64) {
		t.Helper()
		if _, err := e.WriteConfig(ctx, emulation.WriteConfig{ID: "vm1", VM: &emulation.VM{Name: "cfg", Cpus: 1, Memory: memory}}); err != nil {
			t.Fatal(err)
		}
	}
	start := func() *emulation.Output {
		t.Helper()
		out, err := e.Start(ctx, emulation.ID{ID: "vm1"})
		if err != nil {
			t.Fatal(err)
		}
		return out.(*emulation.Output)
	}
	write(32)
	start()
	timeout := spinbroker.Duration(time.Second)
	if _, err := e.Stop(ctx, emulation.Stop{ID: "vm1", Timeout: &timeout}); err != nil {
		t.Fatal(err)
	}
	// The next start cannot write its copy: a folder where its temporary
	// file goes.
	if err := os.Mkdir(filepath.Join(stateDir, "run", "vm1.json.tmp"), 0o700); err != nil {
		t.Fatal(err)
	}
	write(48)
	if out := start(); !out.Running || out.RestartNeeded {
		t.Fatalf("start with a new config: %+v", out)
	}
	out, err := e.Status(ctx, emulation.ID{ID: "vm1"})
	if err != nil {
		t.Fatal(err)
	}
	if s := out.(*emulation.Output); !s.Running || s.RestartNeeded {
		t.Errorf("status of a VM running with its config file's config: %+v; want no restart_needed", s)
	}
	if !strings.Contains(logs.String(), `msg="could not keep a copy of a started VM's config" vm_id=vm1`) {
		t.Errorf("the copy not written is not said:\n%s", logs.String())
	}
}
