package httpapi

import "sync"

// notifier wakes the long-polls waiting on a queue. A waiter takes the
// queue's current channel before it looks at the database, so a commit that
// lands in between still wakes it: the commit closes that very channel.
type notifier struct {
	mu    sync.Mutex
	chans map[string]*waiters
}

type waiters struct {
	ch   chan struct{}
	asks map[*ask]struct{} // the long-polls holding ch, and who asks in each
}

func newNotifier() *notifier {
	return &notifier{chans: map[string]*waiters{}}
}

// watch returns a channel closed at the next notify of resource, and a
// release func the waiter must call when it stops waiting (so that queues
// nobody waits on cost no memory). who is the agent asking, whom the
// queue's page names while it waits.
func (n *notifier) watch(resource string, who *ask) (<-chan struct{}, func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	w := n.chans[resource]
	if w == nil {
		w = &waiters{ch: make(chan struct{}), asks: map[*ask]struct{}{}}
		n.chans[resource] = w
	}
	w.asks[who] = struct{}{}
	released := false
	return w.ch, func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		if released {
			return
		}
		released = true
		delete(w.asks, who)
		if len(w.asks) == 0 && n.chans[resource] == w {
			delete(n.chans, resource)
		}
	}
}

// notify wakes everyone waiting on resource.
func (n *notifier) notify(resource string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if w := n.chans[resource]; w != nil {
		close(w.ch)
		delete(n.chans, resource)
	}
}

// waiting reports how many long-polls wait on resource.
func (n *notifier) waiting(resource string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if w := n.chans[resource]; w != nil {
		return len(w.asks)
	}
	return 0
}

// askers returns who asks in the long-polls waiting on resource.
func (n *notifier) askers(resource string) []ask {
	n.mu.Lock()
	defer n.mu.Unlock()
	var list []ask
	if w := n.chans[resource]; w != nil {
		for q := range w.asks {
			list = append(list, *q)
		}
	}
	return list
}
