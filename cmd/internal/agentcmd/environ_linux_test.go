package agentcmd

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spin-broker/spinbroker/internal/syncbuf"
)

// TestToken_NotInProcEnviron: an agent given its token in
// SPINBROKER_TOKEN, as SECURITY.md advises, shows it nowhere in
// /proc/PID/environ once started, which is what `ps e` prints and what
// every process of the agent's user (QEMU for each VM, its children) may
// read. os.Unsetenv keeps the token from the programs the agent runs, but
// the environment block the kernel gave it at exec stayed as it was.
func TestToken_NotInProcEnviron(t *testing.T) {
	bin := buildAgent(t, "sa-host-path")
	const secret = "sbt_NOTINPROCENVIRONNOTINPROCENVIRO"
	cmd := exec.Command(bin, "-url", "http://localhost:1", "-root", filepath.Join(t.TempDir(), "root"))
	cmd.Env = append(os.Environ(), "SPINBROKER_TOKEN="+secret, "SPINBROKER_LOG_FORMAT=", "SPINBROKER_LOG_LEVEL=", "SPINBROKER_AFTER=kept")
	var stderr syncbuf.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	// Started: it has read its flags and taken its first poll (which fails:
	// nothing listens on port 1).
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(stderr.String(), "agent started") {
		if time.Now().After(deadline) {
			t.Fatalf("the agent did not start:\n%s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	env, err := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(env, []byte(secret)) {
		t.Errorf("/proc/%d/environ holds the token", cmd.Process.Pid)
	}
	if !bytes.Contains(env, []byte("SPINBROKER_AFTER=kept")) {
		t.Errorf("/proc/%d/environ lost the variables around the token:\n%q", cmd.Process.Pid, env)
	}
	if strings.Contains(stderr.String(), secret) {
		t.Errorf("stderr shows the token:\n%s", stderr.String())
	}
}
