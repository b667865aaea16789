// Package loadgen drives a spin-broker over HTTP with the load shapes of
// `spinbroker bench` and checks every run for the broker's guarantees: no
// command lost or delivered twice, queue order kept, no command delivered
// before its dependencies succeeded. A fast run that breaks a rule fails.
package loadgen

import (
	"context"
	"fmt"
	"hash/crc32"
	"math"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/client"
)

// Config is one run.
type Config struct {
	Scenario string // throughput, backlog, dependencies or wakeup

	// throughput and dependencies
	Producers int    // goroutines creating packages
	Resources int    // queues the commands spread over
	Agents    int    // agents per resource
	Size      int    // commands per package
	Commands  int    // commands in all
	Protocol  string // inline (one request per package), seed (new, add each, enqueue) or claim
	Claim     int    // commands per claim and per batched completion (protocol claim)
	// ParameterBytes sizes each command's parameters: a "pad" string makes
	// them this long. 0, or less than the few bytes that name the command,
	// leaves them without one.
	ParameterBytes int

	// backlog
	Backlog int     // commands in the queue before timing starts
	Blocked float64 // fraction of the backlog blocked at the head of the queue
	Samples int     // next+complete cycles timed

	// wakeup
	Wakeups int // enqueue → delivery samples

	// Progress, when set, is told how far the run is, now and then, and
	// once more with the last count as each phase ends. phase names the
	// part of a run that has several (backlog: "loading", "timing",
	// "tidying"); it is "" for a run of one.
	Progress func(phase string, done, total int)
	// Timed, when set, is told as the run's timed part begins (true) and
	// as it ends (false), so that a caller can measure the broker over
	// that part alone: the backlog's loading, which its timing leaves out,
	// took more of the writer's time than the cycles it timed.
	Timed func(begin bool)
	// Tidy has a run cancel what it leaves in the broker's queues (the
	// backlog scenario's blocked commands): for a broker of the caller's,
	// not for one started for the run and thrown away with its database,
	// whose memory the cancellation's cascade would count.
	Tidy bool
}

// Latency summarises the durations of one kind of call, in milliseconds.
type Latency struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
}

// Result is what a run measured and found.
type Result struct {
	Scenario       string             `json:"scenario"`
	Protocol       string             `json:"protocol,omitempty"`
	Settings       string             `json:"settings"`
	Commands       int                `json:"commands"`
	Seconds        float64            `json:"seconds"`
	CommandsPerSec float64            `json:"commands_per_sec,omitempty"`
	MicrosPerCycle float64            `json:"micros_per_next_complete,omitempty"`
	ParameterBytes int                `json:"parameter_bytes,omitempty"` // each command's, when the run sized them
	Calls          map[string]Latency `json:"calls"`
	Violations     []string           `json:"violations"`
	// PerClaim is how many commands a claim that found work held, on
	// average (protocol claim): below Claim when the producers do not
	// keep the queues that full, which bounds the rate more than the
	// claim size does.
	PerClaim float64 `json:"commands_per_claim,omitempty"`
	// GeneratorCPUSeconds is the CPU time this process (the load generator,
	// not a broker it started) used in the timed part of a throughput or
	// dependencies run, on GOMAXPROCS CPUs at most: near all of them, the
	// rate is the generator's more than the broker's.
	GeneratorCPUSeconds float64 `json:"generator_cpu_seconds,omitempty"`
	// Broker resources, filled in by the caller that started the broker.
	BrokerCPUSeconds float64 `json:"broker_cpu_seconds,omitempty"`
	BrokerPeakRSSMiB float64 `json:"broker_peak_rss_mib,omitempty"`
	// BrokerWriterBusySeconds is how long the broker's one writer ran
	// transactions during the run's timed part (Config.Timed).
	BrokerWriterBusySeconds float64 `json:"broker_writer_busy_seconds,omitempty"`
}

// OK reports whether the run kept every rule.
func (r *Result) OK() bool { return len(r.Violations) == 0 }

// Run runs one scenario against the broker c talks to. The broker should be
// fresh: the checks read back everything the run created.
func Run(ctx context.Context, c *client.Client, cfg Config) (res *Result, err error) {
	switch cfg.Scenario {
	case "throughput":
		res, err = runThroughput(ctx, c, cfg, false)
	case "dependencies":
		res, err = runThroughput(ctx, c, cfg, true)
	case "backlog":
		res, err = runBacklog(ctx, c, cfg)
	case "wakeup":
		res, err = runWakeup(ctx, c, cfg)
	default:
		return nil, fmt.Errorf("unknown scenario %q (throughput, backlog, dependencies or wakeup)", cfg.Scenario)
	}
	if err == nil && ctx.Err() != nil {
		// Interrupted while the run read its results back: what failed
		// then is the reading, not the broker; the run was not checked.
		return nil, context.Cause(ctx)
	}
	return res, err
}

// recorder collects call durations per kind, safely from many goroutines.
type recorder struct {
	mu    sync.Mutex
	calls map[string][]time.Duration
	// produced counts the producers' calls: progress the stall watchdog
	// sees while no command is ready yet (a package being built one add
	// at a time on a slow broker).
	produced atomic.Int64
}

func newRecorder() *recorder { return &recorder{calls: map[string][]time.Duration{}} }

func (r *recorder) time(kind string, start time.Time) {
	d := time.Since(start)
	switch kind {
	case "create_package", "new_package", "add_command", "enqueue":
		r.produced.Add(1)
	}
	r.mu.Lock()
	r.calls[kind] = append(r.calls[kind], d)
	r.mu.Unlock()
}

func (r *recorder) summary() map[string]Latency {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]Latency{}
	for k, ds := range r.calls {
		out[k] = summarize(ds)
	}
	return out
}

func summarize(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	ms := func(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }
	at := func(q float64) time.Duration { return s[min(len(s)-1, int(math.Ceil(q*float64(len(s))))-1)] }
	return Latency{Count: len(s), P50: ms(at(0.5)), P99: ms(at(0.99)), Max: ms(s[len(s)-1])}
}

// delivery is one command an agent received.
type delivery struct {
	id        string
	resource  string
	attempts  int
	startedAt time.Time
	seq       int64
	batch     int64 // the claim that delivered it (0: a next)
	params    paramSum
}

// created is what a producer was told about a command it created.
type created struct {
	resource string
	seq      int64
	deps     []string // the ids of those the producer sent
	// answeredDeps are the dependencies the broker's answer listed.
	answeredDeps []string
	params       paramSum // of the parameters the producer sent
	// pkg and step are the command's package and its place in it (-1:
	// unknown), which its queue must keep: within a package, a queue's
	// commands come in the order they were added.
	pkg  string
	step int
}

// paramSum stands for a command's parameters in the checks: a checksum
// and a length, so that a delivery whose parameters were cut short or
// mixed up with another command's fails the run without the check holding
// every command's parameters.
type paramSum struct {
	crc uint32
	n   int
}

func sumParams(b []byte) paramSum { return paramSum{crc32.Checksum(b, crcTable), len(b)} }

var crcTable = crc32.MakeTable(crc32.Castagnoli)

func resourceName(i int) string { return fmt.Sprintf("bench-%d", i) }

// stallAfter is how long a throughput run may go without a completion,
// nor a producer's call, before it stops and reports what was never
// delivered: a broker that loses a command must fail the run, not keep it
// waiting for ever.
var stallAfter = 30 * time.Second

// preflight refuses queues that already hold commands or are paused: the
// checks count every delivery on them as this run's, so a command left by
// an earlier run (or anyone's) would be completed as if it were the run's
// and reported as the broker's fault, and a paused queue would hang it.
func preflight(ctx context.Context, c *client.Client, resources ...string) error {
	for _, r := range resources {
		q, err := c.Queue(ctx, r)
		if err != nil {
			return err
		}
		if n := q.Counts.Ready + q.Counts.Blocked + q.Counts.Leased; n > 0 {
			return fmt.Errorf("queue %s already holds %d command(s) (%d ready, %d blocked, %d leased) that this run did not create; bench needs its queues empty: cancel or delete their packages ('spinbroker queue show %s'), or use a fresh broker", r, n, q.Counts.Ready, q.Counts.Blocked, q.Counts.Leased, r)
		}
		if q.Paused {
			return fmt.Errorf("queue %s is paused: the run would wait for ever; resume it ('spinbroker queue set %s --paused=false')", r, r)
		}
	}
	return nil
}

// runThroughput: P producers create packages of K commands over R
// resources while A agents per resource take and complete them. With deps,
// each package is a chain across the resources plus a fan-in at its end.
func runThroughput(ctx context.Context, c *client.Client, cfg Config, deps bool) (*Result, error) {
	if cfg.Producers < 1 || cfg.Resources < 1 || cfg.Agents < 1 || cfg.Size < 1 || cfg.Commands < cfg.Size {
		return nil, fmt.Errorf("throughput needs producers, resources, agents ≥ 1 and commands ≥ package size ≥ 1")
	}
	claim := cfg.Protocol == "claim"
	if claim && cfg.Claim < 1 {
		return nil, fmt.Errorf("protocol claim needs -claim ≥ 1")
	}
	// Let every agent of a queue work at once: a serial queue would measure
	// one agent, whatever -agents says.
	conc := cfg.Agents
	if claim {
		conc = cfg.Agents * cfg.Claim
	}
	names := make([]string, cfg.Resources)
	for i := range names {
		names[i] = resourceName(i)
	}
	if err := preflight(ctx, c, names...); err != nil {
		return nil, err
	}
	for _, name := range names {
		if _, err := c.SetQueue(ctx, name, spinbroker.QueueSettings{Concurrency: &conc}); err != nil {
			return nil, err
		}
	}
	packages := cfg.Commands / cfg.Size
	total := packages * cfg.Size
	rec := newRecorder()
	var (
		mu      sync.Mutex
		made    = map[string]created{}
		pkgIDs  []string
		errOnce sync.Once
		runErr  error
	)
	// The agents run under actx, which ends when the last command completes
	// (so idle long-polls do not pad the time) or the first error happens;
	// the checks afterwards use ctx.
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The producers run under pctx, which a failure or a stall ends but the
	// last completion does not: every command completed means every package
	// was created, yet a producer may still be reading the answer to its
	// last create when the agents finish that package's commands (a busy
	// machine). Ending its call then left the package unrecorded, and the
	// check blamed the broker for delivering commands no producer created.
	pctx, pcancel := context.WithCancel(ctx)
	defer pcancel()
	fail := func(err error) {
		errOnce.Do(func() { runErr = err; cancel(); pcancel() })
	}
	var (
		endOnce sync.Once
		end     time.Time
	)
	var cpuEnd time.Duration // the generator's, at the last completion
	finish := func() {
		endOnce.Do(func() {
			end = time.Now()
			cpuEnd, _ = processCPU()
			// Before cancel: the watchdog may be the one finishing, and
			// the agents' return (on cancel) is what Run waits for.
			timed(cfg, false)
			cancel()
		})
	}
	var completed atomic.Int64
	deliveries := make([][]delivery, cfg.Resources*cfg.Agents)

	timed(cfg, true)
	cpuStart, cpuKnown := processCPU()
	start := time.Now()
	var agents sync.WaitGroup
	for r := 0; r < cfg.Resources; r++ {
		for a := 0; a < cfg.Agents; a++ {
			agents.Add(1)
			slot := r*cfg.Agents + a
			go func(resource string) {
				defer agents.Done()
				var err error
				if claim {
					err = claimAgent(actx, c, resource, cfg.Claim, rec, &deliveries[slot], &completed, int64(total))
				} else {
					err = nextAgent(actx, c, resource, rec, &deliveries[slot], &completed, int64(total))
				}
				if completed.Load() >= int64(total) {
					finish()
				} else if err != nil && actx.Err() == nil {
					fail(fmt.Errorf("agent %s: %w", resource, err))
				}
			}(resourceName(r))
		}
	}
	var producers sync.WaitGroup
	next := atomic.Int64{}
	for p := 0; p < cfg.Producers; p++ {
		producers.Add(1)
		go func() {
			defer producers.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(packages) || pctx.Err() != nil {
					return
				}
				in := newPackage(cfg, int(i), deps)
				var pkg *spinbroker.Package
				var err error
				if cfg.Protocol == "seed" {
					pkg, err = seedProtocol(pctx, c, in, rec)
				} else {
					t := time.Now()
					in.Enqueue = true
					pkg, err = c.CreatePackage(pctx, in)
					rec.time("create_package", t)
				}
				if err != nil {
					if pctx.Err() == nil {
						fail(fmt.Errorf("producer: %w", err))
					}
					return
				}
				sent := make(map[string]spinbroker.NewCommand, len(in.Commands))
				steps := make(map[string]int, len(in.Commands))
				for j, nc := range in.Commands {
					sent[nc.Key] = nc
					steps[nc.Key] = j
				}
				// The dependencies checked are those the producer sent, by
				// their keys: a broker that dropped them would answer
				// none, and a check of its answer's would check nothing.
				ids := make(map[string]string, len(pkg.Commands))
				for _, cmd := range pkg.Commands {
					if cmd.Key != nil {
						ids[*cmd.Key] = cmd.ID
					}
				}
				mu.Lock()
				pkgIDs = append(pkgIDs, pkg.ID)
				for _, cmd := range pkg.Commands {
					m := created{resource: cmd.Resource, seq: *cmd.Seq, answeredDeps: cmd.Dependencies, pkg: pkg.ID, step: -1}
					if cmd.Key != nil {
						nc := sent[*cmd.Key]
						if j, ok := steps[*cmd.Key]; ok {
							m.step = j
						}
						m.params = sumParams(nc.Parameters)
						for _, key := range nc.Dependencies {
							id, ok := ids[key]
							if !ok {
								id = key // not in the answer: never finished, so reported
							}
							m.deps = append(m.deps, id)
						}
					}
					made[cmd.ID] = m
				}
				mu.Unlock()
			}
		}()
	}
	stopProgress := progress(cfg.Progress, "", &completed, total)
	var stalled atomic.Bool
	watchdog := make(chan struct{})
	go func() {
		moved := func() int64 { return completed.Load() + rec.produced.Load() }
		last, at := moved(), time.Now()
		t := time.NewTicker(min(time.Second, stallAfter/4))
		defer t.Stop()
		for {
			select {
			case <-pctx.Done(): // not actx: a last create may be unanswered yet
				return
			case <-watchdog:
				return
			case now := <-t.C:
				if n := moved(); n != last {
					last, at = n, now
				} else if now.Sub(at) >= stallAfter {
					stalled.Store(true)
					finish()
					pcancel()
					return
				}
			}
		}
	}()
	producers.Wait()
	agents.Wait()
	close(watchdog)
	stopProgress()
	if runErr != nil {
		return nil, runErr
	}
	if end.IsZero() {
		return nil, fmt.Errorf("the run ended with %d of %d commands completed", completed.Load(), total)
	}
	elapsed := end.Sub(start)
	res := &Result{
		Scenario: cfg.Scenario,
		Protocol: cfg.Protocol,
		Settings: fmt.Sprintf("%d producers × %d resources × %d agent%s per resource, packages of %d%s, protocol %s", cfg.Producers, cfg.Resources, cfg.Agents, plural(cfg.Agents), cfg.Size, paramSetting(cfg.ParameterBytes), cfg.Protocol),
		Commands: total, Seconds: elapsed.Seconds(), CommandsPerSec: float64(total) / elapsed.Seconds(),
		ParameterBytes: sizedParameters(cfg.ParameterBytes),
		Calls:          rec.summary(), Violations: []string{},
	}
	if claim {
		res.Settings += fmt.Sprintf(" %d", cfg.Claim)
	}
	if cpuKnown && cpuEnd > cpuStart {
		res.GeneratorCPUSeconds = math.Round((cpuEnd-cpuStart).Seconds()*1000) / 1000
	}
	var all []delivery
	for _, d := range deliveries {
		all = append(all, d...)
	}
	if claim {
		batches := map[int64]bool{}
		for _, d := range all {
			batches[d.batch] = true
		}
		if len(batches) > 0 {
			res.PerClaim = float64(len(all)) / float64(len(batches))
		}
	}
	res.Violations = check(ctx, c, made, pkgIDs, all, int(completed.Load()), !deps)
	if stalled.Load() {
		res.Violations = append([]string{fmt.Sprintf("the run stalled: %d of %d commands completed, and nothing moved in the last %v", completed.Load(), total, stallAfter)}, res.Violations...)
	}
	return res, nil
}

// timed tells cfg.Timed, when set, that the timed part begins or ends.
func timed(cfg Config, begin bool) {
	if cfg.Timed != nil {
		cfg.Timed(begin)
	}
}

// sizedParameters is the size a run padded its parameters to, or 0 when
// it did not (the default, or too small a size).
func sizedParameters(size int) int {
	if len(parameters(0, 0, size)) != size {
		return 0
	}
	return size
}

// paramSetting names a run's parameter size in its settings, when it set one.
func paramSetting(size int) string {
	if sizedParameters(size) == 0 {
		return ""
	}
	return fmt.Sprintf(" with %d-byte parameters", size)
}

// parameters are those of package i's command j: {"package":i,"step":j},
// padded to size bytes when that is more.
func parameters(i, j, size int) []byte {
	b := fmt.Appendf(nil, `{"package":%d,"step":%d}`, i, j)
	const padded = len(`,"pad":""`)
	if size < len(b)+padded {
		return b
	}
	b = append(b[:len(b)-1], `,"pad":"`...)
	for len(b) < size-2 {
		b = append(b, 'x')
	}
	return append(b, `"}`...)
}

// newPackage builds package i: commands round-robin over the resources;
// with deps, command j depends on j-1 (a chain across queues) and the last
// on every other (a fan-in).
func newPackage(cfg Config, i int, deps bool) spinbroker.NewPackage {
	var in spinbroker.NewPackage
	for j := 0; j < cfg.Size; j++ {
		nc := spinbroker.NewCommand{
			Key:        fmt.Sprintf("c%d", j),
			Resource:   resourceName((i + j) % cfg.Resources),
			Action:     "work",
			Parameters: parameters(i, j, cfg.ParameterBytes),
		}
		if deps && j > 0 {
			if j == cfg.Size-1 && j > 1 {
				for k := 0; k < j; k++ {
					nc.Dependencies = append(nc.Dependencies, fmt.Sprintf("c%d", k))
				}
			} else {
				nc.Dependencies = []string{fmt.Sprintf("c%d", j-1)}
			}
		}
		in.Commands = append(in.Commands, nc)
	}
	return in
}

// seedProtocol creates a package the way the seed's CLI did: new, add each
// command, enqueue.
func seedProtocol(ctx context.Context, c *client.Client, in spinbroker.NewPackage, rec *recorder) (*spinbroker.Package, error) {
	t := time.Now()
	pkg, err := c.CreatePackage(ctx, spinbroker.NewPackage{})
	rec.time("new_package", t)
	if err != nil {
		return nil, err
	}
	for _, nc := range in.Commands {
		t = time.Now()
		_, err := c.AddCommand(ctx, pkg.ID, nc)
		rec.time("add_command", t)
		if err != nil {
			return nil, err
		}
	}
	t = time.Now()
	pkg, err = c.Enqueue(ctx, pkg.ID)
	rec.time("enqueue", t)
	return pkg, err
}

// nextAgent takes one command at a time: next (long-poll), complete.
func nextAgent(ctx context.Context, c *client.Client, resource string, rec *recorder, out *[]delivery, completed *atomic.Int64, total int64) error {
	ok := true
	for completed.Load() < total {
		t := time.Now()
		cmd, err := c.Next(ctx, resource, time.Second, 0)
		rec.time("next", t)
		if err != nil {
			return err
		}
		if cmd == nil {
			continue
		}
		*out = append(*out, delivery{id: cmd.ID, resource: resource, attempts: cmd.Attempts, startedAt: *cmd.StartedAt, seq: *cmd.Seq, params: sumParams(cmd.Parameters)})
		t = time.Now()
		_, err = c.Complete(ctx, cmd.ID, spinbroker.Result{Status: &ok, Lease: cmd.Lease.Token})
		rec.time("complete", t)
		if err != nil {
			return err
		}
		if completed.Add(1) >= total {
			return nil
		}
	}
	return nil
}

// claims numbers the claims, so that the checks can tell one claim's
// commands, in the order the broker listed them, from another's.
var claims atomic.Int64

// claimAgent takes up to n commands per claim and completes them in one
// batched request.
func claimAgent(ctx context.Context, c *client.Client, resource string, n int, rec *recorder, out *[]delivery, completed *atomic.Int64, total int64) error {
	ok := true
	for completed.Load() < total {
		t := time.Now()
		cmds, err := c.Claim(ctx, resource, n, time.Second, 0)
		rec.time("claim", t)
		if err != nil {
			return err
		}
		if len(cmds) == 0 {
			continue
		}
		results := make([]spinbroker.BatchResult, len(cmds))
		batch := claims.Add(1)
		for i, cmd := range cmds {
			*out = append(*out, delivery{id: cmd.ID, resource: resource, attempts: cmd.Attempts, startedAt: *cmd.StartedAt, seq: *cmd.Seq, batch: batch, params: sumParams(cmd.Parameters)})
			results[i] = spinbroker.BatchResult{ID: cmd.ID, Result: spinbroker.Result{Status: &ok, Lease: cmd.Lease.Token}}
		}
		t = time.Now()
		outcomes, err := c.CompleteBatch(ctx, results)
		rec.time("complete_batch", t)
		if err != nil {
			return err
		}
		for _, o := range outcomes {
			if o.HTTPStatus != 200 {
				return fmt.Errorf("batched completion of %s answered %d: %v", o.ID, o.HTTPStatus, o.Error)
			}
		}
		if completed.Add(int64(len(cmds))) >= total {
			return nil
		}
	}
	return nil
}

// progress calls f every 250ms until the returned stop is called.
func progress(f func(phase string, done, total int), phase string, done *atomic.Int64, total int) func() {
	if f == nil {
		return func() {}
	}
	stop := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				f(phase, int(done.Load()), total)
				return
			case <-t.C:
				f(phase, int(done.Load()), total)
			}
		}
	}()
	// Called once as a phase ends, and again by a defer for the returns
	// on the way: only the first stops it.
	return sync.OnceFunc(func() { close(stop); <-finished })
}

// check compares what the agents received with what the producers created
// and with what the broker recorded: every command delivered once and
// succeeded, each queue in order (when ordered, i.e. without dependencies),
// no command delivered before its dependencies succeeded.
func check(ctx context.Context, c *client.Client, made map[string]created, pkgIDs []string, all []delivery, completed int, ordered bool) []string {
	v := []string{}
	add := func(format string, args ...any) {
		if len(v) < 20 {
			v = append(v, fmt.Sprintf(format, args...))
		}
	}
	seen := map[string]int{}
	for _, d := range all {
		seen[d.id]++
		if m, ok := made[d.id]; !ok {
			add("delivered %s, which no producer created", d.id)
		} else if d.params != m.params {
			add("%s delivered with parameters other than it was created with (%d bytes, created with %d)", d.id, d.params.n, m.params.n)
		}
		if d.attempts != 1 {
			add("%s delivered with attempts %d (a redelivery)", d.id, d.attempts)
		}
	}
	for id, n := range seen {
		if n > 1 {
			add("%s delivered %d times", id, n)
		}
	}
	for id := range made {
		if seen[id] == 0 {
			add("%s was never delivered (lost)", id)
		}
	}
	if completed != len(made) {
		add("%d completions for %d commands", completed, len(made))
	}
	if ordered {
		// The seqs the broker gave: within a package, a queue's commands
		// in the order the producer added them, and each delivered with
		// the seq it was given. (The deliveries are checked against the
		// seqs below: a broker that queued a package backwards, and
		// handed it out as it had queued it, passed that alone.)
		type pkgQueue struct{ pkg, resource string }
		inPackage := map[pkgQueue][]created{}
		for _, m := range made {
			if m.step >= 0 {
				k := pkgQueue{m.pkg, m.resource}
				inPackage[k] = append(inPackage[k], m)
			}
		}
		for k, ms := range inPackage {
			sort.Slice(ms, func(i, j int) bool { return ms[i].step < ms[j].step })
			for i := 1; i < len(ms); i++ {
				if ms[i].seq <= ms[i-1].seq {
					add("package %s: queue %s got its command %d (seq %d) ahead of its command %d (seq %d)", k.pkg, k.resource, ms[i].step, ms[i].seq, ms[i-1].step, ms[i-1].seq)
					break
				}
			}
		}
		for _, d := range all {
			if m, ok := made[d.id]; ok && d.seq != m.seq {
				add("%s delivered with seq %d, created with seq %d", d.id, d.seq, m.seq)
			}
		}
		// A claim lists its commands in queue order: sorting by seq
		// below would hide a claim that did not, so check each as listed.
		for i := 1; i < len(all); i++ {
			if b := all[i].batch; b != 0 && b == all[i-1].batch && all[i].seq < all[i-1].seq {
				add("queue %s listed seq %d after seq %d in one claim", all[i].resource, all[i].seq, all[i-1].seq)
			}
		}
		byRes := map[string][]delivery{}
		for _, d := range all {
			byRes[d.resource] = append(byRes[d.resource], d)
		}
		for r, ds := range byRes {
			sort.SliceStable(ds, func(i, j int) bool {
				if !ds[i].startedAt.Equal(ds[j].startedAt) {
					return ds[i].startedAt.Before(ds[j].startedAt)
				}
				return ds[i].seq < ds[j].seq
			})
			for i := 1; i < len(ds); i++ {
				if ds[i].seq < ds[i-1].seq {
					add("queue %s delivered seq %d after seq %d", r, ds[i].seq, ds[i-1].seq)
					break
				}
			}
		}
	}
	// What the broker recorded: every package succeeded, and no command
	// started before its dependencies finished.
	finished := map[string]time.Time{}
	started := map[string]time.Time{}
	for _, id := range pkgIDs {
		p, err := c.Package(ctx, id)
		if err != nil {
			add("reading package %s back: %v", id, err)
			continue
		}
		if p.State != spinbroker.PackageSucceeded {
			add("package %s ended %s", id, p.State)
		}
		for _, cmd := range p.Commands {
			if cmd.FinishedAt != nil {
				finished[cmd.ID] = *cmd.FinishedAt
			}
			if cmd.StartedAt != nil {
				started[cmd.ID] = *cmd.StartedAt
			}
		}
	}
	for id, m := range made {
		if !sameSet(m.deps, m.answeredDeps) {
			add("%s was created with dependencies %v, and the broker answered %v", id, m.deps, m.answeredDeps)
		}
		for _, d := range m.deps {
			if f, ok := finished[d]; !ok || started[id].Before(f) {
				add("%s started at %v before its dependency %s finished (%v)", id, started[id], d, f)
			}
		}
	}
	return v
}

// sameSet reports whether a and b hold the same strings, in any order.
func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// runBacklog fills a queue with cfg.Backlog commands, the first
// cfg.Blocked of them blocked on a command of another queue, then times
// cfg.Samples next+complete cycles of one agent.
func runBacklog(ctx context.Context, c *client.Client, cfg Config) (*Result, error) {
	if cfg.Backlog < cfg.Samples || cfg.Samples < 1 {
		return nil, fmt.Errorf("backlog needs samples ≥ 1 and backlog ≥ samples")
	}
	if err := preflight(ctx, c, "bench-gate", "bench-backlog"); err != nil {
		return nil, err
	}
	gate, err := c.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{{Resource: "bench-gate", Action: "hold"}}})
	if err != nil {
		return nil, err
	}
	gateID := gate.Commands[0].ID
	// The gate never opens: on a broker of the caller's (Tidy), cancel
	// what the run leaves (the gate, the commands blocked on it, those not
	// timed), so that the queues are empty again.
	pkgs := []string{gate.ID}
	defer func() {
		if !cfg.Tidy {
			return
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		// Each cancel cascades over up to a chunk of commands: seconds
		// in all for a large backlog.
		var tidied atomic.Int64
		stop := progress(cfg.Progress, "tidying", &tidied, len(pkgs))
		defer stop()
		for _, id := range pkgs {
			c.CancelPackage(cctx, id) //nolint:errcheck // best effort; preflight names what is left
			tidied.Add(1)
		}
	}()
	blocked := int(float64(cfg.Backlog) * cfg.Blocked)
	const chunk = 1000
	loaded := 0
	var loadedN atomic.Int64
	stop := progress(cfg.Progress, "loading", &loadedN, cfg.Backlog)
	for loaded < cfg.Backlog {
		n := min(chunk, cfg.Backlog-loaded)
		in := spinbroker.NewPackage{Enqueue: true}
		for j := 0; j < n; j++ {
			nc := spinbroker.NewCommand{Resource: "bench-backlog", Action: "work"}
			if loaded+j < blocked {
				nc.Dependencies = []string{gateID}
			}
			in.Commands = append(in.Commands, nc)
		}
		p, err := c.CreatePackage(ctx, in)
		if err != nil {
			stop()
			return nil, err
		}
		pkgs = append(pkgs, p.ID)
		loaded += n
		loadedN.Store(int64(loaded))
	}
	stop()
	rec := newRecorder()
	ok := true
	var prev int64
	var v []string
	// The timed cycles take seconds too: a count, from a goroutine of its
	// own, costs them nothing measurable.
	var sampled atomic.Int64
	stopTiming := progress(cfg.Progress, "timing", &sampled, cfg.Samples)
	defer stopTiming()
	timed(cfg, true)
	start := time.Now()
	for i := 0; i < cfg.Samples; i++ {
		t := time.Now()
		cmd, err := c.Next(ctx, "bench-backlog", 0, 0)
		rec.time("next", t)
		if err != nil {
			return nil, err
		}
		if cmd == nil {
			return nil, fmt.Errorf("backlog: nothing delivered at sample %d", i)
		}
		if *cmd.Seq <= prev {
			v = append(v, fmt.Sprintf("seq %d after %d", *cmd.Seq, prev))
		}
		if len(cmd.Dependencies) > 0 {
			v = append(v, fmt.Sprintf("%s delivered while blocked on the gate", cmd.ID))
		}
		prev = *cmd.Seq
		t = time.Now()
		if _, err := c.Complete(ctx, cmd.ID, spinbroker.Result{Status: &ok, Lease: cmd.Lease.Token}); err != nil {
			return nil, err
		}
		rec.time("complete", t)
		sampled.Store(int64(i + 1))
	}
	elapsed := time.Since(start)
	timed(cfg, false)
	stopTiming()
	if v == nil {
		v = []string{}
	}
	return &Result{
		Scenario:       "backlog",
		Settings:       fmt.Sprintf("%d commands, %d blocked at the head, %d next+complete timed", cfg.Backlog, blocked, cfg.Samples),
		Commands:       cfg.Samples,
		Seconds:        elapsed.Seconds(),
		MicrosPerCycle: float64(elapsed.Microseconds()) / float64(cfg.Samples),
		Calls:          rec.summary(),
		Violations:     v,
	}, nil
}

// runWakeup measures how long a command waits between its enqueue (the
// broker's enqueued_at, taken inside the committing transaction) and an
// agent already waiting in a long-poll holding it.
func runWakeup(ctx context.Context, c *client.Client, cfg Config) (*Result, error) {
	if cfg.Wakeups < 1 {
		return nil, fmt.Errorf("wakeup needs samples ≥ 1")
	}
	if err := preflight(ctx, c, "bench-wakeup"); err != nil {
		return nil, err
	}
	rec := newRecorder()
	var lat []time.Duration
	var v []string
	var n atomic.Int64
	stop := progress(cfg.Progress, "", &n, cfg.Wakeups)
	defer stop()
	ok := true
	timed(cfg, true)
	start := time.Now()
	for i := 0; i < cfg.Wakeups; i++ {
		got := make(chan *spinbroker.Command, 1)
		errc := make(chan error, 1)
		at := make(chan time.Time, 1)
		go func() {
			cmd, err := c.Next(ctx, "bench-wakeup", 10*time.Second, 0)
			at <- time.Now()
			if err != nil {
				errc <- err
				return
			}
			got <- cmd
		}()
		// Let the long-poll reach the broker and start waiting.
		time.Sleep(5 * time.Millisecond)
		t := time.Now()
		if _, err := c.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{{Resource: "bench-wakeup", Action: "ping"}}}); err != nil {
			return nil, err
		}
		rec.time("create_package", t)
		select {
		case err := <-errc:
			return nil, err
		case cmd := <-got:
			received := <-at
			if cmd == nil {
				v = append(v, fmt.Sprintf("sample %d: the waiting long-poll was not woken", i))
				continue
			}
			lat = append(lat, received.Sub(*cmd.EnqueuedAt))
			if _, err := c.Complete(ctx, cmd.ID, spinbroker.Result{Status: &ok, Lease: cmd.Lease.Token}); err != nil {
				return nil, err
			}
		}
		n.Add(1)
	}
	seconds := time.Since(start).Seconds()
	timed(cfg, false)
	calls := rec.summary()
	calls["enqueue_to_delivery"] = summarize(lat)
	if v == nil {
		v = []string{}
	}
	return &Result{
		Scenario: "wakeup", Settings: fmt.Sprintf("%d samples, one agent waiting in a long-poll", cfg.Wakeups),
		Commands: cfg.Wakeups, Seconds: seconds, Calls: calls, Violations: v,
	}, nil
}

// plural is the "s" of a count's noun, when it takes one.
func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
