package httpapi

import (
	"cmp"
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
	last    map[string]ask
	started time.Time // when the broker started listening for polls
}

// ask is one agent's asking a queue for work.
type ask struct {
	At    time.Time
	By    string // the program, from its User-Agent (sa-host-path/1)
	Token string // the name of the token it asked with, when auth is on
	From  string // the host it asked from
}

// maxPolled bounds the queues remembered; past it, the one asked longest
// ago is forgotten.
const maxPolled = 10000

func newPolls(now time.Time) *polls {
	return &polls{last: map[string]ask{}, started: now}
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
	if _, ok := p.last[resource]; !ok && len(p.last) >= maxPolled {
		oldest, first := "", time.Time{}
		for r, l := range p.last {
			if oldest == "" || l.At.Before(first) {
				oldest, first = r, l.At
			}
		}
		delete(p.last, oldest)
	}
	p.last[resource] = q
}

// lastAsked is the last time resource was asked for work, if it was since
// the broker started.
func (p *polls) lastAsked(resource string) (ask, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	q, ok := p.last[resource]
	return q, ok
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
