package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spin-broker/spinbroker/internal/syncbuf"
)

func TestBenchCompare(t *testing.T) {
	dir := t.TempDir()
	sb := filepath.Join(dir, "sb.json")
	peers := filepath.Join(dir, "peers.json")
	os.WriteFile(sb, []byte(`{"scenario":"throughput","protocol":"inline","commands_per_sec":3300,"sync":"normal","ok":true}
{"scenario":"throughput","protocol":"inline","commands_per_sec":2000,"sync":"full","ok":true}
{"scenario":"backlog","micros_per_next_complete":400,"sync":"normal","ok":true}
{"ceiling":true,"scenario":"throughput","protocol":"inline","commands_per_sec":11000,"sync":"normal","ok":true}
`), 0o644)
	os.WriteFile(peers, []byte(`not json, a progress line
{"peer":"river","sync":"normal","jobs":20000,"jobs_per_sec":1100,"duplicates":0,"lost":0}
{"peer":"goqite","sync":"normal","jobs":20000,"jobs_per_sec":1650,"duplicates":0,"lost":0}
{"peer":"river","sync":"full","jobs":20000,"jobs_per_sec":500,"duplicates":0,"lost":0}
`), 0o644)
	r := spin(t, "bench", "--compare", sb+","+peers)
	if r.code != 0 {
		t.Fatalf("compare: %s", r)
	}
	for _, want := range []string{"spin-broker inline  normal        3300      3.0       2.0  30%", "spin-broker inline  full          2000      4.0  18%", "full/normal  61%",
		"ceiling inline  no storage  11000"} {
		if !strings.Contains(strings.Join(strings.Fields(r.stdout), " "), strings.Join(strings.Fields(want), " ")) {
			t.Errorf("compare output lacks %q:\n%s", want, r.stdout)
		}
	}
	os.WriteFile(peers, []byte(`{"peer":"river","sync":"normal","jobs_per_sec":1100,"duplicates":1,"lost":0}`), 0o644)
	if r := spin(t, "bench", "--compare", sb+","+peers); r.code != 1 {
		t.Errorf("a run that duplicated work must fail the comparison: %s", r)
	}
}

// Flag values that would fail late, hang or measure something else than the
// report names are usage errors, before any broker is started.
// TestBenchCompare_Nothing: files without a line to compare (empty, a
// progress log, a remote run's lines) fail, rather than print an empty
// table and exit 0.
func TestBenchCompare_Nothing(t *testing.T) {
	dir := t.TempDir()
	empty, remote := filepath.Join(dir, "empty"), filepath.Join(dir, "remote.json")
	os.WriteFile(empty, nil, 0o644)
	os.WriteFile(remote, []byte("progress...\n{\"scenario\":\"wakeup\",\"ok\":true}\n"), 0o644)
	r := spin(t, "bench", "--compare", empty+","+remote)
	if r.code != 1 || !strings.Contains(r.stderr, "nothing to compare in "+empty) {
		t.Errorf("compare of nothing: %s", r)
	}
}

func TestBenchRefusesBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--commands", "0"}, {"--agents", "-1"}, {"--protocol", "claim", "--claim", "0"},
		{"--protocol", "x"}, {"--sync", "x"}, {"--scenarios", "throughput,nope"},
		{"--scenarios", "backlog", "--blocked", "2"}, {"--scenarios", "backlog", "--blocked", "-1"},
		{"--scenarios", "backlog", "--backlog", "2000"}, {"--scenarios", "wakeup", "--wakeups", "0"},
	} {
		r := spin(t, append([]string{"bench"}, args...)...)
		if r.code != 2 || !strings.Contains(r.stderr, "Run 'spinbroker bench --help'") {
			t.Errorf("bench %v: want a usage error (exit 2), got %s", args, r)
		}
	}
}

// TestBench_CtrlC: a Ctrl-C at the terminal (SIGINT to bench's whole
// process group) stops the run with exit 130, and the broker bench
// started is stopped cleanly, its database closed (no -wal left), rather
// than taking the terminal's signal too and then bench's as a second one
// that ends it at once.
func TestBench_CtrlC(t *testing.T) {
	cmd := exec.Command(serveBinary(t), "bench", "--scenarios", "wakeup", "--wakeups", "100000", "--keep")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stderr syncbuf.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }() //nolint:errcheck // the exit code is checked
	var kids []string                       // bench's children: its broker
	t.Cleanup(func() {
		// A failed check leaves no bench, nor its broker, running.
		for _, kid := range kids {
			if pid, err := strconv.Atoi(kid); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		select {
		case <-done:
		default:
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	})
	dbDir := regexp.MustCompile(`database in (\S+)`)
	deadline := time.Now().Add(30 * time.Second)
	for !dbDir.MatchString(stderr.String()) || !fileExists(filepath.Join(dbDir.FindStringSubmatch(stderr.String())[1], "bench.db-wal")) {
		if time.Now().After(deadline) {
			t.Fatalf("bench did not start its broker:\n%s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // into the run
	dir := dbDir.FindStringSubmatch(stderr.String())[1]
	t.Cleanup(func() { os.RemoveAll(dir) })
	// The broker is bench's child (of whichever of its threads forked it),
	// in a process group of its own.
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", cmd.Process.Pid))
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		kids = append(kids, strings.Fields(string(b))...)
	}
	if len(kids) == 0 {
		t.Fatalf("bench (pid %d) has no child process", cmd.Process.Pid)
	}
	for _, kid := range kids {
		stat, err := os.ReadFile("/proc/" + kid + "/stat")
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if f[2] == strconv.Itoa(cmd.Process.Pid) {
			t.Errorf("the broker (pid %s) is in bench's process group: a Ctrl-C reaches it too", kid)
		}
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("bench still running 30s after Ctrl-C:\n%s", stderr.String())
	}
	if code := cmd.ProcessState.ExitCode(); code != 130 {
		t.Errorf("exit %d, want 130:\n%s", code, stderr.String())
	}
	if fileExists(filepath.Join(dir, "bench.db-wal")) {
		log, _ := os.ReadFile(filepath.Join(dir, "broker.log"))
		t.Errorf("the broker's database was not closed (its -wal is left); its log:\n%s", log)
	}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
