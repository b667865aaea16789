package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/store"
	"github.com/spin-broker/spinbroker/internal/store/storetest"
)

// TestPollsWaiters: the agents waiting on a queue are counted by program,
// token and host, most first, the rest summed; each is forgotten when its
// long-poll ends, and its end twice counts once.
func TestPollsWaiters(t *testing.T) {
	n := newNotifier()
	var done []func() bool
	for i := range 8 {
		_, release := n.watch("q", &ask{By: "a/1", From: fmt.Sprintf("10.0.0.%d", i%3)}, 1)
		done = append(done, release)
	}
	_, release := n.watch("other", &ask{By: "b/1"}, 1)
	done = append(done, release)
	if w := n.waiting("q"); w != 8 {
		t.Errorf("waiting = %d, want 8", w)
	}
	list, more := groupWaiters(n.askers("q"), 2)
	want := []waiter{{By: "a/1", From: "10.0.0.0", N: 3}, {By: "a/1", From: "10.0.0.1", N: 3}}
	if fmt.Sprint(list) != fmt.Sprint(want) || more != 2 {
		t.Errorf("waiters = %v, %d more; want %v, 2 more", list, more, want)
	}
	for _, d := range done {
		d()
		d()
	}
	if list, more := groupWaiters(n.askers("q"), 2); len(list) != 0 || more != 0 || len(n.queues) != 0 {
		t.Errorf("after every poll ended: waiters %v, %d more, %d queues remembered", list, more, len(n.queues))
	}
}

// TestNotifier_WakesLongestWaitingFirst: notify wakes the waiters that
// may lease as many commands as it is told (a claim's max counts for as
// many nexts), those waiting longest first, or all of them; release tells
// a waiter whether it was woken.
func TestNotifier_WakesLongestWaitingFirst(t *testing.T) {
	n := newNotifier()
	takes := []int{1, 1, 5, 1, 1, 1}
	chs := make([]<-chan struct{}, len(takes))
	releases := make([]func() bool, len(takes))
	for i, take := range takes {
		chs[i], releases[i] = n.watch("q", &ask{By: fmt.Sprint(i)}, take)
	}
	other, releaseOther := n.watch("other", &ask{}, 1)
	woken := func() (list []int) {
		for i, ch := range chs {
			select {
			case <-ch:
				list = append(list, i)
			default:
			}
		}
		return list
	}
	n.notify("q", 2)
	if got := fmt.Sprint(woken()); got != "[0 1]" {
		t.Errorf("notify 2 woke %s, want [0 1]", got)
	}
	n.notify("q", 3)
	if got := fmt.Sprint(woken()); got != "[0 1 2]" {
		t.Errorf("then notify 3 woke %s, want [0 1 2]: 2 takes up to 5", got)
	}
	if w := n.waiting("q"); w != 3 {
		t.Errorf("%d wait after 3 of 6 were woken, want 3", w)
	}
	if first, again := releases[0](), releases[0](); !first || !again || releases[3]() {
		t.Error("release does not tell who was woken")
	}
	n.notify("q", all)
	if got := fmt.Sprint(woken()); got != "[0 1 2 4 5]" {
		t.Errorf("after notify all: woken %s, want [0 1 2 4 5] (3 had stopped waiting)", got)
	}
	select {
	case <-other:
		t.Error("a notify of q woke a waiter on another queue")
	default:
	}
	n.notify("q", 1) // nobody waits: nothing to do
	for _, r := range releases {
		r()
	}
	releaseOther()
	if len(n.queues) != 0 {
		t.Errorf("%d queues remembered after every waiter left", len(n.queues))
	}
}

// TestWakes: a commit wakes one long-poll per change that may have made a
// command deliverable on its queue, one for the leases taken on a queue
// if nothing else wakes one there, and all of a queue whose settings
// changed.
func TestWakes(t *testing.T) {
	c := &spinbroker.Commit{
		Commands: []spinbroker.Change{
			{Resource: "a", From: spinbroker.Staged, To: spinbroker.Ready},
			{Resource: "a", From: spinbroker.Staged, To: spinbroker.Ready},
			{Resource: "a", From: spinbroker.Ready, To: spinbroker.Leased},
			{Resource: "b", From: spinbroker.Ready, To: spinbroker.Leased},
			{Resource: "b", From: spinbroker.Ready, To: spinbroker.Leased},
			{Resource: "c", From: spinbroker.Leased, To: spinbroker.Succeeded},
			{Resource: "d", From: spinbroker.Staged, To: spinbroker.Blocked},
			{Resource: "e", From: spinbroker.Ready, To: spinbroker.Cancelled},
			{Resource: "s", From: spinbroker.Leased, To: spinbroker.Ready},
		},
		Queues: []string{"s", "t"},
	}
	got := fmt.Sprint(wakes(c))
	if want := "map[a:2 b:1 c:1 d:1 e:1 s:-1 t:-1]"; got != want {
		t.Errorf("wakes = %s, want %s", got, want)
	}
}

// TestPolls_ForgetsOldestAsk: past maxPolled, a queue not remembered
// takes the place of the one asked longest ago, whatever the order the
// asks came in (an ask's time is taken before it is recorded, so two at
// once may come in either order), and asking a remembered queue again
// moves it to its new time.
func TestPolls_ForgetsOldestAsk(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	p := newPolls(start)
	at := func(s int) time.Time { return start.Add(time.Duration(s) * time.Second) }
	// The model: each remembered queue's second, and who asked at each
	// second; the oldest is the first second from lo that someone holds
	// (an ask comes at most 50 seconds before the latest).
	model := map[string]int{}
	rng := rand.New(rand.NewPCG(1, 2))
	// Each ask's own second, out of order by up to 50.
	seconds := make([]int, maxPolled+5000)
	for i := range seconds {
		seconds[i] = i
	}
	for i := range seconds {
		j := min(i+rng.IntN(50), len(seconds)-1)
		seconds[i], seconds[j] = seconds[j], seconds[i]
	}
	who := make([]string, len(seconds))
	lo, forgotten := 0, 0
	for i, s := range seconds {
		r := fmt.Sprintf("r%d", i) // the first maxPolled fill it
		if i >= maxPolled {
			r = fmt.Sprintf("r%d", rng.IntN(2*maxPolled))
		}
		if old, ok := model[r]; ok {
			who[old] = ""
		} else if len(model) >= maxPolled {
			for who[lo] == "" {
				lo++
			}
			delete(model, who[lo])
			who[lo] = ""
			forgotten++
		}
		model[r], who[s], lo = s, r, min(lo, s)
		p.saw(r, ask{At: at(s), By: r})
		if len(p.last) != len(model) {
			t.Fatalf("after %d asks: %d remembered, want %d", i+1, len(p.last), len(model))
		}
	}
	if forgotten < 1000 {
		t.Fatalf("only %d queues were forgotten: the test does not test it", forgotten)
	}
	for r, s := range model {
		q, ok := p.lastAsked(r)
		if !ok || !q.At.Equal(at(s)) || q.By != r {
			t.Fatalf("%s: remembered %v %v, want asked at %v", r, q, ok, at(s))
		}
	}
}

// TestPolls_RemembersAFleet: a fleet with an agent per VM, 50,000 queues,
// has each queue's last ask remembered, so that its
// spinbroker_queue_last_poll_timestamp_seconds and its page's "asked"
// stay: with 10,000 remembered, an agent that asked a minute ago was
// forgotten behind 10,000 others, and the README's alert on work that no
// agent is taking fired for a queue whose agent was asking. What it costs
// stays bounded: at most maxPolled queues, about 240 bytes each.
func TestPolls_RemembersAFleet(t *testing.T) {
	const fleet = 50_000
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	p := newPolls(start)
	for i := range fleet {
		p.saw(fmt.Sprintf("vm-%06d", i), ask{At: start.Add(time.Duration(i) * time.Millisecond), By: "sa-host-path/1"})
	}
	for i := range fleet {
		if _, ok := p.lastAsked(fmt.Sprintf("vm-%06d", i)); !ok {
			t.Fatalf("the last ask of vm-%06d, one of %d queues, is forgotten", i, fleet)
		}
	}
	if maxPolled > 100_000 {
		t.Errorf("maxPolled %d: a flood of made-up names may hold more than about 24 MB", maxPolled)
	}
}

// TestPolls_ForgetForgottenQueues: the last ask of a queue the sweeper
// forgets goes with it, as its series do; a queue it keeps keeps its
// own. Each name a fleet ever used stayed remembered until maxPolled
// pushed it out: some 24 MB held for names long gone.
func TestPolls_ForgetForgottenQueues(t *testing.T) {
	db, clock := storetest.MustOpen(t, store.Options{})
	s, srv := serveStore(t, db, Options{Now: clock.Now})
	ctx := context.Background()
	const n = 20
	for i := range n + 1 {
		r := fmt.Sprintf("vm-%d", i)
		if _, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{{Resource: r, Action: "go"}}}, nil); err != nil {
			t.Fatal(err)
		}
		resp, err := http.Post(srv.URL+"/queues/"+r+"/next", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		var c spinbroker.Command
		err = json.NewDecoder(resp.Body).Decode(&c)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || c.Lease == nil {
			t.Fatalf("next on %s: %d %v", r, resp.StatusCode, err)
		}
		ok := true
		if _, err := db.Complete(ctx, c.ID, spinbroker.Result{Status: &ok, Lease: c.Lease.Token}); err != nil {
			t.Fatal(err)
		}
	}
	// vm-<n> has a setting of its own: the sweeper keeps it.
	conc := 2
	if _, err := db.SetQueue(ctx, fmt.Sprintf("vm-%d", n), spinbroker.QueueSettings{Concurrency: &conc}); err != nil {
		t.Fatal(err)
	}
	if len(s.polls.last) != n+1 {
		t.Fatalf("%d queues remembered as asked, want %d", len(s.polls.last), n+1)
	}
	clock.Add(2 * time.Hour)
	// An agent asks vm-0 as the sweeper forgets it: its long-poll has
	// not claimed yet, which would have marked the queue active.
	s.polls.saw("vm-0", ask{At: clock.Now(), By: "late/1"})
	if res, err := db.Sweep(ctx, store.SweepOptions{Retain: time.Hour}); err != nil || res.QueuesForgotten != n {
		t.Fatalf("sweep: %+v %v", res, err)
	}
	s.polls.mu.Lock()
	remembered, inHeap := len(s.polls.last), len(s.polls.byAt)
	s.polls.mu.Unlock()
	if remembered != 2 || inHeap != 2 {
		t.Errorf("after the sweeper forgot %d queues, %d are remembered as asked (%d in the heap), want 2", n, remembered, inHeap)
	}
	if _, ok := s.polls.lastAsked(fmt.Sprintf("vm-%d", n)); !ok {
		t.Error("the queue the sweeper kept lost its last ask")
	}
	if q, ok := s.polls.lastAsked("vm-0"); !ok || q.By != "late/1" {
		t.Errorf("the ask that came as the sweeper forgot vm-0 is lost: %+v %v", q, ok)
	}
	if a := s.agentsOf("vm-1"); a.Last != nil {
		t.Errorf("a forgotten queue is still asked: %+v", a.Last)
	}
}
