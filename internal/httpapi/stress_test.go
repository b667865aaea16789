package httpapi_test

// TestStress drives a real broker (the store on a SQLite file behind an
// httptest server, real time) with concurrent producers, agents and an
// operator making random requests, records every answer and every commit the
// store reports (in commit order, through Listen), and then checks the rules
// of API.md against that record:
//
//   - the commit stream is self-consistent (every change starts from the state
//     the replay holds; nothing leaves succeeded; a terminal command comes back
//     only under a retry);
//   - every lease: dependencies succeeded, no earlier ready command of its
//     queue left waiting (back-off included), no earlier delayed command whose
//     time had come, the queue's concurrency and pause respected, not_before
//     respected, attempts counted and bounded, no delivery in a package a client
//     had cancelled;
//   - after every commit: nothing blocked on a failed or cancelled dependency
//     (cascade in the same transaction), nothing ready or leased with a
//     dependency that has not succeeded, nothing left blocked whose
//     dependencies all succeeded (no not_before);
//   - every answer: its status and code are among those API.md allows for the
//     states the command or package went through while the request was in
//     flight; a 2xx that changes something has its commit in the stream
//     (2xx means committed); a package's representation agrees with itself
//     (counts, total, state, causer) and with the replay;
//   - at the end, quiescent: every command's state and attempts as the replay
//     says, package and queue counts equal to the rows, cascade reasons name a
//     direct dependency.
//
// It runs for 3s with a seed of its own (printed) on every test run, skipped
// with -short; -stress.duration runs it longer, and -stress.seed repeats a
// run's choices (the interleaving is the scheduler's):
//
//	go test -race ./internal/httpapi -run 'TestStress$' -stress.duration 60s -stress.seed 7

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/httpapi"
	"github.com/spin-broker/spinbroker/internal/store"
	"github.com/spin-broker/spinbroker/internal/store/storetest"
)

var (
	stressSeed     = flag.Uint64("stress.seed", 0, "seed of TestStress (0: from the time)")
	stressDuration = flag.Duration("stress.duration", 3*time.Second, "how long TestStress runs")
)

var stressResources = []string{"r0", "r1", "r2"}

// ---- the record ----

type commitRec struct {
	at      time.Time
	changes []spinbroker.Change
	deleted []string
}

// leased decodes the commands a next or claim answered: one for a next
// (zero if its body does not decode), the list for a claim.
func (o *opRec) leased() []spinbroker.Command {
	if o.kind == "next" {
		var cmd spinbroker.Command
		json.Unmarshal(o.body, &cmd)
		return []spinbroker.Command{cmd}
	}
	var cr spinbroker.ClaimResult
	json.Unmarshal(o.body, &cr)
	return cr.Commands
}

// held adds to got the commands a next or claim leased, if it answered 200.
func (o *opRec) held(got []held) []held {
	if o.status != 200 {
		return got
	}
	for _, c := range o.leased() {
		if c.Lease != nil {
			got = append(got, held{c: c, leaseDur: o.leaseDur, expires: c.Lease.ExpiresAt})
		}
	}
	return got
}

type opRec struct {
	kind       string // create, add, enqueue, cancel, delete, retry, get, next, claim, complete, batch, heartbeat, settle, patch, stale
	actor      string
	start, end int // stream positions before the request and after its answer
	endAt      time.Time
	status     int
	code       string
	body       []byte
	pkg, cmd   string
	// for completes
	ok, retry bool
	attempts  int
	expires   time.Time // the lease's expiry as last known
	leaseDur  time.Duration
	// for batches: items
	items []batchItem
	// for patch
	conc   int
	paused bool
	prev   queueSettings
	res    string
	// create/add: dependency ids that were named
	depIDs []string
}

type batchItem struct {
	id       string
	ok       bool
	retry    bool
	attempts int
	expires  time.Time
	stale    bool
}

type queueSettings struct {
	conc   int
	paused bool
}

type cinfo struct {
	id, pkg, res string
	deps         []string
	maxAttempts  int
	notBefore    *time.Time
	seq          int64
}

type stress struct {
	t    *testing.T
	url  string
	hc   *http.Client
	seed uint64

	rmu     sync.Mutex
	commits []commitRec

	mu     sync.Mutex
	ops    []*opRec
	cmds   map[string]*cinfo
	cmdIDs []string
	pkgs   map[string][]string // package → its commands in order
	pkgIDs []string
	nops   atomic.Int64
}

func (s *stress) pos() int {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	return len(s.commits)
}

func (s *stress) listen(c *spinbroker.Commit) {
	rec := commitRec{at: time.Now(), changes: slices.Clone(c.Commands), deleted: slices.Clone(c.Deleted)}
	s.rmu.Lock()
	s.commits = append(s.commits, rec)
	s.rmu.Unlock()
}

// call sends one request and records it.
func (s *stress) call(o *opRec, method, path string, body any, header ...string) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			panic(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.url+path, rd)
	if err != nil {
		panic(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	o.start = s.pos()
	resp, err := s.hc.Do(req)
	if err != nil {
		o.status = -1
		o.code = err.Error()
	} else {
		o.body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		o.status = resp.StatusCode
		if o.status >= 400 {
			var e spinbroker.ErrorBody
			if json.Unmarshal(o.body, &e) != nil || e.Error == nil || e.Error.Message == "" {
				o.code = "<no error body>"
			} else {
				o.code = e.Error.Code
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				o.code += " <content-type " + ct + ">"
			}
		}
	}
	o.end = s.pos()
	o.endAt = time.Now()
	s.nops.Add(1)
	s.mu.Lock()
	s.ops = append(s.ops, o)
	s.mu.Unlock()
}

func (s *stress) learnPackage(p *spinbroker.Package) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.pkgs[p.ID]; !ok {
		s.pkgs[p.ID] = nil
		s.pkgIDs = append(s.pkgIDs, p.ID)
	}
	for _, c := range p.Commands {
		s.learnCommandLocked(&c)
	}
}

func (s *stress) learnCommandLocked(c *spinbroker.Command) {
	ci, ok := s.cmds[c.ID]
	if !ok {
		ci = &cinfo{id: c.ID, pkg: c.PackageID, res: c.Resource, deps: c.Dependencies, maxAttempts: c.MaxAttempts, notBefore: c.NotBefore}
		s.cmds[c.ID] = ci
		s.cmdIDs = append(s.cmdIDs, c.ID)
		s.pkgs[c.PackageID] = append(s.pkgs[c.PackageID], c.ID)
	}
	if c.Seq != nil {
		ci.seq = *c.Seq
	}
}

func (s *stress) randomPkg(rnd *rand.Rand) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.pkgIDs) == 0 {
		return ""
	}
	// recent ones more often
	n := len(s.pkgIDs)
	if rnd.IntN(3) > 0 && n > 30 {
		return s.pkgIDs[n-1-rnd.IntN(30)]
	}
	return s.pkgIDs[rnd.IntN(n)]
}

func (s *stress) randomCmd(rnd *rand.Rand) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.cmdIDs)
	if n == 0 {
		return ""
	}
	if rnd.IntN(3) > 0 && n > 40 {
		return s.cmdIDs[n-1-rnd.IntN(40)]
	}
	return s.cmdIDs[rnd.IntN(n)]
}

// ---- actors ----

func (s *stress) randomCommand(rnd *rand.Rand, keys []string, o *opRec) map[string]any {
	c := map[string]any{
		"resource": stressResources[rnd.IntN(len(stressResources))],
		"action":   fmt.Sprintf("a%d", rnd.IntN(10)),
	}
	if rnd.IntN(3) == 0 {
		c["max_attempts"] = 1 + rnd.IntN(3)
	}
	if rnd.IntN(5) == 0 {
		c["lease_duration"] = []string{"1s", "2s"}[rnd.IntN(2)]
	}
	if rnd.IntN(10) == 0 {
		c["not_before"] = time.Now().Add(time.Duration(rnd.IntN(2500)) * time.Millisecond).UTC().Format(time.RFC3339Nano)
	}
	var deps []string
	for _, k := range keys {
		if rnd.IntN(4) == 0 {
			deps = append(deps, k)
		}
	}
	if rnd.IntN(3) == 0 {
		if id := s.randomCmd(rnd); id != "" {
			deps = append(deps, id)
			o.depIDs = append(o.depIDs, id)
		}
	}
	if len(deps) > 0 {
		c["dependencies"] = deps
	}
	return c
}

func (s *stress) producer(ctx context.Context, name string, rnd *rand.Rand) {
	for ctx.Err() == nil {
		switch n := rnd.IntN(100); {
		case n < 30:
			o := &opRec{kind: "create", actor: name}
			var cmds []map[string]any
			var keys []string
			for i := 0; i < 1+rnd.IntN(5); i++ {
				c := s.randomCommand(rnd, keys, o)
				if rnd.IntN(2) == 0 {
					k := fmt.Sprintf("k%d", i)
					c["key"] = k
					keys = append(keys, k)
				}
				cmds = append(cmds, c)
			}
			body := map[string]any{"commands": cmds, "enqueue": rnd.IntN(10) < 8}
			var hdr []string
			if rnd.IntN(10) == 0 {
				hdr = []string{"Idempotency-Key", fmt.Sprintf("%s-%d", name, rnd.Uint64())}
			}
			s.call(o, "POST", "/packages", body, hdr...)
			if o.status == 201 {
				var p spinbroker.Package
				if json.Unmarshal(o.body, &p) == nil {
					s.learnPackage(&p)
				}
				if hdr != nil {
					o2 := &opRec{kind: "replay", actor: name, pkg: p.ID}
					s.call(o2, "POST", "/packages", body, hdr...)
					o2.depIDs = o.depIDs
				}
			}
		case n < 38:
			o := &opRec{kind: "create", actor: name}
			s.call(o, "POST", "/packages", nil)
			var p spinbroker.Package
			if o.status != 201 || json.Unmarshal(o.body, &p) != nil {
				continue
			}
			s.learnPackage(&p)
			var keys []string
			for i := 0; i < 1+rnd.IntN(3); i++ {
				a := &opRec{kind: "add", actor: name, pkg: p.ID}
				c := s.randomCommand(rnd, keys, a)
				k := fmt.Sprintf("k%d", i)
				c["key"] = k
				s.call(a, "POST", "/packages/"+p.ID+"/commands", c)
				if a.status == 201 {
					keys = append(keys, k)
					var cmd spinbroker.Command
					if json.Unmarshal(a.body, &cmd) == nil {
						s.mu.Lock()
						s.learnCommandLocked(&cmd)
						s.mu.Unlock()
					}
				}
				if rnd.IntN(4) == 0 {
					time.Sleep(time.Duration(rnd.IntN(50)) * time.Millisecond)
				}
			}
			if rnd.IntN(10) < 8 {
				for i := 0; i < 1+rnd.IntN(2); i++ {
					e := &opRec{kind: "enqueue", actor: name, pkg: p.ID}
					s.call(e, "POST", "/packages/"+p.ID+"/enqueue", nil)
					var q spinbroker.Package
					if e.status == 200 && json.Unmarshal(e.body, &q) == nil {
						s.learnPackage(&q)
					}
				}
			}
		case n < 44:
			if id := s.randomPkg(rnd); id != "" {
				s.call(&opRec{kind: "cancel", actor: name, pkg: id}, "POST", "/packages/"+id+"/cancel", nil)
			}
		case n < 50:
			if id := s.randomPkg(rnd); id != "" {
				s.call(&opRec{kind: "delete", actor: name, pkg: id}, "DELETE", "/packages/"+id, nil)
			}
		case n < 54:
			if id := s.randomCmd(rnd); id != "" {
				s.call(&opRec{kind: "retry", actor: name, cmd: id}, "POST", "/commands/"+id+"/retry", nil)
			}
		case n < 90:
			if id := s.randomPkg(rnd); id != "" {
				o := &opRec{kind: "get", actor: name, pkg: id}
				s.call(o, "GET", "/packages/"+id, nil)
				var p spinbroker.Package
				if o.status == 200 && json.Unmarshal(o.body, &p) == nil && rnd.IntN(3) == 0 {
					for _, c := range p.Commands {
						if isFalse(c.State) {
							s.call(&opRec{kind: "retry", actor: name, cmd: c.ID}, "POST", "/commands/"+c.ID+"/retry", nil)
							break
						}
					}
				}
			}
		default:
			r := stressResources[rnd.IntN(len(stressResources))]
			s.call(&opRec{kind: "queue", actor: name, res: r}, "GET", "/queues/"+r, nil)
		}
		time.Sleep(time.Duration(40+rnd.IntN(120)) * time.Millisecond)
	}
}

func (s *stress) operator(ctx context.Context, rnd *rand.Rand) {
	settings := map[string]queueSettings{}
	for _, r := range stressResources {
		settings[r] = queueSettings{conc: 1}
	}
	for ctx.Err() == nil {
		time.Sleep(time.Duration(100+rnd.IntN(300)) * time.Millisecond)
		r := stressResources[rnd.IntN(len(stressResources))]
		switch n := rnd.IntN(10); {
		case n < 4:
			next := settings[r]
			next.conc = 1 + rnd.IntN(3)
			o := &opRec{kind: "patch", actor: "op", res: r, prev: settings[r], conc: next.conc, paused: next.paused}
			s.call(o, "PATCH", "/queues/"+r, map[string]any{"concurrency": next.conc})
			if o.status == 200 {
				settings[r] = next
			}
		case n < 6:
			// a short pause
			for _, p := range []bool{true, false} {
				next := settings[r]
				next.paused = p
				o := &opRec{kind: "patch", actor: "op", res: r, prev: settings[r], conc: next.conc, paused: next.paused}
				s.call(o, "PATCH", "/queues/"+r, map[string]any{"paused": next.paused})
				if o.status == 200 {
					settings[r] = next
				}
				if p {
					time.Sleep(time.Duration(100+rnd.IntN(600)) * time.Millisecond)
				}
			}
		default:
			// settle a command by hand, as a person at the CLI
			if id := s.randomCmd(rnd); id != "" {
				ok := rnd.IntN(2) == 0
				s.call(&opRec{kind: "settle", actor: "op", cmd: id, ok: ok}, "POST", "/commands/"+id+"/complete",
					map[string]any{"status": ok, "reason": "by hand"})
			}
		}
	}
	// leave the queues running
	for _, r := range stressResources {
		if settings[r].paused {
			o := &opRec{kind: "patch", actor: "op", res: r, prev: settings[r], conc: settings[r].conc, paused: false}
			s.call(o, "PATCH", "/queues/"+r, map[string]any{"paused": false})
		}
	}
}

type held struct {
	c        spinbroker.Command
	leaseDur time.Duration
	expires  time.Time
}

func (s *stress) agent(ctx context.Context, name string, rnd *rand.Rand) {
	for ctx.Err() == nil {
		r := stressResources[rnd.IntN(len(stressResources))]
		lease := []time.Duration{0, time.Second, 2 * time.Second, 3 * time.Second}[rnd.IntN(4)]
		wait := []string{"0s", "300ms", "1s", "2s"}[rnd.IntN(4)]
		var got []held
		if rnd.IntN(10) < 6 {
			o := &opRec{kind: "next", actor: name, res: r, leaseDur: lease}
			path := "/queues/" + r + "/next?wait=" + wait
			if lease > 0 {
				path += "&lease=" + lease.String()
			}
			s.call(o, "POST", path, nil)
			got = o.held(got)
		} else {
			max := 1 + rnd.IntN(4)
			o := &opRec{kind: "claim", actor: name, res: r, leaseDur: lease, conc: max}
			body := map[string]any{"max": max, "wait": wait}
			if lease > 0 {
				body["lease"] = lease.String()
			}
			s.call(o, "POST", "/queues/"+r+"/claim", body)
			got = o.held(got)
		}
		if len(got) == 0 {
			continue
		}
		// work
		for i := range got {
			if rnd.IntN(5) == 0 {
				h := &got[i]
				o := &opRec{kind: "heartbeat", actor: name, cmd: h.c.ID, attempts: h.c.Attempts, expires: h.expires}
				s.call(o, "POST", "/commands/"+h.c.ID+"/heartbeat", map[string]any{"lease": h.c.Lease.Token, "extend": "2s"})
				var hb spinbroker.HeartbeatResult
				if o.status == 200 && json.Unmarshal(o.body, &hb) == nil {
					h.expires = hb.LeaseExpiresAt
				}
			}
		}
		switch n := rnd.IntN(40); {
		case n == 0:
			time.Sleep(3500 * time.Millisecond) // past the lease: delivered again to another agent
		case n < 4:
			time.Sleep(time.Duration(rnd.IntN(500)) * time.Millisecond)
		default:
			time.Sleep(time.Duration(rnd.IntN(60)) * time.Millisecond)
		}
		result := func() (bool, bool) {
			switch n := rnd.IntN(20); {
			case n < 14:
				return true, false
			case n < 17:
				return false, false
			default:
				return false, true
			}
		}
		if len(got) > 1 && rnd.IntN(2) == 0 || rnd.IntN(8) == 0 {
			o := &opRec{kind: "batch", actor: name}
			var items []map[string]any
			for _, h := range got {
				ok, retry := result()
				bi := batchItem{id: h.c.ID, ok: ok, retry: retry, attempts: h.c.Attempts, expires: h.expires}
				tok := h.c.Lease.Token
				if rnd.IntN(10) == 0 {
					bi.stale = true
					tok = "stale-" + tok
				}
				o.items = append(o.items, bi)
				items = append(items, map[string]any{"id": h.c.ID, "status": ok, "retry": retry, "lease": tok, "reason": name})
			}
			s.call(o, "POST", "/commands/complete", map[string]any{"results": items})
			continue
		}
		for _, h := range got {
			ok, retry := result()
			if rnd.IntN(15) == 0 {
				o := &opRec{kind: "stale", actor: name, cmd: h.c.ID, ok: ok}
				s.call(o, "POST", "/commands/"+h.c.ID+"/complete", map[string]any{"status": ok, "lease": "not-" + h.c.Lease.Token})
			}
			body := map[string]any{"status": ok, "retry": retry, "lease": h.c.Lease.Token, "reason": name}
			for i := 0; i < 1+btoi(rnd.IntN(10) == 0); i++ {
				o := &opRec{kind: "complete", actor: name, cmd: h.c.ID, ok: ok, retry: retry, attempts: h.c.Attempts, expires: h.expires}
				s.call(o, "POST", "/commands/"+h.c.ID+"/complete", body)
			}
		}
	}
}

// ---- the test ----

func TestStress(t *testing.T) {
	if testing.Short() {
		t.Skip("a stress run is not short")
	}
	dur := *stressDuration
	seed := *stressSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano()) % 1000000
	}
	t.Logf("seed %d, duration %s", seed, dur)
	fmt.Printf("TestStress seed %d\n", seed)

	db, _ := storetest.MustOpen(t, store.Options{Now: time.Now})
	s := &stress{t: t, seed: seed, cmds: map[string]*cinfo{}, pkgs: map[string][]string{}}
	db.Listen(s.listen)
	api := httpapi.New(db, slog.New(slog.NewTextHandler(io.Discard, nil)), httpapi.Options{Now: time.Now})
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(func() {
		api.Shutdown()
		srv.Close()
	})
	s.url = srv.URL
	s.hc = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 30 * time.Second}

	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	var wg sync.WaitGroup
	rng := func(i uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, i)) }
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); s.producer(ctx, fmt.Sprintf("p%d", i), rng(uint64(100+i))) }()
	}
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); s.agent(ctx, fmt.Sprintf("g%d", i), rng(uint64(200+i))) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); s.operator(ctx, rng(300)) }()
	wg.Wait()
	time.Sleep(50 * time.Millisecond)
	s.quiescentCheck("after the run")

	c := &checker{s: s}
	c.run()
	for _, v := range c.violations[:min(len(c.violations), 40)] {
		t.Error(v)
	}
	if len(c.violations) > 40 {
		t.Errorf("... and %d more violations", len(c.violations)-40)
	}
	for _, id := range c.suspects[:min(len(c.suspects), 3)] {
		o := &opRec{}
		s.call(o, "GET", "/commands/"+id, nil)
		t.Logf("suspect %s now: %s", id, o.body)
	}
	t.Logf("seed %d: %d requests, %d commits, %d packages, %d commands, %d leases", seed, s.nops.Load(), len(s.commits), len(s.pkgIDs), len(s.cmdIDs), c.leases)
	counts := map[string]int{}
	for _, o := range s.ops {
		counts[fmt.Sprintf("%s %d %s", o.kind, o.status, o.code)]++
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		t.Logf("  %-50s %d", k, counts[k])
	}
}

// quiescentCheck reads every package and queue while nothing moves, and
// compares them with the replay of the commit stream.
func (s *stress) quiescentCheck(when string) {
	c := &checker{s: s}
	c.replayAll()
	t := s.t
	qc := map[string]spinbroker.QueueCounts{}
	for _, pid := range s.pkgIDs {
		o := &opRec{}
		s.call(o, "GET", "/packages/"+pid, nil)
		if c.pkgDeleted[pid] {
			if o.status != 404 {
				t.Errorf("%s: deleted package %s answers %d", when, pid, o.status)
			}
			continue
		}
		if o.status != 200 {
			t.Errorf("%s: package %s answers %d %s", when, pid, o.status, o.body)
			continue
		}
		var p spinbroker.Package
		if err := json.Unmarshal(o.body, &p); err != nil {
			t.Fatal(err)
		}
		for _, cmd := range p.Commands {
			st := c.state[cmd.ID]
			if st.state == "" {
				st.state = spinbroker.Staged
			}
			if cmd.State != st.state || cmd.Attempts != st.attempts {
				t.Errorf("%s: command %s is %s/%d attempts, the commit stream says %s/%d", when, cmd.ID, cmd.State, cmd.Attempts, st.state, st.attempts)
			}
			if cmd.State == spinbroker.Cancelled && cmd.Reason != nil && strings.HasPrefix(*cmd.Reason, "dependency ") {
				f := strings.Fields(*cmd.Reason)
				if len(f) != 3 || !slices.Contains(cmd.Dependencies, f[1]) {
					t.Errorf("%s: command %s cancelled with reason %q naming no direct dependency of %v", when, cmd.ID, *cmd.Reason, cmd.Dependencies)
				}
			}
			q := qc[cmd.Resource]
			switch cmd.State {
			case spinbroker.Blocked:
				q.Blocked++
			case spinbroker.Ready:
				q.Ready++
			case spinbroker.Leased:
				q.Leased++
			}
			qc[cmd.Resource] = q
		}
		if msg := packageSelfCheck(&p); msg != "" {
			t.Errorf("%s: package %s: %s", when, pid, msg)
		}
	}
	o := &opRec{}
	s.call(o, "GET", "/queues", nil)
	var ql spinbroker.QueueList
	if err := json.Unmarshal(o.body, &ql); err != nil {
		t.Fatal(err)
	}
	for _, q := range ql.Queues {
		t.Logf("%s: queue %s concurrency %d paused %v counts %+v", when, q.Resource, q.Concurrency, q.Paused, q.Counts)
		if q.Counts != qc[q.Resource] {
			t.Errorf("%s: queue %s counts %+v, its commands %+v", when, q.Resource, q.Counts, qc[q.Resource])
		}
	}
}

// packageSelfCheck checks that a package's representation agrees with
// itself: total, counts, state (API.md, States) and causer.
func packageSelfCheck(p *spinbroker.Package) string {
	var n spinbroker.Counts
	var causer *spinbroker.Command
	for i := range p.Commands {
		c := &p.Commands[i]
		n.Add(c.State, 1)
		byCascade := c.State == spinbroker.Cancelled && c.Reason != nil && strings.HasPrefix(*c.Reason, "dependency ")
		if (c.State == spinbroker.Failed || byCascade) && c.FinishedAt != nil {
			if causer == nil || c.FinishedAt.Before(*causer.FinishedAt) {
				causer = c
			}
		}
	}
	if p.Total != len(p.Commands) {
		return fmt.Sprintf("total %d with %d commands", p.Total, len(p.Commands))
	}
	if p.Counts != n {
		return fmt.Sprintf("counts %+v, its commands %+v (state %s)", p.Counts, n, p.State)
	}
	total := len(p.Commands)
	switch p.State {
	case spinbroker.PackageCancelled:
	case spinbroker.PackageStaging:
		if n.Staged+n.Cancelled != total {
			return fmt.Sprintf("staging with counts %+v", n)
		}
	case spinbroker.PackageSucceeded:
		if n.Succeeded != total {
			return fmt.Sprintf("succeeded with counts %+v", n)
		}
	case spinbroker.PackageFailed:
		if n.Done() != total || n.Succeeded == total {
			return fmt.Sprintf("failed with counts %+v", n)
		}
	case spinbroker.PackageQueued:
		if n.Leased+n.Done() != 0 || n.Staged != 0 {
			return fmt.Sprintf("queued with counts %+v", n)
		}
	case spinbroker.PackageRunning:
		if n.Leased+n.Done() == 0 || n.Done() == total || n.Staged != 0 {
			return fmt.Sprintf("running with counts %+v", n)
		}
	default:
		return fmt.Sprintf("state %q", p.State)
	}
	if p.State == spinbroker.PackageFailed || p.State == spinbroker.PackageRunning || p.State == spinbroker.PackageCancelled {
		switch {
		case causer == nil && p.Causer != nil:
			return fmt.Sprintf("causer %s but no command failed", *p.Causer)
		case causer != nil && p.Causer == nil:
			return fmt.Sprintf("no causer, but %s %s", causer.ID, causer.State)
		case causer != nil:
			var pc *spinbroker.Command
			for i := range p.Commands {
				if p.Commands[i].ID == *p.Causer {
					pc = &p.Commands[i]
				}
			}
			if pc == nil || pc.FinishedAt == nil || !pc.FinishedAt.Equal(*causer.FinishedAt) {
				return fmt.Sprintf("causer %s is not the first command to fail (%s)", *p.Causer, causer.ID)
			}
			if p.Reason == nil || pc.Reason == nil || *p.Reason != *pc.Reason {
				return fmt.Sprintf("reason %v is not its causer's %v", deref(p.Reason), deref(pc.Reason))
			}
		}
	}
	return ""
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

// ---- the checker ----

const deleted spinbroker.CommandState = "deleted"

type cstate struct {
	state    spinbroker.CommandState
	attempts int
}

type hist struct {
	idx int // the commit after which the command is in this state
	cstate
}

type leaseAnswer struct {
	start, end int
	at         time.Time
}

type checker struct {
	s          *stress
	violations []string
	state      map[string]cstate
	history    map[string][]hist
	pkgDeleted map[string]bool
	dependents map[string][]string
	leases     int
	// lease responses: command/attempts → when it was leased
	leasedAt map[string][]leaseAnswer
	// deletedSucceeded: commands deleted after they succeeded
	deletedSucceeded map[string]bool
	byResource       map[string][]string
	suspects         []string
}

func (c *checker) errorf(format string, args ...any) {
	c.violations = append(c.violations, fmt.Sprintf(format, args...))
}

func (c *checker) replayAll() {
	c.state = map[string]cstate{}
	c.history = map[string][]hist{}
	c.pkgDeleted = map[string]bool{}
	c.s.rmu.Lock()
	commits := slices.Clone(c.s.commits)
	c.s.rmu.Unlock()
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	for i, cm := range commits {
		for _, ch := range cm.changes {
			att := ch.Attempts
			if ch.To == spinbroker.Cancelled || ch.From == spinbroker.Blocked || ch.From == spinbroker.Staged {
				att = c.state[ch.CommandID].attempts
			}
			c.state[ch.CommandID] = cstate{ch.To, att}
		}
		for _, p := range cm.deleted {
			c.pkgDeleted[p] = true
			for _, id := range c.s.pkgs[p] {
				c.state[id] = cstate{state: deleted}
			}
		}
		_ = i
	}
}

func (c *checker) stateAt(id string, k int) cstate {
	h := c.history[id]
	i := sort.Search(len(h), func(i int) bool { return h[i].idx >= k })
	if i == 0 {
		return cstate{state: spinbroker.Staged}
	}
	return h[i-1].cstate
}

// during returns the states command id was in at some point of [s, e].
func (c *checker) during(id string, s, e int) []cstate {
	out := []cstate{c.stateAt(id, s)}
	for _, h := range c.history[id] {
		if h.idx >= s && h.idx < e {
			out = append(out, h.cstate)
		}
	}
	return out
}

func (c *checker) anyDuring(id string, s, e int, f func(cstate) bool) bool {
	return slices.ContainsFunc(c.during(id, s, e), f)
}

// transition reports whether command id moved from `from` (with attempts
// a, -1 for any) to a state accepted by to within commits [s, e).
func (c *checker) transition(id string, s, e int, from spinbroker.CommandState, a int, to func(spinbroker.CommandState) bool) bool {
	c.s.rmu.Lock()
	defer c.s.rmu.Unlock()
	for k := s; k < e && k < len(c.s.commits); k++ {
		for _, ch := range c.s.commits[k].changes {
			if ch.CommandID == id && (from == "" || ch.From == from) && (a < 0 || ch.Attempts == a) && to(ch.To) {
				return true
			}
		}
	}
	return false
}

func (c *checker) run() {
	s := c.s
	c.state = map[string]cstate{}
	c.history = map[string][]hist{}
	c.pkgDeleted = map[string]bool{}
	c.dependents = map[string][]string{}
	c.leasedAt = map[string][]leaseAnswer{}
	c.byResource = map[string][]string{}
	for _, id := range s.cmdIDs {
		c.byResource[s.cmds[id].res] = append(c.byResource[s.cmds[id].res], id)
		for _, d := range s.cmds[id].deps {
			c.dependents[d] = append(c.dependents[d], id)
		}
	}
	// what the operations tell: lease times, cancels, retries, patches
	type window struct{ s, e int }
	var cancels = map[string][]*opRec{}
	var retries []window
	var patches = map[string][]*opRec{}
	deleteStarted := map[string]int{} // package → earliest start of a delete of it
	for _, o := range s.ops {
		switch o.kind {
		case "next", "claim":
			if o.status != 200 {
				continue
			}
			for _, cmd := range o.leased() {
				if cmd.StartedAt != nil {
					key := fmt.Sprintf("%s/%d", cmd.ID, cmd.Attempts)
					c.leasedAt[key] = append(c.leasedAt[key], leaseAnswer{o.start, o.end, *cmd.StartedAt})
				}
			}
		case "cancel":
			cancels[o.pkg] = append(cancels[o.pkg], o)
		case "retry":
			retries = append(retries, window{o.start, o.end})
		case "patch":
			patches[o.res] = append(patches[o.res], o)
		case "delete":
			if v, ok := deleteStarted[o.pkg]; !ok || o.start < v {
				deleteStarted[o.pkg] = o.start
			}
		}
	}
	// cancelledBy: the commit position after which the package is known
	// to be cancelled by a client (-1: never).
	cancelledAfter := func(pkg string) int {
		best := -1
		for _, o := range cancels[pkg] {
			var p spinbroker.Package
			if o.status == 200 && json.Unmarshal(o.body, &p) == nil && p.State == spinbroker.PackageCancelled && (best < 0 || o.end < best) {
				best = o.end
			}
		}
		return best
	}
	cancelStarted := func(pkg string, before int) bool {
		for _, o := range cancels[pkg] {
			if o.start <= before {
				return true
			}
		}
		return false
	}
	// settings of a queue at commit k: allowed concurrency and whether it
	// is surely paused.
	settingsAt := func(r string, k int) (conc int, paused bool) {
		conc, paused = 1, false
		ps := patches[r]
		for _, p := range ps {
			if p.start > k || p.status != 200 && p.status != -1 {
				if p.start > k {
					break
				}
				continue
			}
			if p.end <= k {
				conc, paused = p.conc, p.paused
			} else {
				conc = max(p.conc, p.prev.conc)
				paused = p.paused && p.prev.paused
			}
		}
		return
	}
	inRetry := func(k int) bool {
		for _, w := range retries {
			if w.s <= k && k < w.e {
				return true
			}
		}
		return false
	}

	s.rmu.Lock()
	commits := slices.Clone(s.commits)
	s.rmu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := func(id string) cstate {
		st, ok := c.state[id]
		if !ok {
			return cstate{state: spinbroker.Staged}
		}
		return st
	}
	set := func(id string, k int, st cstate) {
		c.state[id] = st
		c.history[id] = append(c.history[id], hist{k, st})
	}
	depOK := func(d string) bool { // succeeded, or deleted after succeeding
		st := cur(d)
		return st.state == spinbroker.Succeeded || st.state == deleted && c.deletedSucceeded[d]
	}
	depBad := func(d string) bool {
		st := cur(d)
		return st.state == spinbroker.Failed || st.state == spinbroker.Cancelled || st.state == deleted && !c.deletedSucceeded[d]
	}
	c.deletedSucceeded = map[string]bool{}
	for k, cm := range commits {
		touched := map[string]bool{}
		for _, ch := range cm.changes {
			id := ch.CommandID
			old := cur(id)
			ci := s.cmds[id]
			touched[id] = true
			if ch.From != old.state {
				c.errorf("commit %d: %s moves from %s to %s, but it was %s", k, id, ch.From, ch.To, old.state)
			}
			if old.state == spinbroker.Succeeded {
				c.errorf("commit %d: %s leaves succeeded for %s", k, id, ch.To)
			}
			if old.state.Terminal() && !ch.To.Terminal() && !inRetry(k) {
				c.errorf("commit %d: %s leaves %s for %s with no retry in flight", k, id, old.state, ch.To)
			}
			if ci != nil && (ch.To == spinbroker.Ready || ch.To == spinbroker.Leased || ch.To == spinbroker.Blocked) {
				if after := cancelledAfter(ci.pkg); after >= 0 && after <= k {
					c.errorf("commit %d: %s of package %s, cancelled by a client by %d, becomes %s (from %s)", k, id, ci.pkg, after, ch.To, old.state)
				}
			}
			if ch.To == spinbroker.Leased && ci != nil {
				c.leases++
				c.checkLease(k, ch, ci, cur, depOK, settingsAt)
			}
			att := ch.Attempts
			if ch.To == spinbroker.Cancelled || ch.From == spinbroker.Blocked || ch.From == spinbroker.Staged {
				att = old.attempts // these transitions report no attempts
			}
			set(id, k, cstate{ch.To, att})
			if ch.To != spinbroker.Leased && ch.To != spinbroker.Ready && ch.To != spinbroker.Blocked && old.state == spinbroker.Leased {
				// attempts reported on a leased command's result
				if ch.Attempts != old.attempts {
					c.errorf("commit %d: %s finished with attempts %d, leased with %d", k, id, ch.Attempts, old.attempts)
				}
			}
			if ch.To == spinbroker.Ready && old.state == spinbroker.Leased && ch.Attempts != old.attempts {
				c.errorf("commit %d: %s back to ready with attempts %d, leased with %d", k, id, ch.Attempts, old.attempts)
			}
		}
		for _, p := range cm.deleted {
			c.pkgDeleted[p] = true
			for _, id := range s.pkgs[p] {
				if cur(id).state == spinbroker.Succeeded {
					c.deletedSucceeded[id] = true
				}
				if !cur(id).state.Terminal() && cur(id).state != spinbroker.Staged {
					c.errorf("commit %d: package %s deleted while %s is %s", k, p, id, cur(id).state)
				}
				set(id, k, cstate{state: deleted})
				touched[id] = true
			}
		}
		// invariants over the touched commands and their dependents
		check := map[string]bool{}
		for id := range touched {
			check[id] = true
			for _, d := range c.dependents[id] {
				check[d] = true
			}
		}
		for id := range check {
			ci := s.cmds[id]
			if ci == nil {
				continue
			}
			st := cur(id).state
			switch st {
			case spinbroker.Blocked:
				all := true
				for _, d := range ci.deps {
					if depBad(d) {
						c.errorf("commit %d: %s is blocked on %s, which is %s (no cascade)", k, id, d, cur(d).state)
					}
					if !depOK(d) {
						all = false
					}
				}
				if all && ci.notBefore == nil {
					c.errorf("commit %d: %s is blocked though all its dependencies succeeded", k, id)
				}
			case spinbroker.Ready, spinbroker.Leased:
				for _, d := range ci.deps {
					if !depOK(d) {
						c.errorf("commit %d: %s is %s though its dependency %s is %s", k, id, st, d, cur(d).state)
					}
				}
			case spinbroker.Staged:
				for _, d := range ci.deps {
					if cur(d).state == deleted && !c.deletedSucceeded[d] && !c.pkgDeleted[ci.pkg] {
						c.errorf("commit %d: staged %s depends on deleted %s and was not cancelled", k, id, d)
					}
				}
			}
		}
	}

	// the answers
	for _, o := range s.ops {
		c.checkOp(o, cancelStarted, deleteStarted)
	}
}

func (c *checker) checkLease(k int, ch spinbroker.Change, ci *cinfo, cur func(string) cstate, depOK func(string) bool, settingsAt func(string, int) (int, bool)) {
	s := c.s
	id := ch.CommandID
	old := cur(id)
	if ch.Attempts != old.attempts+1 {
		c.errorf("commit %d: %s leased with attempts %d after %d", k, id, ch.Attempts, old.attempts)
	}
	if ch.Attempts > ci.maxAttempts {
		c.errorf("commit %d: %s leased for attempt %d of %d", k, id, ch.Attempts, ci.maxAttempts)
	}
	for _, d := range ci.deps {
		if !depOK(d) {
			c.errorf("commit %d: %s leased while its dependency %s is %s", k, id, d, cur(d).state)
		}
	}
	var at time.Time
	haveAt := false
	for _, la := range c.leasedAt[fmt.Sprintf("%s/%d", id, ch.Attempts)] {
		if la.start <= k && k < la.end {
			at, haveAt = la.at, true
		}
	}
	if haveAt && ci.notBefore != nil && at.Before(*ci.notBefore) {
		c.errorf("commit %d: %s leased at %s before its not_before %s", k, id, at.Format(time.RFC3339Nano), ci.notBefore.Format(time.RFC3339Nano))
	}
	conc, paused := settingsAt(ci.res, k)
	if paused {
		c.errorf("commit %d: %s leased from paused queue %s", k, id, ci.res)
	}
	leased := 1
	for _, oid := range c.byResource[ci.res] {
		o := s.cmds[oid]
		if oid == id {
			continue
		}
		st := cur(oid)
		switch st.state {
		case spinbroker.Leased:
			leased++
		case spinbroker.Ready:
			if o.seq != 0 && ci.seq != 0 && o.seq < ci.seq {
				c.errorf("commit %d: %s (seq %d) leased while %s (seq %d) is ready before it in %s", k, id, ci.seq, oid, o.seq, ci.res)
			}
		case spinbroker.Blocked:
			if o.seq != 0 && ci.seq != 0 && o.seq < ci.seq && o.notBefore != nil && haveAt && o.notBefore.Before(at.Add(-5*time.Millisecond)) {
				all := true
				for _, d := range o.deps {
					all = all && depOK(d)
				}
				if all {
					var ds []string
					for _, d := range o.deps {
						ds = append(ds, fmt.Sprintf("%s=%s", d, cur(d).state))
					}
					nb := 0
					for _, x := range c.byResource[ci.res] {
						if cur(x).state == spinbroker.Blocked {
							nb++
						}
					}
					c.errorf("commit %d: %s (seq %d) leased at %s while %s (seq %d, deps %v, history %v), due at %s, still waits (%d blocked in %s)", k, id, ci.seq, at.Format(time.RFC3339Nano), oid, o.seq, ds, c.history[oid], o.notBefore.Format(time.RFC3339Nano), nb, ci.res)
					c.suspects = append(c.suspects, oid)
				}
			}
		}
	}
	if leased > conc {
		c.errorf("commit %d: %s leased with %d leased in %s, concurrency %d", k, id, leased, ci.res, conc)
	}
}

func isFalse(st spinbroker.CommandState) bool {
	return st == spinbroker.Failed || st == spinbroker.Cancelled
}

// checkOp judges one answer against the states its subject went through
// while the request was in flight.
func (c *checker) checkOp(o *opRec, cancelStarted func(string, int) bool, deleteStarted map[string]int) {
	bad := func(format string, args ...any) {
		c.errorf("%s %s by %s [%d,%d] answered %d %s: %s (%s)", o.kind, o.cmd+o.pkg+o.res, o.actor, o.start, o.end, o.status, o.code, fmt.Sprintf(format, args...), truncate(o.body))
	}
	if o.status == -1 {
		bad("transport error")
		return
	}
	if o.status == 500 || o.status == 503 {
		bad("server error")
		return
	}
	deletedBy := func(pkg string) bool { v, ok := deleteStarted[pkg]; return ok && v <= o.end }
	depDeleted := func() bool {
		for _, d := range o.depIDs {
			if ci := c.s.cmds[d]; ci != nil && deletedBy(ci.pkg) {
				return true
			}
		}
		return false
	}
	pkgOf := func(id string) string {
		if ci := c.s.cmds[id]; ci != nil {
			return ci.pkg
		}
		return ""
	}
	// answered is the package an answer holds, checked against itself.
	answered := func() (*spinbroker.Package, bool) {
		var p spinbroker.Package
		if json.Unmarshal(o.body, &p) != nil {
			bad("undecodable")
			return nil, false
		}
		if msg := packageSelfCheck(&p); msg != "" {
			bad("%s", msg)
		}
		return &p, true
	}
	switch o.kind {
	case "create", "replay":
		switch {
		case o.status == 201:
			p, ok := answered()
			if !ok {
				return
			}
			if p.State != spinbroker.PackageStaging {
				for _, cmd := range p.Commands {
					if cmd.State == spinbroker.Staged || !c.transition(cmd.ID, o.start, o.end, spinbroker.Staged, -1, func(spinbroker.CommandState) bool { return true }) && o.kind == "create" {
						bad("command %s enqueued (%s) with no commit", cmd.ID, cmd.State)
					}
				}
			}
		case o.status == 400 && o.code == spinbroker.EUNKNOWNDEP && depDeleted():
		default:
			bad("unexpected")
		}
	case "add":
		switch {
		case o.status == 201:
		case o.status == 400 && o.code == spinbroker.EUNKNOWNDEP && depDeleted():
		case o.status == 404 && deletedBy(o.pkg):
		case o.status == 409 && o.code == spinbroker.ECONFLICT && cancelStarted(o.pkg, o.end):
		default:
			bad("unexpected")
		}
	case "enqueue":
		switch {
		case o.status == 200:
			p, ok := answered()
			if !ok {
				return
			}
			if p.State == spinbroker.PackageStaging {
				bad("still staging")
			}
		case o.status == 404 && deletedBy(o.pkg):
		case o.status == 409 && o.code == spinbroker.ECONFLICT && cancelStarted(o.pkg, o.end):
		case o.status == 400 && o.code == spinbroker.EEMPTY && len(c.s.pkgs[o.pkg]) == 0:
		default:
			bad("unexpected")
		}
	case "cancel":
		switch {
		case o.status == 200:
			p, ok := answered()
			if !ok {
				return
			}
			if p.State == spinbroker.PackageCancelled {
				for _, id := range c.s.pkgs[o.pkg] {
					switch st := c.stateAt(id, o.end).state; st {
					case spinbroker.Staged, spinbroker.Blocked, spinbroker.Ready:
						bad("its command %s is still %s", id, st)
					}
				}
			} else if !p.State.Terminal() {
				bad("package %s after a cancel", p.State)
			}
		case o.status == 404 && deletedBy(o.pkg):
		default:
			bad("unexpected")
		}
	case "delete":
		cmds := c.s.pkgs[o.pkg]
		allTerminalSometime := false
		openSometime := false
		for k := o.start; k <= o.end; k++ {
			all := true
			for _, id := range cmds {
				st := c.stateAt(id, k).state
				if !st.Terminal() && st != deleted && st != spinbroker.Staged {
					all = false
				}
			}
			if all {
				allTerminalSometime = true
			} else {
				openSometime = true
			}
		}
		switch {
		case o.status == 204:
			if !allTerminalSometime {
				bad("deleted with unfinished commands")
			}
			if !c.pkgDeleted[o.pkg] {
				bad("no commit deleted it")
			}
		case o.status == 409 && o.code == spinbroker.ECONFLICT:
			if !openSometime {
				bad("refused, but all its commands were finished")
			}
		case o.status == 404 && c.pkgDeleted[o.pkg]:
		default:
			bad("unexpected")
		}
	case "retry":
		switch {
		case o.status == 200:
			if !c.transition(o.cmd, o.start, o.end, "", -1, func(st spinbroker.CommandState) bool { return st == spinbroker.Ready || st == spinbroker.Blocked }) {
				bad("no commit put it back")
			}
		case o.status == 409 && o.code == spinbroker.ECONFLICT:
			ci := c.s.cmds[o.cmd]
			ok := c.anyDuring(o.cmd, o.start, o.end, func(st cstate) bool { return !isFalse(st.state) }) || cancelStarted(ci.pkg, o.end)
			for _, d := range ci.deps {
				ok = ok || c.anyDuring(d, o.start, o.end, func(st cstate) bool { return isFalse(st.state) || st.state == deleted })
			}
			if !ok {
				// the dependency that cancelled it may have been deleted, or
				// a dependency of a dependency: accept when any ancestor was
				// deleted.
				for _, d := range ci.deps {
					ok = ok || c.s.cmds[d] == nil || deletedBy(c.s.cmds[d].pkg)
				}
			}
			if !ok {
				bad("refused, but it was %v and its dependencies fine", c.during(o.cmd, o.start, o.end))
			}
		case o.status == 404 && deletedBy(pkgOf(o.cmd)):
		default:
			bad("unexpected")
		}
	case "get":
		switch {
		case o.status == 200:
			p, ok := answered()
			if !ok {
				return
			}
			if p.State == spinbroker.PackageCancelled && !cancelStarted(o.pkg, o.end) {
				bad("cancelled, but no client cancelled it")
			}
		case o.status == 404 && deletedBy(o.pkg):
		default:
			bad("unexpected")
		}
	case "queue":
		if o.status != 200 {
			bad("unexpected")
			return
		}
		var q spinbroker.Queue
		if json.Unmarshal(o.body, &q) != nil {
			bad("undecodable")
			return
		}
		var n spinbroker.QueueCounts
		var last int64
		for _, cmd := range q.Commands {
			switch cmd.State {
			case spinbroker.Blocked:
				n.Blocked++
			case spinbroker.Ready:
				n.Ready++
			case spinbroker.Leased:
				n.Leased++
			default:
				bad("lists %s %s", cmd.ID, cmd.State)
			}
			if cmd.Seq == nil || *cmd.Seq <= last {
				bad("commands out of queue order")
			} else {
				last = *cmd.Seq
			}
		}
		if len(q.Commands) < 50 && n != q.Counts {
			bad("counts %+v, its commands %+v", q.Counts, n)
		}
	case "patch":
		if o.status != 200 {
			bad("unexpected")
		}
	case "next", "claim":
		if o.status == 204 && o.kind == "next" {
			return
		}
		if o.status != 200 {
			bad("unexpected")
			return
		}
		cs := o.leased()
		if o.kind == "claim" && len(cs) > o.conc {
			bad("%d commands for max %d", len(cs), o.conc)
		}
		for i, cmd := range cs {
			if cmd.State != spinbroker.Leased || cmd.Lease == nil || cmd.Lease.Token == "" {
				bad("delivered %s in state %s", cmd.ID, cmd.State)
			}
			if i > 0 && *cmd.Seq <= *cs[i-1].Seq {
				bad("claim out of queue order")
			}
			if !c.transition(cmd.ID, o.start, o.end, spinbroker.Ready, cmd.Attempts, func(st spinbroker.CommandState) bool { return st == spinbroker.Leased }) {
				bad("lease of %s (attempt %d) has no commit", cmd.ID, cmd.Attempts)
			}
		}
	case "heartbeat":
		mine := func(st cstate) bool { return st.state == spinbroker.Leased && st.attempts == o.attempts }
		switch {
		case o.status == 200:
			if !c.anyDuring(o.cmd, o.start, o.end, mine) {
				bad("extended a lease that was not current: %v", c.during(o.cmd, o.start, o.end))
			}
		case o.status == 409 && o.code == spinbroker.ESTALE:
			if !c.anyDuring(o.cmd, o.start, o.end, func(st cstate) bool { return !mine(st) }) && o.expires.After(o.endAt) {
				bad("refused a current lease: %v", c.during(o.cmd, o.start, o.end))
			}
		case o.status == 404 && deletedBy(pkgOf(o.cmd)):
		default:
			bad("unexpected")
		}
	case "complete", "stale", "settle":
		var cmd spinbroker.Command
		json.Unmarshal(o.body, &cmd)
		if msg := c.judgeResult(o.cmd, o.kind, o.ok, o.retry, o.attempts, o.expires, o.start, o.end, o.endAt, o.status, o.code, &cmd, deletedBy(pkgOf(o.cmd))); msg != "" {
			bad("%s", msg)
		}
	case "batch":
		if o.status != 200 {
			bad("unexpected")
			return
		}
		var out spinbroker.BatchOutcomes
		if json.Unmarshal(o.body, &out) != nil || len(out.Results) != len(o.items) {
			bad("undecodable")
			return
		}
		for i, it := range o.items {
			r := out.Results[i]
			code := ""
			if r.Error != nil {
				code = r.Error.Code
			}
			kind := "complete"
			if it.stale {
				kind = "stale"
			}
			if r.ID != it.id {
				bad("item %d answers for %s", i, r.ID)
			}
			if msg := c.judgeResult(it.id, kind, it.ok, it.retry, it.attempts, it.expires, o.start, o.end, o.endAt, r.HTTPStatus, code, nil, deletedBy(pkgOf(it.id))); msg != "" {
				bad("item %d (%s ok=%v retry=%v stale=%v): %s", i, it.id, it.ok, it.retry, it.stale, msg)
			}
		}
	}
}

// judgeResult judges the answer to a result: an agent's with its lease
// (complete), with a wrong token (stale), or a person's without (settle).
func (c *checker) judgeResult(id, kind string, ok, retry bool, attempts int, expires time.Time, s, e int, endAt time.Time, status int, code string, cmd *spinbroker.Command, gone bool) string {
	states := c.during(id, s, e)
	has := func(f func(cstate) bool) bool { return slices.ContainsFunc(states, f) }
	sameTerminal := func(st cstate) bool {
		return st.state == spinbroker.Succeeded && ok || isFalse(st.state) && !ok
	}
	otherTerminal := func(st cstate) bool { return st.state.Terminal() && !sameTerminal(st) }
	notDelivered := func(st cstate) bool { return st.state == spinbroker.Blocked || st.state == spinbroker.Staged }
	mine := func(st cstate) bool { return st.state == spinbroker.Leased && st.attempts == attempts }
	expired := !expires.IsZero() && !expires.After(endAt)
	var want func(spinbroker.CommandState) bool
	switch {
	case ok:
		want = func(st spinbroker.CommandState) bool { return st == spinbroker.Succeeded }
	case retry:
		want = func(st spinbroker.CommandState) bool { return st == spinbroker.Ready || st == spinbroker.Failed }
	default:
		want = func(st spinbroker.CommandState) bool { return st == spinbroker.Failed }
	}
	switch {
	case status == 200:
		applied := false
		switch kind {
		case "complete":
			applied = c.transition(id, s, e, spinbroker.Leased, attempts, want)
		case "settle":
			applied = c.transition(id, s, e, "", -1, want)
		}
		if !applied && !has(sameTerminal) {
			return fmt.Sprintf("accepted, but no commit recorded it and it was %v", states)
		}
		if cmd != nil && cmd.ID != "" && !applied && !cmd.State.Terminal() {
			return fmt.Sprintf("answered state %s", cmd.State)
		}
	case status == 409 && code == spinbroker.ESTALE:
		if kind == "settle" {
			return "a result without a lease is never stale"
		}
		if kind == "complete" && !has(func(st cstate) bool { return !st.state.Terminal() && !notDelivered(st) && !mine(st) }) && !expired {
			return fmt.Sprintf("refused a current lease: %v", states)
		}
		if kind == "stale" && !has(func(st cstate) bool { return !st.state.Terminal() && !notDelivered(st) }) {
			return fmt.Sprintf("stale, but it was %v", states)
		}
	case status == 409 && code == spinbroker.ECONFLICT:
		if !has(otherTerminal) && !has(notDelivered) {
			return fmt.Sprintf("conflict, but it was %v", states)
		}
	case status == 404 && gone:
	default:
		return fmt.Sprintf("unexpected, it was %v", states)
	}
	return ""
}

func truncate(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "…"
	}
	return string(b)
}
