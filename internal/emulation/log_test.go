//go:build unix

package emulation_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/agent"
	"github.com/spin-broker/spinbroker/internal/emulation"
	"github.com/spin-broker/spinbroker/internal/syncbuf"
)

// listensEnv makes the test binary, started with it set to a socket path,
// a "QEMU" that listens on it and answers nothing (qemuThatListens),
// instead of running the tests.
const listensEnv = "SPIN_EMULATION_TEST_LISTENS"

// qemuThatListens listens on the unix socket sock, says so in sock.ready,
// and closes each connection unanswered until it is killed: a QEMU whose
// QMP hangs. It ends anyway after a minute, so that no test leaves it
// behind.
func qemuThatListens(sock string) int {
	l, err := net.Listen("unix", sock)
	if err != nil {
		return 1
	}
	if err := os.WriteFile(sock+".ready", nil, 0o600); err != nil {
		return 1
	}
	time.AfterFunc(time.Minute, func() { os.Exit(3) })
	for {
		c, err := l.Accept()
		if err != nil {
			return 1
		}
		c.Close()
	}
}

// TestLog_ActionLinesNameTheirCommand: served by the agent, the emulator's
// own lines from inside an action ("adopted a running VM whose pid file
// was lost", …) carry the command's command_id, resource, action and
// attempt, as sa-host-path's do; they had only vm_id and pid, so that a
// reader could not tell which command adopted the VM. Called on its own,
// an action's lines go to the emulator's logger ("ACPI power-down failed"
// went to slog.Default, not to Options.Logger).
func TestLog_ActionLinesNameTheirCommand(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// setup is an emulator logging to logs, and a stand-in QEMU of VM
	// vm1 that listens on its QMP socket, unknown to the supervisor: a VM
	// whose pid file was lost.
	setup := func(t *testing.T) (*emulation.Emulator, *syncbuf.Buffer, *slog.Logger) {
		t.Helper()
		logs := &syncbuf.Buffer{}
		log := slog.New(slog.NewJSONHandler(logs, nil))
		state := t.TempDir()
		sup, err := emulation.NewProcess(filepath.Join(state, "proc"), log)
		if err != nil {
			t.Fatal(err)
		}
		e, err := emulation.New(emulation.Options{StateDir: state, Supervisor: sup, Accel: "tcg", Logger: log, QMPTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		sock := e.QMPPath("vm1")
		cmd := exec.Command(self)
		cmd.Env = append(os.Environ(), listensEnv+"="+sock)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if _, err := os.Stat(sock + ".ready"); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the stand-in QEMU does not listen on %s", sock)
			}
		}
		return e, logs, log
	}
	line := func(t *testing.T, logs *syncbuf.Buffer, msg string) map[string]any {
		t.Helper()
		for l := range strings.Lines(logs.String()) {
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatal(err)
			}
			if strings.HasPrefix(m["msg"].(string), msg) {
				return m
			}
		}
		t.Fatalf("no %q line:\n%s", msg, logs.String())
		return nil
	}

	t.Run("UnderTheAgent", func(t *testing.T) {
		e, logs, log := setup(t)
		b := startBroker(t)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- agent.Run(ctx, b.c, emulation.Resource, e.Handlers(), agent.Options{Logger: log, Wait: time.Second})
		}()
		t.Cleanup(func() { cancel(); <-done })

		p := b.run(t, 30*time.Second, command("", emulation.Resource, "status", `{"id":"vm1"}`))
		var out vmOutput
		decode(t, p.Commands[0].Output, &out)
		if !out.Running {
			t.Fatalf("status of the stand-in VM: %s; want it adopted, running", p.Commands[0].Output)
		}
		got := line(t, logs, "adopted a running VM whose pid file was lost")
		for k, want := range map[string]any{"command_id": p.Commands[0].ID, "resource": emulation.Resource, "action": "status", "attempt": float64(1), "vm_id": "vm1"} {
			if got[k] != want {
				t.Errorf("adopted: %s=%v, want %v\n%v", k, got[k], want, got)
			}
		}
	})

	t.Run("OnItsOwn", func(t *testing.T) {
		e, logs, _ := setup(t)
		timeout := spinbroker.Duration(time.Second)
		out, err := e.Stop(context.Background(), emulation.Stop{ID: "vm1", Timeout: &timeout})
		if st, _ := out.(*emulation.Output); err != nil || !st.Forced {
			t.Fatalf("stop of the stand-in VM: %+v, %v; want it forced", out, err)
		}
		for _, msg := range []string{"adopted a running VM whose pid file was lost", "ACPI power-down failed"} {
			if got := line(t, logs, msg); got["vm_id"] != "vm1" || got["command_id"] != nil {
				t.Errorf("%s: %v; want vm_id vm1, no command_id", msg, got)
			}
		}
	})
}
