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
	ch chan struct{}
	n  int // waiters holding ch
}

func newNotifier() *notifier {
	return &notifier{chans: map[string]*waiters{}}
}

// watch returns a channel closed at the next notify of resource, and a
// release func the waiter must call when it stops waiting (so that queues
// nobody waits on cost no memory).
func (n *notifier) watch(resource string) (<-chan struct{}, func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	w := n.chans[resource]
	if w == nil {
		w = &waiters{ch: make(chan struct{})}
		n.chans[resource] = w
	}
	w.n++
	released := false
	return w.ch, func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		if released {
			return
		}
		released = true
		w.n--
		if w.n == 0 && n.chans[resource] == w {
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
		return w.n
	}
	return 0
}
