package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/store"
	"github.com/spin-broker/spinbroker/internal/store/storetest"
)

func newTestServer(t *testing.T) (*Server, *httptest.Server, *store.DB) {
	t.Helper()
	db, _ := storetest.MustOpen(t, store.Options{Now: time.Now})
	s, srv := serveStore(t, db, Options{})
	return s, srv, db
}

// serveStore serves db over HTTP until the test ends.
func serveStore(t *testing.T, db *store.DB, opts Options) (*Server, *httptest.Server) {
	t.Helper()
	s := New(db, slog.New(slog.NewTextHandler(io.Discard, nil)), opts)
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		s.Shutdown()
		srv.Close()
	})
	return s, srv
}

type pollResult struct {
	status  int
	body    string
	elapsed time.Duration
}

// poll starts a request in the background and returns its result channel.
func poll(ctx context.Context, t *testing.T, method, url, body string) <-chan pollResult {
	out := make(chan pollResult, 1)
	go func() {
		start := time.Now()
		req, _ := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			out <- pollResult{status: -1, body: err.Error(), elapsed: time.Since(start)}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		out <- pollResult{status: resp.StatusCode, body: string(b), elapsed: time.Since(start)}
	}()
	return out
}

// waitFor waits until n long-polls wait on resource.
func waitFor(t *testing.T, s *Server, resource string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.notifier.waiting(resource) != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d long-polls wait on %s, want %d", s.notifier.waiting(resource), resource, n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestLongPoll_WokenByEnqueue(t *testing.T) {
	s, srv, db := newTestServer(t)
	res := poll(context.Background(), t, "POST", srv.URL+"/queues/work/next?wait=30s", "")
	waitFor(t, s, "work", 1)
	p, _, err := db.CreatePackage(context.Background(), spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{{Resource: "work", Action: "go"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-res:
		if r.status != 200 || !strings.Contains(r.body, p.Commands[0].ID) {
			t.Fatalf("got %d %s", r.status, r.body)
		}
		if r.elapsed > 20*time.Second {
			t.Fatalf("the enqueue did not wake the long-poll (%v)", r.elapsed)
		}
	case <-time.After(25 * time.Second):
		t.Fatal("the long-poll was not woken by the enqueue")
	}
	waitFor(t, s, "work", 0)
}

// TestLongPoll_HugeWaitIsClamped: a wait too large for a duration is a
// wait of 60s, as any wait over 60s is, in the query and in a claim's body:
// the poll waits, and an enqueue wakes it.
func TestLongPoll_HugeWaitIsClamped(t *testing.T) {
	s, srv, db := newTestServer(t)
	ctx := context.Background()
	next := poll(ctx, t, "POST", srv.URL+"/queues/huge/next?wait=9999999999999999999h", "")
	claim := poll(ctx, t, "POST", srv.URL+"/queues/huge2/claim", `{"max": 1, "wait": "9999999999999999999h"}`)
	waitFor(t, s, "huge", 1)
	waitFor(t, s, "huge2", 1)
	if _, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{
		{Resource: "huge", Action: "go"}, {Resource: "huge2", Action: "go"},
	}}, nil); err != nil {
		t.Fatal(err)
	}
	for name, res := range map[string]<-chan pollResult{"next": next, "claim": claim} {
		select {
		case r := <-res:
			if r.status != 200 || !strings.Contains(r.body, `"action":"go"`) {
				t.Errorf("%s with a huge wait: %d %s", name, r.status, r.body)
			}
		case <-time.After(25 * time.Second):
			t.Fatalf("%s with a huge wait was not woken by the enqueue", name)
		}
	}
}

func TestLongPoll_WokenByDependency(t *testing.T) {
	s, srv, db := newTestServer(t)
	ctx := context.Background()
	p, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{
		{Key: "a", Resource: "first", Action: "a"}, {Resource: "second", Action: "b", Dependencies: []string{"a"}},
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	res := poll(ctx, t, "POST", srv.URL+"/queues/second/claim", `{"max": 5, "wait": "30s"}`)
	waitFor(t, s, "second", 1)
	a, _, err := db.Next(ctx, "first", 0)
	if err != nil || a == nil {
		t.Fatal(err)
	}
	ok := true
	if _, err := db.Complete(ctx, a.ID, spinbroker.Result{Status: &ok, Lease: a.Lease.Token}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-res:
		var cl spinbroker.ClaimResult
		if err := json.Unmarshal([]byte(r.body), &cl); err != nil || r.status != 200 || len(cl.Commands) != 1 || cl.Commands[0].ID != p.Commands[1].ID {
			t.Fatalf("got %d %s", r.status, r.body)
		}
	case <-time.After(25 * time.Second):
		t.Fatal("a dependency's success did not wake the long-poll on the dependent's queue")
	}
}

// TestLongPoll_WokenByDelayedDependent: a dependency's success that
// leaves its dependent waiting only for its not_before wakes the
// long-polls on the dependent's queue, so that they learn that time and
// deliver it then. They slept on, until their wait ran out (up to a
// minute) or the sweeper's next round: no transition told them.
func TestLongPoll_WokenByDelayedDependent(t *testing.T) {
	s, srv, db := newTestServer(t)
	ctx := context.Background()
	later := time.Now().Add(time.Second).UTC()
	p, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{
		{Key: "a", Resource: "first", Action: "a"},
		{Resource: "second", Action: "b", Dependencies: []string{"a"}, NotBefore: &later},
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	res := poll(ctx, t, "POST", srv.URL+"/queues/second/next?wait=60s", "")
	waitFor(t, s, "second", 1)
	a, _, err := db.Next(ctx, "first", 0)
	if err != nil || a == nil {
		t.Fatal(err)
	}
	ok := true
	if _, err := db.Complete(ctx, a.ID, spinbroker.Result{Status: &ok, Lease: a.Lease.Token}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-res:
		if r.status != 200 || !strings.Contains(r.body, p.Commands[1].ID) {
			t.Fatalf("got %d %s", r.status, r.body)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the long-poll slept through the delay of a command its dependency's success left waiting only for it")
	}
}

func TestLongPoll_TimesOut(t *testing.T) {
	_, srv, _ := newTestServer(t)
	r := <-poll(context.Background(), t, "POST", srv.URL+"/queues/idle/next?wait=300ms", "")
	if r.status != 204 || r.elapsed < 250*time.Millisecond {
		t.Fatalf("got %d after %v", r.status, r.elapsed)
	}
	r = <-poll(context.Background(), t, "POST", srv.URL+"/queues/idle/claim", `{"max": 2, "wait": "300ms"}`)
	if r.status != 200 || !strings.Contains(r.body, `"commands":[]`) || r.elapsed < 250*time.Millisecond {
		t.Fatalf("claim got %d %s after %v", r.status, r.body, r.elapsed)
	}
}

func TestLongPoll_WokenByLeaseExpiry(t *testing.T) {
	s, srv, db := newTestServer(t)
	ctx := context.Background()
	if _, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{{Resource: "exp", Action: "x"}}}, nil); err != nil {
		t.Fatal(err)
	}
	first, _, err := db.Next(ctx, "exp", time.Second)
	if err != nil || first == nil {
		t.Fatal(err)
	}
	// Nothing commits while the lease runs out: only the timer set from
	// the store's answer can wake this long-poll.
	res := poll(ctx, t, "POST", srv.URL+"/queues/exp/next?wait=20s", "")
	waitFor(t, s, "exp", 1)
	select {
	case r := <-res:
		if r.status != 200 || !strings.Contains(r.body, first.ID) || !strings.Contains(r.body, `"attempts":2`) {
			t.Fatalf("got %d %s", r.status, r.body)
		}
		if r.elapsed > 10*time.Second {
			t.Fatalf("redelivered after %v; the lease was 1s", r.elapsed)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the expired lease was not redelivered to the waiting long-poll")
	}
}

// TestLongPoll_WokenByShortenedLease: a heartbeat whose extend brings a
// lease's end closer than it was wakes the long-polls on its queue, which
// learn the new time and redeliver the command when it runs out. They
// slept until the end the lease had had (a minute here), their wait, or
// the sweeper's next round: a heartbeat recorded no change.
func TestLongPoll_WokenByShortenedLease(t *testing.T) {
	s, srv, db := newTestServer(t)
	ctx := context.Background()
	if _, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{{Resource: "short", Action: "x"}}}, nil); err != nil {
		t.Fatal(err)
	}
	first, _, err := db.Next(ctx, "short", time.Minute)
	if err != nil || first == nil {
		t.Fatal(err)
	}
	res := poll(ctx, t, "POST", srv.URL+"/queues/short/next?wait=60s", "")
	waitFor(t, s, "short", 1)
	if _, err := db.Heartbeat(ctx, first.ID, first.Lease.Token, time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-res:
		if r.status != 200 || !strings.Contains(r.body, first.ID) || !strings.Contains(r.body, `"attempts":2`) {
			t.Fatalf("got %d %s", r.status, r.body)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the long-poll slept through the end of a lease a heartbeat had shortened")
	}
}

func TestLongPoll_AbandonedIsReleased(t *testing.T) {
	s, srv, db := newTestServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	res := poll(ctx, t, "POST", srv.URL+"/queues/gone/next?wait=60s", "")
	waitFor(t, s, "gone", 1)
	cancel()
	<-res
	// The server lets go of the request at once, not after 60 seconds.
	waitFor(t, s, "gone", 0)
	// And it leased nothing for the client that left.
	if _, _, err := db.CreatePackage(context.Background(), spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{{Resource: "gone", Action: "x"}}}, nil); err != nil {
		t.Fatal(err)
	}
	q, err := db.Queue(context.Background(), "gone")
	if err != nil || q.Counts.Ready != 1 || q.Counts.Leased != 0 {
		t.Fatalf("queue after the abandoned poll: %+v %v", q.Counts, err)
	}
}

func TestLongPoll_Shutdown(t *testing.T) {
	s, srv, _ := newTestServer(t)
	res := poll(context.Background(), t, "POST", srv.URL+"/queues/stop/next?wait=60s", "")
	waitFor(t, s, "stop", 1)
	start := time.Now()
	s.Shutdown()
	select {
	case r := <-res:
		// Not 204: the wait did not run out, and the agent should back off.
		if r.status != 503 || !strings.Contains(r.body, `"unavailable"`) || !strings.Contains(r.body, "shutting down") {
			t.Fatalf("got %d %s, want 503 unavailable", r.status, r.body)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("answered %v after shutdown", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("shutdown did not answer the waiting long-poll")
	}
}

func TestEvents(t *testing.T) {
	// A clock of the test's: the sweep below has a retention to pass.
	db, clock := storetest.MustOpen(t, store.Options{})
	_, srv := serveStore(t, db, Options{Now: clock.Now})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	lines := make(chan string, 100)
	go func() {
		buf := make([]byte, 64<<10)
		var acc string
		for {
			n, err := resp.Body.Read(buf)
			acc += string(buf[:n])
			for {
				i := strings.Index(acc, "\n\n")
				if i < 0 {
					break
				}
				lines <- acc[:i]
				acc = acc[i+2:]
			}
			if err != nil {
				close(lines)
				return
			}
		}
	}()
	if first := <-lines; !strings.Contains(first, ": connected") {
		t.Fatalf("first event %q", first)
	}
	p, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{{Resource: "ev", Action: "x"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var sawCommand, sawPackage, sawQueue bool
	for !(sawCommand && sawPackage && sawQueue) {
		select {
		case ev, ok := <-lines:
			if !ok {
				t.Fatal("stream ended")
			}
			switch {
			case strings.HasPrefix(ev, "event: command") && strings.Contains(ev, p.Commands[0].ID) && strings.Contains(ev, `"state":"ready"`):
				sawCommand = true
			case strings.HasPrefix(ev, "event: package") && strings.Contains(ev, p.ID) && strings.Contains(ev, `"state":"queued"`):
				sawPackage = true
			case strings.HasPrefix(ev, "event: queue") && strings.Contains(ev, `"resource":"ev"`):
				sawQueue = true
			}
		case <-ctx.Done():
			t.Fatalf("events seen: command %v package %v queue %v", sawCommand, sawPackage, sawQueue)
		}
	}

	// A queue the sweeper forgets is said so, for pages that list it.
	c, _, err := db.Next(ctx, "ev", 0)
	if err != nil || c == nil {
		t.Fatalf("next: %v %v", c, err)
	}
	ok := true
	if _, err := db.Complete(ctx, c.ID, spinbroker.Result{Status: &ok, Lease: c.Lease.Token}); err != nil {
		t.Fatal(err)
	}
	clock.Add(time.Hour)
	if res, err := db.Sweep(ctx, store.SweepOptions{Retain: time.Minute}); err != nil || res.QueuesForgotten != 1 {
		t.Fatalf("sweep: %+v %v", res, err)
	}
	for {
		select {
		case ev, ok := <-lines:
			if !ok {
				t.Fatal("stream ended")
			}
			if strings.HasPrefix(ev, "event: queue") && strings.Contains(ev, `{"forgotten":true,"resource":"ev"}`) {
				return
			}
		case <-ctx.Done():
			t.Fatal("no event said the queue was forgotten")
		}
	}
}

// TestPolls_Bounded: the queues remembered as asked stay bounded; past the
// bound, the one asked longest ago is forgotten.
func TestPolls_Bounded(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	p := newPolls(start)
	for i := 0; i <= maxPolled; i++ {
		p.saw(fmt.Sprintf("r%d", i), ask{At: start.Add(time.Duration(i) * time.Second)})
	}
	if len(p.last) != maxPolled {
		t.Fatalf("%d queues remembered, want %d", len(p.last), maxPolled)
	}
	if _, ok := p.lastAsked("r0"); ok {
		t.Error("the queue asked longest ago is still remembered")
	}
	if q, ok := p.lastAsked(fmt.Sprintf("r%d", maxPolled)); !ok || !q.At.Equal(start.Add(maxPolled*time.Second)) {
		t.Errorf("the last queue asked: %v %v", q, ok)
	}
	// Asking a remembered queue again forgets nothing.
	p.saw("r1", ask{At: start.Add(time.Hour)})
	if _, ok := p.lastAsked("r2"); !ok || len(p.last) != maxPolled {
		t.Error("asking a known queue again forgot another")
	}
}

// TestAskOf: what an ask keeps of its request is the client's words, cut
// to printable text, cut at 80 bytes.
func TestAskOf(t *testing.T) {
	r := httptest.NewRequest("POST", "/queues/q/next", nil)
	r.RemoteAddr = "10.1.2.3:40000"
	r.Header.Set("User-Agent", "sa-host-path/1\x00\n<script>"+strings.Repeat("x", 200)+"\xff")
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	q := askOf(r, now)
	if q.From != "10.1.2.3" || !q.At.Equal(now) || q.Token != "" {
		t.Errorf("ask: %+v", q)
	}
	if !strings.HasPrefix(q.By, "sa-host-path/1<script>xxx") || len(q.By) > 80+len("…") || strings.ContainsAny(q.By, "\x00\n") {
		t.Errorf("the program: %q", q.By)
	}
}

// TestLongPoll_FullQueueWithEndedBackoffDoesNotSpin: a long-poll on a full
// queue whose head's retry back-off has ended waits for the slot to free
// (a completion wakes it), rather than asking the database again every
// millisecond until then.
func TestLongPoll_FullQueueWithEndedBackoffDoesNotSpin(t *testing.T) {
	db, _ := storetest.MustOpen(t, store.Options{Now: time.Now})
	st := &countingClaims{DB: db}
	s := New(st, slog.New(slog.NewTextHandler(io.Discard, nil)), Options{})
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		s.Shutdown()
		srv.Close()
	})
	ctx := context.Background()
	// x waits on d (another queue) while a, behind it, fails and backs
	// off for 1s; then d succeeds and x takes the queue's one slot.
	p, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{
		{Key: "d", Resource: "dep", Action: "d"}, {Resource: "spin", Action: "x", Dependencies: []string{"d"}}, {Resource: "spin", Action: "a"},
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	no, yes := false, true
	a, _, err := db.Next(ctx, "spin", 0)
	if err != nil || a == nil || a.Action != "a" {
		t.Fatalf("next: %v %v", a, err)
	}
	if _, err := db.Complete(ctx, a.ID, spinbroker.Result{Status: &no, Retry: true, Lease: a.Lease.Token}); err != nil {
		t.Fatal(err)
	}
	d, _, err := db.Next(ctx, "dep", 0)
	if err != nil || d == nil {
		t.Fatal(err)
	}
	if _, err := db.Complete(ctx, d.ID, spinbroker.Result{Status: &yes, Lease: d.Lease.Token}); err != nil {
		t.Fatal(err)
	}
	x, _, err := db.Next(ctx, "spin", 0)
	if err != nil || x == nil || x.ID != p.Commands[1].ID {
		t.Fatalf("next: %v %v", x, err)
	}
	before := st.n.Load()
	// The poll outlasts a's back-off by 2s, x still leased all along.
	r := <-poll(ctx, t, "POST", srv.URL+"/queues/spin/next?wait=3s", "")
	if r.status != 204 {
		t.Fatalf("got %d %s, want 204: x holds the queue's one slot", r.status, r.body)
	}
	if n := st.n.Load() - before; n > 20 {
		t.Fatalf("one long-poll of 3s asked the database %d times: it spun once a's back-off had ended", n)
	}
}

// countedServer serves a store that counts its claims and peeks.
func countedServer(t *testing.T) (*Server, *httptest.Server, *store.DB, *countingClaims) {
	t.Helper()
	db, _ := storetest.MustOpen(t, store.Options{Now: time.Now})
	counted := &countingClaims{DB: db}
	s, srv := serveStore(t, db, Options{})
	s.store = counted
	return s, srv, db, counted
}

// countingClaims is the store with a count of the claims (next and claim)
// it was asked for, each a write transaction, and of the peeks, each a
// read. onPeek, when set, runs before each peek.
type countingClaims struct {
	*store.DB
	n      atomic.Int64
	peeks  atomic.Int64
	onPeek func(ctx context.Context)
}

func (c *countingClaims) Peek(ctx context.Context, resource string) (bool, time.Time, error) {
	c.peeks.Add(1)
	if c.onPeek != nil {
		c.onPeek(ctx)
	}
	return c.DB.Peek(ctx, resource)
}

func (c *countingClaims) Claim(ctx context.Context, resource string, max int, lease time.Duration) ([]spinbroker.Command, time.Time, error) {
	c.n.Add(1)
	return c.DB.Claim(ctx, resource, max, lease)
}

func (c *countingClaims) Next(ctx context.Context, resource string, lease time.Duration) (*spinbroker.Command, time.Time, error) {
	c.n.Add(1)
	return c.DB.Next(ctx, resource, lease)
}

// TestLongPoll_WaitersSpareTheWriter: every commit on a queue wakes every
// long-poll waiting on it, and each woken one used to claim again, a write:
// with 16 agents waiting, a command's enqueue, its lease and its completion
// each made 15 or 16 writes that found nothing (about 46 per command). A
// woken long-poll now reads first (Store.Peek), and claims only when a
// claim might lease something: each waiting agent claims at most once for
// the enqueue (those that peek before the winner's lease commits), and not
// at all for the lease or the completion.
func TestLongPoll_WaitersSpareTheWriter(t *testing.T) {
	db, _ := storetest.MustOpen(t, store.Options{Now: time.Now})
	counted := &countingClaims{DB: db}
	s, srv := serveStore(t, db, Options{})
	s.store = counted
	const agents = 16
	concurrency, ok := agents, true
	if _, err := db.SetQueue(context.Background(), "work", spinbroker.QueueSettings{Concurrency: &concurrency}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	results := make([]<-chan pollResult, agents)
	for i := range results {
		results[i] = poll(ctx, t, "POST", srv.URL+"/queues/work/next?wait=30s", "")
	}
	waitFor(t, s, "work", agents)
	before := counted.n.Load()
	p, _, err := db.CreatePackage(context.Background(), spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{{Resource: "work", Action: "go"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var c spinbroker.Command
	for deadline := time.Now().Add(10 * time.Second); c.Lease == nil; time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no long-poll answered")
		}
		for _, res := range results {
			select {
			case r := <-res:
				if r.status != 200 {
					t.Fatalf("got %d %s", r.status, r.body)
				}
				if err := json.Unmarshal([]byte(r.body), &c); err != nil || c.ID != p.Commands[0].ID || c.Lease == nil {
					t.Fatalf("got %s (%v)", r.body, err)
				}
			default:
			}
		}
	}
	if _, err := db.Complete(context.Background(), c.ID, spinbroker.Result{Status: &ok, Lease: c.Lease.Token}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the woken ones peek, and wait again
	waitFor(t, s, "work", agents-1)
	if n := counted.n.Load() - before; n > agents {
		t.Errorf("%d claims for one command with %d agents waiting, want at most %d", n, agents, agents)
	}
}

// TestLongPoll_WokenPollCountsAsActivity: an agent's poll keeps its queue
// active (last_active_at, which the sweeper reads before it forgets an
// idle queue) whichever way it goes: a claim sets it once it is a minute
// old, and a long-poll that a commit woke and that Peek turned away from
// claiming did not, so a queue its agents wait on could look idle for as
// long as commits kept waking them. (Each new long-poll claims first, so
// in real time the lag stayed within the minute plus spinbroker.MaxWait
// the sweeper allows for; the woken path now counts as the others do.) The
// broker's clock jumps ten minutes while the long-poll waits; two commits
// that leave nothing to lease wake it (the second one only once the first
// wake's round is over).
func TestLongPoll_WokenPollCountsAsActivity(t *testing.T) {
	db, clock := storetest.MustOpen(t, store.Options{})
	s, srv := serveStore(t, db, Options{})
	ctx := context.Background()
	ok := true
	// A queue with a row of its own, idle: its one command done.
	p, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{{Resource: "work", Action: "go"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := db.Next(ctx, "work", 0)
	if err != nil || c == nil || c.ID != p.Commands[0].ID {
		t.Fatalf("next: %v %v", c, err)
	}
	if _, err := db.Complete(ctx, c.ID, spinbroker.Result{Status: &ok, Lease: c.Lease.Token}); err != nil {
		t.Fatal(err)
	}
	// Staged commands of the queue: cancelling their packages wakes its
	// long-polls and changes none of its counts.
	var staged []string
	for range 2 {
		p, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Commands: []spinbroker.NewCommand{{Resource: "work", Action: "later"}}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		staged = append(staged, p.ID)
	}
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	res := poll(pctx, t, "POST", srv.URL+"/queues/work/next?wait=60s", "")
	waitFor(t, s, "work", 1)
	clock.Add(10 * time.Minute)
	for _, id := range staged {
		if _, err := db.CancelPackage(ctx, id); err != nil {
			t.Fatal(err)
		}
		waitFor(t, s, "work", 1) // woken, and waiting again
	}
	if _, err := db.Sweep(ctx, store.SweepOptions{Retain: time.Minute}); err != nil {
		t.Fatal(err)
	}
	qs, err := db.Queues(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(qs) != 1 || qs[0].Resource != "work" {
		t.Errorf("queues after a sweep: %+v, want work, whose agent waits on it", qs)
	}
	select {
	case r := <-res:
		t.Fatalf("the long-poll ended: %d %s", r.status, r.body)
	default:
	}
}

// TestLongPoll_OneCommandWakesOne: a commit wakes as many waiting
// long-polls as it may have given work to, not all of them. Every commit
// on a queue used to wake every long-poll waiting on it, each of which
// then read the database: with 256 agents waiting on one queue, one
// producer's commands cost the broker 3.5 times the CPU that they did with
// 4 agents (spinbroker bench --resources 1 --producers 1 --agents 256).
// Here 16 agents wait; one command's enqueue, its lease and its
// completion wake one each: the first claims, the others peek.
func TestLongPoll_OneCommandWakesOne(t *testing.T) {
	const agents = 16
	s, db, counted, results := waitingAgents(t, agents, "/queues/work/next?wait=30s", "")
	ctx, ok := context.Background(), true
	claims, peeks := counted.n.Load(), counted.peeks.Load()
	if _, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{{Resource: "work", Action: "go"}}}, nil); err != nil {
		t.Fatal(err)
	}
	var c spinbroker.Command
	select {
	case r := <-results:
		if err := json.Unmarshal([]byte(r.body), &c); r.status != 200 || err != nil || c.Lease == nil {
			t.Fatalf("got %d %s (%v)", r.status, r.body, err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no long-poll answered the enqueue")
	}
	if _, err := db.Complete(ctx, c.ID, spinbroker.Result{Status: &ok, Lease: c.Lease.Token}); err != nil {
		t.Fatal(err)
	}
	// The lease and the completion wake one each, which peeks, finds
	// nothing and waits again.
	settle(t, s, counted, peeks+3, agents-1)
	if n, p := counted.n.Load()-claims, counted.peeks.Load()-peeks; n != 1 || p != 3 {
		t.Errorf("one command with %d agents waiting: %d claims and %d peeks, want 1 and 3", agents, n, p)
	}
}

// waitingAgents serves a store that counts its claims and peeks, with n
// long-polls on the queue work (its concurrency 100) asking path with body
// and waiting; their answers come on results.
func waitingAgents(t *testing.T, n int, path, body string) (s *Server, db *store.DB, counted *countingClaims, results <-chan pollResult) {
	t.Helper()
	s, srv, db, counted := countedServer(t)
	concurrency := 100
	if _, err := db.SetQueue(context.Background(), "work", spinbroker.QueueSettings{Concurrency: &concurrency}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	out := make(chan pollResult, n)
	for range n {
		go func() { out <- <-poll(ctx, t, "POST", srv.URL+path, body) }()
	}
	waitFor(t, s, "work", n)
	return s, db, counted, out
}

// settle waits until counted has had peeks peeks and waiting long-polls
// wait on work, and a little more for any other woken one to show.
func settle(t *testing.T, s *Server, counted *countingClaims, peeks int64, waiting int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); counted.peeks.Load() < peeks; time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d peeks, want %d", counted.peeks.Load(), peeks)
		}
	}
	waitFor(t, s, "work", waiting)
	time.Sleep(100 * time.Millisecond)
}

// TestLongPoll_LeavingHandsOnItsWake: the long-poll that a commit woke
// leaves before it takes the command (its agent went away as it woke);
// the commit woke only that one, so it wakes the next in its place, and
// the command goes to the agent still waiting rather than sit ready until
// that agent's wait runs out.
func TestLongPoll_LeavingHandsOnItsWake(t *testing.T) {
	s, srv, db, counted := countedServer(t)
	ctx := context.Background()
	goneCtx, gone := context.WithCancel(ctx)
	defer gone()
	// The first peek is the woken long-poll's, the one waiting longest:
	// its agent goes, and the peek waits until the broker has seen it go.
	var peeked atomic.Bool
	counted.onPeek = func(ctx context.Context) {
		if peeked.CompareAndSwap(false, true) {
			gone()
			select {
			case <-ctx.Done():
			case <-time.After(10 * time.Second):
				t.Error("the broker did not see the agent go")
			}
		}
	}
	leaving, staying := twoWaiting(t, s, srv.URL, goneCtx)
	p, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{{Resource: "work", Action: "go"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	handedOn(t, leaving, staying, p.Commands[0].ID)
}

// twoWaiting starts two long-polls on the queue work, the first (which
// waits longest) asking with leaving's context, the second with none.
func twoWaiting(t *testing.T, s *Server, url string, leaving context.Context) (first, second <-chan pollResult) {
	t.Helper()
	first = poll(leaving, t, "POST", url+"/queues/work/next?wait=30s", "")
	waitFor(t, s, "work", 1)
	second = poll(context.Background(), t, "POST", url+"/queues/work/next?wait=30s", "")
	waitFor(t, s, "work", 2)
	return first, second
}

// handedOn checks that the long-poll leaving went away unanswered, and
// that staying got the command id well before its wait of 30s ran out.
func handedOn(t *testing.T, leaving, staying <-chan pollResult, id string) {
	t.Helper()
	if r := <-leaving; r.status != -1 {
		t.Fatalf("the long-poll that left got %d %s", r.status, r.body)
	}
	select {
	case r := <-staying:
		if r.status != 200 || !strings.Contains(r.body, id) {
			t.Fatalf("got %d %s", r.status, r.body)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the command was not handed to the long-poll still waiting")
	}
}

// TestLongPoll_LeavingHandsOnWhatItKnows: a delayed command's enqueue wakes
// one long-poll, which learns when the command is due and waits until
// then; when its agent goes away before that, it wakes the next, which
// learns it in turn and takes the command when it is due.
func TestLongPoll_LeavingHandsOnWhatItKnows(t *testing.T) {
	s, srv, db, counted := countedServer(t)
	ctx := context.Background()
	goneCtx, gone := context.WithCancel(ctx)
	defer gone()
	leaving, staying := twoWaiting(t, s, srv.URL, goneCtx)
	peeks := counted.peeks.Load()
	due := time.Now().Add(time.Second)
	p, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{{Resource: "work", Action: "go", NotBefore: &due}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); counted.peeks.Load() == peeks; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the enqueue of a delayed command woke no long-poll")
		}
	}
	waitFor(t, s, "work", 2) // the woken one waits again, until the command is due
	gone()
	handedOn(t, leaving, staying, p.Commands[0].ID)
}

// TestLongPoll_LearnsOfAShorterLease: a long-poll waiting on a queue whose
// leases run out in a minute learns of a lease taken after it began to
// wait that runs out in a second, and takes that command again when it
// does (its agent died with it), not when its own wait ends.
func TestLongPoll_LearnsOfAShorterLease(t *testing.T) {
	s, srv, db := newTestServer(t)
	ctx := context.Background()
	concurrency := 2
	if _, err := db.SetQueue(ctx, "work", spinbroker.QueueSettings{Concurrency: &concurrency}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{{Resource: "work", Action: "long"}}}, nil); err != nil {
		t.Fatal(err)
	}
	if c, _, err := db.Next(ctx, "work", time.Minute); err != nil || c == nil {
		t.Fatalf("next: %v %v", c, err)
	}
	dying := poll(ctx, t, "POST", srv.URL+"/queues/work/next?wait=30s&lease=1s", "")
	waitFor(t, s, "work", 1)
	waiting := poll(ctx, t, "POST", srv.URL+"/queues/work/next?wait=30s", "")
	waitFor(t, s, "work", 2)
	p, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{{Resource: "work", Action: "short"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := <-dying; r.status != 200 || !strings.Contains(r.body, p.Commands[0].ID) {
		t.Fatalf("the long-poll waiting longest got %d %s", r.status, r.body)
	}
	select {
	case r := <-waiting:
		if r.status != 200 || !strings.Contains(r.body, p.Commands[0].ID) || !strings.Contains(r.body, `"attempts":2`) {
			t.Fatalf("got %d %s", r.status, r.body)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the command of the lease that ran out was not given to the long-poll waiting")
	}
}

// TestLongPoll_OneClaimWakesForMany: a claim waiting with max 10 stands
// for ten waiting nexts: a package of ten commands wakes it alone, not
// every claim waiting beside it.
func TestLongPoll_OneClaimWakesForMany(t *testing.T) {
	const agents = 4
	s, db, counted, results := waitingAgents(t, agents, "/queues/work/claim", `{"max": 10, "wait": "30s"}`)
	claims, peeks := counted.n.Load(), counted.peeks.Load()
	cmds := make([]spinbroker.NewCommand, 10)
	for i := range cmds {
		cmds[i] = spinbroker.NewCommand{Resource: "work", Action: "go"}
	}
	if _, _, err := db.CreatePackage(context.Background(), spinbroker.NewPackage{Enqueue: true, Commands: cmds}, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-results:
		var cl spinbroker.ClaimResult
		if err := json.Unmarshal([]byte(r.body), &cl); r.status != 200 || err != nil || len(cl.Commands) != 10 {
			t.Fatalf("got %d %s (%v)", r.status, r.body, err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no claim answered the enqueue")
	}
	// The woken one peeks before it claims; the leases wake one more,
	// which peeks and waits again.
	settle(t, s, counted, peeks+2, agents-1)
	if n, p := counted.n.Load()-claims, counted.peeks.Load()-peeks; n != 1 || p != 2 {
		t.Errorf("ten commands with %d claims of 10 waiting: %d claims and %d peeks, want 1 and 2", agents, n, p)
	}
}

// TestLongPoll_NoWakeIsLost: agents waiting in next and claim on one
// queue, some of them going away mid-wait (or with leases of 2s they
// never finish); a producer enqueues commands now and then, some delayed,
// some depending on others; agents finish what they get. A commit wakes
// only some of the waiters: should a wake be lost with nothing after it
// to wake another, a command would sit ready until a waiter's 30s ran out.
// Every command must be done well before that once the last one is
// enqueued. (The rules that make it so are tested one by one above; this
// is their sum under churn. It does not catch a rule broken on its own:
// each lease wakes a waiter, and a woken one that leases wakes the next.)
func TestLongPoll_NoWakeIsLost(t *testing.T) {
	s, srv, db := newTestServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel() // every agent goes, before the server does
		wg.Wait()
	}()
	concurrency := 3
	if _, err := db.SetQueue(ctx, "q", spinbroker.QueueSettings{Concurrency: &concurrency}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	done := map[string]bool{}
	finished := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(done)
	}
	agent := func(i int, life context.Context) {
		ok := true
		for life.Err() == nil {
			var r pollResult
			if i%2 == 0 {
				r = <-poll(life, t, "POST", srv.URL+"/queues/q/next?wait=30s&lease=2s", "")
			} else {
				r = <-poll(life, t, "POST", srv.URL+"/queues/q/claim", fmt.Sprintf(`{"max": %d, "wait": "30s", "lease": "2s"}`, 1+i%3))
			}
			if r.status == -1 {
				return // this agent went away
			}
			var cmds []spinbroker.Command
			switch r.status {
			case 200:
				if i%2 == 0 {
					var c spinbroker.Command
					if err := json.Unmarshal([]byte(r.body), &c); err != nil {
						t.Errorf("next: %v", err)
						return
					}
					cmds = append(cmds, c)
				} else {
					var cl spinbroker.ClaimResult
					if err := json.Unmarshal([]byte(r.body), &cl); err != nil {
						t.Errorf("claim: %v", err)
						return
					}
					cmds = cl.Commands
				}
			case 204:
			default:
				t.Errorf("agent %d got %d %s", i, r.status, r.body)
				return
			}
			for _, c := range cmds {
				time.Sleep(time.Duration(i%4) * time.Millisecond)
				_, err := db.Complete(context.Background(), c.ID, spinbroker.Result{Status: &ok, Lease: c.Lease.Token})
				if spinbroker.ErrorCode(err) == spinbroker.ECONFLICT {
					continue // its lease ran out first: another agent has it
				} else if err != nil {
					t.Errorf("complete: %v", err)
					return
				}
				mu.Lock()
				done[c.ID] = true
				mu.Unlock()
			}
		}
	}
	const agents = 12
	lives := make([]context.CancelFunc, agents)
	for i := range agents {
		life, end := context.WithCancel(ctx)
		lives[i] = end
		wg.Go(func() { agent(i, life) })
	}
	waitFor(t, s, "q", agents)
	total := 0
	for round := range 60 {
		if round%10 == 5 {
			lives[round/10]() // an agent goes away as it waits, or as it works
		}
		n := 1 + round%4
		cmds := make([]spinbroker.NewCommand, n)
		for j := range cmds {
			cmds[j] = spinbroker.NewCommand{Key: fmt.Sprint(j), Resource: "q", Action: "go"}
			if j > 0 && round%3 == 0 {
				cmds[j].Dependencies = []string{fmt.Sprint(j - 1)}
			}
			if round%5 == 1 {
				due := time.Now().Add(time.Duration(20+j*5) * time.Millisecond)
				cmds[j].NotBefore = &due
			}
		}
		if _, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: cmds}, nil); err != nil {
			t.Fatal(err)
		}
		total += n
		time.Sleep(time.Duration(round%7) * time.Millisecond)
	}
	for deadline := time.Now().Add(20 * time.Second); finished() < total; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			q, _ := db.Queue(ctx, "q")
			t.Fatalf("%d of %d commands done 20s after the last enqueue, %d long-polls waiting; the queue: %+v", finished(), total, s.notifier.waiting("q"), q)
		}
	}
}
