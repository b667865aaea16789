package httpapi

import (
	"fmt"
	"testing"
)

// TestPollsWaiters: the agents waiting on a queue are counted by program,
// token and host, most first, the rest summed; each is forgotten when its
// long-poll ends, and its end twice counts once.
func TestPollsWaiters(t *testing.T) {
	n := newNotifier()
	var done []func()
	for i := range 8 {
		_, release := n.watch("q", &ask{By: "a/1", From: fmt.Sprintf("10.0.0.%d", i%3)})
		done = append(done, release)
	}
	_, release := n.watch("other", &ask{By: "b/1"})
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
	if list, more := groupWaiters(n.askers("q"), 2); len(list) != 0 || more != 0 || len(n.chans) != 0 {
		t.Errorf("after every poll ended: waiters %v, %d more, %d queues remembered", list, more, len(n.chans))
	}
}
