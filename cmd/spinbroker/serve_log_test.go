package main

import (
	"crypto/tls"
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

// TestServe_FatalErrorJSON: with --log-format json, what stops serve (a
// port taken, a database another broker serves, a directory that does
// not exist, a setting that cannot work) is one JSON record at error with
// the sentence the text format prints, and the exit code is the same:
// the crash reason was the one plain line that a log pipeline could not
// parse. The text format prints it as before.
func TestServe_FatalErrorJSON(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	dir := t.TempDir()
	busy := filepath.Join(dir, "busy.db")
	startBroker(t, busy)
	for _, c := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"port taken", []string{"--addr", taken.Addr().String(), "--db", filepath.Join(dir, "a.db")}, 1, "cannot listen on " + taken.Addr().String()},
		{"database in use", []string{"--addr", "127.0.0.1:0", "--db", busy}, 1, "busy.db is in use"},
		{"no directory", []string{"--addr", "127.0.0.1:0", "--db", filepath.Join(dir, "none", "x.db")}, 1, "its folder " + filepath.Join(dir, "none") + " does not exist"},
		{"setting", []string{"--addr", "127.0.0.1:0", "--db", filepath.Join(dir, "b.db"), "--sweep-interval", "0s"}, 2, "--sweep-interval must be from 10ms to 1h0m0s, not 0s"},
	} {
		for _, format := range []string{"text", "json"} {
			cmd := exec.Command(serveBinary(t), append([]string{"serve", "--log-format", format}, c.args...)...)
			cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
			var stderr syncbuf.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != c.code {
				t.Errorf("%s, %s: exit %v, want %d:\n%s", c.name, format, err, c.code, stderr.String())
				continue
			}
			out := strings.TrimSpace(stderr.String())
			if format == "text" {
				if !strings.HasPrefix(out, "spinbroker: ") || !strings.Contains(out, c.want) {
					t.Errorf("%s, text: want a line spinbroker: …%s…, got:\n%s", c.name, c.want, out)
				}
				continue
			}
			lines := strings.Split(out, "\n")
			var rec map[string]any
			if err := json.Unmarshal([]byte(lines[len(lines)-1]), &rec); err != nil {
				t.Errorf("%s, json: the last line is not JSON:\n%s", c.name, out)
				continue
			}
			if msg, _ := rec["msg"].(string); rec["level"] != "ERROR" || !strings.Contains(msg, c.want) {
				t.Errorf("%s, json: want a record at ERROR whose msg says %q, got:\n%s", c.name, c.want, out)
			}
			for _, l := range lines {
				if json.Unmarshal([]byte(l), &rec) != nil {
					t.Errorf("%s, json: a line that is not JSON: %s", c.name, l)
				}
			}
		}
	}
}

// TestServe_StartLineSettings: the start-up line names every setting that
// matters when reading an incident's log (how it serves, what it keeps,
// how often it sweeps, how much it takes at once, what it logs), never a
// secret: only auth, retention and sync were there.
func TestServe_StartLineSettings(t *testing.T) {
	t.Setenv("GOGC", "")
	b := startBroker(t, filepath.Join(t.TempDir(), "s.db"), "--log-format", "json", "--log-level", "debug", "--metrics-open",
		"--max-writes", "17", "--max-waits-per-token", "5", "--retain", "2h", "--read-timeout", "33s")
	var rec map[string]any
	for _, l := range strings.Split(b.logs.String(), "\n") {
		if strings.Contains(l, `"msg":"spin-broker listening"`) {
			if err := json.Unmarshal([]byte(l), &rec); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := map[string]any{"auth": false, "tls": false, "insecure": false, "metrics_open": true, "max_writes": float64(17),
		"max_waits_per_token": float64(5), "sweep_interval": "100ms", "retain": "2h0m0s", "staging_ttl": "24h0m0s", "log_level": "debug", "sync": "normal",
		"header_timeout": "10s", "read_timeout": "33s", "shutdown_timeout": "10s", "pprof_addr": "", "gogc": "200"}
	for k, v := range want {
		if rec[k] != v {
			t.Errorf("%s: %v, want %v", k, rec[k], v)
		}
	}
	if t.Failed() {
		t.Logf("the start-up line: %v", rec)
	}
}

// TestServe_TLSProbesAtDebug: a connection closed before any TLS
// handshake (a load balancer's TCP health check, a port scan) is logged
// at debug, not at warn, where one line per probe buried what warn is
// kept for; a handshake that fails (a client that does not trust the
// certificate) is still a warning.
func TestServe_TLSProbesAtDebug(t *testing.T) {
	certFile, keyFile, _ := selfSigned(t)
	b := startBroker(t, filepath.Join(t.TempDir(), "tls.db"), "--tls-cert", certFile, "--tls-key", keyFile,
		"--log-format", "json", "--log-level", "debug")
	addr := strings.TrimPrefix(b.url, "https://")
	for range 3 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	if c, err := tls.Dial("tcp", addr, &tls.Config{}); err == nil {
		c.Close()
		t.Fatal("a client that does not trust the certificate shook hands")
	}
	var probes, refused []map[string]any
	for deadline := time.Now().Add(10 * time.Second); (len(probes) < 3 || len(refused) < 1) && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		probes, refused = nil, nil
		for _, l := range strings.Split(b.logs.String(), "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(l), &rec) != nil {
				continue
			}
			switch msg, _ := rec["msg"].(string); {
			case strings.Contains(msg, "TLS handshake error") && strings.HasSuffix(msg, ": EOF"):
				probes = append(probes, rec)
			case strings.Contains(msg, "TLS handshake error"):
				refused = append(refused, rec)
			}
		}
	}
	if len(probes) != 3 || len(refused) != 1 {
		t.Fatalf("%d handshakes closed early and %d refused logged, want 3 and 1:\n%s", len(probes), len(refused), b.logs)
	}
	for _, rec := range probes {
		if rec["level"] != "DEBUG" {
			t.Errorf("a connection closed before its handshake at %v, want DEBUG: %v", rec["level"], rec)
		}
	}
	if refused[0]["level"] != "WARN" {
		t.Errorf("a refused handshake at %v, want WARN: %v", refused[0]["level"], refused[0])
	}
}
