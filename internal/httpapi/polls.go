package httpapi

import (
	"sync"
	"time"
)

// polls remembers when agents last asked each queue for work (next or
// claim). The first question about a queue that does not move is whether
// anyone is asking: the dashboard and /metrics answer it. It lives in
// memory only: after a restart the broker knows of no poll before it.
type polls struct {
	mu      sync.Mutex
	last    map[string]time.Time
	started time.Time // when the broker started listening for polls
}

// maxPolled bounds the queues remembered; past it, the one asked longest
// ago is forgotten.
const maxPolled = 10000

func newPolls(now time.Time) *polls {
	return &polls{last: map[string]time.Time{}, started: now}
}

// saw records that resource was asked for work at now.
func (p *polls) saw(resource string, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.last[resource]; !ok && len(p.last) >= maxPolled {
		oldest, first := "", time.Time{}
		for r, t := range p.last {
			if oldest == "" || t.Before(first) {
				oldest, first = r, t
			}
		}
		delete(p.last, oldest)
	}
	p.last[resource] = now
}

// lastAsked is when resource was last asked for work, if it was since the
// broker started.
func (p *polls) lastAsked(resource string) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t, ok := p.last[resource]
	return t, ok
}
