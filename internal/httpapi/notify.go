package httpapi

import (
	"container/list"
	"sync"

	spinbroker "github.com/spin-broker/spinbroker"
)

// notifier wakes the long-polls waiting on a queue, as many as a commit may
// have given work to, longest waiting first. A waiter watches the queue
// before it looks at the database, so a commit that lands in between still
// wakes it.
//
// Waking everyone at every commit on the queue cost a read per waiting
// agent per commit: with 256 agents waiting on one queue, about 500 reads
// per command, and the broker's CPU per command three and a half times
// that of 4 agents. A commit now wakes one waiter per change that may have
// made something deliverable (see wakes), and a waiter that leaves without
// acting on its wake hands it on (see longPoll).
type notifier struct {
	mu     sync.Mutex
	queues map[string]*list.List // of *sleeper, longest waiting first
}

// sleeper is one long-poll waiting on a queue.
type sleeper struct {
	ch    chan struct{} // closed when it is woken
	who   *ask
	take  int           // the most commands it leases when it tries
	elem  *list.Element // in its queue's list, while it waits there
	woken bool
}

func newNotifier() *notifier {
	return &notifier{queues: map[string]*list.List{}}
}

// watch returns a channel closed when a notify of resource wakes this
// waiter, and a release func the waiter must call when it stops waiting (so
// that queues nobody waits on cost no memory); release reports whether the
// waiter was woken, and may be called again. who is the agent asking, whom
// the queue's page names while it waits; take is the most commands it
// leases when it tries (next 1, a claim its max).
func (n *notifier) watch(resource string, who *ask, take int) (<-chan struct{}, func() (woken bool)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	l := n.queues[resource]
	if l == nil {
		l = list.New()
		n.queues[resource] = l
	}
	s := &sleeper{ch: make(chan struct{}), who: who, take: max(take, 1)}
	s.elem = l.PushBack(s)
	return s.ch, func() bool {
		n.mu.Lock()
		defer n.mu.Unlock()
		if s.elem != nil {
			n.remove(resource, l, s)
		}
		return s.woken
	}
}

// remove takes s off l, the list of resource, and forgets an empty list.
// n.mu is held.
func (n *notifier) remove(resource string, l *list.List, s *sleeper) {
	l.Remove(s.elem)
	s.elem = nil
	if l.Len() == 0 && n.queues[resource] == l {
		delete(n.queues, resource)
	}
}

// notify wakes the long-polls waiting on resource that may lease count
// commands between them (a claim of 100 takes the place of 100 nexts),
// those waiting longest first; a negative count wakes them all.
func (n *notifier) notify(resource string, count int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	l := n.queues[resource]
	for l != nil && l.Len() > 0 && count != 0 {
		s := l.Front().Value.(*sleeper)
		n.remove(resource, l, s)
		s.woken = true
		close(s.ch)
		if count > 0 {
			count = max(count-s.take, 0)
		}
	}
}

// waiting reports how many long-polls wait on resource.
func (n *notifier) waiting(resource string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if l := n.queues[resource]; l != nil {
		return l.Len()
	}
	return 0
}

// askers returns who asks in the long-polls waiting on resource.
func (n *notifier) askers(resource string) []ask {
	n.mu.Lock()
	defer n.mu.Unlock()
	var asks []ask
	if l := n.queues[resource]; l != nil {
		for e := l.Front(); e != nil; e = e.Next() {
			asks = append(asks, *e.Value.(*sleeper).who)
		}
	}
	return asks
}

// all is a count for notify: every waiter.
const all = -1

// wakes says, for each queue c touched, how many commands' worth of its
// long-polls to wake (see notify): one for each change of a command there that may have made one
// deliverable (a command made ready, a lease ended and its slot freed,
// the head of the queue gone, a delayed command whose time a waiter must
// learn); one for leases taken, should nothing else wake one, so that a
// waiter learns when the earliest of them runs out (a lease shorter than
// those before it runs out first); and all of them when the queue's
// settings changed (unpaused, a higher concurrency).
func wakes(c *spinbroker.Commit) map[string]int {
	m := make(map[string]int, len(c.Queues)+4)
	var leased []string
	for _, ch := range c.Commands {
		switch {
		case ch.Resource == "":
		case ch.From == spinbroker.Ready && ch.To == spinbroker.Leased:
			leased = append(leased, ch.Resource)
		default:
			m[ch.Resource]++
		}
	}
	for _, r := range leased {
		m[r] = max(m[r], 1)
	}
	for _, q := range c.Queues {
		if q != "" {
			m[q] = all
		}
	}
	return m
}
