package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/client"
	"github.com/spin-broker/spinbroker/internal/store"
)

// tinyDisk mounts a small tmpfs for the duration of the test: a real file
// system that really fills up and can really turn read-only.
func tinyDisk(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a tmpfs for the disk-full test (needs root, as CI has): %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

// fill writes a file until the file system is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			return // ENOSPC: full
		}
	}
}

// TestFaults_DiskFull: a full disk makes writes answer 503 unavailable (with
// a log line) while reads keep working; when the disk recovers, so does the
// broker, without a restart and with nothing lost. (A database that turns
// read-only while open is tested in internal/store: a file system cannot be
// remounted read-only under a process that holds files open to write.)
func TestFaults_DiskFull(t *testing.T) {
	dir := tinyDisk(t, "3m")
	db := filepath.Join(dir, "broker.db")
	b := startBroker(t, db)
	c, err := client.New(b.url)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// Big parameters make every package take real space.
	params := []byte(fmt.Sprintf(`{"blob": %q}`, strings.Repeat("x", 16<<10)))
	create := func() (*spinbroker.Package, error) {
		return c.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{{Resource: "disk", Action: "x", Parameters: params}}})
	}
	var kept []string
	for i := 0; i < 5; i++ {
		p, err := create()
		if err != nil {
			t.Fatal(err)
		}
		kept = append(kept, p.ID)
	}

	filler := filepath.Join(dir, "filler")
	fill(t, filler)
	var full error
	for i := 0; i < 200 && full == nil; i++ {
		var p *spinbroker.Package
		if p, full = create(); full == nil {
			kept = append(kept, p.ID) // the WAL still had room
		}
	}
	if code := spinbroker.ErrorCode(full); code != spinbroker.EUNAVAILABLE {
		t.Fatalf("a write to a full disk answered %v (%s), want unavailable", full, code)
	}
	// /healthz answers (the broker serves reads, and answers writes 503
	// with the cause) but says writes fail, and so does a gauge.
	health := func() string {
		t.Helper()
		resp, err := http.Get(b.url + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("/healthz answered %d: %s", resp.StatusCode, body)
		}
		return string(body)
	}
	if h := health(); !strings.Contains(h, `"status":"degraded"`) || !strings.Contains(h, "full") {
		t.Fatalf("/healthz on a full disk: %s", h)
	}
	// ping says so, and warns, but exits 0: the host that asks is set up
	// right, and reads work.
	if p := spin(t, "ping", "--url", b.url); p.code != 0 || !strings.Contains(p.stdout, "Health:  degraded: writes failing: ") ||
		!strings.Contains(p.stdout, "full") || !strings.Contains(p.stderr, "warning: the broker is degraded") {
		t.Errorf("ping of a broker on a full disk: %s", p)
	}
	if v := metric(t, b.url, "spinbroker_store_writes_failing"); v != 1 {
		t.Fatalf("spinbroker_store_writes_failing is %v on a full disk", v)
	}
	if _, err := c.Package(ctx, kept[0]); err != nil {
		t.Fatalf("reads must work on a full disk: %v", err)
	}
	waitLog(t, b, "database unavailable")
	// The refusal names the request, and the broker's log line has that id.
	var ce *client.Error
	if !errors.As(full, &ce) || len(ce.RequestID) != 16 {
		t.Fatalf("the 503 carries no request id: %#v", full)
	}
	waitLog(t, b, "request_id="+ce.RequestID)
	r := spin(t, "message", "new", "--url", b.url)
	m := regexp.MustCompile(`\(unavailable, request ([0-9a-f]{16})\)`).FindStringSubmatch(r.stderr)
	if m == nil {
		t.Fatalf("the CLI on a full disk does not name the request: %s", r)
	}
	if r.code != exitTryAgain {
		t.Fatalf("the CLI on a full disk: exit %d, want %d (the same write may work once there is room)\n%s", r.code, exitTryAgain, r)
	}
	waitLog(t, b, "request_id="+m[1])

	// The disk recovers: /healthz finds out before any write comes, and
	// writes work again, without a restart.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if h := health(); h != `{"status":"ok"}`+"\n" {
		t.Fatalf("/healthz once the disk recovered: %q", h)
	}
	if v := metric(t, b.url, "spinbroker_store_writes_failing"); v != 0 {
		t.Fatalf("spinbroker_store_writes_failing is %v once the disk recovered", v)
	}
	p, err := create()
	if err != nil {
		t.Fatalf("after the disk recovered: %v", err)
	}
	kept = append(kept, p.ID)

	// Nothing acknowledged was lost, across a clean restart too.
	b.stop(t)
	b = startBroker(t, db)
	c, _ = client.New(b.url)
	for _, id := range kept {
		if _, err := c.Package(ctx, id); err != nil {
			t.Fatalf("acknowledged package %s lost: %v", id, err)
		}
	}
	t.Logf("%d acknowledged packages kept through a full disk", len(kept))
}

// TestFaults_DiskFullSmallWritesFit: on a full disk a small write can still
// commit into WAL space that a failed large one allocated (a heartbeat, a
// queue setting, /healthz's own probe), while every create fails. Such a
// commit is no recovery: /healthz stays degraded and the gauge 1 until the
// file system has room again, so that an alert on the gauge does not flap
// off while creates answer 503.
func TestFaults_DiskFullSmallWritesFit(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs for a full disk needs root")
	}
	dir := tinyDisk(t, "3m")
	b := startBroker(t, filepath.Join(dir, "broker.db"))
	c, err := client.New(b.url)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	big := []byte(fmt.Sprintf(`{"blob": %q}`, strings.Repeat("x", 900<<10)))
	create := func() error {
		_, err := c.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{{Resource: "disk", Action: "x", Parameters: big}}})
		return err
	}
	// A full disk but for 256 KiB: the large create takes them and fails.
	filler := filepath.Join(dir, "filler")
	fill(t, filler)
	fi, err := os.Stat(filler)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filler, fi.Size()-256<<10); err != nil {
		t.Fatal(err)
	}
	if err := create(); spinbroker.ErrorCode(err) != spinbroker.EUNAVAILABLE {
		t.Fatalf("a create larger than the room left answered %v, want unavailable", err)
	}
	two := 2
	if _, err := c.SetQueue(ctx, "small", spinbroker.QueueSettings{Concurrency: &two}); err != nil {
		t.Fatalf("a small write on the full disk: %v", err)
	}
	resp, err := http.Get(b.url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"status":"degraded"`) || !strings.Contains(string(body), "full") {
		t.Errorf("/healthz after a small write on a full disk: %s", body)
	}
	if v := metric(t, b.url, "spinbroker_store_writes_failing"); v != 1 {
		t.Errorf("spinbroker_store_writes_failing is %v after a small write on a full disk", v)
	}
	if err := create(); spinbroker.ErrorCode(err) != spinbroker.EUNAVAILABLE {
		t.Fatalf("the large create, still on a full disk: %v", err)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	resp, err = http.Get(b.url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != `{"status":"ok"}`+"\n" {
		t.Fatalf("/healthz once the disk has room: %s", body)
	}
	if err := create(); err != nil {
		t.Fatalf("the large create once the disk has room: %v", err)
	}
}

// TestFaults_StartOnFullDisk: a broker started on a full disk (its -shm
// cannot be made) says that the disk is full, not only SQLite's "disk I/O
// error (4874)", which reads as failing hardware.
func TestFaults_StartOnFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs for a full disk needs root")
	}
	dir := tinyDisk(t, "1m")
	db := filepath.Join(dir, "broker.db")
	if out, err := exec.Command(serveBinary(t), "migrate", "up", "--db", db).CombinedOutput(); err != nil {
		t.Fatalf("migrate up: %v\n%s", err, out)
	}
	fill(t, filepath.Join(dir, "filler"))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, serveBinary(t), "serve", "--addr", "127.0.0.1:0", "--db", db).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || ctx.Err() != nil {
		t.Fatalf("exit %v, want 1 at once:\n%s", err, out)
	}
	if !strings.Contains(string(out), "the file system of "+dir+" is full") {
		t.Fatalf("the message does not say the disk is full:\n%s", out)
	}
}

// TestFaults_ReadOnlyFileSystem: a broker asked to serve a database on a
// read-only file system says so and exits, rather than serving errors.
func TestFaults_ReadOnlyFileSystem(t *testing.T) {
	dir := tinyDisk(t, "1m")
	if out, err := exec.Command("mount", "-o", "remount,ro", dir).CombinedOutput(); err != nil {
		t.Fatalf("remount ro: %v %s", err, out)
	}
	out, err := exec.Command(serveBinary(t), "serve", "--addr", "127.0.0.1:0", "--db", filepath.Join(dir, "b.db")).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("exit %v, want 1:\n%s", err, out)
	}
	if !strings.Contains(string(out), "b.db") || !strings.Contains(strings.ToLower(string(out)), "read") {
		t.Fatalf("the message does not say what is wrong:\n%s", out)
	}
}

// TestFaults_ReadOnlyDatabaseFile: a database file that cannot be written
// (immutable, or another user's and not writable for this one) in a folder
// that can stops the start, naming the file, rather than serving reads and
// answering every write 503 with /healthz saying "ok" until the first one.
// (SQLite opens such a file read-only without a word.)
func TestFaults_ReadOnlyDatabaseFile(t *testing.T) {
	db := filepath.Join(t.TempDir(), "ro.db")
	if out, err := exec.Command(serveBinary(t), "migrate", "up", "--db", db).CombinedOutput(); err != nil {
		t.Fatalf("migrate up: %v\n%s", err, out)
	}
	if os.Geteuid() == 0 {
		// Root writes whatever the mode says; not an immutable file.
		if out, err := exec.Command("chattr", "+i", db).CombinedOutput(); err != nil {
			t.Skipf("cannot make the file immutable here (chattr +i: %v %s): root would write it whatever its mode", err, out)
		}
		t.Cleanup(func() { exec.Command("chattr", "-i", db).Run() })
	} else if err := os.Chmod(db, 0o400); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, serveBinary(t), "serve", "--addr", "127.0.0.1:0", "--db", db).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || ctx.Err() != nil {
		t.Fatalf("exit %v, want 1 at once:\n%s", err, out)
	}
	if !strings.Contains(string(out), "ro.db cannot be written") || !strings.Contains(string(out), "readonly") {
		t.Fatalf("the message does not say the file cannot be written:\n%s", out)
	}
}

// waitLog waits for the broker to log want, failing the test after 30s.
func waitLog(t *testing.T, b *serveProc, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(b.logs.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("the broker never logged %q:\n%s", want, b.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFaults_CompactTempFull: compact writes its temporary copy where
// SQLite keeps temporary files (SQLITE_TMPDIR, TMPDIR, else /var/tmp or
// /tmp), often a small tmpfs apart from the database's disk. When that
// fills, compact said "cannot compact broker.db: database or disk is
// full", and the operator looked at the database's disk, which had room;
// it names the folder that is full, and what to set.
func TestFaults_CompactTempFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs for a full disk needs root")
	}
	tmp := tinyDisk(t, "1m")
	path := filepath.Join(t.TempDir(), "broker.db")
	st, err := store.Open(context.Background(), path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	params := json.RawMessage(`{"pad":"` + strings.Repeat("x", 1500) + `"}`)
	for range 4 {
		cmds := make([]spinbroker.NewCommand, 500)
		for i := range cmds {
			cmds[i] = spinbroker.NewCommand{Resource: "r", Action: "a", Parameters: params}
		}
		if _, _, err := st.CreatePackage(context.Background(), spinbroker.NewPackage{Commands: cmds, Enqueue: true}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(serveBinary(t), "compact", "--db", path)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp, "SQLITE_TMPDIR="+tmp)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("compact with a full temporary folder: %v, want exit 1:\n%s", err, out)
	}
	if !strings.Contains(string(out), "the file system of "+tmp+" is full") || !strings.Contains(string(out), "TMPDIR") {
		t.Fatalf("compact does not say that its temporary folder %s is full, and what to set:\n%s", tmp, out)
	}
}

// TestFaults_DatabaseOfAnotherUser: a database file this user may not read
// or write (most often one restored as root into the folder of a broker
// that runs as its own user) is said to be so, with its owner and mode, by
// every command on a database file: each said SQLite's "unable to open
// database file (14)", which names no cause.
func TestFaults_DatabaseOfAnotherUser(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "broker.db")
	if out, err := exec.Command(serveBinary(t), "migrate", "up", "--db", db).CombinedOutput(); err != nil {
		t.Fatalf("migrate up: %v\n%s", err, out)
	}
	bin := serveBinary(t)
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		// Root reads any file: the commands run as nobody, on a file
		// root keeps, in a folder nobody may write (as a restore as
		// root leaves it in the broker's own folder).
		const nobody = 65534
		cred = &syscall.Credential{Uid: nobody, Gid: nobody}
		pub := filepath.Join(t.TempDir(), "bin")
		if err := os.Mkdir(pub, 0o755); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		bin = filepath.Join(pub, "spinbroker")
		if err := os.WriteFile(bin, data, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, d := range []string{filepath.Dir(pub), filepath.Dir(dir)} {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chown(dir, nobody, nobody); err != nil {
			t.Fatal(err)
		}
		// The lock file is the broker's, as it was before the restore.
		if err := os.Chown(db+".lock", nobody, nobody); err != nil {
			t.Fatal(err)
		}
	} else if err := os.Chmod(db, 0); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"serve", "--addr", "127.0.0.1:0", "--db", db},
		{"check", "--db", db},
		{"backup", "--db", db, "--to", filepath.Join(dir, "b.db")},
		{"token", "ls", "--db", db},
		{"migrate", "status", "--db", db},
		{"migrate", "up", "--db", db},
		{"compact", "--db", db},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		cmd := exec.CommandContext(ctx, bin, args...)
		if cred != nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		}
		out, err := cmd.CombinedOutput()
		timedOut := ctx.Err() != nil
		cancel()
		if _, ok := err.(*exec.ExitError); !ok || timedOut {
			t.Errorf("%v: %v, want it to stop at once:\n%s", args, err, out)
			continue
		}
		if !strings.Contains(string(out), "permission denied") || !strings.Contains(string(out), "mode") || strings.Contains(string(out), "unable to open database file") {
			t.Errorf("%v does not say that this user may not open the file, and its owner and mode:\n%s", args, out)
		}
	}
}
