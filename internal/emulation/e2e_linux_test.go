//go:build linux

package emulation_test

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestAgents_WarnsAsPID1: sa-emulation started as PID 1 (in a PID
// namespace of its own, as in a container without an init) says at start
// that the zombies a --qemu wrapper leaves will stay; started as any other
// process it says nothing of the kind.
func TestAgents_WarnsAsPID1(t *testing.T) {
	bin := buildAgents(t)
	b := startBroker(t)
	for _, pid1 := range []bool{true, false} {
		cmd := exec.Command(filepath.Join(bin, "sa-emulation"), "-url", b.url, "-state-dir", t.TempDir())
		if pid1 {
			cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
		}
		out, err := runUntil(cmd, "serving emulation", 30*time.Second)
		if pid1 && err != nil && errors.Is(err, syscall.EPERM) {
			t.Skip("no new PID namespace here:", err)
		}
		if !strings.Contains(out, "serving emulation") {
			t.Fatalf("pid1=%v: the agent did not start (%v):\n%s", pid1, err, out)
		}
		if warned := strings.Contains(out, "running as PID 1") && strings.Contains(out, "docker run --init"); warned != pid1 {
			t.Errorf("pid1=%v: warned=%v:\n%s", pid1, warned, out)
		}
	}
}
