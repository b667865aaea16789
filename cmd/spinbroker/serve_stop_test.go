package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/store"
)

// TestServe_StoppedBeforeServing: a broker told to stop while it opens or
// checks its database (SIGTERM during a long --check) stops cleanly: exit
// 0 and a line that says so, not "spinbroker: context canceled" and exit 1,
// which a supervisor takes for a failure.
func TestServe_StoppedBeforeServing(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(errors.New("SIGTERM"))
	var stdout, stderr bytes.Buffer
	code := run(ctx, []string{"serve", "--check", "--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "b.db")}, nil, &stdout, &stderr)
	if code != 0 || strings.Contains(stderr.String(), "context canceled") || !strings.Contains(stderr.String(), "before serving") {
		t.Fatalf("exit %d:\n%s", code, stderr.String())
	}
}

// TestDescribe_KeepsWhichFile: a store error of a command that works on a
// database file keeps what it was doing to which file, with its code; a
// bare coded error is its message.
func TestDescribe_KeepsWhichFile(t *testing.T) {
	full := fmt.Errorf("store: backup: write /backups/b.db: %w", spinbroker.Errorf(spinbroker.EUNAVAILABLE, "the database is unavailable: database or disk is full"))
	if got := describe(full); !strings.Contains(got, "/backups/b.db") || !strings.Contains(got, "(unavailable)") {
		t.Errorf("describe(%v) = %q", full, got)
	}
	bare := spinbroker.Errorf(spinbroker.ENOTFOUND, "no token 12345678")
	if got := describe(bare); got != "no token 12345678 (not_found)" {
		t.Errorf("describe(bare) = %q", got)
	}
}

// TestServe_BadCertificateCreatesNoDatabase: a TLS file that does not load
// stops the start before a database is created and migrated for nothing,
// as a port in use does.
func TestServe_BadCertificateCreatesNoDatabase(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "b.db")
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"serve", "--addr", "127.0.0.1:0", "--db", db,
		"--tls-cert", filepath.Join(dir, "missing.pem"), "--tls-key", filepath.Join(dir, "missing.key")}, nil, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "TLS certificate") {
		t.Fatalf("exit %d:\n%s", code, stderr.String())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("a start refused for its certificate left %v", ents)
	}
}

// TestServe_StopSaysWhatItTookAndCutOff: the log of a planned stop says
// how long it took and, when requests were still running at
// --shutdown-timeout, how many it cut off: "context deadline exceeded"
// alone left the operator to guess what a restart had broken.
func TestServe_StopSaysWhatItTookAndCutOff(t *testing.T) {
	b := startBroker(t, filepath.Join(t.TempDir(), "b.db"), "--shutdown-timeout", "1s")
	host := strings.TrimPrefix(b.url, "http://")
	// An upload still arriving when the broker is told to stop.
	conn, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "POST /packages HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{\"comm"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if err := b.stop(t); err != nil {
		t.Fatalf("serve exited with %v:\n%s", err, b.logs)
	}
	logs := b.logs.String()
	if !regexp.MustCompile(`msg="requests still running at the shutdown timeout were cut off" .*requests=1\b`).MatchString(logs) {
		t.Errorf("the stop does not say it cut off one request:\n%s", logs)
	}
	if !regexp.MustCompile(`level=INFO msg=stopped .*duration=1(\.\d+)?s`).MatchString(logs) {
		t.Errorf("the stop does not say how long it took (about 1s):\n%s", logs)
	}
	if strings.Contains(logs, "level=ERROR") {
		t.Errorf("a planned stop logged an error:\n%s", logs)
	}
	// "stopped" is the last line, after the database is closed: a
	// supervisor reading the log knows the files are settled.
	lines := strings.Split(strings.TrimSpace(logs), "\n")
	if last := lines[len(lines)-1]; !strings.Contains(last, "msg=stopped") || !strings.Contains(logs, "msg=\"database closed\"") {
		t.Errorf("the stop's last line is %q, want stopped, after database closed:\n%s", last, logs)
	}
	// The upload's own line says the stop cut it off, before "stopped":
	// not a 400 invalid_request, the client's fault, after the last line.
	line := regexp.MustCompile(`(?m)^.*msg=request method=POST path=/packages .*$`).FindString(logs)
	if !strings.Contains(line, "level=INFO") || !strings.Contains(line, "status=503") || !strings.Contains(line, "code=unavailable") ||
		!strings.Contains(line, "cut_off=true") {
		t.Errorf("the upload cut off by the stop is logged as %q, want status=503 code=unavailable cut_off=true at info:\n%s", line, logs)
	}
	if i, j := strings.Index(logs, line), strings.Index(logs, "msg=stopped"); line == "" || i > j {
		t.Errorf("the upload's line is not before stopped:\n%s", logs)
	}
}

// TestServe_StopDuringCheck: a broker told to stop while serve --check
// reads the database stops there: it said "stopped during the integrity
// check, before serving", then listened all the same (and told systemd it
// was ready) before it stopped. The check says when it begins, so that a
// long one is not taken for a hang.
func TestServe_StopDuringCheck(t *testing.T) {
	path := filepath.Join(t.TempDir(), "broker.db")
	st, err := store.Open(context.Background(), path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for range 40 {
		cmds := make([]spinbroker.NewCommand, 5000)
		for i := range cmds {
			cmds[i] = spinbroker.NewCommand{Resource: "r", Action: "a"}
		}
		if _, _, err := st.CreatePackage(context.Background(), spinbroker.NewPackage{Commands: cmds, Enqueue: true}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(serveBinary(t), "serve", "--addr", "127.0.0.1:0", "--db", path, "--check")
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	sc := bufio.NewScanner(stderr)
	var logs strings.Builder
	for sc.Scan() {
		logs.WriteString(sc.Text() + "\n")
		if strings.Contains(sc.Text(), `msg="checking the database"`) || strings.Contains(sc.Text(), "spin-broker listening") {
			break
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for sc.Scan() {
		logs.WriteString(sc.Text() + "\n")
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v\n%s", err, logs.String())
	}
	if !strings.Contains(logs.String(), `msg="checking the database"`) {
		t.Fatalf("the check did not say it began:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "stopped during the integrity check") {
		t.Skipf("the check of %d commands ended before SIGTERM came; nothing to see:\n%s", 40*5000, logs.String())
	}
	if strings.Contains(logs.String(), "spin-broker listening") {
		t.Fatalf("told to stop during the check, the broker listened all the same:\n%s", logs.String())
	}
}
