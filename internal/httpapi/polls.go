package httpapi

import (
	"cmp"
	"container/heap"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"

	spinbroker "github.com/spin-broker/spinbroker"
)

// polls remembers when agents last asked each queue for work (next or
// claim). The first question about a queue that does not move is whether
// anyone is asking: the dashboard and /metrics answer it. It lives in
// memory only: after a restart the broker knows of no poll before it.
type polls struct {
	mu      sync.Mutex
	last    map[string]*polled
	byAt    pollHeap  // the same, the one asked longest ago first
	started time.Time // when the broker started listening for polls
}

// polled is a queue remembered as asked: its last ask, and its place in
// polls.byAt.
type polled struct {
	resource string
	ask      ask
	i        int
}

// pollHeap is a min-heap of the queues remembered, by when they were last
// asked. Finding the one asked longest ago by a scan of every queue cost
// 64 µs under the lock at each poll of a queue not remembered, and with
// more queues polled than maxPolled every poll is one.
type pollHeap []*polled

func (h pollHeap) Len() int           { return len(h) }
func (h pollHeap) Less(i, j int) bool { return h[i].ask.At.Before(h[j].ask.At) }
func (h pollHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].i, h[j].i = i, j
}
func (h *pollHeap) Push(x any) {
	p := x.(*polled)
	p.i = len(*h)
	*h = append(*h, p)
}
func (h *pollHeap) Pop() any {
	old := *h
	p := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return p
}

// ask is one agent's asking a queue for work.
type ask struct {
	At    time.Time
	By    string // the program, from its User-Agent (sa-host-path/1)
	Token string // the name of the token it asked with, when auth is on
	From  string // the host it asked from
}

// maxPolled bounds the queues remembered; past it, the one asked longest
// ago is forgotten. A fleet that names a queue per VM has tens of
// thousands, each polled by its agent about once a minute: with 10,000
// remembered, most queues' last ask was forgotten within seconds, and with
// it the series and the dashboard's line that say an agent is asking.
// Each costs about 240 bytes: 100,000, some 24 MB, whatever names a
// client makes up.
const maxPolled = 100_000

func newPolls(now time.Time) *polls {
	return &polls{last: map[string]*polled{}, started: now}
}

// waiter is the agents waiting on a queue with one program, token and host.
type waiter struct {
	By, Token, From string
	N               int // how many long-polls they wait in
}

// groupWaiters names the agents that asks (those of the long-polls
// waiting on a queue) come from: one waiter per program, token and host,
// most waiting first, at most max of them, and how many long-polls wait
// beyond those listed.
func groupWaiters(asks []ask, max int) (list []waiter, more int) {
	n := map[waiter]int{}
	for _, q := range asks {
		n[waiter{By: q.By, Token: q.Token, From: q.From}]++
	}
	for w, c := range n {
		w.N = c
		list = append(list, w)
	}
	slices.SortFunc(list, func(a, b waiter) int {
		if a.N != b.N {
			return b.N - a.N
		}
		return cmp.Or(strings.Compare(a.By, b.By), strings.Compare(a.Token, b.Token), strings.Compare(a.From, b.From))
	})
	if len(list) > max {
		for _, w := range list[max:] {
			more += w.N
		}
		list = list[:max]
	}
	return list, more
}

// saw records that resource was asked for work.
func (p *polls) saw(resource string, q ask) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e, ok := p.last[resource]; ok {
		e.ask = q
		heap.Fix(&p.byAt, e.i)
		return
	}
	if len(p.last) >= maxPolled {
		// The queue asked longest ago makes room for this one.
		e := p.byAt[0]
		delete(p.last, e.resource)
		e.resource, e.ask = resource, q
		p.last[resource] = e
		heap.Fix(&p.byAt, 0)
		return
	}
	e := &polled{resource: resource, ask: q}
	p.last[resource] = e
	heap.Push(&p.byAt, e)
}

// forget drops the last asks of resources, queues the sweeper forgot (idle
// past the retention), as their series go: kept, every name a fleet ever
// used stayed until maxPolled pushed it out, some 24 MB held for names
// long gone. An ask at or after since stays: a long-poll that began after the
// sweeper read its queue, whose claim has not marked it active yet, may
// wait on it still.
func (p *polls) forget(resources []string, since time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range resources {
		if e, ok := p.last[r]; ok && e.ask.At.Before(since) {
			delete(p.last, r)
			heap.Remove(&p.byAt, e.i)
		}
	}
}

// lastAsked is the last time resource was asked for work, if it was since
// the broker started.
func (p *polls) lastAsked(resource string) (ask, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e, ok := p.last[resource]; ok {
		return e.ask, true
	}
	return ask{}, false
}

// askOf describes the request r asking for work at now: its program, its
// token and its host, each cut short (they are the client's words).
func askOf(r *http.Request, now time.Time) ask {
	q := ask{At: now, By: clean(r.UserAgent()), From: r.RemoteAddr}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		q.From = host
	}
	if id := identityOf(r); id != anonymous {
		q.Token = clean(id.token.Name)
	}
	return q
}

// clean keeps the printable part of a client's string, cut at 80 bytes.
func clean(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return -1
	}, strings.ToValidUTF8(s, ""))
	return spinbroker.Truncate(s, 80)
}
