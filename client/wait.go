package client

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
)

// WaitOption adjusts WaitPackage: what it tells the caller while it waits,
// and how often it reads without an event stream.
type WaitOption func(*waitConfig)

type waitConfig struct {
	onRead func(*spinbroker.Package)
	onAway func(error)
	onBack func()
	poll   time.Duration
}

// OnRead has WaitPackage call fn with the package after each read of it,
// the last one (finished) included: the source of a progress line.
func OnRead(fn func(*spinbroker.Package)) WaitOption {
	return func(c *waitConfig) { c.onRead = fn }
}

// OnBrokerAway has WaitPackage call fn, with the error, when the broker
// stops answering (a Temporary error: it restarts, the network drops)
// after the package was read once. WaitPackage waits it out; fn is called
// once for each time it goes away, not for each read that fails.
func OnBrokerAway(fn func(err error)) WaitOption {
	return func(c *waitConfig) { c.onAway = fn }
}

// OnBrokerBack has WaitPackage call fn when the broker answers again after
// OnBrokerAway's fn was called, before the OnRead of that answer.
func OnBrokerBack(fn func()) WaitOption {
	return func(c *waitConfig) { c.onBack = fn }
}

// PollEvery sets how often WaitPackage reads the package while it has no
// event stream (the stream is down, refused, or held by a proxy) or the
// broker is away: 1s unless set.
func PollEvery(d time.Duration) WaitOption {
	return func(c *waitConfig) {
		if d > 0 {
			c.poll = d
		}
	}
}

const (
	// openWait bounds how long WaitPackage waits for the event stream to
	// open before its first read: a proxy may hold the stream's answer
	// until it has a body to send, and the caller wants the package now.
	openWait = 2 * time.Second
	// safetyRead bounds how long a change can go unseen when the stream is
	// open but an event never comes (a proxy that buffers the stream).
	safetyRead = 10 * time.Second
	// streamRetryMin and streamRetryMax bound the back-off between
	// attempts to open the event stream again once it has ended.
	streamRetryMin = time.Second
	streamRetryMax = 30 * time.Second
)

// WaitPackage waits until package id has finished (its State is
// Terminal: succeeded, failed or cancelled) and returns it as last read.
// When ctx ends first it returns the package as last read (nil if it was
// never read) with ctx's error. A package cancelled by a client is
// returned as soon as it is cancelled, while the commands it had leased
// (Counts.Leased) still run: their results are recorded when they finish,
// and until then DeletePackage refuses the package (409).
//
// It follows the package's events (GET /events), opened before the first
// read so that no change falls between the two, and reads the package
// again on every event about it and on "resync" (events dropped for a
// slow subscriber), and at least every 10s whatever comes. While the
// stream is down, refused or slow to open it reads every PollEvery (1s)
// and opens the stream again, backing off up to 30s between tries.
//
// A broker that stops answering (a Temporary error) after the package was
// read once is waited out, and OnBrokerAway and OnBrokerBack say so; on a
// first read it is returned at once, as is any other refusal (the package
// not found, the token refused) at any time. A package deleted once read
// returns it as last read, with a not_found error that says so. A package in staging is
// waited for too: another process may enqueue it.
//
// The options' functions are called on the goroutine that called
// WaitPackage, one at a time; WaitPackage waits for them to return.
func (c *Client) WaitPackage(ctx context.Context, id string, opts ...WaitOption) (*spinbroker.Package, error) {
	cfg := waitConfig{
		onRead: func(*spinbroker.Package) {},
		onAway: func(error) {},
		onBack: func() {},
		poll:   time.Second,
	}
	for _, o := range opts {
		o(&cfg)
	}
	id = strings.ToLower(id) // as the broker writes ids in its events

	sctx, cancel := context.WithCancel(ctx)
	s := &stream{wake: make(chan struct{}, 1), settled: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.followStream(sctx, id, s)
	}()
	defer func() {
		cancel()
		<-done
	}()

	// Read the package only once the stream is open, so that no change can
	// fall between the read and the subscription.
	select {
	case <-s.settled:
	case <-time.After(openWait):
	case <-ctx.Done():
		return nil, ctx.Err()
	}

	var (
		last *spinbroker.Package
		away bool // the broker stopped answering; said once
	)
	for {
		p, err := c.Package(ctx, id)
		switch {
		case err == nil:
			if away {
				away = false
				cfg.onBack()
			}
			last = p
			cfg.onRead(p)
			if p.State.Terminal() {
				return p, nil
			}
		case ctx.Err() != nil:
			return last, ctx.Err()
		case last != nil && spinbroker.ErrorCode(err) == spinbroker.ENOTFOUND:
			// The id was right: the package went while waited for (a
			// client deleted it, or the sweep of packages left in
			// staging did).
			return last, fmt.Errorf("package %s was deleted while waited for (it was %s when last read): %w", id, last.State, err)
		case last != nil && Temporary(err):
			// The package was seen: a broker restarting or a network
			// hiccup is worth waiting out.
			if !away {
				away = true
				cfg.onAway(err)
			}
		default:
			return nil, err
		}
		var tick <-chan time.Time // nil, never ready, while the stream works
		if away || !s.open.Load() {
			tick = time.After(cfg.poll)
		}
		select {
		case <-s.wake:
		case <-tick:
		case <-time.After(safetyRead):
		case <-ctx.Done():
			return last, ctx.Err()
		}
	}
}

// stream is what WaitPackage's event stream tells its reads.
type stream struct {
	wake    chan struct{} // a read is due: an event, a stream opened again or ended
	open    atomic.Bool   // the stream is open now
	settled chan struct{} // closed once the first stream has opened or failed
	once    sync.Once
}

// poke asks for a read, unless one is asked for already.
func (s *stream) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *stream) settle() { s.once.Do(func() { close(s.settled) }) }

// followStream keeps an event stream of package id open until ctx ends,
// opening it again with a back-off each time it ends or is refused.
func (c *Client) followStream(ctx context.Context, id string, s *stream) {
	delay := streamRetryMin
	for first := true; ; first = false {
		var opened time.Time
		// How the stream ends does not matter: polling takes over.
		_ = c.Events(ctx, func(ev Event) error {
			if mentions(ev, id) {
				s.poke()
			}
			return nil
		}, ForPackage(id), OnOpen(func() {
			opened = time.Now()
			s.open.Store(true)
			s.settle()
			if !first {
				// What changed while no stream was open was never sent.
				s.poke()
			}
		}))
		s.open.Store(false)
		s.settle()
		if ctx.Err() != nil {
			return
		}
		if !opened.IsZero() {
			s.poke() // polling takes over from the stream: read now
			if time.Since(opened) >= streamRetryMax {
				delay = streamRetryMin // it worked for a while: try again soon
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, streamRetryMax)
	}
}

// mentions reports whether an event is about package id: a package event
// carries the package (its "id"), a command event the command's
// "package_id"; "resync" says that events were lost, any of them.
func mentions(ev Event, id string) bool {
	if ev.Type == "resync" {
		return true
	}
	var v struct {
		ID        string `json:"id"`
		PackageID string `json:"package_id"`
	}
	if json.Unmarshal(ev.Data, &v) != nil {
		return false
	}
	return strings.EqualFold(v.ID, id) || strings.EqualFold(v.PackageID, id)
}
