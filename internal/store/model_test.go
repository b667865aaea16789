package store_test

import (
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/store"
	"github.com/spin-broker/spinbroker/internal/store/storetest"
)

var (
	modelSeed  = flag.Uint64("seed", 1, "seed of TestModel's random operations")
	modelSteps = flag.Int("steps", 4000, "operations TestModel runs per seed")
	modelSeeds = flag.Int("seeds", 3, "how many seeds TestModel runs, from -seed on")
)

// TestModel runs random sequences of operations against the store and
// against a small in-memory reference model of API.md's rules, and after
// every step checks that both agree on every command and package, and that
// the invariants hold: delivery in queue order, never more leased than the
// concurrency, nothing delivered before its dependencies succeeded, cascades
// complete, one result per command, counts consistent with rows.
//
// Reproduce a failure with: go test ./internal/store -run TestModel -seed N -seeds 1
func TestModel(t *testing.T) {
	steps, seeds := *modelSteps, *modelSeeds
	switch {
	case testing.Short():
		steps, seeds = 500, 1
	case raceEnabled && !flagSet("steps") && !flagSet("seeds"):
		steps, seeds = 2000, 1
	}
	for s := *modelSeed; s < *modelSeed+uint64(seeds); s++ {
		t.Run(fmt.Sprintf("seed=%d", s), func(t *testing.T) {
			runModel(t, s, steps)
		})
	}
}

func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// modelResources are the queues; commands name the last one rarely, so
// that it often has nothing enqueued and a retention sweep may forget it.
var modelResources = []string{"r0", "r1", "r2", "rare"}

// mcmd is the model of one command.
type mcmd struct {
	id, pkg, key, resource string
	deps                   []string
	state                  spinbroker.CommandState
	seq                    int64
	attempts, maxAttempts  int
	token                  string
	leaseExp               time.Time
	notBefore              time.Time
	backoff                time.Time
	reason                 string
	cancelledBy            string
	finishedAt             time.Time
}

type mpkg struct {
	id        string
	cmds      []string
	enqueued  bool
	cancelled bool
}

type mqueue struct {
	concurrency int
	paused      bool
}

type model struct {
	t      *testing.T
	rnd    *rand.Rand
	db     *store.DB
	clock  *storetest.Clock
	cmds   map[string]*mcmd
	pkgs   map[string]*mpkg
	order  []string // package ids in creation order
	queues map[string]*mqueue
	seq    int64
	// delivered counts leases per command, results the accepted results.
	delivered map[string]int
	results   map[string]int
	step      int
	log       []string
	ids       []string // sorted command ids, nil when stale
	// seen is the fingerprint of each package at its last check; touched
	// are the packages the store's commits reported since.
	seen    map[string]string
	touched map[string]bool
	tmu     sync.Mutex
}

func runModel(t *testing.T, seed uint64, steps int) {
	db, clock := storetest.MustOpen(t, store.Options{})
	m := &model{
		t: t, rnd: rand.New(rand.NewPCG(seed, seed*7919)), db: db, clock: clock,
		cmds: map[string]*mcmd{}, pkgs: map[string]*mpkg{}, queues: map[string]*mqueue{},
		delivered: map[string]int{}, results: map[string]int{},
		seen: map[string]string{}, touched: map[string]bool{},
	}
	db.Listen(func(c *spinbroker.Commit) {
		m.tmu.Lock()
		defer m.tmu.Unlock()
		for _, ch := range c.Commands {
			m.touched[ch.PackageID] = true
		}
		for _, p := range c.Packages {
			m.touched[p] = true
		}
	})
	for _, r := range modelResources {
		m.queues[r] = &mqueue{concurrency: 1}
	}
	ops := []struct {
		weight int
		name   string
		fn     func()
	}{
		{14, "create", m.opCreate},
		{4, "add", m.opAdd},
		{5, "enqueue", m.opEnqueue},
		{20, "next", m.opNext},
		{6, "claim", m.opClaim},
		{18, "complete", m.opComplete},
		{6, "complete-batch", m.opCompleteBatch},
		{3, "settle", m.opSettleByHand},
		{8, "tick", m.opTick},
		{2, "cancel", m.opCancel},
		{4, "retry", m.opRetry},
		{3, "queue", m.opQueue},
		{3, "heartbeat", m.opHeartbeat},
		{2, "release", m.opRelease},
		{2, "delete", m.opDelete},
		{2, "sweep", m.opSweep},
		{1, "sweep-retained", m.opSweepRetained},
	}
	total := 0
	for _, o := range ops {
		total += o.weight
	}
	for m.step = 0; m.step < steps; m.step++ {
		n := m.rnd.IntN(total)
		for _, o := range ops {
			if n < o.weight {
				o.fn()
				break
			}
			n -= o.weight
		}
		m.check()
		if t.Failed() {
			t.Logf("last operations:\n%s", strings.Join(m.log[max(0, len(m.log)-25):], "\n"))
			t.FailNow()
		}
	}
	// Drain: every command ends with exactly one recorded result.
	m.drain()
	for id, c := range m.cmds {
		if c.state == spinbroker.Staged {
			continue
		}
		if !c.state.Terminal() {
			t.Fatalf("command %s is still %s after the drain", id, c.state)
		}
	}
	t.Logf("%d steps, %d commands, %d packages, %d deliveries", steps, len(m.cmds), len(m.pkgs), sum(m.delivered))
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func (m *model) logf(format string, args ...any) {
	m.log = append(m.log, fmt.Sprintf("%5d ", m.step)+fmt.Sprintf(format, args...))
}

func (m *model) now() time.Time { return m.clock.Now() }

// pick returns a random element of ids matching keep, or "".
func (m *model) pick(ids []string, keep func(string) bool) string {
	var c []string
	for _, id := range ids {
		if keep(id) {
			c = append(c, id)
		}
	}
	if len(c) == 0 {
		return ""
	}
	return c[m.rnd.IntN(len(c))]
}

func (m *model) cmdIDs() []string {
	if m.ids != nil && len(m.ids) == len(m.cmds) {
		return m.ids
	}
	ids := make([]string, 0, len(m.cmds))
	for id := range m.cmds {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	m.ids = ids
	return ids
}

func (m *model) randomCommand(pkg *mpkg, keys map[string]string) spinbroker.NewCommand {
	nc := spinbroker.NewCommand{
		Resource: modelResources[m.rnd.IntN(len(modelResources)-1)],
		Action:   fmt.Sprintf("a%d", m.rnd.IntN(100)),
	}
	if m.rnd.IntN(25) == 0 {
		nc.Resource = "rare"
	}
	if m.rnd.IntN(3) == 0 {
		nc.MaxAttempts = ptr(1 + m.rnd.IntN(3))
	}
	if m.rnd.IntN(8) == 0 {
		at := m.now().Add(time.Duration(m.rnd.IntN(90)) * time.Second)
		nc.NotBefore = &at
	}
	if m.rnd.IntN(2) == 0 {
		nc.Key = fmt.Sprintf("k%d", len(keys))
	}
	// Dependencies: earlier keys of the same package, and ids anywhere.
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		if m.rnd.IntN(4) == 0 {
			nc.Dependencies = append(nc.Dependencies, k)
		}
	}
	if len(m.cmds) > 0 && m.rnd.IntN(3) == 0 {
		ids := m.cmdIDs()
		nc.Dependencies = append(nc.Dependencies, ids[m.rnd.IntN(len(ids))])
	}
	return nc
}

// addModel mirrors a successful add.
func (m *model) addModel(pkg *mpkg, nc spinbroker.NewCommand, got spinbroker.Command, keys map[string]string) {
	c := &mcmd{id: got.ID, pkg: pkg.id, key: nc.Key, resource: nc.Resource, state: spinbroker.Staged, maxAttempts: 3}
	if nc.MaxAttempts != nil {
		c.maxAttempts = *nc.MaxAttempts
	}
	if nc.NotBefore != nil {
		c.notBefore = *nc.NotBefore
	}
	seen := map[string]bool{}
	for _, d := range nc.Dependencies {
		if id, ok := keys[d]; ok {
			d = id
		}
		if !seen[d] {
			seen[d] = true
			c.deps = append(c.deps, d)
		}
	}
	if !slices.Equal(c.deps, got.Dependencies) {
		m.t.Errorf("dependencies of %s: store %v, model %v", got.ID, got.Dependencies, c.deps)
	}
	m.cmds[c.id] = c
	m.ids = nil
	pkg.cmds = append(pkg.cmds, c.id)
	if nc.Key != "" {
		keys[nc.Key] = c.id
	}
}

func (m *model) keysOf(pkg *mpkg) map[string]string {
	keys := map[string]string{}
	for _, id := range pkg.cmds {
		if c := m.cmds[id]; c.key != "" {
			keys[c.key] = id
		}
	}
	return keys
}

func (m *model) opCreate() {
	pkg := &mpkg{}
	keys := map[string]string{}
	var in spinbroker.NewPackage
	n := m.rnd.IntN(5)
	for i := 0; i < n; i++ {
		in.Commands = append(in.Commands, m.randomCommand(pkg, keys))
		if k := in.Commands[i].Key; k != "" {
			keys[k] = "pending"
		}
	}
	in.Enqueue = n > 0 && m.rnd.IntN(10) < 7
	got, _, err := m.db.CreatePackage(ctx, in, nil)
	m.logf("create %d commands enqueue=%v → %v", n, in.Enqueue, err)
	if err != nil {
		m.t.Errorf("create: %v", err)
		return
	}
	pkg.id = got.ID
	m.pkgs[pkg.id] = pkg
	m.order = append(m.order, pkg.id)
	keys = map[string]string{}
	for i, nc := range in.Commands {
		m.addModel(pkg, nc, got.Commands[i], keys)
	}
	if in.Enqueue {
		m.enqueueModel(pkg)
	}
}

func (m *model) stagingPkg() *mpkg {
	id := m.pick(m.order, func(id string) bool { p := m.pkgs[id]; return !p.enqueued && !p.cancelled })
	if id == "" {
		return nil
	}
	return m.pkgs[id]
}

func (m *model) opAdd() {
	pkg := m.stagingPkg()
	if pkg == nil {
		return
	}
	keys := m.keysOf(pkg)
	nc := m.randomCommand(pkg, keys)
	got, _, err := m.db.AddCommand(ctx, pkg.id, nc, nil)
	m.logf("add to %s deps %v → %v", short(pkg.id), nc.Dependencies, err)
	if err != nil {
		m.t.Errorf("add: %v", err)
		return
	}
	m.addModel(pkg, nc, *got, keys)
}

func (m *model) opEnqueue() {
	pkg := m.stagingPkg()
	if pkg == nil {
		return
	}
	_, err := m.db.Enqueue(ctx, pkg.id)
	m.logf("enqueue %s (%d commands) → %v", short(pkg.id), len(pkg.cmds), err)
	if len(pkg.cmds) == 0 {
		if spinbroker.ErrorCode(err) != spinbroker.EEMPTY {
			m.t.Errorf("enqueue of an empty package: %v", err)
		}
		return
	}
	if err != nil {
		m.t.Errorf("enqueue: %v", err)
		return
	}
	m.enqueueModel(pkg)
}

func (m *model) enqueueModel(pkg *mpkg) {
	pkg.enqueued = true
	now := m.now()
	for _, id := range pkg.cmds {
		m.seq++
		c := m.cmds[id]
		c.seq = m.seq
		if c.state != spinbroker.Staged {
			continue // cancelled in staging when a dependency was deleted
		}
		c.state = spinbroker.Ready
		if m.pending(c) > 0 || c.notBefore.After(now) {
			c.state = spinbroker.Blocked
		}
	}
	for _, id := range pkg.cmds {
		c := m.cmds[id]
		if c.state != spinbroker.Blocked {
			continue
		}
		for _, d := range c.deps {
			if dc, ok := m.cmds[d]; ok && (dc.state == spinbroker.Failed || dc.state == spinbroker.Cancelled) {
				m.cancel(c, d, string(dc.state))
				m.cascade(c.id)
				break
			}
		}
	}
}

// pending counts the dependencies of c that have not succeeded.
func (m *model) pending(c *mcmd) int {
	n := 0
	for _, d := range c.deps {
		if dc, ok := m.cmds[d]; ok && dc.state != spinbroker.Succeeded {
			n++
		}
	}
	return n
}

func (m *model) cancel(c *mcmd, dep, verb string) {
	c.state = spinbroker.Cancelled
	c.cancelledBy = dep
	c.reason = "dependency " + dep + " " + verb
	c.finishedAt = m.now()
	c.backoff = time.Time{}
}

// cascade cancels, transitively, the blocked commands that depend on id.
func (m *model) cascade(id string) {
	m.cascadeWith(id, false)
}

func (m *model) cascadeWith(id string, staged bool) {
	queue := []string{id}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		for _, cid := range m.cmdIDs() {
			c := m.cmds[cid]
			if !(c.state == spinbroker.Blocked || staged && c.state == spinbroker.Staged) || !slices.Contains(c.deps, cur) {
				continue
			}
			verb := "cancelled"
			if m.cmds[cur].state == spinbroker.Failed {
				verb = "failed"
			}
			m.cancel(c, cur, verb)
			queue = append(queue, cid)
		}
	}
}

// settle is what next and claim do first: expired leases, then delays.
func (m *model) settle(resource string) {
	now := m.now()
	for _, id := range m.cmdIDs() {
		c := m.cmds[id]
		if c.state != spinbroker.Leased || (resource != "" && c.resource != resource) || c.leaseExp.After(now) {
			continue
		}
		c.token = ""
		if c.attempts < c.maxAttempts && !m.pkgs[c.pkg].cancelled {
			c.state = spinbroker.Ready
			continue
		}
		m.failModel(c, "lease expired")
	}
	for _, id := range m.cmdIDs() {
		c := m.cmds[id]
		if c.state == spinbroker.Blocked && (resource == "" || c.resource == resource) && m.pending(c) == 0 && !c.notBefore.After(now) {
			c.state = spinbroker.Ready
		}
	}
}

func (m *model) failModel(c *mcmd, reason string) {
	c.state = spinbroker.Failed
	c.reason = reason
	c.finishedAt = m.now()
	c.token = ""
	c.backoff = time.Time{}
	m.cascade(c.id)
}

// deliverable returns, in order, what a claim of up to max would lease.
func (m *model) deliverable(resource string, max int) []*mcmd {
	q := m.queues[resource]
	if q.paused {
		return nil
	}
	leased := 0
	var ready []*mcmd
	for _, c := range m.cmds {
		if c.resource != resource {
			continue
		}
		switch c.state {
		case spinbroker.Leased:
			leased++
		case spinbroker.Ready:
			ready = append(ready, c)
		}
	}
	sort.Slice(ready, func(i, j int) bool { return ready[i].seq < ready[j].seq })
	free := min(q.concurrency-leased, max)
	var out []*mcmd
	for _, c := range ready {
		if len(out) >= free {
			break
		}
		if c.backoff.After(m.now()) {
			break
		}
		out = append(out, c)
	}
	return out
}

func (m *model) lease(got []spinbroker.Command, resource string, max int) {
	m.settle(resource)
	want := m.deliverable(resource, max)
	var gotIDs, wantIDs []string
	for _, c := range got {
		gotIDs = append(gotIDs, c.ID)
	}
	for _, c := range want {
		wantIDs = append(wantIDs, c.id)
	}
	if !slices.Equal(gotIDs, wantIDs) {
		m.t.Errorf("%s delivered %v, the model expected %v", resource, shorts(gotIDs), shorts(wantIDs))
		return
	}
	for i, c := range want {
		// Nothing is delivered before its dependencies succeeded.
		for _, d := range c.deps {
			if dc, ok := m.cmds[d]; ok && dc.state != spinbroker.Succeeded {
				m.t.Errorf("%s delivered while its dependency %s is %s", c.id, d, dc.state)
			}
		}
		c.state = spinbroker.Leased
		c.attempts++
		c.token = got[i].Lease.Token
		c.leaseExp = got[i].Lease.ExpiresAt
		c.backoff = time.Time{}
		m.delivered[c.id]++
		if got[i].Attempts != c.attempts {
			m.t.Errorf("%s attempts %d, model %d", c.id, got[i].Attempts, c.attempts)
		}
	}
	leased := 0
	for _, c := range m.cmds {
		if c.resource == resource && c.state == spinbroker.Leased {
			leased++
		}
	}
	if len(got) > 0 && leased > m.queues[resource].concurrency {
		m.t.Errorf("%s has %d leased, concurrency %d", resource, leased, m.queues[resource].concurrency)
	}
}

func (m *model) randomLease() time.Duration {
	return []time.Duration{0, 10 * time.Second, 30 * time.Second}[m.rnd.IntN(3)]
}

func (m *model) opNext() {
	r := modelResources[m.rnd.IntN(len(modelResources))]
	lease := m.randomLease()
	peek := m.peek(r)
	c, wake, err := m.db.Next(ctx, r, lease)
	var got []spinbroker.Command
	if c != nil {
		got = append(got, *c)
	}
	m.logf("next %s → %v %v", r, cmdShorts(got), err)
	if err != nil {
		m.t.Errorf("next: %v", err)
		return
	}
	peek(got, wake)
	m.lease(got, r, 1)
}

func (m *model) opClaim() {
	r := modelResources[m.rnd.IntN(len(modelResources))]
	max := 1 + m.rnd.IntN(4)
	peek := m.peek(r)
	got, wake, err := m.db.Claim(ctx, r, max, m.randomLease())
	m.logf("claim %s %d → %v %v", r, max, cmdShorts(got), err)
	if err != nil {
		m.t.Errorf("claim: %v", err)
		return
	}
	peek(got, wake)
	m.lease(got, r, max)
}

// peek asks Peek about resource r, and returns what holds the claim that
// follows to its answer: Peek may say maybe where the claim finds nothing
// (it settles an expired lease first, say), never no where the claim
// leases; and when both find nothing, they name the same wake time (a
// long-poll that peeked waits until then).
func (m *model) peek(r string) func(got []spinbroker.Command, wake time.Time) {
	maybe, pwake, err := m.db.Peek(ctx, r)
	if err != nil {
		m.t.Errorf("peek %s: %v", r, err)
	}
	return func(got []spinbroker.Command, wake time.Time) {
		switch {
		case !maybe && len(got) > 0:
			m.t.Errorf("peek %s said nothing to lease; the claim leased %v", r, cmdShorts(got))
		case !maybe && !pwake.Equal(wake):
			m.t.Errorf("peek %s said to wake at %v; the claim at %v", r, pwake, wake)
		}
	}
}

func (m *model) leasedCmd() *mcmd {
	id := m.pick(m.cmdIDs(), func(id string) bool { return m.cmds[id].state == spinbroker.Leased })
	if id == "" {
		return nil
	}
	return m.cmds[id]
}

func (m *model) opComplete() {
	c := m.leasedCmd()
	if c == nil {
		return
	}
	res, stale := m.randomResult(c, 2)
	ok, retry, reason := *res.Status, res.Retry, *res.Reason
	_, err := m.db.Complete(ctx, c.id, res)
	m.logf("complete %s ok=%v retry=%v stale=%v → %v", short(c.id), ok, retry, stale, err)
	if stale {
		if spinbroker.ErrorCode(err) != spinbroker.ESTALE {
			m.t.Errorf("a stale lease was not refused: %v", err)
		}
		return
	}
	if err != nil {
		m.t.Errorf("complete: %v", err)
		return
	}
	m.completeModel(c, ok, retry, reason)
}

// opCompleteBatch sends the results of up to four leased commands in one
// batch: mostly plain successes and failures (applied by one statement),
// sometimes a retry or a stale lease among them (judged one by one).
func (m *model) opCompleteBatch() {
	var items []spinbroker.BatchResult
	var cs []*mcmd
	var stale []bool
	for _, id := range m.cmdIDs() {
		c := m.cmds[id]
		if c.state != spinbroker.Leased || len(items) == 4 || m.rnd.IntN(2) == 0 {
			continue
		}
		res, s := m.randomResult(c, 4)
		items = append(items, spinbroker.BatchResult{ID: c.id, Result: res})
		cs = append(cs, c)
		stale = append(stale, s)
	}
	if len(items) == 0 {
		return
	}
	errs, err := m.db.CompleteBatch(ctx, items)
	m.logf("complete batch of %d, stale %v → %v %v", len(items), stale, errs, err)
	if err != nil {
		m.t.Errorf("complete batch: %v", err)
		return
	}
	for i, c := range cs {
		if stale[i] {
			if spinbroker.ErrorCode(errs[i]) != spinbroker.ESTALE {
				m.t.Errorf("a stale lease in a batch was not refused: %v", errs[i])
			}
			continue
		}
		if errs[i] != nil {
			m.t.Errorf("complete batch item %d: %v", i, errs[i])
			continue
		}
		r := items[i].Result
		m.completeModel(c, *r.Status, r.Retry, *r.Reason)
	}
}

// randomResult draws an agent's result for leased command c: a success two
// times in three, a failure asking for a retry one time in retryIn, and one
// time in twelve a stale lease (reported too).
func (m *model) randomResult(c *mcmd, retryIn int) (res spinbroker.Result, stale bool) {
	ok := m.rnd.IntN(3) > 0
	retry := !ok && m.rnd.IntN(retryIn) == 0
	reason := fmt.Sprintf("reason %d", m.step)
	token := c.token
	stale = m.rnd.IntN(12) == 0
	if stale {
		token = "stale-token"
	}
	return spinbroker.Result{Status: &ok, Retry: retry, Lease: token, Reason: &reason}, stale
}

func (m *model) completeModel(c *mcmd, ok, retry bool, reason string) {
	c.token = ""
	c.reason = reason
	switch {
	case ok:
		c.state = spinbroker.Succeeded
		c.finishedAt = m.now()
		m.results[c.id]++
		for _, id := range m.cmdIDs() {
			d := m.cmds[id]
			if d.state == spinbroker.Blocked && slices.Contains(d.deps, c.id) && m.pending(d) == 0 && !d.notBefore.After(m.now()) {
				d.state = spinbroker.Ready
			}
		}
	case retry && c.attempts < c.maxAttempts && !m.pkgs[c.pkg].cancelled:
		c.state = spinbroker.Ready
		c.backoff = m.now().Add(spinbroker.Backoff(c.attempts))
	default:
		m.results[c.id]++
		m.failModel(c, reason)
	}
}

// opSettleByHand completes a ready command without a lease, as a person at
// the CLI would.
func (m *model) opSettleByHand() {
	id := m.pick(m.cmdIDs(), func(id string) bool { return m.cmds[id].state == spinbroker.Ready })
	if id == "" {
		return
	}
	c := m.cmds[id]
	ok := m.rnd.IntN(2) == 0
	reason := "by hand"
	_, err := m.db.Complete(ctx, id, spinbroker.Result{Status: &ok, Reason: &reason})
	m.logf("settle %s ok=%v → %v", short(id), ok, err)
	if err != nil {
		m.t.Errorf("settle by hand: %v", err)
		return
	}
	m.completeModel(c, ok, false, reason)
}

func (m *model) opTick() {
	d := time.Duration(m.rnd.IntN(40)) * time.Second
	m.clock.Add(d)
	m.logf("tick %s", d)
}

func (m *model) opCancel() {
	id := m.pick(m.order, func(string) bool { return true })
	if m.rnd.IntN(2) == 0 {
		// Half the time, one with a command leased if there is one: its
		// agent's result, its lease running out or its release come
		// after the cancel.
		if c := m.leasedCmd(); c != nil {
			id = c.pkg
		}
	}
	if id == "" {
		return
	}
	_, err := m.db.CancelPackage(ctx, id)
	m.logf("cancel %s → %v", short(id), err)
	if err != nil {
		m.t.Errorf("cancel: %v", err)
		return
	}
	pkg := m.pkgs[id]
	if st := m.pkgState(pkg); st.Terminal() {
		return
	}
	pkg.cancelled = true
	for _, cid := range pkg.cmds {
		c := m.cmds[cid]
		switch c.state {
		case spinbroker.Staged, spinbroker.Blocked, spinbroker.Ready:
			c.state = spinbroker.Cancelled
			c.reason = "package cancelled"
			c.cancelledBy = ""
			c.finishedAt = m.now()
			c.backoff = time.Time{}
		}
	}
	for _, cid := range pkg.cmds {
		if s := m.cmds[cid].state; s == spinbroker.Cancelled || s == spinbroker.Failed {
			m.cascade(cid)
		}
	}
}

// opRelease puts back a leased command as the server does for an answer
// its client left unread: ready again, its attempt not counted, unless a
// client cancelled its package meanwhile (then cancelled, with its
// cascade). Now and then the lease it names is stale, and nothing moves.
func (m *model) opRelease() {
	c := m.leasedCmd()
	if c == nil {
		return
	}
	// Half the time, one of a cancelled package if there is one: the
	// cancel that lands between a lease and its release.
	if m.rnd.IntN(2) == 0 {
		if id := m.pick(m.cmdIDs(), func(id string) bool {
			return m.cmds[id].state == spinbroker.Leased && m.pkgs[m.cmds[id].pkg].cancelled
		}); id != "" {
			c = m.cmds[id]
		}
	}
	token, stale := c.token, m.rnd.IntN(6) == 0
	if stale {
		token = "stale-token"
	}
	err := m.db.Release(ctx, []spinbroker.Command{{ID: c.id, Lease: &spinbroker.Lease{Token: token}}})
	m.logf("release %s stale=%v → %v", short(c.id), stale, err)
	if err != nil {
		m.t.Errorf("release: %v", err)
		return
	}
	if stale {
		return
	}
	c.token = ""
	c.attempts--
	m.delivered[c.id]--
	if !m.pkgs[c.pkg].cancelled {
		c.state = spinbroker.Ready
		return
	}
	c.state = spinbroker.Cancelled
	c.reason = "package cancelled"
	c.cancelledBy = ""
	c.finishedAt = m.now()
	m.cascade(c.id)
}

func (m *model) opRetry() {
	id := m.pick(m.cmdIDs(), func(id string) bool {
		s := m.cmds[id].state
		return s == spinbroker.Failed || s == spinbroker.Cancelled
	})
	if id == "" {
		return
	}
	c := m.cmds[id]
	_, err := m.db.Retry(ctx, id)
	m.logf("retry %s (%s) → %v", short(id), c.state, err)
	blocked := m.pkgs[c.pkg].cancelled || m.blockingDep(c, nil) != ""
	if c.cancelledBy != "" {
		if _, ok := m.cmds[c.cancelledBy]; !ok {
			blocked = true
		}
	}
	if blocked {
		if spinbroker.ErrorCode(err) != spinbroker.ECONFLICT {
			m.t.Errorf("retry of %s should be refused: %v", id, err)
		}
		return
	}
	if err != nil {
		m.t.Errorf("retry: %v", err)
		return
	}
	set := map[string]bool{id: true}
	order := []string{id}
	for i := 0; i < len(order); i++ {
		for _, cid := range m.cmdIDs() {
			d := m.cmds[cid]
			if d.state == spinbroker.Cancelled && d.cancelledBy == order[i] && !m.pkgs[d.pkg].cancelled && !set[cid] {
				set[cid] = true
				order = append(order, cid)
			}
		}
	}
	held := map[string]string{}
	for changed := true; changed; {
		changed = false
		for _, cid := range order[1:] {
			if !set[cid] {
				continue
			}
			if bad := m.blockingDep(m.cmds[cid], set); bad != "" {
				delete(set, cid)
				held[cid] = bad
				changed = true
			}
		}
	}
	for _, cid := range order {
		if !set[cid] {
			continue
		}
		d := m.cmds[cid]
		d.attempts = 0
		d.reason = ""
		d.cancelledBy = ""
		d.backoff = time.Time{}
		d.token = ""
		d.state = spinbroker.Blocked
		if m.pending(d) == 0 && !d.notBefore.After(m.now()) {
			d.state = spinbroker.Ready
		}
		delete(m.results, cid)
	}
	for cid, dep := range held {
		d := m.cmds[cid]
		d.cancelledBy = dep
		d.reason = "dependency " + dep + " " + string(m.cmds[dep].state)
	}
}

func (m *model) blockingDep(c *mcmd, set map[string]bool) string {
	for _, d := range c.deps {
		if dc, ok := m.cmds[d]; ok && (dc.state == spinbroker.Failed || dc.state == spinbroker.Cancelled) && !set[d] {
			return d
		}
	}
	return ""
}

func (m *model) opQueue() {
	r := modelResources[m.rnd.IntN(len(modelResources))]
	var s spinbroker.QueueSettings
	if m.rnd.IntN(2) == 0 {
		s.Concurrency = ptr(1 + m.rnd.IntN(3))
	} else {
		s.Paused = ptr(m.rnd.IntN(3) == 0)
	}
	_, err := m.db.SetQueue(ctx, r, s)
	m.logf("queue %s %s → %v", r, mustJSON(s), err)
	if err != nil {
		m.t.Errorf("set queue: %v", err)
		return
	}
	if s.Concurrency != nil {
		m.queues[r].concurrency = *s.Concurrency
	}
	if s.Paused != nil {
		m.queues[r].paused = *s.Paused
	}
}

func (m *model) opHeartbeat() {
	c := m.leasedCmd()
	if c == nil {
		return
	}
	exp, err := m.db.Heartbeat(ctx, c.id, c.token, 20*time.Second)
	m.logf("heartbeat %s → %v", short(c.id), err)
	if err != nil {
		m.t.Errorf("heartbeat: %v", err)
		return
	}
	c.leaseExp = exp
}

func (m *model) opDelete() {
	id := m.pick(m.order, func(id string) bool {
		p := m.pkgs[id]
		st := m.pkgState(p)
		return st == spinbroker.PackageStaging || m.allTerminal(p)
	})
	if id == "" {
		return
	}
	err := m.db.DeletePackage(ctx, id)
	m.logf("delete %s → %v", short(id), err)
	if err != nil {
		m.t.Errorf("delete: %v", err)
		return
	}
	m.deleteModel(id)
}

func (m *model) deleteModel(id string) {
	pkg := m.pkgs[id]
	// Waiters outside the package lose their evidence: cancelled.
	inPkg := map[string]bool{}
	for _, cid := range pkg.cmds {
		inPkg[cid] = true
	}
	queue := []string{}
	for _, cid := range pkg.cmds {
		if m.cmds[cid].state != spinbroker.Succeeded {
			queue = append(queue, cid)
		}
	}
	roots := map[string]bool{}
	for _, r := range queue {
		roots[r] = true
	}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		for _, cid := range m.cmdIDs() {
			c := m.cmds[cid]
			if inPkg[cid] || !(c.state == spinbroker.Blocked || c.state == spinbroker.Staged) || !slices.Contains(c.deps, cur) {
				continue
			}
			verb := "cancelled"
			if roots[cur] {
				verb = "deleted"
			}
			m.cancel(c, cur, verb)
			queue = append(queue, cid)
		}
	}
	// Those a cascade had cancelled already that also wait on one of its
	// commands that did not succeed now name it: deleted, it can never
	// succeed, so a retry of what cancelled them leaves them cancelled.
	for _, cid := range m.cmdIDs() {
		c := m.cmds[cid]
		if inPkg[cid] || c.state != spinbroker.Cancelled || c.cancelledBy == "" || inPkg[c.cancelledBy] {
			continue
		}
		for _, d := range c.deps {
			if inPkg[d] && m.cmds[d].state != spinbroker.Succeeded {
				c.cancelledBy = d
				c.reason = "dependency " + d + " deleted"
				break
			}
		}
	}
	for _, cid := range pkg.cmds {
		delete(m.cmds, cid)
		delete(m.results, cid)
	}
	m.ids = nil
	// The others' lists of dependencies keep the deleted ones.
	delete(m.pkgs, id)
	m.order = slices.DeleteFunc(m.order, func(p string) bool { return p == id })
}

// opSweepRetained jumps past a retention period and sweeps with it: every
// package finished before the jump goes, and so does every queue idle since
// then with default settings; later operations bring queues back.
func (m *model) opSweepRetained() {
	const retain = 1000 * time.Hour
	m.clock.Add(retain + time.Hour)
	var gone []string
	for _, id := range m.order {
		if p := m.pkgs[id]; m.pkgState(p).Terminal() && m.allTerminal(p) {
			gone = append(gone, id)
		}
	}
	res, err := m.db.Sweep(ctx, store.SweepOptions{StagingTTL: -1, Retain: retain})
	m.logf("sweep retaining %s → %+v %v", retain, res, err)
	if err != nil {
		m.t.Errorf("sweep: %v", err)
		return
	}
	m.settle("")
	// A package a client cancelled finished when it was cancelled (its
	// finished_at): once the sweep has settled the leases it still had,
	// it goes too.
	for _, id := range m.order {
		if p := m.pkgs[id]; p.cancelled && !slices.Contains(gone, id) && m.allTerminal(p) {
			gone = append(gone, id)
		}
	}
	if res.RetainedDeleted != len(gone) {
		m.t.Errorf("sweep deleted %d packages, the model %d", res.RetainedDeleted, len(gone))
	}
	for _, id := range gone {
		m.deleteModel(id)
	}
}

func (m *model) opSweep() {
	res, err := m.db.Sweep(ctx, store.SweepOptions{StagingTTL: -1})
	m.logf("sweep → %+v %v", res, err)
	if err != nil {
		m.t.Errorf("sweep: %v", err)
		return
	}
	m.settle("")
}

func (m *model) allTerminal(p *mpkg) bool {
	for _, id := range p.cmds {
		if !m.cmds[id].state.Terminal() {
			return false
		}
	}
	return true
}

func (m *model) pkgState(p *mpkg) spinbroker.PackageState {
	var n spinbroker.Counts
	for _, id := range p.cmds {
		switch m.cmds[id].state {
		case spinbroker.Leased:
			n.Leased++
		case spinbroker.Succeeded:
			n.Succeeded++
		case spinbroker.Failed:
			n.Failed++
		case spinbroker.Cancelled:
			n.Cancelled++
		}
	}
	total := len(p.cmds)
	switch {
	case p.cancelled:
		return spinbroker.PackageCancelled
	case !p.enqueued:
		return spinbroker.PackageStaging
	case n.Succeeded == total:
		return spinbroker.PackageSucceeded
	case n.Done() == total:
		return spinbroker.PackageFailed
	case n.Leased+n.Done() == 0:
		return spinbroker.PackageQueued
	}
	return spinbroker.PackageRunning
}

// fingerprint summarises what check compares of a package in the model.
func (m *model) fingerprint(p *mpkg) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v%v", p.enqueued, p.cancelled)
	for _, id := range p.cmds {
		c := m.cmds[id]
		fmt.Fprintf(&b, "|%s%d%s%d%s", c.state, c.attempts, c.reason, len(c.deps), c.cancelledBy)
	}
	return b.String()
}

// check compares the store with the model and checks the invariants: every
// 50 steps for all packages, in between for the packages that changed in
// the model or that the store's commits named.
func (m *model) check() {
	t := m.t
	full := m.step%50 == 0
	m.tmu.Lock()
	touched := m.touched
	m.touched = map[string]bool{}
	m.tmu.Unlock()
	queueCounts := map[string]spinbroker.QueueCounts{}
	if !full {
		queueCounts = nil
	}
	for _, pid := range m.order {
		pkg := m.pkgs[pid]
		fp := m.fingerprint(pkg)
		if !full && !touched[pid] && m.seen[pid] == fp {
			continue
		}
		m.seen[pid] = fp
		got, err := m.db.Package(ctx, pid)
		if err != nil {
			t.Errorf("package %s: %v", pid, err)
			return
		}
		if want := m.pkgState(pkg); got.State != want {
			t.Errorf("package %s is %s, model %s", short(pid), got.State, want)
		}
		if got.Total != len(pkg.cmds) || len(got.Commands) != len(pkg.cmds) {
			t.Errorf("package %s has %d commands, model %d", short(pid), got.Total, len(pkg.cmds))
			return
		}
		var counts spinbroker.Counts
		for i, c := range got.Commands {
			mc := m.cmds[pkg.cmds[i]]
			if c.ID != mc.id {
				t.Errorf("package %s command %d is %s, model %s", short(pid), i, c.ID, mc.id)
				return
			}
			if c.State != mc.state {
				t.Errorf("command %s is %s, model %s (reason %s)", short(c.ID), c.State, mc.state, deref(c.Reason))
			}
			if c.Attempts != mc.attempts {
				t.Errorf("command %s has %d attempts, model %d", short(c.ID), c.Attempts, mc.attempts)
			}
			if !slices.Equal(c.Dependencies, mc.deps) {
				t.Errorf("command %s dependencies %v, model %v", short(c.ID), c.Dependencies, mc.deps)
			}
			switch {
			case c.State == spinbroker.Cancelled && mc.cancelledBy != "":
				// Which direct dependency a cascade names may differ when
				// several failed; it must be a failed or cancelled one.
				r := deref(c.Reason)
				dep, verb, _ := strings.Cut(strings.TrimPrefix(r, "dependency "), " ")
				dc, ok := m.cmds[dep]
				// A command of a cancelled package keeps the reason it had
				// (its dependency may have been retried since).
				if !strings.HasPrefix(r, "dependency ") || !slices.Contains(mc.deps, dep) {
					t.Errorf("command %s: cascade reason %q names no direct dependency of %v", short(c.ID), r, mc.deps)
				} else if ok && string(dc.state) != verb && !pkg.cancelled {
					t.Errorf("command %s: reason %q but the dependency is %s", short(c.ID), r, dc.state)
				}
			case c.State.Terminal() || c.State == spinbroker.Ready && mc.reason != "":
				if str(c.Reason) != mc.reason {
					t.Errorf("command %s reason %q, model %q", short(c.ID), str(c.Reason), mc.reason)
				}
			}
			// Cascade complete: nothing waits on a failed dependency.
			if c.State == spinbroker.Blocked {
				for _, d := range c.Dependencies {
					if dc, ok := m.cmds[d]; ok && (dc.state == spinbroker.Failed || dc.state == spinbroker.Cancelled) {
						t.Errorf("command %s is blocked on %s, which is %s", short(c.ID), short(d), dc.state)
					}
				}
			}
			switch c.State {
			case spinbroker.Staged:
				counts.Staged++
			case spinbroker.Blocked:
				counts.Blocked++
			case spinbroker.Ready:
				counts.Ready++
			case spinbroker.Leased:
				counts.Leased++
			case spinbroker.Succeeded:
				counts.Succeeded++
			case spinbroker.Failed:
				counts.Failed++
			case spinbroker.Cancelled:
				counts.Cancelled++
			}
			if queueCounts != nil {
				qc := queueCounts[c.Resource]
				switch c.State {
				case spinbroker.Blocked:
					qc.Blocked++
				case spinbroker.Ready:
					qc.Ready++
				case spinbroker.Leased:
					qc.Leased++
				}
				queueCounts[c.Resource] = qc
			}
		}
		if got.Counts != counts {
			t.Errorf("package %s counts %+v, rows say %+v", short(pid), got.Counts, counts)
		}
	}
	if full {
		// The store's own recount (spinbroker check) agrees: it finds
		// nothing to mend in a database only the store has written.
		c, err := m.db.CheckConsistency(ctx)
		if err != nil {
			t.Errorf("check consistency: %v", err)
			return
		}
		if !c.OK() {
			t.Errorf("check consistency found %+v", *c)
		}
	}
	qs, err := m.db.Queues(ctx)
	if err != nil {
		t.Errorf("queues: %v", err)
		return
	}
	listed := map[string]bool{}
	for _, q := range qs {
		listed[q.Resource] = true
		if queueCounts != nil && q.Counts != queueCounts[q.Resource] {
			t.Errorf("queue %s counts %+v, rows say %+v", q.Resource, q.Counts, queueCounts[q.Resource])
		}
		mq := m.queues[q.Resource]
		if q.Concurrency != mq.concurrency || q.Paused != mq.paused {
			t.Errorf("queue %s settings %d/%v, model %d/%v", q.Resource, q.Concurrency, q.Paused, mq.concurrency, mq.paused)
		}
	}
	// The sweeper forgets only queues with nothing enqueued and default
	// settings.
	for r, mq := range m.queues {
		if !listed[r] && (mq.concurrency != spinbroker.DefaultConcurrency || mq.paused) {
			t.Errorf("queue %s with settings %d/%v is not listed", r, mq.concurrency, mq.paused)
		}
	}
	for r, qc := range queueCounts {
		if !listed[r] && qc != (spinbroker.QueueCounts{}) {
			t.Errorf("queue %s with %+v enqueued is not listed", r, qc)
		}
	}
	// Lists by state (through their own index) agree with the model.
	for _, st := range spinbroker.PackageStates {
		want := map[string]bool{}
		for _, pid := range m.order {
			if m.pkgState(m.pkgs[pid]) == st {
				want[pid] = true
			}
		}
		got := map[string]bool{}
		for cursor := ""; ; {
			l, err := m.db.Packages(ctx, spinbroker.PackageFilter{State: st, Limit: spinbroker.MaxListLimit, Cursor: cursor})
			if err != nil {
				t.Errorf("list %s: %v", st, err)
				return
			}
			for _, p := range l.Packages {
				got[p.ID] = true
			}
			if l.NextCursor == nil {
				break
			}
			cursor = *l.NextCursor
		}
		if !maps.Equal(got, want) {
			t.Errorf("the list of %s packages has %d, model %d", st, len(got), len(want))
		}
	}
	// One recorded result per command.
	for id, n := range m.results {
		if n > 1 {
			t.Errorf("command %s has %d results", id, n)
		}
	}
}

// drain runs every queue until nothing is left, succeeding everything.
func (m *model) drain() {
	for _, r := range modelResources {
		if _, err := m.db.SetQueue(ctx, r, spinbroker.QueueSettings{Paused: ptr(false), Concurrency: ptr(3)}); err != nil {
			m.t.Fatal(err)
		}
		m.queues[r] = &mqueue{concurrency: 3}
	}
	for _, pid := range m.order {
		if p := m.pkgs[pid]; !p.enqueued && !p.cancelled && len(p.cmds) > 0 {
			if _, err := m.db.Enqueue(ctx, pid); err != nil {
				m.t.Fatal(err)
			}
			m.enqueueModel(p)
		}
	}
	for idle := 0; idle < 3; {
		progress := false
		for _, r := range modelResources {
			got, _, err := m.db.Claim(ctx, r, 10, 0)
			if err != nil {
				m.t.Fatal(err)
			}
			m.lease(got, r, 10)
			for _, c := range got {
				ok := true
				if _, err := m.db.Complete(ctx, c.ID, spinbroker.Result{Status: &ok, Lease: c.Lease.Token}); err != nil {
					m.t.Fatal(err)
				}
				m.completeModel(m.cmds[c.ID], true, false, "")
				m.cmds[c.ID].reason = ""
				progress = true
			}
		}
		m.check()
		if m.t.Failed() {
			m.t.FailNow()
		}
		if !progress {
			idle++
			m.clock.Add(time.Minute) // back-offs, delays and leases run out
		} else {
			idle = 0
		}
	}
}

func str(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func short(id string) string {
	if len(id) > 8 {
		return id[len(id)-6:]
	}
	return id
}

func shorts(ids []string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = short(id)
	}
	return out
}

func cmdShorts(cs []spinbroker.Command) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = short(c.ID)
	}
	return out
}
