package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// openPTY opens a pseudo-terminal: what the binary writes to tty, the test
// reads from pty. It skips the test where there is none.
func openPTY(t *testing.T) (pty, tty *os.File) {
	t.Helper()
	pty, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	var unlock int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, pty.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		pty.Close()
		t.Skipf("no pseudo-terminal: unlock: %v", e)
	}
	var n uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, pty.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		pty.Close()
		t.Skipf("no pseudo-terminal: number: %v", e)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		pty.Close()
		t.Skipf("no pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { pty.Close(); tty.Close() })
	return pty, tty
}

// spinTTY runs the binary with args, its stdout a terminal, and returns
// what it showed there (line ends as written, "\n") and its stderr.
func spinTTY(t *testing.T, args ...string) (shown, stderr string, code int) {
	t.Helper()
	pty, tty := openPTY(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := command(ctx, nil, args...)
	var errBuf bytes.Buffer
	cmd.Stdout, cmd.Stderr = tty, &errBuf
	read := make(chan string, 1)
	go func() {
		var out bytes.Buffer
		buf := make([]byte, 4096)
		for {
			n, err := pty.Read(buf)
			out.Write(buf[:n])
			if err != nil { // EIO once the binary and the test closed tty
				read <- out.String()
				return
			}
		}
	}()
	err := cmd.Run()
	tty.Close()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("spinbroker %s: %v", strings.Join(args, " "), err)
	}
	code = cmd.ProcessState.ExitCode()
	select {
	case shown = <-read:
	case <-time.After(10 * time.Second):
		t.Fatal("the terminal's output did not end")
	}
	return strings.ReplaceAll(shown, "\r\n", "\n"), errBuf.String(), code
}

// TestEmptyListsOnTerminal: an empty list shown on a terminal says that it
// is empty: a header row alone read as a command cut short, or one still
// to print. Piped, and as JSON, it stays what scripts read: the header
// alone, or an empty list, and nothing on stderr.
func TestEmptyListsOnTerminal(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	db := t.TempDir() + "/tokens.db"
	if r := spin(t, "migrate", "up", "--db", db); r.code != 0 {
		t.Fatalf("migrate up: %s", r)
	}
	for _, tt := range []struct {
		args   []string
		header string
		note   string
	}{
		{[]string{"package", "ls", "--url", b.url}, "ID  STATE  DONE  CREATED  FINISHED  REASON\n", "no packages\n"},
		{[]string{"package", "ls", "--state", "failed", "--url", b.url}, "ID  STATE  DONE  CREATED  FINISHED  REASON\n", "no packages in state failed\n"},
		{[]string{"queue", "ls", "--url", b.url}, "RESOURCE  CONCURRENCY  PAUSED  BLOCKED  READY  LEASED  OLDEST READY\n", "no queues\n"},
		{[]string{"token", "ls", "--db", db}, "ID  NAME  ROLE  RESOURCE  CREATED  REVOKED  EXPIRES\n", "no tokens\n"},
	} {
		shown, stderr, code := spinTTY(t, tt.args...)
		if code != 0 || shown != tt.header || stderr != tt.note {
			t.Errorf("%v on a terminal: exit %d, shown %q, stderr %q; want the header, and %q on stderr", tt.args, code, shown, stderr, tt.note)
		}
		if r := spin(t, tt.args...); r.code != 0 || r.stdout != tt.header || r.stderr != "" {
			t.Errorf("%v piped: %s", tt.args, r)
		}
		r := spin(t, append(tt.args, "-o", "json")...)
		if r.code != 0 || r.stderr != "" || !strings.Contains(r.stdout, "[]") {
			t.Errorf("%v -o json: %s", tt.args, r)
		}
		if shown, stderr, _ := spinTTY(t, append(tt.args, "-o", "json")...); shown != r.stdout || stderr != "" {
			t.Errorf("%v -o json on a terminal: shown %q, stderr %q; want %q as piped", tt.args, shown, stderr, r.stdout)
		}
	}
}

// TestBenchProgress: bench draws its progress on a terminal only, and not
// with --json; a backlog run's line names its phase and is cleared before
// each draw, since "timing: 5/2000" after "loading: 100000/100000" would
// otherwise keep the longer line's tail.
func TestBenchProgress(t *testing.T) {
	_, tty := openPTY(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	for _, tc := range []struct {
		name string
		out  io.Writer
		json bool
		want bool
	}{{"terminal", tty, false, true}, {"terminal --json", tty, true, false}, {"pipe", w, false, false}, {"buffer", &bytes.Buffer{}, false, false}} {
		if got := benchShowsProgress(tc.out, tc.json); got != tc.want {
			t.Errorf("%s: benchShowsProgress = %v, want %v", tc.name, got, tc.want)
		}
	}
	var b bytes.Buffer
	show := benchProgress(&b, "backlog")
	show("loading", 1500, 1500)
	show("timing", 5, 50)
	show("", 3, 10)
	if want := "\r\033[Kbacklog loading: 1500/1500\r\033[Kbacklog timing: 5/50\r\033[Kbacklog: 3/10"; b.String() != want {
		t.Errorf("progress drawn %q, want %q", b.String(), want)
	}
}
