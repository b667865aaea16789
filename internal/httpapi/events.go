package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
)

// event is one Server-Sent Event, encoded once for every subscriber.
type event struct {
	pkg  string // the package it concerns, for filtered streams
	data []byte // "event: …\ndata: …\n\n"
}

// subscriber is one open event stream.
type subscriber struct {
	ch  chan event
	pkg string // only this package's events, when set
	// lost is set when an event found ch full: the stream sends "resync"
	// once it has written what ch holds.
	lost atomic.Bool
}

// hub turns the store's commits into events for /events. Command
// transitions go out as they commit; packages and queues that changed are
// read back and sent at most every flushEvery, so a burst of a thousand
// transitions costs one read per package.
type hub struct {
	st    Store
	log   *slog.Logger
	quit  <-chan struct{}
	in    chan *spinbroker.Commit
	nsubs atomic.Int32
	// overflow is set when commits came faster than the hub could take
	// them; subscribers are told to reload (event "resync").
	overflow atomic.Bool

	mu   sync.Mutex
	subs map[*subscriber]struct{}
}

const (
	flushEvery    = 100 * time.Millisecond
	pingEvery     = 15 * time.Second
	subscriberBuf = 1024
)

func newHub(st Store, log *slog.Logger, quit <-chan struct{}) *hub {
	h := &hub{st: st, log: log, quit: quit, in: make(chan *spinbroker.Commit, 4096), subs: map[*subscriber]struct{}{}}
	go h.run()
	return h
}

// publish hands a commit to the hub without blocking the store's writer.
func (h *hub) publish(c *spinbroker.Commit) {
	if h.nsubs.Load() == 0 {
		return
	}
	select {
	case h.in <- c:
	default:
		h.overflow.Store(true)
	}
}

func (h *hub) subscribe(pkg string) *subscriber {
	s := &subscriber{ch: make(chan event, subscriberBuf), pkg: pkg}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	h.nsubs.Add(1)
	return s
}

func (h *hub) unsubscribe(s *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[s]; ok {
		delete(h.subs, s)
		close(s.ch)
		h.nsubs.Add(-1)
	}
}

// broadcast sends an event to every subscriber that wants it. One whose
// buffer is full misses it and is told to reload ("resync") once it has
// caught up: a single commit can hold more transitions than the buffer (a
// failure cancelling thousands of dependents), faster than any stream
// drains, and dropping the subscriber ended every stream without a word.
// A stream that stopped being read ends with its write's deadline.
func (h *hub) broadcast(typ, pkg string, v any) {
	data, err := frame(typ, v)
	if err != nil {
		return
	}
	ev := event{pkg: pkg, data: data}
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		// "resync" concerns every stream: one of one package may have
		// lost that package's events.
		if s.pkg != "" && pkg != s.pkg && typ != "resync" {
			continue
		}
		select {
		case s.ch <- ev:
		default:
			s.lost.Store(true)
		}
	}
}

// frame is the text of the server-sent event typ whose data is v in JSON.
func frame(typ string, v any) ([]byte, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return fmt.Appendf(nil, "event: %s\ndata: %s\n\n", typ, data), nil
}

// resync is the data of a "resync" event: events were dropped, for every
// stream when the hub fell behind, for one whose buffer filled.
var resync = map[string]string{"reason": "events were dropped; reload"}

// resyncEvent is the "resync" event a stream whose buffer filled sends.
var resyncEvent, _ = frame("resync", resync)

func (h *hub) run() {
	ticker := time.NewTicker(flushEvery)
	defer ticker.Stop()
	pkgs := map[string]bool{}
	deleted := map[string]bool{}
	queues := map[string]bool{}
	forgotten := map[string]bool{}
	for {
		select {
		case <-h.quit:
			h.mu.Lock()
			for s := range h.subs {
				delete(h.subs, s)
				close(s.ch)
				h.nsubs.Add(-1)
			}
			h.mu.Unlock()
			return
		case c := <-h.in:
			for _, ch := range c.Commands {
				h.broadcast("command", ch.PackageID, ch)
				pkgs[ch.PackageID] = true
				queues[ch.Resource] = true
			}
			for _, p := range c.Packages {
				pkgs[p] = true
			}
			for _, p := range c.Deleted {
				deleted[p] = true
			}
			for _, q := range c.Queues {
				queues[q] = true
			}
			for _, q := range c.Forgotten {
				forgotten[q] = true
			}
		case <-ticker.C:
			if h.overflow.Swap(false) {
				h.broadcast("resync", "", resync)
			}
			if h.nsubs.Load() > 0 {
				h.flush(pkgs, deleted, queues, forgotten)
			}
			clear(pkgs)
			clear(deleted)
			clear(queues)
			clear(forgotten)
		}
	}
}

// flush sends the current state of the packages and queues that changed.
func (h *hub) flush(pkgs, deleted, queues, forgotten map[string]bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for id := range deleted {
		h.broadcast("package", id, map[string]any{"id": id, "deleted": true})
	}
	for id := range pkgs {
		if deleted[id] {
			continue
		}
		p, err := h.st.PackageInfo(ctx, id)
		if err != nil {
			continue // deleted since, or the database is busy: the next change resends it
		}
		h.broadcast("package", id, p)
	}
	for r := range forgotten {
		h.broadcast("queue", "", map[string]any{"resource": r, "forgotten": true})
	}
	if len(queues) == 0 {
		return
	}
	names := make([]string, 0, len(queues))
	for r := range queues {
		names = append(names, r)
	}
	// Only the queues that changed: reading them all every flushEvery cost
	// half the broker's CPU with 10,000 queues.
	qs, err := h.st.QueuesNamed(ctx, names)
	if err != nil {
		return
	}
	for _, q := range qs {
		h.broadcast("queue", "", q)
	}
}

// stallGrace is how long a shutdown lets an event stream's write take.
const stallGrace = time.Second

// handleEvents streams state changes as Server-Sent Events: "command" (a
// transition), "package" (a package without its commands, or {id, deleted}),
// "queue" (a queue without its commands, or {resource, forgotten} when
// the sweeper forgot it) and "resync". ?package=ID narrows
// the stream to one package. A comment every 15s keeps proxies from
// closing it.
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	if err := s.allow(r, permRead, ""); err != nil {
		s.writeError(w, r, err)
		return
	}
	var pkg string
	q, err := query(r)
	var p string
	if err == nil {
		p, err = queryValue(q, "package")
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if p != "" {
		id, ok := spinbroker.ParseID(p)
		if !ok {
			s.writeError(w, r, errorf(spinbroker.EINVALID, "package %q is not an id", spinbroker.Truncate(p, 80)))
			return
		}
		pkg = id
	}
	held, err := s.acquireWait(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer held()
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	sub := s.hub.subscribe(pkg)
	defer s.hub.unsubscribe(sub)
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, "retry: 2000\n: connected\n\n")
	if rc.Flush() != nil {
		return
	}
	// A client that stopped reading (a laptop asleep with the dashboard
	// open) holds this handler in a write for up to defaultWriteTimeout, and
	// a shutdown waited that long, or all of --shutdown-timeout, for it. At
	// shutdown the write is given stallGrace, not more: a stream that is
	// read ends cleanly well within it (its last chunk written), a stalled
	// one is cut. The loop sets no later deadline once the shutdown began
	// (mu orders the two).
	var mu sync.Mutex
	finished := make(chan struct{})
	defer func() {
		mu.Lock()
		close(finished)
		mu.Unlock()
	}()
	go func() {
		select {
		case <-s.quit:
			mu.Lock()
			select {
			case <-finished:
			default:
				rc.SetWriteDeadline(time.Now().Add(stallGrace)) //nolint:errcheck
			}
			mu.Unlock()
		case <-finished:
		}
	}()
	ping := time.NewTicker(pingEvery)
	// A revoked token's stream ends within the token cache's time, as its
	// new requests are refused (the browser reconnects and gets 401).
	recheck := time.NewTicker(s.opts.TokenCacheTTL)
	defer recheck.Stop()
	defer ping.Stop()
	// An expiring token's stream ends at its end, to the second, as its
	// new requests are refused from then on: not at the next re-check, up
	// to the token cache's time later, with every change sent meanwhile.
	// The timer is for a stream with nothing to send; a change is never
	// sent once the store's clock has passed the token's end.
	var end <-chan time.Time
	if tok := identityOf(r).token; s.opts.Auth && tok.ExpiresAt != nil {
		t := time.NewTimer(max(tok.ExpiresAt.Sub(s.now()), 0))
		defer t.Stop()
		end = t.C
	}
	expired := func() bool { return s.opts.Auth && identityOf(r).token.Expired(s.now()) }
	for {
		mu.Lock()
		if s.stopping() {
			mu.Unlock()
			return
		}
		rc.SetWriteDeadline(time.Now().Add(defaultWriteTimeout)) //nolint:errcheck
		mu.Unlock()
		select {
		case ev, ok := <-sub.ch:
			if !ok || expired() {
				return
			}
			if _, err := w.Write(ev.data); err != nil {
				return
			}
			// Send what else is waiting in the same flush.
			for more := true; more; {
				select {
				case ev, ok := <-sub.ch:
					if !ok || expired() {
						rc.Flush() //nolint:errcheck
						return
					}
					if _, err := w.Write(ev.data); err != nil {
						return
					}
				default:
					more = false
				}
			}
			if sub.lost.Swap(false) {
				if _, err := w.Write(resyncEvent); err != nil {
					return
				}
			}
		case <-ping.C:
			if _, err := fmt.Fprint(w, ": ping\n\n"); err != nil {
				return
			}
		case <-recheck.C:
			if s.refused(r) != nil {
				return
			}
			continue
		case <-end:
			if expired() {
				return
			}
			// The store's clock is behind the wall's (a simulated one):
			// the events above are judged by it.
			end = nil
			continue
		case <-r.Context().Done():
			return
		case <-s.quit:
			return
		}
		if rc.Flush() != nil {
			return
		}
	}
}
