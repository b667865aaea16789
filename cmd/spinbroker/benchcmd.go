package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/client"
	"github.com/spin-broker/spinbroker/internal/loadgen"
)

type benchConfig struct {
	loadgen.Config
	scenarios  string
	sync       string
	json       bool
	keep       bool
	compare    []string
	cpuProfile string
	procs      int
	tokenFrom  string // where the token came from, for the messages
}

func (a *app) benchCommand() *cobra.Command {
	var c benchConfig
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure a broker under load, and check it kept its guarantees",
		Long: `bench runs load scenarios against a broker and prints what it measured:
commands per second, p50/p99/max of every kind of call, and (for a broker it
started itself) the broker's CPU time, its peak memory and how long its one
writer was busy (near all of the run, the writer is the limit). Every run is checked:
a command lost or delivered twice, a queue out of order or a command
delivered before its dependencies succeeded fails the run, however fast.

Scenarios:
  throughput    P producers create packages of K commands over R resources;
                A agents per resource take them (next → complete, or claim
                batches with --protocol claim)
  dependencies  the same, with each package a chain across the resources
                ending in a fan-in
  backlog       N commands in one queue, a fraction of them blocked at its
                head; times next+complete
  wakeup        from a command's enqueue to an agent waiting in a long-poll
                holding it

Without --url each scenario gets a fresh broker: this binary's 'serve' on a
temporary database, as a child process so its CPU and memory are its own.
$SPINBROKER_URL is not read here: a load run goes to a broker of yours only
when --url names it. There it uses queues named bench-*, which must be empty
and not paused, sets their concurrency (so with --auth it needs an admin
token), and leaves them empty when a run completes (an interrupted one
may leave commands behind, which the next run names).

Exit status:
  0    every run kept every rule
  1    a run broke a rule (its figures and violations are printed all
       the same; --json still prints its object, with "ok": false), or a
       run could not be made: no broker at --url (or one that went away
       or failed mid-run), a token it refuses, a queue of its own already
       holding work
  2    a mistake in the command line (nothing was run)
  130  interrupted (SIGINT, Ctrl-C), 143 terminated (SIGTERM): the run
       was stopped and not checked; a broker bench started is stopped
       and its database removed`,
		Example: `  spinbroker bench
  spinbroker bench --scenarios throughput --protocol claim --claim 100
  spinbroker bench --scenarios throughput,backlog,wakeup --sync full --json
  spinbroker bench --url http://broker:8080 --scenarios wakeup`,
		Args: args(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := a.checkOutput(); err != nil {
				return usagef(cmd, "%v", err)
			}
			if len(c.compare) > 0 {
				// It runs nothing, and prints a table: a flag of a run, or
				// a JSON output, would be ignored.
				var other []string
				cmd.Flags().Visit(func(f *pflag.Flag) {
					if f.Name != "compare" && (f.Name != "output" || a.jsonOutput()) {
						other = append(other, "--"+f.Name)
					}
				})
				if len(other) > 0 {
					return usagef(cmd, "--compare compares earlier runs and prints a table: it runs nothing, and takes none of %s", strings.Join(other, ", "))
				}
				return a.compare(c.compare)
			}
			// -o json, which the help lists among the global flags, says
			// what --json does; -o table beside it says the opposite.
			if c.json && cmd.Flags().Changed("output") && !a.jsonOutput() {
				return usagef(cmd, "--json and -o table ask for two outputs: give one")
			}
			c.json = c.json || a.jsonOutput()
			// 0 is the default. More than the CPUs is no more parallel,
			// makes the table say "on 3 of 2 CPUs", and a large number
			// has the runtime start threads until it dies.
			if n := runtime.NumCPU(); c.procs < 0 || c.procs > n {
				return usagef(cmd, "--procs must be from 1 to %d (this machine's CPUs), not %d", n, c.procs)
			}
			if err := c.check(); err != nil {
				return usagef(cmd, "%v", err)
			}
			// Flags that would be ignored: a run measuring something
			// other than what was asked for must not look like it.
			if cmd.Flags().Changed("claim") && c.Protocol != "claim" {
				return usagef(cmd, "--claim sets the batch of --protocol claim, not of --protocol %s: give --protocol claim with it", c.Protocol)
			}
			if cmd.Flags().Changed("parameter-bytes") && !slices.ContainsFunc(c.scenarioList(), func(sc string) bool {
				return sc == "throughput" || sc == "dependencies" || sc == "all"
			}) {
				return usagef(cmd, "--parameter-bytes sizes the commands of the throughput and dependencies scenarios, and --scenarios %s runs neither", c.scenarios)
			}
			for _, name := range []string{"sync", "keep"} {
				if cmd.Flags().Changed(name) && cmd.Flags().Changed("url") {
					return usagef(cmd, "--%s is for the broker bench starts; with --url the broker is yours, as you started it", name)
				}
			}
			if cmd.Flags().Changed("url") {
				// A URL or a token no request can carry is a mistake in
				// the command line, not a failed run.
				if _, err := a.dial(cmd); err != nil {
					return err
				}
			}
			c.tokenFrom = a.tokenFrom(cmd.Root())
			return a.bench(cmd.Context(), cmd.Flags().Changed("url"), c)
		},
	}
	// bench reads no $SPINBROKER_URL and has no default broker: the
	// global --url's line would say both. A help is the last thing a
	// process prints, so the flag keeps these words.
	help := cmd.HelpFunc()
	cmd.SetHelpFunc(func(c *cobra.Command, args []string) {
		if f := c.Root().PersistentFlags().Lookup("url"); f != nil {
			f.Usage = "a broker of yours to run against (bench-* queues); without it, bench starts a broker of its own for each scenario"
			f.DefValue = ""
		}
		help(c, args)
	})
	f := cmd.Flags()
	f.StringVar(&c.scenarios, "scenarios", "throughput", "comma-separated: throughput, dependencies, backlog, wakeup, or all")
	f.IntVar(&c.Producers, "producers", 4, "producers creating packages")
	f.IntVar(&c.Resources, "resources", 4, "resources (queues) the commands spread over")
	f.IntVar(&c.Agents, "agents", 1, "agents per resource")
	f.IntVar(&c.Size, "size", 10, "commands per package")
	f.IntVar(&c.Commands, "commands", 20000, "commands in a throughput or dependencies run")
	f.StringVar(&c.Protocol, "protocol", "inline", "inline (a package in one request), seed (new, add each, enqueue) or claim (claim batches, batched completion)")
	f.IntVar(&c.Claim, "claim", 100, "commands per claim and per batched completion (--protocol claim)")
	f.IntVar(&c.ParameterBytes, "parameter-bytes", 0, fmt.Sprintf("bytes of each command's parameters in a throughput or dependencies run, from %d to %d (default: about 30, the command's own numbers)", minParameterBytes, maxParameterBytes))
	f.IntVar(&c.Backlog, "backlog", 100000, "commands in the backlog scenario's queue")
	f.Float64Var(&c.Blocked, "blocked", 0.5, "fraction of the backlog blocked at the head of the queue")
	f.IntVar(&c.Samples, "samples", 2000, "next+complete cycles timed in the backlog scenario")
	f.IntVar(&c.Wakeups, "wakeups", 200, "samples of the wakeup scenario")
	f.StringVar(&c.sync, "sync", "normal", "--sync of the broker bench starts: normal or full")
	f.BoolVar(&c.json, "json", false, "print one JSON object per scenario (the same as -o json)")
	f.BoolVar(&c.keep, "keep", false, "keep the temporary databases and print where they are")
	f.IntVar(&c.procs, "procs", 0, "GOMAXPROCS of the load generator (default: half the CPUs when bench starts the broker, so that it does not crowd the broker it measures; all of them with --url)")
	f.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of the load generator (not the broker: see serve --pprof-addr) to this file")
	f.StringSliceVar(&c.compare, "compare", nil, "instead of running, compare the JSON lines of earlier runs (this command's --json and bench/peers -json) in these files")
	return cmd
}

const (
	// minParameterBytes is the least --parameter-bytes: the command's own
	// numbers and the pad's name take up to 64.
	minParameterBytes = 64
	// maxParameterBytes is the most: the seed's protocol adds a command in
	// one request, which holds it with the rest of the command.
	maxParameterBytes = spinbroker.MaxBodyBytes - 64<<10
	// packageOverhead is what a command adds to a create's body besides
	// its parameters (key, resource, action, dependencies' keys), generously.
	packageOverhead = 512
	// answerLimit is the largest answer the client reads (its maxAnswer),
	// and answerOverhead what a command adds to a package's answer besides
	// its parameters (ids, times, its dependencies' ids), generously.
	answerLimit    = 64 << 20
	answerOverhead = 1024
)

// allScenarios are what --scenarios all runs, in order.
var allScenarios = []string{"throughput", "dependencies", "backlog", "wakeup"}

// scenarioList is --scenarios split at its commas, each name trimmed.
func (c *benchConfig) scenarioList() []string {
	list := strings.Split(c.scenarios, ",")
	for i := range list {
		list[i] = strings.TrimSpace(list[i])
	}
	return list
}

// check refuses, before any broker is started or asked, the flag values
// that would make a run fail late, hang or measure something other than
// what its report names.
func (c *benchConfig) check() error {
	scenarios := c.scenarioList()
	if len(scenarios) > 1 && slices.Contains(scenarios, "all") {
		return fmt.Errorf("--scenarios all runs every scenario: give it alone, not with others (%q)", c.scenarios)
	}
	if len(scenarios) == 1 && scenarios[0] == "all" {
		scenarios = allScenarios
	}
	// Whatever the scenarios: a value no run knows is a mistake, not a
	// setting to ignore.
	if c.Protocol != "inline" && c.Protocol != "seed" && c.Protocol != "claim" {
		return fmt.Errorf("--protocol must be inline, seed or claim, not %q", c.Protocol)
	}
	for _, sc := range scenarios {
		switch sc {
		case "throughput", "dependencies":
			switch {
			case c.Producers < 1 || c.Resources < 1 || c.Agents < 1 || c.Size < 1:
				return fmt.Errorf("--producers, --resources, --agents and --size must be at least 1")
			case sc == "dependencies" && c.Size-1 > spinbroker.MaxDependencies:
				// A package's last command depends on every other.
				return fmt.Errorf("--size must be at most %d in the dependencies scenario, not %d: a package's last command depends on every other, and a command may have at most %d dependencies", spinbroker.MaxDependencies+1, c.Size, spinbroker.MaxDependencies)
			case (c.Protocol == "inline" || c.Protocol == "claim") && c.Size > spinbroker.MaxCommandsPerBatch:
				// The seed's protocol adds a command per request.
				return fmt.Errorf("--size must be at most %d with --protocol %s, not %d: a package is created in one request, which may carry at most %d commands", spinbroker.MaxCommandsPerBatch, c.Protocol, c.Size, spinbroker.MaxCommandsPerBatch)
			case c.Size > spinbroker.MaxCommandsPerPackage:
				// The seed's protocol adds them one at a time, and the
				// broker refuses the add past its largest package.
				return fmt.Errorf("--size must be at most %d, not %d: the broker's largest package", spinbroker.MaxCommandsPerPackage, c.Size)
			case c.Agents > spinbroker.MaxConcurrency:
				return fmt.Errorf("--agents must be at most %d (a queue's largest concurrency), not %d", spinbroker.MaxConcurrency, c.Agents)
			case c.Commands < c.Size:
				return fmt.Errorf("--commands must be at least --size (%d), not %d", c.Size, c.Commands)
			case c.ParameterBytes != 0 && (c.ParameterBytes < minParameterBytes || c.ParameterBytes > maxParameterBytes):
				return fmt.Errorf("--parameter-bytes must be from %d to %d, not %d", minParameterBytes, maxParameterBytes, c.ParameterBytes)
			case c.ParameterBytes != 0 && c.Protocol != "seed" && c.Size*(c.ParameterBytes+packageOverhead) > spinbroker.MaxBodyBytes:
				// The seed's protocol adds a command per request. Without
				// --parameter-bytes a command is about 100 bytes, and
				// MaxCommandsPerBatch of them fit (checked above).
				return fmt.Errorf("--size × --parameter-bytes must fit in one request of %d bytes with --protocol %s, which creates a package in one: at most %d commands of %d bytes", spinbroker.MaxBodyBytes, c.Protocol, spinbroker.MaxBodyBytes/(c.ParameterBytes+packageOverhead), c.ParameterBytes)
			case c.ParameterBytes != 0 && c.Size*(c.ParameterBytes+answerOverhead) > answerLimit:
				// Seed's packages: each is one enqueue's answer, and one
				// read back by the run's check, every parameter in it.
				return fmt.Errorf("--size × --parameter-bytes must fit in one answer of %d MiB, the most the client reads, which holds a package whole: at most %d commands of %d bytes", answerLimit>>20, answerLimit/(c.ParameterBytes+answerOverhead), c.ParameterBytes)
			}
			switch c.Protocol {
			case "inline", "seed":
			case "claim":
				if c.Claim < 1 || c.Claim > spinbroker.MaxClaim {
					return fmt.Errorf("--claim must be from 1 to %d (the broker's limit), not %d", spinbroker.MaxClaim, c.Claim)
				}
				// Each queue's concurrency is set to what its agents may
				// hold at once.
				if c.Agents*c.Claim > spinbroker.MaxConcurrency {
					return fmt.Errorf("--agents × --claim must be at most %d (a queue's largest concurrency), not %d × %d", spinbroker.MaxConcurrency, c.Agents, c.Claim)
				}
			default:
				return fmt.Errorf("--protocol must be inline, seed or claim, not %q", c.Protocol)
			}
		case "backlog":
			switch {
			case c.Samples < 1 || c.Backlog < c.Samples:
				return fmt.Errorf("--samples must be at least 1 and --backlog at least --samples")
			case !(c.Blocked >= 0 && c.Blocked < 1):
				return fmt.Errorf("--blocked is the fraction of the backlog blocked: from 0 to below 1, not %v", c.Blocked)
			case c.Backlog-int(float64(c.Backlog)*c.Blocked) < c.Samples:
				return fmt.Errorf("--samples (%d) must be at most the ready part of the backlog (%d)", c.Samples, c.Backlog-int(float64(c.Backlog)*c.Blocked))
			}
		case "wakeup":
			if c.Wakeups < 1 {
				return fmt.Errorf("--wakeups must be at least 1")
			}
		default:
			return fmt.Errorf("--scenarios: unknown scenario %q (throughput, dependencies, backlog, wakeup or all)", sc)
		}
	}
	if c.sync != "normal" && c.sync != "full" {
		return fmt.Errorf("--sync must be normal or full, not %q", c.sync)
	}
	return nil
}

func (a *app) bench(ctx context.Context, remote bool, c benchConfig) error {
	switch {
	case c.procs > 0:
		runtime.GOMAXPROCS(c.procs)
	case !remote:
		// The broker is a child process with every CPU; the generator,
		// whose clients would run elsewhere in production, keeps to half.
		runtime.GOMAXPROCS(max(1, runtime.NumCPU()/2))
	}
	if c.cpuProfile != "" {
		f, err := os.Create(c.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	scenarios := c.scenarioList()
	if len(scenarios) == 1 && scenarios[0] == "all" {
		scenarios = allScenarios
	}
	tty := benchShowsProgress(a.stderr, c.json)
	here := thisMachine()
	if !c.json {
		if remote {
			fmt.Fprintf(a.stdout, "generator's machine: %s\n", here)
		} else {
			fmt.Fprintf(a.stdout, "machine: %s\n", here)
		}
	}
	failed := 0
	for _, sc := range scenarios {
		cfg := c.Config
		cfg.Scenario = sc
		if tty {
			cfg.Progress = benchProgress(a.stderr, sc)
		}
		var (
			res *loadgen.Result
			err error
		)
		if remote {
			var cl *client.Client
			cfg.Tidy = true
			if cl, err = a.client(); err == nil {
				res, err = loadgen.Run(ctx, cl, cfg)
			}
		} else {
			res, err = a.benchLocal(ctx, c, cfg)
		}
		if tty {
			fmt.Fprint(a.stderr, "\r\033[K")
		}
		if err != nil {
			switch context.Cause(ctx) {
			case errInterrupted:
				return &exitError{code: exitInterrupted, msg: cfg.Scenario + ": interrupted (SIGINT); the run was stopped and not checked"}
			case errTerminated:
				return &exitError{code: exitTerminated, msg: cfg.Scenario + ": terminated (SIGTERM); the run was stopped and not checked"}
			}
			var ce *client.Error
			if errors.As(err, &ce) && ce.Err.Code == spinbroker.EFORBIDDEN {
				// The broker's refusal names what one request needs,
				// not all that bench does with the token.
				return &exitError{code: 1, msg: fmt.Sprintf("%s: %s (%s): bench gives work to its queues (bench-*), takes it as their agent and sets their concurrency, so with --auth it needs an admin token", cfg.Scenario, ce.Err.Message, ce.Err.Code)}
			}
			if remote {
				// A run that could not be made exits 1, as the help says,
				// whatever stopped it: no broker, a broker gone mid-run, a
				// proxy's 502. Not the 4 of the client commands, which
				// bench's help does not list. describe's hints name
				// $SPINBROKER_URL too, which bench does not read.
				msg := strings.ReplaceAll(describeWithToken(err, c.tokenFrom), "--url or SPINBROKER_URL", "--url")
				return &exitError{code: 1, msg: cfg.Scenario + ": " + msg}
			}
			return fmt.Errorf("%s: %w", cfg.Scenario, err)
		}
		if !res.OK() {
			failed++
		}
		if c.json {
			b, _ := json.Marshal(struct {
				*loadgen.Result
				Sync    string  `json:"sync,omitempty"`
				Procs   int     `json:"generator_procs"`
				Machine machine `json:"machine"` // the generator's; with a broker bench started, the broker's too
				OK      bool    `json:"ok"`
			}{res, map[bool]string{true: "", false: c.sync}[remote], runtime.GOMAXPROCS(0), here, res.OK()})
			fmt.Fprintln(a.stdout, string(b))
		} else {
			printResult(a, res, c.sync, remote)
		}
	}
	if failed > 0 {
		return &exitError{code: 1, msg: fmt.Sprintf("%d scenario(s) broke a rule", failed)}
	}
	return nil
}

// benchShowsProgress reports whether bench shows its progress on stderr: on
// a terminal, where a line can be redrawn, and not with --json, whose
// reader wants the objects alone, as status --wait does.
func benchShowsProgress(stderr io.Writer, jsonOut bool) bool {
	return !jsonOut && isTerminal(stderr)
}

// benchProgress draws a scenario's progress on one line of w, the phase
// named when the scenario has several ("backlog timing: 120/2000"); each
// draw clears the line first, since the next phase's count can be shorter.
func benchProgress(w io.Writer, scenario string) func(phase string, done, total int) {
	return func(phase string, done, total int) {
		name := scenario
		if phase != "" {
			name += " " + phase
		}
		fmt.Fprintf(w, "\r\033[K%s: %d/%d", name, done, total)
	}
}

// benchLocal starts a broker of its own for one scenario and measures it.
func (a *app) benchLocal(ctx context.Context, c benchConfig, cfg loadgen.Config) (*loadgen.Result, error) {
	dir, err := os.MkdirTemp("", "spinbroker-bench-")
	if err != nil {
		return nil, err
	}
	if c.keep {
		fmt.Fprintf(a.stderr, "%s: database in %s\n", cfg.Scenario, dir)
	} else {
		defer os.RemoveAll(dir)
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "broker.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	broker := exec.Command(self, "serve", "--addr", addr, "--db", filepath.Join(dir, "bench.db"),
		"--sync", c.sync, "--log-level", "warn")
	broker.Stdout, broker.Stderr = logf, logf
	ownGroup(broker)
	if err := broker.Start(); err != nil {
		return nil, err
	}
	exited := make(chan struct{})
	go func() { broker.Wait(); close(exited) }() //nolint:errcheck // its log says why
	defer func() {
		broker.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			broker.Process.Kill()
			<-exited
		}
	}()
	url := "http://" + addr
	cl, err := client.New(url, client.WithUserAgent("spinbroker-bench/1"))
	if err != nil {
		return nil, err
	}
	if err := waitHealthy(ctx, cl, exited); err != nil {
		log, _ := os.ReadFile(logf.Name())
		return nil, fmt.Errorf("the broker did not start: %w\n%s", err, log)
	}
	cpu0 := cpuSeconds(broker.Process.Pid)
	// The writer's busy time is read around the run's timed part, which
	// its share "of the run" is of: the backlog's loading is not in it.
	var busy0, busy1 float64
	var busyOK, busyKnown bool
	cfg.Timed = func(begin bool) {
		if begin {
			busy0, busyOK = writerBusy(ctx, url)
		} else {
			busy1, busyKnown = writerBusy(ctx, url)
		}
	}
	res, err := loadgen.Run(ctx, cl, cfg)
	if err != nil {
		return nil, err
	}
	// In milliseconds: the clock ticks are 10ms, and the difference of
	// two float sums would carry noise (0.019999999999999997) into --json.
	res.BrokerCPUSeconds = math.Round((cpuSeconds(broker.Process.Pid)-cpu0)*1000) / 1000
	res.BrokerPeakRSSMiB = peakRSSMiB(broker.Process.Pid)
	if busyOK && busyKnown {
		res.BrokerWriterBusySeconds = math.Round((busy1-busy0)*1000) / 1000
	}
	return res, nil
}

// writerBusy reads the seconds the broker at url has spent in write
// transactions from its /metrics, and whether it could.
func writerBusy(ctx context.Context, url string) (float64, bool) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/metrics", nil)
	if err != nil {
		return 0, false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		return 0, false
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "spinbroker_store_writer_busy_seconds_total "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func waitHealthy(ctx context.Context, cl *client.Client, exited <-chan struct{}) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := cl.Health(ctx)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		select {
		case <-exited:
			return errors.New("it exited")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// cpuSeconds reads a process's user+system CPU time from /proc (Linux).
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: utime and stime are the 12th and 13th.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (u + st) / 100 // USER_HZ is 100 on Linux
}

// peakRSSMiB reads a process's peak resident memory (VmHWM) from /proc.
func peakRSSMiB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

// generatorBound is the share of its CPUs past which the generator, not
// the broker, may be what set a run's rate.
const generatorBound = 0.9

// generatorLine says how much CPU the load generator used in a run's timed
// part, and warns when that was near all it may use; "" when not measured.
func generatorLine(cpu, seconds float64, procs int) string {
	if cpu <= 0 || seconds <= 0 || procs <= 0 {
		return ""
	}
	share := cpu / (seconds * float64(procs))
	line := fmt.Sprintf("  generator: %.1fs CPU (%.0f%% of its %s)", cpu, 100*share, plural(procs, "CPU", "CPUs"))
	if share >= generatorBound {
		line += "; near all it may use, so the rate may be the generator's limit rather than the broker's: give it more CPUs (--procs) or run it on another machine (--url)"
	}
	return line
}

// checked says what a scenario's checks held to: each checks only what its
// run can break, and an "ok" says no more than that.
func checked(scenario string) string {
	switch scenario {
	case "backlog":
		return "the queue's order kept, no blocked command delivered"
	case "wakeup":
		return "every waiting long-poll woken by the enqueue"
	}
	return "no loss, no duplicate, order and dependencies kept"
}

func printResult(a *app, r *loadgen.Result, sync string, remote bool) {
	w := a.stdout
	fmt.Fprintf(w, "%s: %s", r.Scenario, r.Settings)
	if !remote {
		fmt.Fprintf(w, "; sync %s", sync)
	}
	fmt.Fprintf(w, "; generator on %d of %d CPUs\n", runtime.GOMAXPROCS(0), runtime.NumCPU())
	switch {
	case r.CommandsPerSec > 0:
		fmt.Fprintf(w, "  %d commands in %.2fs: %.0f commands/s\n", r.Commands, r.Seconds, r.CommandsPerSec)
	case r.MicrosPerCycle > 0:
		fmt.Fprintf(w, "  %.0f µs per next+complete (%d cycles)\n", r.MicrosPerCycle, r.Commands)
	}
	if r.PerClaim > 0 {
		fmt.Fprintf(w, "  claims that found work held %.1f commands on average\n", r.PerClaim)
	}
	if line := generatorLine(r.GeneratorCPUSeconds, r.Seconds, runtime.GOMAXPROCS(0)); line != "" {
		fmt.Fprintln(w, line)
	}
	if !remote {
		fmt.Fprintf(w, "  broker: %.1fs CPU, %.0f MiB peak memory", r.BrokerCPUSeconds, r.BrokerPeakRSSMiB)
		if r.BrokerWriterBusySeconds > 0 && r.Seconds > 0 {
			fmt.Fprintf(w, ", its writer busy %.1fs (%.0f%% of the run)", r.BrokerWriterBusySeconds, 100*r.BrokerWriterBusySeconds/r.Seconds)
		}
		fmt.Fprintln(w)
	}
	if r.OK() {
		fmt.Fprintf(w, "  checks: ok (%s)\n", checked(r.Scenario))
	} else {
		fmt.Fprintf(w, "  checks: FAILED\n")
		for _, v := range r.Violations {
			fmt.Fprintf(w, "    - %s\n", v)
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "  call\tcount\tp50 ms\tp99 ms\tmax ms\t")
	names := make([]string, 0, len(r.Calls))
	for k := range r.Calls {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		l := r.Calls[k]
		fmt.Fprintf(tw, "  %s\t%d\t%.3f\t%.3f\t%.3f\t\n", k, l.Count, l.P50, l.P99, l.Max)
	}
	tw.Flush()
	fmt.Fprintln(w)
}
