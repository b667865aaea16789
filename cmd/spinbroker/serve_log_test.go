package main

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spin-broker/spinbroker/internal/syncbuf"
)

// TestServe_ProfilerErrorsLogged: what Go's HTTP server of --pprof-addr
// has to say (here, that it cannot accept connections: out of file
// descriptors) goes through the broker's logger at warn, as JSON records
// with --log-format json, not as plain lines of Go's log package that a
// log pipeline cannot parse.
func TestServe_ProfilerErrorsLogged(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	// Few file descriptors, so that the profiler's connections run out of
	// them; exec keeps the limit (Go raises only the soft one, to the hard).
	cmd := exec.Command("sh", "-c", `ulimit -n 48 && exec "$0" "$@"`, serveBinary(t), "serve", "--addr", "127.0.0.1:0",
		"--db", filepath.Join(t.TempDir(), "p.db"), "--log-format", "json", "--pprof-addr", addr)
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	var logs syncbuf.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(logs.String(), "Accept error") {
		if time.Now().After(deadline) {
			t.Fatalf("nothing logged of the profiler's accept errors:\n%s", logs.String())
		}
		if len(conns) < 100 {
			if c, err := net.Dial("tcp", addr); err == nil {
				conns = append(conns, c)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Errorf("a line that is not JSON: %s", l)
		} else if strings.Contains(l, "Accept error") && rec["level"] != "WARN" {
			t.Errorf("level %v, want WARN: %s", rec["level"], l)
		}
	}
}
