package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/brokertest"
	"github.com/spin-broker/spinbroker/internal/httpapi"
	"github.com/spin-broker/spinbroker/internal/loadgen"
)

// TestBench_HelpSaysExitStatus: a script that runs bench (a CI job sizing
// a broker) branches on its exit status, so the help says what each one
// means, and that a run that broke a rule still prints what it measured.
func TestBench_HelpSaysExitStatus(t *testing.T) {
	r := spin(t, "bench", "--help")
	if r.code != 0 {
		t.Fatalf("bench --help: %s", r)
	}
	help := strings.Join(strings.Fields(r.stdout), " ")
	for _, want := range []string{"Exit status:", "0 every run kept every rule", "1 a run broke a rule", "--json still prints", "2 a mistake in the command line", "130"} {
		if !strings.Contains(help, want) {
			t.Errorf("bench --help lacks %q:\n%s", want, r.stdout)
		}
	}
}

// TestBench_BrokenRuleExits1WithJSON: a broker that redelivers (here, one
// that says every command is on its second attempt) fails the run: exit 1,
// and --json still prints the scenario's object, with ok false and the
// violations, for the script that reads it.
func TestBench_BrokenRuleExits1WithJSON(t *testing.T) {
	b := serveBroker(t, brokertest.WithClock(), brokertest.Wrap(func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !strings.HasSuffix(r.URL.Path, "/next") {
				h.ServeHTTP(w, r)
				return
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			body := bytes.Replace(rec.Body.Bytes(), []byte(`"attempts":1,`), []byte(`"attempts":2,`), 1)
			for k, v := range rec.Header() {
				if k != "Content-Length" {
					w.Header()[k] = v
				}
			}
			w.WriteHeader(rec.Code)
			w.Write(body)
		})
	}))
	r := spin(t, "bench", "--url", b.url, "--producers", "1", "--resources", "1", "--commands", "20", "--json")
	if r.code != 1 || !strings.Contains(r.stderr, "broke a rule") {
		t.Fatalf("a run with redeliveries: want exit 1 and 'broke a rule', got %s", r)
	}
	var res struct {
		OK         *bool    `json:"ok"`
		Violations []string `json:"violations"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || res.OK == nil || *res.OK || len(res.Violations) == 0 {
		t.Fatalf("--json of a failed run: want its object with ok false and the violations (%v), got %s", err, r)
	}
}

// TestBench_OutputFlag: bench's help lists the global -o (table or json)
// among its flags. -o json prints what --json does, and a format it does
// not know is a usage error before anything runs, where both were
// ignored: a table, exit 0, for the script that asked for JSON.
func TestBench_OutputFlag(t *testing.T) {
	b := newBroker(t)
	if r := spin(t, "bench", "--url", b.url, "--scenarios", "wakeup", "--wakeups", "1", "-o", "yaml"); r.code != 2 || !strings.Contains(r.stderr, `--output must be table or json, not "yaml"`) {
		t.Errorf("bench -o yaml: want a usage error, got %s", r)
	}
	r := spin(t, "bench", "--url", b.url, "--scenarios", "wakeup", "--wakeups", "2", "-o", "json")
	var res struct {
		Scenario string  `json:"scenario"`
		OK       bool    `json:"ok"`
		Machine  machine `json:"machine"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &res) != nil || res.Scenario != "wakeup" || !res.OK {
		t.Errorf("bench -o json: want the scenario's JSON object, got %s", r)
	}
	if want := thisMachine(); res.Machine != want || res.Machine.CPUs != runtime.NumCPU() || res.Machine.Go != runtime.Version() {
		t.Errorf("bench -o json: want the machine %+v in its object, got %+v", want, res.Machine)
	}
	// The table names the machine once, above its first scenario.
	r = spin(t, "bench", "--url", b.url, "--scenarios", "wakeup", "--wakeups", "2")
	if first, _, _ := strings.Cut(r.stdout, "\n"); r.code != 0 || first != "generator's machine: "+thisMachine().String() {
		t.Errorf("bench: want its first line to name the generator's machine, got %s", r)
	}
}

// TestBench_BadURL: a --url that is no broker URL is a mistake in the
// command line (exit 2, as in the other commands), not a failed run of
// the first scenario (exit 1, "throughput: client: ...").
func TestBench_BadURL(t *testing.T) {
	for _, url := range []string{"localhost:8080", "ftp://x", "http://127.0.0.1:0"} {
		r := spin(t, "bench", "--url", url, "--scenarios", "wakeup", "--wakeups", "1")
		if r.code != 2 || !strings.Contains(r.stderr, `--url "`+url+`" is not a broker URL`) || !strings.Contains(r.stderr, "Run 'spinbroker bench --help'") {
			t.Errorf("bench --url %s: want a usage error, got %s", url, r)
		}
	}
}

// TestBench_SizeTheBrokerRefuses: a --size whose packages the broker
// would refuse is a usage error that names --size, before any broker is
// started, where the run failed on its first create with the broker's
// words ("commands[1001] may have at most 1000 dependencies", "the
// request body is larger than 1048576 bytes"), which name no flag.
func TestBench_SizeTheBrokerRefuses(t *testing.T) {
	b := newBroker(t)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--scenarios", "dependencies", "--size", "1002", "--commands", "1002"}, "--size must be at most 1001 in the dependencies scenario"},
		{[]string{"--scenarios", "dependencies", "--protocol", "seed", "--size", "1002", "--commands", "1002"}, "--size must be at most 1001 in the dependencies scenario"},
		{[]string{"--size", "10001", "--commands", "10001"}, "--size must be at most 10000 with --protocol inline"},
		{[]string{"--protocol", "claim", "--size", "10001", "--commands", "10001"}, "--size must be at most 10000 with --protocol claim"},
	} {
		r := spin(t, append([]string{"bench", "--url", b.url}, tt.args...)...)
		if r.code != 2 || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("bench %v: want a usage error saying %q, got %s", tt.args, tt.want, r)
		}
	}
}

// TestBench_SizeWithoutParameterBytes: the bound on a package created in
// one request, --size × (--parameter-bytes + 512), holds only when
// --parameter-bytes is given: it refused --size 5000 with the default
// parameters ("at most 2048 commands of 0 bytes"), whose requests the
// broker takes (10,000 of those commands are 958 KB), and which bench
// ran before --parameter-bytes came.
func TestBench_SizeWithoutParameterBytes(t *testing.T) {
	for _, c := range []benchConfig{
		{Config: loadgen.Config{Producers: 4, Resources: 8, Agents: 1, Size: 5000, Commands: 20000, Protocol: "inline", Claim: 100}},
		{Config: loadgen.Config{Producers: 4, Resources: 8, Agents: 1, Size: 10000, Commands: 20000, Protocol: "claim", Claim: 100}},
		{Config: loadgen.Config{Producers: 4, Resources: 8, Agents: 1, Size: 1, Commands: 10, Protocol: "inline", ParameterBytes: 983040}},
	} {
		c.scenarios, c.sync = "throughput", "normal"
		if err := c.check(); err != nil {
			t.Errorf("--protocol %s --size %d --parameter-bytes %d: %v", c.Protocol, c.Size, c.ParameterBytes, err)
		}
	}
	c := benchConfig{Config: loadgen.Config{Producers: 4, Resources: 8, Agents: 1, Size: 5, Commands: 20, Protocol: "inline", ParameterBytes: 983040}, scenarios: "throughput", sync: "normal"}
	if err := c.check(); err == nil || !strings.Contains(err.Error(), "--size × --parameter-bytes") {
		t.Errorf("--size 5 --parameter-bytes 983040: want it refused, got %v", err)
	}
}

// TestBench_SeedParameterBytesFitAnswer: with --protocol seed a package's
// commands each come in a request of their own, but its enqueue answers
// the package whole, every command's parameters in it (as does the read
// the check makes of it), and the client reads answers of up to 64 MiB:
// --size 70 --parameter-bytes 983040 passed the check, then its first
// enqueue failed ("larger than 64 MiB, more than spinbroker reads"),
// late, after 67 MB were sent. It is a usage error, before any run; 60
// such commands fit.
func TestBench_SeedParameterBytesFitAnswer(t *testing.T) {
	c := benchConfig{Config: loadgen.Config{Producers: 1, Resources: 1, Agents: 1, Size: 70, Commands: 70, Protocol: "seed", ParameterBytes: 983040}, scenarios: "throughput", sync: "normal"}
	if err := c.check(); err == nil || !strings.Contains(err.Error(), "--parameter-bytes") {
		t.Errorf("--protocol seed --size 70 --parameter-bytes 983040: want it refused naming --parameter-bytes, got %v", err)
	}
	c.scenarios = "dependencies"
	if err := c.check(); err == nil || !strings.Contains(err.Error(), "--parameter-bytes") {
		t.Errorf("--scenarios dependencies --protocol seed --size 70 --parameter-bytes 983040: want it refused, got %v", err)
	}
	c.scenarios, c.Size, c.Commands = "throughput", 60, 60
	if err := c.check(); err != nil {
		t.Errorf("--protocol seed --size 60 --parameter-bytes 983040: %v", err)
	}
}

// TestBench_ScenariosAll: the error for an unknown scenario lists "all"
// among the names it takes, then refused it beside another ("all,wakeup":
// 'unknown scenario "all"'); and " all" (a space after a comma, which
// the other names may have) was unknown too.
func TestBench_ScenariosAll(t *testing.T) {
	b := newBroker(t)
	r := spin(t, "bench", "--url", b.url, "--scenarios", "all,wakeup", "--wakeups", "1")
	if r.code != 2 || !strings.Contains(r.stderr, "--scenarios all runs every scenario: give it alone") {
		t.Errorf("--scenarios all,wakeup: want a usage error that says all stands alone, got %s", r)
	}
	r = spin(t, "bench", "--url", b.url, "--scenarios", " all", "--commands", "20", "--backlog", "20", "--samples", "10", "--wakeups", "1", "--json")
	if r.code != 0 || strings.Count(r.stdout, `"scenario"`) != 4 {
		t.Errorf("--scenarios ' all': want the four scenarios run, got %s", r)
	}
}

// TestBench_HelpOfURL: bench reads no $SPINBROKER_URL and has no default
// broker (without --url it starts its own), as its help's text says; its
// --url line said "(env SPINBROKER_URL) (default http://localhost:8080)",
// the other commands' line.
func TestBench_HelpOfURL(t *testing.T) {
	r := spin(t, "bench", "--help")
	var line string
	for _, l := range strings.Split(r.stdout, "\n") {
		if strings.Contains(l, "--url string") {
			line = l
		}
	}
	if r.code != 0 || line == "" || strings.Contains(line, "SPINBROKER_URL") || strings.Contains(line, "localhost:8080") || !strings.Contains(line, "without it, bench starts a broker of its own") {
		t.Errorf("bench --help, its --url line: %q\n%s", line, r)
	}
	if r := spin(t, "queue", "ls", "--help"); !strings.Contains(r.stdout, "broker URL (env SPINBROKER_URL)") {
		t.Errorf("queue ls --help lost its --url line:\n%s", r)
	}
}

// TestBench_TokenWithoutAdmin: bench gives work, takes it as an agent and
// sets its queues' concurrency, which together take an admin token; with a
// client token it said only "a client token may not do this (forbidden)",
// and "this" was nowhere on the screen.
func TestBench_TokenWithoutAdmin(t *testing.T) {
	path := filepath.Join(t.TempDir(), "auth.db")
	r := spin(t, "token", "create", "--db", path, "--role", "client", "--name", "ci")
	if r.code != 0 {
		t.Fatalf("token create: %s", r)
	}
	fields := strings.Fields(r.stdout)
	secret := fields[len(fields)-1]
	b := serveBroker(t, brokertest.WithFile(path), brokertest.WithAPI(httpapi.Options{Auth: true, TokenCacheTTL: time.Millisecond}))
	r = spin(t, "bench", "--url", b.url, "--token", secret, "--commands", "20")
	if r.code != 1 || !strings.Contains(r.stderr, "(forbidden)") || !strings.Contains(r.stderr, "it needs an admin token") {
		t.Errorf("bench with a client token: %s", r)
	}
}

// TestBench_NoBrokerAtURL: a --url where nothing listens is a failure
// (exit 1) that says so, and points at --url alone: bench reads no
// $SPINBROKER_URL, which the other commands' hint named.
func TestBench_NoBrokerAtURL(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	r := spin(t, "bench", "--url", url, "--scenarios", "wakeup", "--wakeups", "1")
	if r.code != 1 || !strings.Contains(r.stderr, "cannot reach the broker") || !strings.Contains(r.stderr, "connection refused") || strings.Contains(r.stderr, "SPINBROKER_URL") {
		t.Errorf("bench --url of no broker: %s", r)
	}
}

// TestBench_IgnoredFlagsRefused: a flag the run would ignore is a mistake
// in the command line (exit 2), not a run that measured something else
// than what was asked: --claim without the claim protocol, --sync or
// --keep with a broker of one's own.
func TestBench_IgnoredFlagsRefused(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "--claim", "50"},
		{"bench", "--protocol", "seed", "--claim", "50"},
		{"bench", "--url", "http://localhost:1", "--sync", "full"},
		{"bench", "--url", "http://localhost:1", "--keep"},
		{"bench", "--scenarios", "backlog,wakeup", "--parameter-bytes", "4096"},
	} {
		r := spin(t, args...)
		if r.code != 2 || !strings.Contains(r.stderr, "--") {
			t.Errorf("%v: %s", args, r)
		}
	}
	// The settings a run reports say "agent" for one. A broker of bench's
	// own is measured: its CPU, its memory, and its writer's busy time,
	// which cannot pass the run's.
	began := time.Now()
	r := spin(t, "bench", "--commands", "200", "--json")
	took := time.Since(began).Seconds()
	if r.code != 0 || !strings.Contains(r.stdout, `1 agent per resource`) {
		t.Errorf("bench --json: %s", r)
	}
	var res struct {
		CPU  float64 `json:"broker_cpu_seconds"`
		RSS  float64 `json:"broker_peak_rss_mib"`
		Busy float64 `json:"broker_writer_busy_seconds"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || res.CPU <= 0 || res.RSS <= 0 || res.Busy <= 0 || res.Busy > took {
		t.Errorf("bench --json: want the broker's CPU, memory and writer's busy time (under %.1fs), got %+v (%v) from %s", took, res, err, r)
	}
}

// TestGeneratorLine: the generator's CPU in a run's timed part, as a share
// of the CPUs it may use, with a warning near all of them.
func TestGeneratorLine(t *testing.T) {
	for _, c := range []struct {
		cpu, seconds float64
		procs        int
		want         string
		warn         bool
	}{
		{0, 1, 1, "", false},
		{0.5, 0, 1, "", false},
		{0.5, 1, 1, "  generator: 0.5s CPU (50% of its 1 CPU)", false},
		{0.96, 1, 1, "  generator: 1.0s CPU (96% of its 1 CPU); near all", true},
		{1.8, 1, 2, "  generator: 1.8s CPU (90% of its 2 CPUs); near all", true},
	} {
		got := generatorLine(c.cpu, c.seconds, c.procs)
		if !strings.HasPrefix(got, c.want) || (c.want == "") != (got == "") || c.warn != strings.Contains(got, "--procs") {
			t.Errorf("generatorLine(%v, %v, %d) = %q, want %q…", c.cpu, c.seconds, c.procs, got, c.want)
		}
	}
}

// TestBench_ProcsAtMostTheCPUs: --procs beyond the machine's CPUs is a
// usage error. It ran, reporting "generator on 3 of 2 CPUs" and its CPU
// as a share of CPUs it did not have; and a large one (--procs 100000)
// had the Go runtime start a thread per P until it died of "thread
// exhaustion", after minutes and gigabytes.
func TestBench_ProcsAtMostTheCPUs(t *testing.T) {
	n := runtime.NumCPU()
	for _, procs := range []string{strconv.Itoa(n + 1), "100000"} {
		r := spin(t, "bench", "--procs", procs, "--commands", "20")
		if want := fmt.Sprintf("--procs must be from 1 to %d (this machine's CPUs), not %s", n, procs); r.code != 2 || !strings.Contains(r.stderr, want) {
			t.Errorf("bench --procs %s: want exit 2 and %q, got %s", procs, want, r)
		}
	}
}

// TestBench_BrokerGoneMidRunExits1: a run that could not be made exits 1,
// as bench's help says, whatever stopped it: a broker that goes away in
// the middle of a run (its connection dropped) or a proxy whose broker is
// down (502) exited 4, a status bench's help does not list, where the
// same with no broker at all (refused) exits 1.
func TestBench_BrokerGoneMidRunExits1(t *testing.T) {
	for name, fault := range map[string]func(w http.ResponseWriter){
		"dropped": func(w http.ResponseWriter) {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
		},
		"502": func(w http.ResponseWriter) { http.Error(w, "bad gateway", http.StatusBadGateway) },
	} {
		b := serveBroker(t, brokertest.Wrap(func(h http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodPost && r.URL.Path == "/packages" {
					fault(w)
					return
				}
				h.ServeHTTP(w, r)
			})
		}))
		r := spin(t, "bench", "--url", b.url, "--producers", "1", "--resources", "1", "--commands", "20")
		if r.code != 1 || !strings.Contains(r.stderr, "throughput") {
			t.Errorf("bench against a broker %s mid-run: want exit 1 naming the scenario, got %s", name, r)
		}
	}
}

// TestBench_WriterBusyOfTheTimedPart: the writer's busy time a run reports,
// and its share "of the run", are of the part the run timed. The backlog
// scenario counted the loading of its queue too, which its timing leaves
// out, and printed "its writer busy 0.1s (530% of the run)".
func TestBench_WriterBusyOfTheTimedPart(t *testing.T) {
	r := spin(t, "bench", "--scenarios", "backlog", "--backlog", "10000", "--blocked", "0", "--samples", "10", "--json")
	var res struct {
		Seconds float64 `json:"seconds"`
		Busy    float64 `json:"broker_writer_busy_seconds"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); r.code != 0 || err != nil {
		t.Fatalf("bench --scenarios backlog --json: %v, %s", err, r)
	}
	// One writer cannot be busy longer than the time it is measured over;
	// the bound leaves the reads of /metrics around the timed part room.
	if res.Busy > 1.5*res.Seconds+0.03 {
		t.Errorf("the writer busy %.3fs in a timed part of %.3fs: the loading was counted", res.Busy, res.Seconds)
	}
}

// TestBench_ContradictoryFlagsRefused: a --protocol no run knows is
// a usage error whatever the scenarios, where --scenarios backlog (or
// wakeup) took --protocol bogus without a word; and --json beside an
// explicit -o table asks for two outputs at once.
func TestBench_ContradictoryFlagsRefused(t *testing.T) {
	for _, args := range [][]string{
		{"--scenarios", "wakeup", "--wakeups", "1", "--protocol", "bogus"},
		{"--scenarios", "wakeup", "--wakeups", "1", "--json", "-o", "table"},
	} {
		r := spin(t, append([]string{"bench"}, args...)...)
		if r.code != 2 || !strings.Contains(r.stderr, "Run 'spinbroker bench --help'") {
			t.Errorf("bench %v: want a usage error (exit 2), got %s", args, r)
		}
	}
}

// TestBench_SeedSizeAtMostAPackage: with --protocol seed a package is
// built one add at a time, and the broker refuses the add past its
// largest package: --size 50001 passed the check, then failed after
// 50,000 adds, late, where it is a usage error before any run.
func TestBench_SeedSizeAtMostAPackage(t *testing.T) {
	c := benchConfig{Config: loadgen.Config{Producers: 1, Resources: 1, Agents: 1, Size: spinbroker.MaxCommandsPerPackage + 1, Commands: spinbroker.MaxCommandsPerPackage + 1, Protocol: "seed"}, scenarios: "throughput", sync: "normal"}
	if err := c.check(); err == nil || !strings.Contains(err.Error(), "--size must be at most 50000") {
		t.Errorf("--protocol seed --size 50001: want it refused naming --size, got %v", err)
	}
	c.Size, c.Commands = spinbroker.MaxCommandsPerPackage, spinbroker.MaxCommandsPerPackage
	if err := c.check(); err != nil {
		t.Errorf("--protocol seed --size 50000: %v", err)
	}
}

// TestBench_ChecksSayWhatTheyChecked: a backlog or wake-up run checks
// only what it can break; its "ok" said "no loss, no duplicate, order and
// dependencies kept", which neither checks.
func TestBench_ChecksSayWhatTheyChecked(t *testing.T) {
	t.Parallel()
	r := spin(t, "bench", "--scenarios", "wakeup", "--wakeups", "5")
	if r.code != 0 || !strings.Contains(r.stdout, "checks: ok (every waiting long-poll woken by the enqueue)") || strings.Contains(r.stdout, "no loss") {
		t.Errorf("bench --scenarios wakeup: %s\nwant its checks to say what they checked", r)
	}
}
