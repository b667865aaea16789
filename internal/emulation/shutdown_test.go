//go:build unix

package emulation_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/emulation"
)

// endsAtQMPEnv makes the test binary, started with it set to a socket
// path, a "QEMU" whose guest powers off as its QMP socket is connected to
// (qemuThatEndsAtQMP), instead of running the tests.
const endsAtQMPEnv = "SPIN_EMULATION_TEST_ENDS_AT_QMP"

// qemuThatEndsAtQMP listens on the unix socket sock, says so in
// sock.ready, and ends at the first connection, closing it unanswered: a
// QEMU whose guest powered off on its own just then. It ends anyway after
// a minute, so that no test leaves it behind.
func qemuThatEndsAtQMP(sock string) int {
	l, err := net.Listen("unix", sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := os.WriteFile(sock+".ready", nil, 0o600); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	time.AfterFunc(time.Minute, func() { os.Exit(3) })
	c, err := l.Accept()
	if err == nil {
		c.Close()
	}
	l.Close()
	return 0
}

// TestEmulator_StopOfAVMThatPowersOffMeanwhile: a VM whose guest powers
// off on its own just after stop or shutdown found it running no longer
// answers on QMP. shutdown used to fail with "ACPI power-down failed", and
// stop to report it forced, although the VM was off; both now report it
// stopped, unchanged, as a VM they find stopped. A VM that runs on while
// its QMP fails is still a failure of shutdown.
func TestEmulator_StopOfAVMThatPowersOffMeanwhile(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	timeout := spinbroker.Duration(time.Minute)
	emulator := func(t *testing.T) (*emulation.Emulator, *emulation.Process) {
		t.Helper()
		state := t.TempDir()
		sup, err := emulation.NewProcess(filepath.Join(state, "proc"), discardLog())
		if err != nil {
			t.Fatal(err)
		}
		e, err := emulation.New(emulation.Options{StateDir: state, Supervisor: sup, Accel: "tcg", Logger: discardLog()})
		if err != nil {
			t.Fatal(err)
		}
		return e, sup
	}
	// run starts argv as VM vm1 by the supervisor, as start would but
	// without its look at QMP, and returns its pid.
	run := func(t *testing.T, sup *emulation.Process, argv ...string) int {
		t.Helper()
		if err := sup.Start(ctx, "vm1", "vm one", argv); err != nil {
			t.Fatal(err)
		}
		pid := sup.PID(ctx, "vm1")
		t.Cleanup(func() {
			if alive(pid) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		})
		return pid
	}

	for _, action := range []string{"shutdown", "stop"} {
		t.Run(action, func(t *testing.T) {
			e, sup := emulator(t)
			sock := e.QMPPath("vm1")
			t.Setenv(endsAtQMPEnv, sock) // the child's environment
			pid := run(t, sup, self)
			for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				if _, err := os.Stat(sock + ".ready"); err == nil {
					break
				}
				if !alive(pid) || time.Now().After(deadline) {
					t.Fatalf("the stand-in QEMU (process %d, alive %v) does not listen on %s", pid, alive(pid), sock)
				}
			}
			do := e.Shutdown
			if action == "stop" {
				do = e.Stop
			}
			out, err := do(ctx, emulation.Stop{ID: "vm1", Timeout: &timeout})
			if err != nil {
				t.Fatalf("%s of a VM that powered off meanwhile: %v", action, err)
			}
			if st := out.(*emulation.Output); st.Changed || st.Running || st.Forced || st.Presses != 0 {
				t.Errorf("%s of a VM that powered off meanwhile: %+v; want stopped, unchanged, not forced, no press", action, st)
			}
			if alive(pid) {
				t.Errorf("the stand-in QEMU (process %d) still runs", pid)
			}
		})
	}

	t.Run("QMPFailsWhileItRuns", func(t *testing.T) {
		sleep, err := exec.LookPath("sleep")
		if err != nil {
			t.Skip("no sleep program")
		}
		e, sup := emulator(t)
		pid := run(t, sup, sleep, "60") // no QMP socket
		_, err = e.Shutdown(ctx, emulation.Stop{ID: "vm1", Timeout: &timeout})
		if err == nil || !strings.Contains(err.Error(), "ACPI power-down failed") || !alive(pid) {
			t.Errorf("shutdown of a running VM whose QMP fails: %v, alive %v; want ACPI power-down failed, still running", err, alive(pid))
		}
	})
}

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
