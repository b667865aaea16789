package agentcmd

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRefusalPrintedOnce: a shipped agent that the broker refuses exits 1
// with the refusal on stderr once: agent.Run logs the error it returns,
// and Main printed it a second time.
func TestRefusalPrintedOnce(t *testing.T) {
	dir := t.TempDir()
	const refusal = "the token is not valid or was revoked"
	broker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"error":{"code":"unauthorized","message":"`+refusal+`"}}`)
	}))
	defer broker.Close()
	for name, args := range map[string][]string{
		"sa-host-path": {"-root", filepath.Join(dir, "root")},
		"sa-emulation": {"-state-dir", filepath.Join(dir, "state"), "-supervisor", "process"},
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, buildAgent(t, name), append(args, "-url", broker.URL)...)
			cmd.Env = append(os.Environ(), "SPINBROKER_TOKEN=sbt_revoked")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			if code := cmd.ProcessState.ExitCode(); code != 1 {
				t.Fatalf("%s exited %d (%v), want 1:\n%s", name, code, err, stderr.String())
			}
			if n := strings.Count(stderr.String(), refusal); n != 1 {
				t.Errorf("%s printed the broker's refusal %d times, want once:\n%s", name, n, stderr.String())
			}
		})
	}
}
