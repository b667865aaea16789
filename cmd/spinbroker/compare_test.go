package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
