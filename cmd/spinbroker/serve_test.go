package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/spin-broker/spinbroker/internal/store"
	"github.com/spin-broker/spinbroker/internal/syncbuf"
)

// serveBinary is the real spinbroker binary that TestMain built.
func serveBinary(t *testing.T) string {
	t.Helper()
	if binary == "" {
		t.Fatal("TestMain did not build the binary")
	}
	return binary
}

// serveProc is a real `spinbroker serve` process.
type serveProc struct {
	cmd  *exec.Cmd
	url  string
	logs *syncbuf.Buffer
	done chan error
}

var listenRE = regexp.MustCompile(`url"?[=:]"?(https?://[^ "]+)`)

// startBroker starts serve on a free loopback port and waits until it
// listens.
func startBroker(t *testing.T, db string, extra ...string) *serveProc {
	t.Helper()
	args := append([]string{"serve", "--addr", "127.0.0.1:0", "--db", db, "--sweep-interval", "100ms"}, extra...)
	cmd := exec.Command(serveBinary(t), args...)
	// A -race binary otherwise sleeps a second before it exits.
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b := &serveProc{cmd: cmd, logs: &syncbuf.Buffer{}, done: make(chan error, 1)}
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			b.logs.Write([]byte(line + "\n"))
			if m := listenRE.FindStringSubmatch(line); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
		b.done <- cmd.Wait()
	}()
	select {
	case b.url = <-found:
	case err := <-b.done:
		t.Fatalf("serve exited: %v\n%s", err, b.logs)
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("serve did not start:\n%s", b.logs)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-b.done
		}
	})
	return b
}

// stopTimeout bounds a stop: serve's own --shutdown-timeout (10s unless a
// test sets less) and closing the database, with room for a -race binary
// on a busy machine.
const stopTimeout = 20 * time.Second

// stop sends serve SIGTERM and waits for it to exit (see wait). A test
// that stops a broker only to start another on its database may leave
// the exit unchecked.
func (b *serveProc) stop(t *testing.T) error {
	t.Helper()
	b.signal(t, syscall.SIGTERM)
	return b.wait(t)
}

// signal sends serve sig, failing the test if it cannot be sent.
func (b *serveProc) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := b.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to serve: %v", sig, err)
	}
}

// wait waits for serve to exit and returns how: nil for status 0, else
// the *exec.ExitError, for the test to assert on. It fails the test, with
// serve's logs, if serve has not exited within stopTimeout.
func (b *serveProc) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-b.done:
		return err
	case <-time.After(stopTimeout):
		t.Fatalf("serve did not exit within %v:\n%s", stopTimeout, b.logs)
		return nil
	}
}

func TestServe_GracefulShutdown(t *testing.T) {
	db := filepath.Join(t.TempDir(), "broker.db")
	b := startBroker(t, db)
	resp, err := http.Get(b.url + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()
	resp, err = http.Post(b.url+"/packages", "application/json", strings.NewReader(`{"commands": [{"resource": "r", "action": "x"}], "enqueue": true}`))
	if err != nil || resp.StatusCode != 201 {
		t.Fatalf("create: %v %v", resp, err)
	}
	resp.Body.Close()

	// A long-poll waits on another queue while the broker is told to stop.
	polled := make(chan int, 1)
	go func() {
		resp, err := http.Post(b.url+"/queues/idle/next?wait=60s", "", nil)
		if err != nil {
			polled <- -1
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		polled <- resp.StatusCode
	}()
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	b.signal(t, syscall.SIGTERM)
	select {
	case code := <-polled:
		if code != 503 {
			t.Fatalf("the waiting long-poll got %d, want 503", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the long-poll was not answered at shutdown")
	}
	if err := b.wait(t); err != nil {
		t.Fatalf("serve exited with %v:\n%s", err, b.logs)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("shutdown took %v", d)
	}
	for _, want := range []string{`msg="shutting down" cause=SIGTERM`, "database closed", "stopped", "status=201",
		// The long-poll that the stop ended is no fault: info, not warn.
		`level=INFO msg=request method=POST path=/queues/idle/next status=503`} {
		if !strings.Contains(b.logs.String(), want) {
			t.Errorf("logs lack %q:\n%s", want, b.logs)
		}
	}
	if strings.Contains(b.logs.String(), "level=WARN") {
		t.Errorf("a planned stop logged a warning:\n%s", b.logs)
	}
	// Closed cleanly: the WAL was checkpointed away, and the package is there.
	if _, err := os.Stat(db + "-wal"); !os.IsNotExist(err) {
		t.Errorf("the WAL is still there after a clean close: %v", err)
	}
	st, err := store.Open(context.Background(), db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	q, err := st.Queue(context.Background(), "r")
	if err != nil || q.Counts.Ready != 1 {
		t.Fatalf("after restart: %+v %v", q, err)
	}
}

func TestServe_RefusesOpenAddressWithoutAuth(t *testing.T) {
	bin := serveBinary(t)
	db := filepath.Join(t.TempDir(), "b.db")
	out, err := exec.Command(bin, "serve", "--addr", "0.0.0.0:0", "--db", db).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
		t.Fatalf("exit %v, want 2:\n%s", err, out)
	}
	if !strings.Contains(string(out), "without --auth") {
		t.Fatalf("message does not say why:\n%s", out)
	}
	// --insecure says the operator means it, and the log says it again.
	b := startBroker(t, db, "--addr", "0.0.0.0:0", "--insecure")
	b.signal(t, syscall.SIGINT)
	if err := b.wait(t); err != nil {
		t.Fatalf("exit: %v", err)
	}
	if !strings.Contains(b.logs.String(), "level=WARN msg=\"serving without authentication beyond loopback") {
		t.Fatalf("no warning of an open broker:\n%s", b.logs)
	}
}

// TestServe_LocalHostOnly: a broker without auth on loopback answers only
// requests that name this machine (DNS rebinding); with --auth any Host.
func TestServe_LocalHostOnly(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		extra []string
		want  int
	}{{nil, 403}, {[]string{"--auth"}, 401}} {
		b := startBroker(t, filepath.Join(dir, fmt.Sprint(len(tc.extra))+".db"), tc.extra...)
		req, _ := http.NewRequest("GET", b.url+"/packages", nil)
		req.Host = "rebound.example"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("serve %v, Host rebound.example: %d, want %d", tc.extra, resp.StatusCode, tc.want)
		}
		resp, err = http.Get(b.url + "/packages")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if want := map[bool]int{true: 401, false: 200}[len(tc.extra) > 0]; resp.StatusCode != want {
			t.Errorf("serve %v at %s: %d, want %d", tc.extra, b.url, resp.StatusCode, want)
		}
		b.stop(t)
	}
}

// TestServe_MaxWaitsPerToken: --max-waits-per-token reaches the broker: a
// token holding that many long-polls has its next one refused 503 at once,
// naming the flag, while another token's still waits.
func TestServe_MaxWaitsPerToken(t *testing.T) {
	path := filepath.Join(t.TempDir(), "waits.db")
	secret := func(role string, more ...string) string {
		t.Helper()
		r := spin(t, append([]string{"token", "create", "--db", path, "--role", role, "--name", role}, more...)...)
		if r.code != 0 {
			t.Fatalf("token create: %s", r)
		}
		fields := strings.Fields(r.stdout)
		return fields[len(fields)-1]
	}
	agentTok, other, admin := secret("agent", "--resource", "work"), secret("client"), secret("admin")
	b := startBroker(t, path, "--auth", "--max-waits-per-token", "1")
	defer b.stop(t)
	send := func(method, path, tok string) (*http.Response, error) {
		req, _ := http.NewRequest(method, b.url+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		return http.DefaultClient.Do(req)
	}
	go func() {
		if resp, err := send("POST", "/queues/work/next?wait=20s", agentTok); err == nil {
			resp.Body.Close()
		}
	}()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		resp, err := send("GET", "/metrics", admin)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(body), "\nspinbroker_http_waits 1\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the first long-poll never waited:\n%s", body)
		}
	}
	start := time.Now()
	resp, err := send("POST", "/queues/work/next?wait=20s", agentTok)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), "--max-waits-per-token") {
		t.Errorf("a second long-poll of the token: %d (Retry-After %q) %s, want 503 naming the flag", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the refusal took %s, want at once", d)
	}
	// Another token's stream is its own.
	resp, err = send("GET", "/events", other)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("another token's event stream: %d, want 200", resp.StatusCode)
	}
}

// TestServe_RefusesSettingsThatCannotWork: each is a usage error (exit 2)
// that names the flag, before anything is opened or listened on; none is
// a panic, or a setting quietly taken to mean something else.
func TestServe_RefusesSettingsThatCannotWork(t *testing.T) {
	bin := serveBinary(t)
	dir := t.TempDir()
	for _, tt := range []struct {
		args []string
		env  string
		want string
	}{
		{[]string{"--sweep-interval", "0"}, "", "--sweep-interval must be from 10ms to 1h0m0s, not 0s"},
		{[]string{"--sweep-interval", "-1s"}, "", "--sweep-interval must be from 10ms to 1h0m0s, not -1s"},
		{[]string{"--header-timeout", "0"}, "", "--header-timeout must be more than 0"},
		{[]string{"--read-timeout", "5s"}, "", "--read-timeout must be at least --header-timeout (10s), not 5s"},
		{[]string{"--shutdown-timeout", "-1s"}, "", "--shutdown-timeout must be more than 0"},
		{[]string{"--retain", "-5s"}, "", "--retain must not be negative"},
		{[]string{"--staging-ttl", "-1s"}, "", "--staging-ttl must not be negative"},
		// A package is built in staging by several requests (new, add,
		// …, enqueue): 1s deleted it before a script's enqueue.
		{[]string{"--staging-ttl", "1s"}, "", "--staging-ttl must be 0 (keep them) or from 10m0s, not 1s"},
		{[]string{"--staging-ttl", "9m59s"}, "", "--staging-ttl must be 0 (keep them) or from 10m0s, not 9m59s"},
		{[]string{"--sync", "bogus"}, "", `--sync must be normal or full, not "bogus"`},
		{[]string{"--log-format", "yaml"}, "", `--log-format must be text or json, not "yaml"`},
		{[]string{"--log-level", "loud"}, "", `--log-level must be debug, info, warn or error, not "loud"`},
		{[]string{"--max-writes", "0"}, "", "--max-writes must be at least 1"},
		// Within bounds no one means to pass: a sweeper that never rests,
		// a budget for bodies larger than any machine's memory.
		{[]string{"--sweep-interval", "1ns"}, "", "--sweep-interval must be from 10ms to 1h0m0s, not 1ns"},
		{[]string{"--sweep-interval", "2h"}, "", "--sweep-interval must be from 10ms to 1h0m0s, not 2h0m0s"},
		{[]string{"--max-writes", "100000000"}, "", "--max-writes must be from 1 to 4096"},
		{[]string{"--max-waits-per-token", "-1"}, "", "--max-waits-per-token must be 0 (no cap) or more, not -1"},
		{[]string{"--max-waits-per-token", "lots"}, "", `invalid argument "lots" for --max-waits-per-token: want a whole number`},
		{[]string{"--pprof-addr", "0.0.0.0:0"}, "", "refusing to serve the profiler on 0.0.0.0:0"},
		{nil, "SPINBROKER_AUTH=yes", `SPINBROKER_AUTH must be 1, true, 0 or false, not "yes"`},
		// A flag set by its variable says so, or a person looks for a flag
		// they never typed.
		{nil, "SPINBROKER_SYNC=bogus", `--sync must be normal or full, not "bogus" (--sync comes from SPINBROKER_SYNC)`},
		{nil, "SPINBROKER_LOG_LEVEL=loud", `not "loud" (--log-level comes from SPINBROKER_LOG_LEVEL)`},
		{nil, "SPINBROKER_ADDR=0.0.0.0:0", `yours alone (--addr comes from SPINBROKER_ADDR)`},
	} {
		db := filepath.Join(dir, "never.db")
		base := []string{"serve", "--addr", "127.0.0.1:0", "--db", db}
		if strings.HasPrefix(tt.env, "SPINBROKER_ADDR=") {
			base = []string{"serve", "--db", db}
		}
		// A broker that accepts the setting would serve until killed.
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		cmd := exec.CommandContext(ctx, bin, append(base, tt.args...)...)
		cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0", tt.env)
		out, err := cmd.CombinedOutput()
		cancel()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
			t.Errorf("%v %s: exit %v, want 2:\n%s", tt.args, tt.env, err, out)
			continue
		}
		if !strings.Contains(string(out), tt.want) {
			t.Errorf("%v %s: the message does not say %q:\n%s", tt.args, tt.env, tt.want, out)
		}
		if _, err := os.Stat(db); err == nil {
			t.Fatalf("%v %s: a refused start created the database", tt.args, tt.env)
		}
	}
	// --sync is read in any case, as the store reads it.
	b := startBroker(t, filepath.Join(dir, "full.db"), "--sync", "FULL")
	if err := b.stop(t); err != nil || !strings.Contains(b.logs.String(), "sync=FULL") {
		t.Fatalf("--sync FULL: %v\n%s", err, b.logs)
	}
	// SPINBROKER_AUTH takes the usual spellings of true.
	cmd := exec.Command(bin, "serve", "--addr", "127.0.0.1:0", "--db", filepath.Join(dir, "auth.db"), "--sweep-interval", "1h", "--staging-ttl", "10m")
	cmd.Env = append(os.Environ(), "SPINBROKER_AUTH=true")
	stderr := &syncbuf.Buffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(stderr.String(), "spin-broker listening") {
		if time.Now().After(deadline) {
			t.Fatalf("no start:\n%s", stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// With auth on and no token in the database, the log says why every
	// request will be refused.
	if log := stderr.String(); !strings.Contains(log, "auth=true") || !strings.Contains(log, "staging_ttl=10m0s") || !strings.Contains(log, "has no token that works") {
		t.Fatalf("SPINBROKER_AUTH=true, no tokens:\n%s", log)
	}
}

// TestServe_PortInUse: a taken port is said as such, not as a broker that
// cannot be reached, and stops the start before a database is made.
func TestServe_PortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	db := filepath.Join(t.TempDir(), "p.db")
	out, err := exec.Command(serveBinary(t), "serve", "--addr", ln.Addr().String(), "--db", db).CombinedOutput()
	if _, serr := os.Stat(db); !errors.Is(serr, os.ErrNotExist) {
		t.Errorf("a broker that could not listen made its database %s (%v)", db, serr)
	}
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("exit %v, want 1:\n%s", err, out)
	}
	if !strings.Contains(string(out), "cannot listen on "+ln.Addr().String()) || !strings.Contains(string(out), "another with --addr") || strings.Contains(string(out), "cannot reach") {
		t.Fatalf("the message:\n%s", out)
	}
}

// TestServe_PprofPortInUse: a --pprof-addr whose port is taken stops the
// start like a taken --addr, rather than a broker that runs on with a
// warning and without the profiler it was asked for.
func TestServe_PprofPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	db := filepath.Join(t.TempDir(), "p.db")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, serveBinary(t), "serve", "--addr", "127.0.0.1:0", "--db", db, "--pprof-addr", ln.Addr().String()).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || ctx.Err() != nil {
		t.Fatalf("exit %v, want 1 at once:\n%s", err, out)
	}
	if !strings.Contains(string(out), "--pprof-addr "+ln.Addr().String()) || !strings.Contains(string(out), "address already in use") {
		t.Fatalf("the message:\n%s", out)
	}
	if _, serr := os.Stat(db); !errors.Is(serr, os.ErrNotExist) {
		t.Errorf("a broker that could not listen made its database %s (%v)", db, serr)
	}
}

// TestServe_DatabaseFolderMissing: a --db in a folder that does not exist
// says so, rather than that the folder "cannot be written" because of a
// probe file, named with random digits, that the operator never made.
func TestServe_DatabaseFolderMissing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nope", "sub")
	out, err := exec.Command(serveBinary(t), "serve", "--addr", "127.0.0.1:0", "--db", filepath.Join(dir, "b.db")).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("exit %v, want 1:\n%s", err, out)
	}
	if !strings.Contains(string(out), "its folder "+dir+" does not exist") || strings.Contains(string(out), "spinbroker-probe") {
		t.Fatalf("the message does not say the folder is missing:\n%s", out)
	}
}

func TestServe_JSONLogsAndMigrate(t *testing.T) {
	db := filepath.Join(t.TempDir(), "m.db")
	out, err := exec.Command(serveBinary(t), "migrate", "up", "--db", db).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "00001_schema.sql") {
		t.Fatalf("migrate up: %v\n%s", err, out)
	}
	out, err = exec.Command(serveBinary(t), "migrate", "status", "--db", db).CombinedOutput()
	if err != nil || strings.Contains(string(out), "pending") {
		t.Fatalf("migrate status: %v\n%s", err, out)
	}
	b := startBroker(t, db, "--log-format", "json", "--check")
	b.stop(t)
	if !strings.Contains(b.logs.String(), `"msg":"integrity check passed"`) {
		t.Fatalf("json logs:\n%s", b.logs)
	}
	// Durations read as durations, not nanoseconds.
	if !strings.Contains(b.logs.String(), `"staging_ttl":"24h0m0s"`) || !strings.Contains(b.logs.String(), `"timeout":"10s"`) {
		t.Fatalf("durations in json logs:\n%s", b.logs)
	}
}

// TestServe_GCPercent: serve runs Go's collector at GOGC=200 unless the
// environment sets GOGC, which it then leaves alone.
func TestServe_GCPercent(t *testing.T) {
	for _, c := range []struct{ env, want string }{{"", "200"}, {"150", "150"}} {
		t.Setenv("GOGC", c.env)
		b := startBroker(t, filepath.Join(t.TempDir(), "broker.db"))
		resp, err := http.Get(b.url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if want := "\ngo_gc_gogc_percent " + c.want + "\n"; !strings.Contains(string(body), want) {
			t.Errorf("GOGC=%q: /metrics lacks %q", c.env, strings.TrimSpace(want))
		}
	}
}

// TestServe_OneBrokerPerDatabase: a second serve on a database a broker
// serves exits 1 naming the first one's pid, as does migrate up; tokens
// and migrate status work beside it. Once the first stops, or is killed,
// a broker starts on the database again.
func TestServe_OneBrokerPerDatabase(t *testing.T) {
	bin := serveBinary(t)
	db := filepath.Join(t.TempDir(), "one.db")
	first := startBroker(t, db)
	pid := fmt.Sprintf("pid %d", first.cmd.Process.Pid)

	// Old builds started a second broker, which would run until killed.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, args := range [][]string{
		{"serve", "--addr", "127.0.0.1:0", "--db", db},
		{"migrate", "up", "--db", db},
	} {
		out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
			t.Fatalf("%v beside a broker: exit %v, want 1:\n%s", args[:2], err, out)
		}
		if !strings.Contains(string(out), "one.db is in use") || !strings.Contains(string(out), pid) {
			t.Fatalf("%v: the message does not name the database and the broker's %s:\n%s", args[:2], pid, out)
		}
	}
	for _, args := range [][]string{
		{"migrate", "status", "--db", db},
		{"token", "create", "--db", db, "--role", "viewer", "--name", "beside"},
	} {
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("%v beside a broker: %v\n%s", args[:2], err, out)
		}
	}
	resp, err := http.Get(first.url + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("the first broker after the refused starts: %v %v", resp, err)
	}
	resp.Body.Close()

	if err := first.stop(t); err != nil {
		t.Fatalf("first broker's exit: %v\n%s", err, first.logs)
	}
	second := startBroker(t, db)
	second.cmd.Process.Kill()
	<-second.done
	// SIGKILL leaves the lock file but not the lock.
	third := startBroker(t, db)
	third.stop(t)
}

// TestHelp_DatabaseCommandsHideClientFlags: serve, migrate, backup and
// token work on a database file; their help does not offer --url and
// --token, which only the commands that talk to a broker use.
func TestHelp_DatabaseCommandsHideClientFlags(t *testing.T) {
	for _, args := range [][]string{{"serve", "--help"}, {"migrate", "status", "--help"}, {"backup", "--help"}, {"compact", "--help"}, {"check", "--help"}, {"token", "create", "--help"}} {
		r := spin(t, args...)
		if r.code != 0 || strings.Contains(r.stdout, "--url") || strings.Contains(r.stdout, "--token string") || !strings.Contains(r.stdout, "--db") {
			t.Errorf("%v: %s", args, r)
		}
	}
	r := spin(t, "queue", "ls", "--help")
	if r.code != 0 || !strings.Contains(r.stdout, "--url") || !strings.Contains(r.stdout, "--token") {
		t.Errorf("queue ls --help: %s", r)
	}
	// And refused where given: a 'token create --url' would otherwise seem
	// to make a token on that broker, and write one into a local file.
	if r := spin(t, "migrate", "up", "--db", filepath.Join(t.TempDir(), "h.db"), "--url", "http://x"); r.code != 2 || !strings.Contains(r.stderr, "--url is for the commands that talk to a broker") {
		t.Errorf("migrate up with --url: %s", r)
	}
}

// TestHelp_OneDatabasePathForAService: the --help examples, the README and
// the heads of examples/systemd's units all name the service's database by
// the path its unit serves. 'token create' makes a database that does not
// exist yet, so a token made on another path (an example's, or none at all:
// ./spinbroker.db) is one the broker never sees, and its agent gets 401.
func TestHelp_OneDatabasePathForAService(t *testing.T) {
	unit, err := os.ReadFile("../../examples/systemd/spinbroker.service")
	if err != nil {
		t.Fatal(err)
	}
	served := regexp.MustCompile(`(?m)^ExecStart=.* --db (\S+)`).FindSubmatch(unit)
	if served == nil {
		t.Fatal("spinbroker.service: no ExecStart with --db")
	}
	want := string(served[1])
	texts := map[string]string{}
	a := &app{stdout: io.Discard, stderr: io.Discard}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			walk(sub)
		}
		texts[c.CommandPath()+" --help"] = c.Long + "\n" + c.Example
	}
	walk(a.rootCommand())
	files, _ := filepath.Glob("../../examples/systemd/*.service")
	for _, f := range append(files, "../../README.md") {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		texts[f] = string(b)
	}
	path := regexp.MustCompile(`/var/lib/spinbroker/[\w.-]+\.db`)
	for name, text := range texts {
		for _, p := range path.FindAllString(text, -1) {
			if p != want {
				t.Errorf("%s names the database %s; the service serves %s", name, p, want)
			}
		}
	}
	// Each unit's head says how to make its token, on that database.
	for _, f := range files {
		b, _ := os.ReadFile(f)
		var head []string
		for _, line := range strings.Split(string(b), "\n") {
			if !strings.HasPrefix(line, "#") {
				break
			}
			head = append(head, strings.Fields(strings.TrimPrefix(line, "#"))...)
		}
		if h := strings.Join(head, " "); !strings.Contains(h, "spinbroker token create --db "+want) {
			t.Errorf("%s: its head does not say to make the token with spinbroker token create --db %s:\n%s", filepath.Base(f), want, h)
		}
	}
}

// TestServe_HardLinkedDatabase: a second broker started through a hard
// link to the database a broker serves (ln one.db two.db) exits 1 at once,
// saying why, rather than serve the same file with a lock, a -wal and a
// -shm of its own beside the first, corrupting it; so do migrate up and
// compact through the link. The first broker goes on, a backup beside it
// still works, and the link, once removed, leaves nothing behind.
func TestServe_HardLinkedDatabase(t *testing.T) {
	bin := serveBinary(t)
	dir := t.TempDir()
	db, other := filepath.Join(dir, "one.db"), filepath.Join(dir, "two.db")
	first := startBroker(t, db)
	if err := os.Link(db, other); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, args := range [][]string{
		{"serve", "--addr", "127.0.0.1:0", "--db", other},
		{"migrate", "up", "--db", other},
		{"compact", "--db", other},
	} {
		out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
			t.Fatalf("%v through a hard link beside a broker: exit %v, want 1:\n%s", args[:2], err, out)
		}
		if !strings.Contains(string(out), "two.db has 2 hard links") || !strings.Contains(string(out), "-samefile") {
			t.Fatalf("%v: the message does not say why:\n%s", args[:2], out)
		}
	}
	for _, f := range []string{other + "-wal", other + "-shm"} {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("a refused start made %s", filepath.Base(f))
		}
	}
	if out, err := exec.Command(bin, "backup", "--db", db, "--to", filepath.Join(dir, "b.db")).CombinedOutput(); err != nil {
		t.Fatalf("a backup beside the broker: %v\n%s", err, out)
	}
	resp, err := http.Get(first.url + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("the first broker after the refused starts: %v %v", resp, err)
	}
	resp.Body.Close()
	if err := os.Remove(other); err != nil {
		t.Fatal(err)
	}
	if err := first.stop(t); err != nil {
		t.Fatalf("first broker's exit: %v\n%s", err, first.logs)
	}
	again := startBroker(t, db)
	again.stop(t)
}

// TestServe_HelpSaysHowAStopEnds: serve --help says, at --shutdown-timeout,
// what README does: requests still running at the timeout are cut off,
// and a second signal ends the process at once. An operator reads --help
// to choose the timeout and to know what a second Ctrl-C does.
func TestServe_HelpSaysHowAStopEnds(t *testing.T) {
	out, err := exec.Command(serveBinary(t), "serve", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("serve --help: %v\n%s", err, out)
	}
	var line string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "--shutdown-timeout") {
			line = l
		}
	}
	for _, want := range []string{"cut off", "a second signal ends the process at once"} {
		if !strings.Contains(line, want) {
			t.Errorf("--shutdown-timeout's help does not say %q: %q", want, line)
		}
	}
}

// TestServe_ProfilerStopsWithBroker: the --pprof-addr server is shut down
// with the API's, in the same --shutdown-timeout: a profile being taken
// finishes when it can, is cut off with a line that says so when it
// cannot, and the profiler's end is logged. It was left to the process's
// exit, which cut off any profile without a word.
func TestServe_ProfilerStopsWithBroker(t *testing.T) {
	profilerRE := regexp.MustCompile(`msg="profiler listening" addr=(\S+)`)
	start := func(t *testing.T) (*serveProc, string) {
		b := startBroker(t, filepath.Join(t.TempDir(), "p.db"), "--pprof-addr", "127.0.0.1:0", "--shutdown-timeout", "2s")
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if m := profilerRE.FindStringSubmatch(b.logs.String()); m != nil {
				return b, "http://" + m[1]
			}
			if time.Now().After(deadline) {
				t.Fatalf("no profiler listening:\n%s", b.logs)
			}
		}
	}
	// profile asks for a CPU profile of secs seconds; its result comes on
	// the channel: the status, or -1 when the answer was cut off.
	profile := func(url string, secs int) <-chan int {
		got := make(chan int, 1)
		go func() {
			resp, err := http.Get(fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", url, secs))
			if err != nil {
				got <- -1
				return
			}
			defer resp.Body.Close()
			if _, err := io.Copy(io.Discard, resp.Body); err != nil {
				got <- -1
				return
			}
			got <- resp.StatusCode
		}()
		return got
	}
	stop := func(t *testing.T, b *serveProc) string {
		if err := b.stop(t); err != nil {
			t.Fatalf("exit: %v\n%s", err, b.logs)
		}
		return b.logs.String()
	}

	t.Run("idle", func(t *testing.T) {
		b, _ := start(t)
		logs := stop(t, b)
		i, j := strings.Index(logs, `level=INFO msg="profiler stopped"`), strings.Index(logs, `msg=stopped`)
		if i < 0 || j < 0 || i > j {
			t.Errorf("want the profiler's stop logged at info before the broker's:\n%s", logs)
		}
	})
	t.Run("profile finishes", func(t *testing.T) {
		b, url := start(t)
		got := profile(url, 1)
		time.Sleep(300 * time.Millisecond) // the profile has started
		logs := stop(t, b)
		if code := <-got; code != http.StatusOK {
			t.Errorf("a 1s profile taken as a 2s shutdown began: %d, want 200\n%s", code, logs)
		}
		if !strings.Contains(logs, `level=INFO msg="profiler stopped"`) {
			t.Errorf("the profiler's stop is not logged:\n%s", logs)
		}
	})
	t.Run("profile cut off", func(t *testing.T) {
		b, url := start(t)
		got := profile(url, 30)
		time.Sleep(300 * time.Millisecond)
		logs := stop(t, b)
		select {
		case code := <-got:
			if code != -1 {
				t.Errorf("a 30s profile cut off by a 2s shutdown: %d, want a cut-off answer", code)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the profile's request goes on after the broker stopped")
		}
		if !strings.Contains(logs, `level=WARN msg="profiles still being taken at the shutdown timeout were cut off"`) {
			t.Errorf("the cut-off profile is not logged:\n%s", logs)
		}
	})
}

// TestServe_HelpSaysStagingTTLBounds: serve --help gives --staging-ttl's
// lower bound, as README does, so that an operator picks a value that
// starts rather than learning it from the refusal.
func TestServe_HelpSaysStagingTTLBounds(t *testing.T) {
	out, err := exec.Command(serveBinary(t), "serve", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("serve --help: %v\n%s", err, out)
	}
	var line string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "--staging-ttl") {
			line = l
		}
	}
	for _, want := range []string{"10m or more", "0 keeps them"} {
		if !strings.Contains(line, want) {
			t.Errorf("--staging-ttl's help does not say %q: %q", want, line)
		}
	}
}

// TestMigrateDown_SaysHowToGoBack: there is no 'migrate down' (a broker
// refuses a database a newer one migrated, and the way back is the backup
// taken before the upgrade); an operator rolling back who asks for one is
// told so, not only that the word is not status or up, and the database is
// left as it was.
func TestMigrateDown_SaysHowToGoBack(t *testing.T) {
	db := filepath.Join(t.TempDir(), "d.db")
	if r := spin(t, "migrate", "up", "--db", db); r.code != 0 {
		t.Fatalf("migrate up: %s", r)
	}
	before, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	for _, word := range []string{"down", "down-to", "rollback"} {
		r := spin(t, "migrate", word, "--db", db)
		if r.code != 2 || !strings.Contains(r.stderr, "no 'migrate "+word+"'") || !strings.Contains(r.stderr, "restore the backup") {
			t.Errorf("migrate %s: %s", word, r)
		}
	}
	if after, err := os.ReadFile(db); err != nil || !bytes.Equal(before, after) {
		t.Fatalf("migrate down changed the database (%v)", err)
	}
	if r := spin(t, "migrate", "sideways", "--db", db); r.code != 2 || !strings.Contains(r.stderr, `want status or up, not "sideways"`) {
		t.Errorf("migrate sideways: %s", r)
	}
}
