package main

import (
	"bytes"
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
	if strings.Contains(r.stdout, "machine") {
		t.Errorf("lines without a machine (a bench older than the field) name none:\n%s", r.stdout)
	}

	// The machine the runs came from heads the table, and runs from more
	// than one are called out, since their ratios mean little.
	xeon := `"machine":{"cpu":"Intel(R) Xeon(R) Processor","cpus":2,"go":"go1.26.8","platform":"linux/amd64"}`
	epyc := `"machine":{"cpu":"AMD EPYC 7B13","cpus":2,"go":"go1.26.8","platform":"linux/amd64"}`
	os.WriteFile(sb, []byte(`{"scenario":"throughput","protocol":"inline","commands_per_sec":3300,"sync":"normal","ok":true,`+xeon+`}
{"scenario":"throughput","protocol":"seed","commands_per_sec":2300,"sync":"normal","ok":true,`+xeon+`}
`), 0o644)
	r = spin(t, "bench", "--compare", sb+","+peers)
	if first, _, _ := strings.Cut(r.stdout, "\n"); r.code != 0 || first != "machine: Intel(R) Xeon(R) Processor, 2 CPUs, go1.26.8 linux/amd64" {
		t.Errorf("compare of one machine's runs: want it named on the first line, got %s", r)
	}
	// A run with --parameter-bytes is another shape than the peers ran:
	// its own row, kept apart from the default run's, with no ratio.
	sized := filepath.Join(dir, "sized.json")
	os.WriteFile(sized, []byte(`{"scenario":"throughput","protocol":"inline","commands_per_sec":900,"parameter_bytes":16384,"sync":"normal","ok":true,`+xeon+`}`), 0o644)
	r = spin(t, "bench", "--compare", sb+","+sized+","+peers)
	var row string
	for _, line := range strings.Split(r.stdout, "\n") {
		if strings.Contains(line, "16384-byte") {
			row = strings.Join(strings.Fields(line), " ")
		}
	}
	if r.code != 0 || !strings.Contains(strings.Join(strings.Fields(r.stdout), " "), "spin-broker inline normal 3300 3.0") ||
		row != "spin-broker inline, 16384-byte parameters normal 900" {
		t.Errorf("compare of a sized run: want its own row without ratios beside the default's, got %s", r)
	}
	mixed := filepath.Join(dir, "mixed.json")
	os.WriteFile(mixed, []byte(`{"scenario":"throughput","protocol":"claim","commands_per_sec":14000,"sync":"normal","ok":true,`+epyc+`}`), 0o644)
	r = spin(t, "bench", "--compare", sb+","+mixed+","+peers)
	if r.code != 0 || !strings.Contains(r.stdout, "these runs come from 2 machines") ||
		!strings.Contains(r.stdout, "  AMD EPYC 7B13, 2 CPUs") || !strings.Contains(r.stdout, "  Intel(R) Xeon(R) Processor, 2 CPUs") {
		t.Errorf("compare of two machines' runs: want both named and the warning, got %s", r)
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
// TestCPUModel: the model name is read from /proc/cpuinfo as x86 and ARM
// kernels write it, and a file without one gives none rather than a guess.
func TestCPUModel(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R)   Processor\nflags\t\t: fpu\n\nprocessor\t: 1\nmodel name\t: other\n", "Intel(R) Xeon(R) Processor"},
		{"processor\t: 0\nBogoMIPS\t: 50.00\nCPU part\t: 0xd0c\n\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n", "Raspberry Pi 4 Model B Rev 1.4"},
		{"Hardware\t: BCM2835\nmodel name\t:\n", "BCM2835"},
		{"", ""},
		{"no colon here\n:\n", ""},
	} {
		if got := cpuModel(strings.NewReader(c.in)); got != c.want {
			t.Errorf("cpuModel(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestBenchCompare_Nothing(t *testing.T) {
	dir := t.TempDir()
	empty, remote := filepath.Join(dir, "empty"), filepath.Join(dir, "remote.json")
	os.WriteFile(empty, nil, 0o644)
	os.WriteFile(remote, []byte("progress...\n{\"scenario\":\"wakeup\",\"ok\":true}\n"+
		`{"scenario":"throughput","protocol":"inline","commands_per_sec":3300,"ok":true}`+"\n"), 0o644)
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
		{"--protocol", "claim", "--agents", "11", "--claim", "1000"}, {"--agents", "10001"},
		{"--parameter-bytes", "63"}, {"--parameter-bytes", "-1"}, {"--parameter-bytes", "983041"},
		{"--parameter-bytes", "200000"}, {"--protocol", "claim", "--size", "3", "--parameter-bytes", "400000"},
	} {
		r := spin(t, append([]string{"bench"}, args...)...)
		if r.code != 2 || !strings.Contains(r.stderr, "Run 'spinbroker bench --help'") {
			t.Errorf("bench %v: want a usage error (exit 2), got %s", args, r)
		}
	}
}

// benchRun is a bench process started for a test, with the broker it
// started.
type benchRun struct {
	cmd    *exec.Cmd
	done   chan struct{}
	stderr *syncbuf.Buffer
	dir    string // its kept database's folder
	broker int    // the broker's pid
}

// startBench starts a long bench run in a process group of its own (as a
// shell puts a foreground job), waits until its broker writes, and finds
// the broker among its children (of whichever of its threads forked it).
// Cleanup leaves neither running.
func startBench(t *testing.T) *benchRun {
	t.Helper()
	b := &benchRun{done: make(chan struct{}), stderr: &syncbuf.Buffer{}}
	b.cmd = exec.Command(serveBinary(t), "bench", "--scenarios", "wakeup", "--wakeups", "100000", "--keep")
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	b.cmd.Stderr = b.stderr
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { b.cmd.Wait(); close(b.done) }() //nolint:errcheck // the exit code is checked
	t.Cleanup(func() {
		// The broker first, while it is still bench's child (its pid
		// cannot be another's yet), then bench.
		if b.broker != 0 && parentOf(b.broker) == b.cmd.Process.Pid {
			syscall.Kill(b.broker, syscall.SIGKILL)
		}
		syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
		<-b.done
		if b.dir != "" {
			os.RemoveAll(b.dir)
		}
	})
	dbDir := regexp.MustCompile(`database in (\S+)`)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m := dbDir.FindStringSubmatch(b.stderr.String()); m != nil {
			b.dir = m[1]
			if fileExists(filepath.Join(b.dir, "bench.db-wal")) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("bench did not start its broker:\n%s", b.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", b.cmd.Process.Pid))
	for _, f := range tasks {
		kids, _ := os.ReadFile(f)
		for _, k := range strings.Fields(string(kids)) {
			b.broker, _ = strconv.Atoi(k)
		}
	}
	if b.broker == 0 {
		t.Fatalf("bench (pid %d) has no child process", b.cmd.Process.Pid)
	}
	return b
}

// parentOf is the parent pid of a process, 0 when it is gone (or a zombie
// being reaped).
func parentOf(pid int) int {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(f) < 3 || f[0] == "Z" {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// TestBench_CtrlC: a Ctrl-C at the terminal (SIGINT to bench's whole
// process group) stops the run with exit 130, and the broker bench
// started is stopped cleanly, its database closed (no -wal left), rather
// than taking the terminal's signal too and then bench's as a second one
// that ends it at once.
func TestBench_CtrlC(t *testing.T) {
	b := startBench(t)
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", b.broker))
	if err != nil {
		t.Fatal(err)
	}
	if f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:])); f[2] == strconv.Itoa(b.cmd.Process.Pid) {
		t.Errorf("the broker (pid %d) is in bench's process group: a Ctrl-C reaches it too", b.broker)
	}
	time.Sleep(500 * time.Millisecond) // into the run
	syscall.Kill(-b.cmd.Process.Pid, syscall.SIGINT)
	select {
	case <-b.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("bench still running 30s after Ctrl-C:\n%s", b.stderr.String())
	}
	if code := b.cmd.ProcessState.ExitCode(); code != 130 {
		t.Errorf("exit %d, want 130:\n%s", code, b.stderr.String())
	}
	if fileExists(filepath.Join(b.dir, "bench.db-wal")) {
		log, _ := os.ReadFile(filepath.Join(b.dir, "broker.log"))
		t.Errorf("the broker's database was not closed (its -wal is left); its log:\n%s", log)
	}
}

// TestBench_KilledWithItsGroup: a signal to bench's whole group that
// bench does not turn into a clean stop (timeout -s KILL, Ctrl-\, a CI
// job's end) ends its broker too, which, in a group of its own, would
// otherwise run on for ever.
func TestBench_KilledWithItsGroup(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGQUIT} {
		t.Run(sig.String(), func(t *testing.T) {
			b := startBench(t)
			syscall.Kill(-b.cmd.Process.Pid, sig)
			<-b.done
			// Orphaned, the broker is no one's child: wait for it to go.
			deadline := time.Now().Add(20 * time.Second)
			for syscall.Kill(b.broker, 0) == nil && !zombie(b.broker) {
				if time.Now().After(deadline) {
					syscall.Kill(b.broker, syscall.SIGKILL)
					t.Fatalf("%v to bench's group: its broker (pid %d) runs on", sig, b.broker)
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

// zombie reports whether pid has ended and waits to be reaped.
func zombie(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))[0] == "Z"
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// TestBenchCompare_RunFlagsRefused: --compare prints a table of earlier
// runs and runs nothing, so a flag for a run, or a JSON output it does not
// print, is a mistake in the command line (exit 2), where each was ignored:
// the script that asked for -o json got the table, exit 0.
func TestBenchCompare_RunFlagsRefused(t *testing.T) {
	file := filepath.Join(t.TempDir(), "runs.json")
	os.WriteFile(file, []byte(`{"scenario":"throughput","protocol":"inline","commands_per_sec":3300,"sync":"normal","ok":true}`+"\n"), 0o644)
	if r := spin(t, "bench", "--compare", file); r.code != 0 || !strings.Contains(r.stdout, "3300") {
		t.Fatalf("bench --compare: %s", r)
	}
	for _, extra := range [][]string{{"--json"}, {"-o", "json"}, {"--scenarios", "backlog"}, {"--protocol", "claim"}, {"--url", "http://localhost:1"}} {
		r := spin(t, append([]string{"bench", "--compare", file}, extra...)...)
		if r.code != 2 || !strings.Contains(r.stderr, "--compare") || !strings.Contains(r.stderr, "Run 'spinbroker bench --help'") {
			t.Errorf("bench --compare with %v: want a usage error naming --compare, got %s", extra, r)
		}
	}
}
