// Package agent is spin-broker's agent SDK: it takes the commands of one
// resource from a broker, runs the handler of each command's action, and
// reports the result.
//
// An agent is a list of handlers and one call:
//
//	type Greet struct {
//		Name string `json:"name" spin:"required"`
//	}
//
//	greet := agent.Handle("greet", func(ctx context.Context, p Greet) (any, error) {
//		return map[string]string{"greeting": "hello, " + p.Name}, nil
//	})
//	err := agent.Run(ctx, c, "greeter", []agent.Handler{greet}, agent.Options{})
//
// Run long-polls the resource's queue, decodes each command's parameters
// strictly into the action's type (see Decode), runs the handler while it
// heartbeats the lease at a third of its duration, and completes the command
// with the lease token and the handler's output. A handler's error fails the
// command with the error's text as the reason (cut to 16 KiB), and what the
// handler returned beside the error is dropped (the failed command has no
// output); Transient(err) asks the broker to retry it. A command whose
// action has no handler fails for good: roll out agents before the clients
// that send new actions. A panic fails that command
// for good, not for a retry (a bug would only panic again, after doing
// again whatever it did before), with the panic in the reason, and the
// agent goes on; so does a call of runtime.Goexit (t.FailNow) in place of
// returning. Broker errors are retried with capped, jittered
// exponential back-off, waiting at least as long as an answer's
// Retry-After asks (up to MaxBackoff); a broker that cannot be reached at
// all (a connection refused or reset, a reverse proxy's 502: stopped,
// restarting) is tried again at least every 5s however long it has been
// away, so that the agent takes work within seconds of its return. A
// result is retried until it is delivered or its lease is known to be lost; a result held back because the broker was
// away (a restart) goes as soon as a heartbeat gets through again, not at
// the end of its back-off. Heartbeats keep the lease while the
// result is retried, for a lease's duration: a result the broker refuses
// for longer (a 500 on every try) lets the lease run out, so that the
// broker gives the command again (or fails it, "lease expired", once its
// attempts are spent) rather than hold it, and the queue behind it, for
// ever; the agent drops the result once the broker has moved the command
// on, and takes work again. A handler that ignores its context is
// heartbeated for as long as it runs: bound its work with the context's
// deadline or one of its own.
//
// The handler's context is cancelled, with context.Cause saying why
// (ErrLeaseLost, ErrLeaseExpired, ErrRefused, ErrStopped: test it with
// errors.Is), when the broker says the lease is lost (the command was
// settled by hand, or taken by another agent), when it refuses a
// heartbeat with 401 or 403 (the agent's token revoked: Run then stops,
// as it does when next is refused), and when the lease runs out by the agent's own
// clock with no heartbeat able to extend it (the broker out of reach): the
// broker may then give the command to another agent, and a queue runs its
// commands one at a time. Such an attempt is reported for a retry, whatever
// error the handler returns then. A
// handler that finishes anyway before the broker has noticed the lease run
// out (its sweeper looks every --sweep-interval, 10s by default) may still
// have its result recorded: the broker takes a result on an expired lease
// that no one else holds yet. Which of the two happens depends on timing;
// a handler's work must be safe to run again either way, as at-least-once
// delivery asks.
//
// When ctx ends, Run takes no new command, gives the running one (with
// Options.Claim, every command of the running batch) Options.Grace to
// finish, delivers its result and returns: what finished in time is
// recorded, the rest is reported for a retry as below. At the grace's
// end the handler's context is cancelled (its cause ErrStopped), and what it returns then is
// reported for a retry whatever the error (exec.CommandContext's "signal:
// killed" too). A handler still running a second later is abandoned (its
// goroutine is not stopped: Run cannot stop a handler that ignores its
// context) and its command reported for a retry; the attempt counts toward
// the command's max_attempts.
//
// With Options.Claim, results go back in batched completions, split so
// that each request stays under the broker's 1 MiB; a result too large on
// its own fails its command saying so, as a single command's would. A
// broker whose TLS certificate this host does not trust stops Run with an
// error (set SSL_CERT_FILE), since asking again would change nothing.
//
// # Errors
//
// A handler returns a plain error to fail its command for good, or one
// marked with Transient to have it retried; a *ParamError (what Decode and
// a Validator return) fails it for good too, naming the parameter. The
// context of a handler is cancelled with one of ErrLeaseLost,
// ErrLeaseExpired, ErrRefused and ErrStopped as its cause (test them with
// errors.Is(context.Cause(ctx), …)). The error Run returns wraps the
// client's (see Run): spinbroker.ErrorCode gives the broker's code, and
// errors.As finds a *client.Error, a *client.RedirectError or a
// *client.SchemeError in it.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/client"
)

// Options tune Run. The zero value is usable; a zero field means its
// default. Run refuses to start (the error names the field) with a negative
// duration or Claim, or a Lease outside 1s–24h, which the broker refuses.
type Options struct {
	// Logger receives the agent's log lines; slog.Default when nil.
	Logger *slog.Logger
	// Wait is how long one long-poll waits for a command (default 30s; the
	// broker clamps it to 60s, and the client to within the Timeout of
	// its http.Client, if one is set).
	Wait time.Duration
	// Lease is the lease asked for each command; 0 leaves it to the
	// command's own lease_duration, else the broker's 60s. The agent
	// extends it by heartbeats while the handler runs, so it need not
	// cover the longest command: it is how long a command stays with an
	// agent that died (killed, its host gone) before the broker gives it
	// again, and on a queue of concurrency 1 nothing else of the resource
	// runs meanwhile. Shorter means a quicker takeover, but heartbeats go
	// at a third of it, and a lease of a few seconds is lost to one slow
	// heartbeat: 15s or more over a network that may falter.
	Lease time.Duration
	// Grace is how long the running command (in batch mode, each command
	// of the running batch) may go on once ctx ends before its context is
	// cancelled (default 30s). Zero means the default; for
	// no grace at all, give it a nanosecond (the shipped agents' -grace 0
	// does): the handler's context is then cancelled as ctx ends.
	Grace time.Duration
	// Claim, when above 1, switches to batch mode: claim up to Claim
	// commands at once, run them concurrently, and complete them in one
	// request. A Claim above spinbroker.MaxClaim (1000), the most one
	// claim may ask for, is taken as 1000. The queue's concurrency still
	// bounds how many are leased at once, and it is 1 unless set
	// (spinbroker queue set RESOURCE
	// --concurrency N, with an admin token when auth is on; an agent's
	// token may not): raise it too, or each batch holds one command. A
	// batch also ends at the command whose parameters take it past
	// spinbroker.ClaimBytes (4 MiB).
	// Commands of one batch run concurrently, so only a resource whose
	// commands may run side by side should be served this way. A batch is
	// completed, and the next one claimed, once its slowest command has
	// finished: mix slow and quick actions on one resource with care.
	Claim int
	// MinBackoff and MaxBackoff bound the back-off between attempts to reach
	// the broker (default 200ms and 30s; a MaxBackoff below MinBackoff is
	// raised to it, and one set alone below 200ms lowers the minimum to it).
	// An answer with a Retry-After (the broker's 503 when it sheds load)
	// is waited out, up to MaxBackoff; a heartbeat waits no longer than
	// the lease has left. While the broker cannot be reached at all (no
	// connection, or a proxy's 502: stopped, restarting) the back-off
	// stops growing at 5s, or MaxBackoff if smaller (MinBackoff if larger).
	MinBackoff, MaxBackoff time.Duration
	// CallTimeout bounds one heartbeat or completion request (default 15s).
	CallTimeout time.Duration
}

// Defaults of Options.
const (
	DefaultWait        = 30 * time.Second
	DefaultGrace       = 30 * time.Second
	DefaultMinBackoff  = 200 * time.Millisecond
	DefaultMaxBackoff  = 30 * time.Second
	DefaultCallTimeout = 15 * time.Second
)

// finalDelivery is how long Run still tries to deliver results once the
// grace period is over; after it the broker's lease expiry takes over and
// the command is delivered again.
const finalDelivery = 5 * time.Second

// abandonAfter is how long a handler whose context was cancelled at the end
// of the grace period may take to return before the agent stops waiting
// for it.
const abandonAfter = time.Second

// Transient marks err as a failure worth retrying (a device busy, a network
// blip): the command fails with retry, so the broker delivers it again after
// a back-off while attempts remain. Transient(nil) is nil.
func Transient(err error) error {
	if err == nil {
		return nil
	}
	return &transientError{err}
}

type transientError struct{ err error }

func (e *transientError) Error() string { return e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

// IsTransient reports whether err was marked with Transient.
func IsTransient(err error) bool {
	var t *transientError
	return errors.As(err, &t)
}

type ctxKey struct{}

type cmdInfo struct {
	cmd *spinbroker.Command
	log *slog.Logger
}

// CommandFrom returns the command a handler's context belongs to, as the
// broker delivered it (its ID, Attempts, MaxAttempts, …), and false for a
// context that belongs to none (outside Run, as in Handler.Call).
func CommandFrom(ctx context.Context) (*spinbroker.Command, bool) {
	i, ok := ctx.Value(ctxKey{}).(cmdInfo)
	return i.cmd, ok
}

// Logger returns the logger of a handler's context, carrying the command's
// command_id, resource and action; slog.Default outside a handler.
func Logger(ctx context.Context) *slog.Logger {
	return LoggerOr(ctx, slog.Default())
}

// LoggerOr is Logger in a handler's context, else fallback: for an action
// that runs under an agent or is called on its own (by a test, by another
// program), whose lines carry the command's keys in the one case and go
// to its own logger, not slog.Default, in the other.
func LoggerOr(ctx context.Context, fallback *slog.Logger) *slog.Logger {
	if i, ok := ctx.Value(ctxKey{}).(cmdInfo); ok {
		return i.log
	}
	return fallback
}

// Run serves resource until ctx ends or the broker refuses the agent (a bad
// token, a resource it may not serve, a URL that answers 404 for its
// queue, that redirects, or whose scheme is not what its server speaks, an
// untrusted TLS certificate); it returns nil after a graceful stop (see
// Options.Grace), and blocks until then. Every other error of the broker
// (unreachable, 5xx) is retried for as long as it lasts.
//
// The error it returns wraps the one that stopped it:
// spinbroker.ErrorCode(err) is the broker's code (unauthorized,
// forbidden, not_found, invalid_request), errors.As finds the
// *client.Error, *client.RedirectError or *client.SchemeError, and
// client.Untrusted reports a certificate. It fails at once, without a request, for arguments it
// cannot run with: no client or no handlers, a bad resource or action
// name, two handlers of one action, a Handler not made by Handle, Options
// out of range. The error is in the log already (Options.Logger, level
// Error: "agent not started" for arguments it cannot run with, else
// "agent stopped"): a caller may just exit, without printing it again.
// c is the broker's client.
func Run(ctx context.Context, c *client.Client, resource string, handlers []Handler, opts Options) error {
	a, err := newRunner(c, resource, handlers, opts)
	if err != nil {
		log := opts.Logger
		if log == nil {
			log = slog.Default()
		}
		log.Error("agent not started", "err", err)
		return err
	}
	done := make(chan struct{})
	defer close(done)
	// hard ends Options.Grace after ctx: the running handlers' contexts.
	// final ends finalDelivery later: the last attempts to deliver results.
	hard, cancelHard := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancelHard(ErrStopped)
	final, cancelFinal := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelFinal()
	// The start line comes first, before the goroutine below can say that
	// the agent stops (its context may be done already).
	// The actions by name: whoever rolls out a new one (agents before the
	// clients that send it) sees here that this agent has it.
	actions := strings.Join(slices.Sorted(maps.Keys(a.handlers)), ",")
	a.log.Info("agent started", "url", c.RedactedURL(), "actions", actions, "claim", a.opts.Claim, "grace", graceText(a.opts.Grace))
	// The line that says the agent stops comes once, and before the one
	// that says it stopped: an idle agent's loop can end before this
	// goroutine has logged it.
	var stopping sync.Once
	sayStopping := func() { a.log.Info("stopping: no new commands", "grace", graceText(a.opts.Grace)) }
	go func() {
		select {
		case <-ctx.Done():
		case <-done:
			return
		}
		stopping.Do(sayStopping)
		if sleep(done, a.opts.Grace) {
			cancelHard(ErrStopped)
			if sleep(done, finalDelivery) {
				cancelFinal()
			}
		}
	}()
	a.hard, a.final = hard, final
	err = a.loop(ctx)
	if ctx.Err() != nil {
		stopping.Do(sayStopping)
	}
	if err != nil {
		a.log.Error("agent stopped", "err", err)
	} else {
		a.log.Info("agent stopped")
	}
	return err
}

// graceText is Options.Grace as the caller meant it: a nanosecond is how
// Options asks for no grace (the shipped agents' -grace 0), so it reads
// "0s", not a "1ns" nobody typed.
func graceText(d time.Duration) string {
	if d <= time.Nanosecond {
		return "0s"
	}
	return d.String()
}

// sleep waits d and reports true, or false as soon as done closes.
func sleep(done <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}

type runner struct {
	c        *client.Client
	resource string
	handlers map[string]Handler
	opts     Options
	log      *slog.Logger
	// hard is cancelled Grace after the stop; final a little later.
	hard, final context.Context
	// answers hears of every heartbeat that gets through: a result that
	// waits out a back-off because the broker was away is sent then.
	answers news
	// outageLogEvery spaces the warnings of a long outage (outageLog).
	outageLogEvery time.Duration
}

// news is a broadcast: next is closed at the next tell.
type news struct {
	mu sync.Mutex
	ch chan struct{}
}

// tell closes the channel next returned, waking whoever waits on it.
func (n *news) tell() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
}

// next is closed at the next tell.
func (n *news) next() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ch
}

func newRunner(c *client.Client, resource string, handlers []Handler, opts Options) (*runner, error) {
	if c == nil {
		return nil, errors.New("agent: no client")
	}
	if err := spinbroker.CheckName("resource", resource); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if len(handlers) == 0 {
		// Every command would fail for good, "no action": surely a
		// mistake in building the list, not an agent meant to do that.
		return nil, errors.New("agent: no handlers: an agent with no actions would fail every command of " + resource)
	}
	hs := make(map[string]Handler, len(handlers))
	for _, h := range handlers {
		if h.run == nil {
			return nil, errors.New("agent: a Handler must be made with Handle")
		}
		if h.bad != nil {
			return nil, h.bad
		}
		if err := spinbroker.CheckName("action", h.action); err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
		if _, dup := hs[h.action]; dup {
			return nil, fmt.Errorf("agent: two handlers for action %q", h.action)
		}
		hs[h.action] = h
	}
	if err := checkOptions(opts); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Wait <= 0 {
		opts.Wait = DefaultWait
	}
	if opts.Grace <= 0 {
		opts.Grace = DefaultGrace
	}
	switch {
	case opts.MinBackoff > 0:
	case opts.MaxBackoff > 0:
		// MaxBackoff alone, perhaps below the default minimum: a cap on
		// the back-off, which is what it says.
		opts.MinBackoff = min(DefaultMinBackoff, opts.MaxBackoff)
	default:
		opts.MinBackoff = DefaultMinBackoff
	}
	switch {
	case opts.MaxBackoff <= 0:
		opts.MaxBackoff = max(DefaultMaxBackoff, opts.MinBackoff)
	case opts.MaxBackoff < opts.MinBackoff:
		opts.MaxBackoff = opts.MinBackoff
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = DefaultCallTimeout
	}
	if opts.Claim > spinbroker.MaxClaim {
		opts.Claim = spinbroker.MaxClaim
	}
	return &runner{
		c:        c,
		resource: resource,
		handlers: hs,
		opts:     opts,
		log:      opts.Logger.With("resource", resource),

		outageLogEvery: time.Minute,
	}, nil
}

// checkOptions refuses what Options cannot mean as given, rather than bend
// it: a negative Grace taken as the default 30s is the opposite of the "no
// grace" it surely meant, and a lease the broker refuses would start the
// agent only for the broker's first answer to stop it.
func checkOptions(opts Options) error {
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"Wait", opts.Wait}, {"Grace", opts.Grace}, {"MinBackoff", opts.MinBackoff},
		{"MaxBackoff", opts.MaxBackoff}, {"CallTimeout", opts.CallTimeout},
	} {
		if d.v < 0 {
			hint := "0 for the default"
			if d.name == "Grace" {
				hint += ", a nanosecond for no grace"
			}
			return fmt.Errorf("agent: Options.%s is negative (%s): %s", d.name, d.v, hint)
		}
	}
	if opts.Lease != 0 {
		if err := spinbroker.CheckLease("Options.Lease", opts.Lease); err != nil {
			return fmt.Errorf("agent: %s (0 for the command's own)", spinbroker.ErrorMessage(err))
		}
	}
	if opts.Claim < 0 {
		return fmt.Errorf("agent: Options.Claim is negative (%d): 0 or 1 for one command at a time", opts.Claim)
	}
	return nil
}

// backoff is the pause before attempt n+1 after n failures: exponential from
// MinBackoff, capped at MaxBackoff, with the upper half jittered so that many
// agents do not come back at the same instant.
func (a *runner) backoff(n int) time.Duration {
	return a.backoffUpTo(n, a.opts.MaxBackoff)
}

// backoffUpTo is backoff capped at ceiling rather than MaxBackoff.
func (a *runner) backoffUpTo(n int, ceiling time.Duration) time.Duration {
	d := a.opts.MinBackoff
	for i := 1; i < n && d < ceiling; i++ {
		if d > ceiling/2 { // doubling would pass it, or overflow
			d = ceiling
			break
		}
		d *= 2
	}
	d = min(d, ceiling)
	return d/2 + rand.N(d/2+1)
}

// pause is the wait before trying a call again after its n-th failure,
// err: the back-off, or longer when the answer asked for a pause with
// Retry-After (the broker's 503 when it sheds load says when to come
// back), but never past MaxBackoff, so that no proxy can park the agent
// for a day. A broker that could not be reached at all is tried again
// within unreachableBackoff (MinBackoff if that is longer): knocking on a
// closed port costs it nothing, and the agent comes back within seconds of
// a restart; a broker that answers and refuses (5xx, 429) is given the
// whole back-off.
func (a *runner) pause(n int, err error) time.Duration {
	if unreachable(err) {
		return a.backoffUpTo(n, min(a.opts.MaxBackoff, max(unreachableBackoff, a.opts.MinBackoff)))
	}
	return max(a.backoff(n), min(retryAfter(err), a.opts.MaxBackoff))
}

// unreachableBackoff bounds the pause while the broker cannot be reached
// at all: it costs the broker nothing, and an agent comes back within a
// few seconds of a restart rather than up to MaxBackoff after it.
const unreachableBackoff = 5 * time.Second

// outageLinesInFull is how many failed polls in a row are each logged.
const outageLinesInFull = 5

// unreachable reports whether err says that the call never reached the
// broker: the connection could not be made (refused, no route, a name
// that does not resolve, a connect that timed out) or was reset, or a
// reverse proxy in front of it answered 502 Bad Gateway. An answer,
// even a 503, and a request that timed out waiting for one, say that the
// broker is there and perhaps overloaded: they are not.
func unreachable(err error) bool {
	var ce *client.Error
	if errors.As(err, &ce) {
		// A reverse proxy's 502: it could not reach the broker either.
		return ce.StatusCode == http.StatusBadGateway
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)
}

// retryAfter is the wait err's answer asked for (client.Error.RetryAfter);
// 0 when it asked for none.
func retryAfter(err error) time.Duration {
	var ce *client.Error
	if errors.As(err, &ce) {
		return ce.RetryAfter
	}
	return 0
}

// wait sleeps d or until ctx ends, and reports whether ctx is still alive.
func wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// fatal reports whether a broker's refusal to hand out work will not go away
// by asking again: the agent is not let in, or asks for something invalid.
// (A 404 will not go away either; loop says why it means a wrong URL.) A
// 405 is a proxy's in front of the broker, which refuses the POST every time.
func fatal(err error) bool {
	switch spinbroker.ErrorCode(err) {
	case spinbroker.EUNAUTHORIZED, spinbroker.EFORBIDDEN, spinbroker.EINVALID, spinbroker.EMETHOD:
		return true
	}
	return false
}

// loop takes commands until ctx ends: one at a time with next or, in batch
// mode, up to Claim at once with claim, run concurrently and completed in
// one request.
func (a *runner) loop(ctx context.Context) error {
	failures := 0
	outage := outageLog{every: a.outageLogEvery}
	for ctx.Err() == nil {
		poll := a.opts.Wait
		if failures > 0 {
			// A look without waiting first: the log says the broker
			// answers again as soon as it does, not a long-poll later.
			poll = 0
		}
		cmds, err := a.take(ctx, poll)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			switch {
			case errors.As(err, new(*client.SchemeError)):
				// Its server speaks the other protocol, every time. (Go's
				// 400 page for plain HTTP at TLS is one too, not a
				// refusal of the broker's.)
				return fmt.Errorf("agent: the broker's URL has the wrong scheme: %w", err)
			case spinbroker.ErrorCode(err) == spinbroker.ENOTFOUND: // next and claim never answer 404 at a broker's URL
				return fmt.Errorf("agent: the broker URL answers 404 for the queue %s: is it the broker's base URL, without a path? %w", a.resource, err)
			case fatal(err):
				return fmt.Errorf("agent: the broker refuses to hand out %s commands: %w", a.resource, err)
			case client.Untrusted(err):
				// Asking again changes nothing, and an agent that only
				// retries looks healthy to its supervisor.
				return fmt.Errorf("agent: the broker's TLS certificate is not trusted here (set SSL_CERT_FILE to the certificate of its CA, or give the client an http.Client that trusts it): %w", err)
			case errors.As(err, new(*client.RedirectError)):
				// A proxy sending http to https, say, or a loop: every
				// call would be redirected the same way.
				return fmt.Errorf("agent: the broker's URL redirects: %w", err)
			}
			failures++
			d := a.pause(failures, err)
			outage.failed(a.log, err, failures, d)
			wait(ctx, d)
			continue
		}
		if failures > 0 {
			// The warnings stop; say why, or a reader of the log is left
			// wondering whether the agent gave up.
			a.log.Info("taking commands again", "after_failures", failures)
		}
		failures = 0
		outage = outageLog{every: a.outageLogEvery}
		switch {
		case len(cmds) == 0:
		case a.opts.Claim <= 1:
			j := a.start(&cmds[0], newBeatNews(1))
			a.execute(j)
			a.deliver(j)
			j.stop()
		default:
			jobs := make([]*job, len(cmds))
			news := newBeatNews(len(cmds))
			var wg sync.WaitGroup
			for i := range cmds {
				jobs[i] = a.start(&cmds[i], news)
				wg.Go(func() { a.execute(jobs[i]) })
			}
			wg.Wait()
			a.deliverBatch(jobs)
			for _, j := range jobs {
				j.stop()
			}
		}
	}
	return nil
}

// outageLog keeps the warnings of the polls that fail in a row to a few
// lines: each of the first outageLinesInFull, any whose error differs from
// the last one logged, and then one per every, which counts the failures
// left out since the line before it (suppressed_since_last_line, as the
// broker's log says it). A broker out of reach is tried again within 5s
// however long it is away, and a warning per try left an agent's log, for
// a broker stopped an hour, with up to 720 lines all alike.
type outageLog struct {
	every      time.Duration
	last       time.Time // of the last line
	lastErr    string    // its error
	suppressed int       // failures left out since
}

// failed logs the failures-th failed poll in a row, err, to be tried again
// in retryIn, or counts it among those left out.
func (o *outageLog) failed(log *slog.Logger, err error, failures int, retryIn time.Duration) {
	now := time.Now()
	if failures > outageLinesInFull && err.Error() == o.lastErr && now.Sub(o.last) < o.every {
		o.suppressed++
		return
	}
	args := []any{"err", err, "failures", failures, "retry_in", retryIn.Round(time.Millisecond).String()}
	if o.suppressed > 0 {
		args = append(args, "suppressed_since_last_line", o.suppressed)
	}
	log.Warn("cannot take commands; retrying", args...)
	o.last, o.lastErr, o.suppressed = now, err.Error(), 0
}

// take long-polls the queue once, for up to wait: next, or claim in batch
// mode.
func (a *runner) take(ctx context.Context, wait time.Duration) ([]spinbroker.Command, error) {
	ctx, cancel := context.WithTimeout(ctx, wait+a.opts.CallTimeout)
	defer cancel()
	if a.opts.Claim > 1 {
		return a.c.Claim(ctx, a.resource, a.opts.Claim, wait, a.opts.Lease)
	}
	cmd, err := a.c.Next(ctx, a.resource, wait, a.opts.Lease)
	if cmd == nil {
		return nil, err
	}
	return []spinbroker.Command{*cmd}, nil
}

// outcome is what the agent reports for a command.
type outcome struct {
	status bool
	reason string
	output json.RawMessage
	retry  bool
}

func (o outcome) result(token string) spinbroker.Result {
	r := spinbroker.Result{Status: &o.status, Output: o.output, Retry: o.retry, Lease: token}
	if !o.status {
		r.Reason = &o.reason
	}
	return r
}

// job is one leased command, from its delivery to its result's.
type job struct {
	cmd   *spinbroker.Command
	token string
	dur   time.Duration // the lease's duration
	log   *slog.Logger
	begin time.Time
	// leasedAt is when the broker leased the command, by the broker's
	// clock (its started_at); zero when the answer did not say.
	leasedAt time.Time
	took     time.Duration // from delivery until the handler returned

	mu         sync.Mutex
	expires    time.Time // by the agent's clock, measured from before each request
	lost       bool      // the broker said the lease is not ours any more
	ran        bool      // the handler has returned (or was abandoned): res is set
	delivering time.Time // when the first try to deliver the result was made

	ctx       context.Context // the handler's: cancelled when the lease is lost or the grace is over
	cancel    context.CancelCauseFunc
	stopBeats context.CancelFunc
	beatsDone chan struct{}
	news      *beatNews // what its heartbeats log, with its batch's
	res       outcome
}

// The causes of a handler's cancelled context: a handler tells them apart
// with errors.Is(context.Cause(ctx), …), to clean up or leave alone what it
// was doing. Whatever the handler then returns, its attempt is reported
// for a retry, or not at all when the lease is lost. (The time limit of
// Handler.WithTimeout is none of them: its cause is context.DeadlineExceeded
// to errors.Is, as any deadline's, and its text names the limit.)
var (
	// ErrLeaseLost: the broker says the lease is not this agent's any more
	// (the command was settled by hand, or leased to another agent).
	ErrLeaseLost = errors.New("the lease on the command was lost")
	// ErrLeaseExpired: the lease ran out by the agent's clock with no
	// heartbeat able to extend it; the broker may have handed the command
	// to another agent, and a queue runs its commands one at a time.
	ErrLeaseExpired = errors.New("the lease expired before a heartbeat could extend it")
	// ErrStopped: Run's context ended and Options.Grace is over.
	ErrStopped = errors.New("the agent stopped and its grace period is over")
	// ErrRefused: the broker refused a heartbeat with 401 or 403 (the
	// agent's token revoked, or not for this resource). That will not go
	// away, and the result could not be reported either: the handler is
	// stopped at once, and Run stops with the error. The broker gives the
	// command again once its lease runs out.
	ErrRefused = errors.New("the broker refuses this agent's heartbeats")
)

// start begins a job: its handler's context and its heartbeats, which
// log through news.
func (a *runner) start(cmd *spinbroker.Command, news *beatNews) *job {
	j := &job{cmd: cmd, begin: time.Now(), beatsDone: make(chan struct{}), news: news}
	if cmd.Lease != nil {
		j.token = cmd.Lease.Token
	}
	if cmd.StartedAt != nil {
		j.leasedAt = *cmd.StartedAt
	}
	switch {
	case a.opts.Lease > 0:
		j.dur = a.opts.Lease
	case cmd.LeaseDuration != nil && cmd.LeaseDuration.D() > 0:
		j.dur = cmd.LeaseDuration.D()
	default:
		j.dur = spinbroker.DefaultLease
	}
	// The lease is measured on this agent's own (monotonic) clock, from
	// when the command came: expires_at is a time on the broker's clock,
	// and an agent whose clock ran ahead of it by most of a lease took
	// that lease for nearly over and stopped its handler at the first
	// heartbeat, though the broker held the lease for it. (The broker
	// leased the command before it answered, so this is later than its
	// expiry by the answer's time on the network; the first heartbeat,
	// at a third of the lease, comes well before either.)
	j.expires = j.begin.Add(j.dur)
	j.log = a.log.With("command_id", cmd.ID, "action", cmd.Action, "attempt", cmd.Attempts)
	j.ctx, j.cancel = context.WithCancelCause(context.WithValue(a.hard, ctxKey{}, cmdInfo{cmd: cmd, log: j.log}))
	// Heartbeats go on while the result is delivered, so that a broker that
	// is slow to take the result does not let the lease expire meanwhile;
	// but for a lease's duration at most (see heartbeat).
	var beats context.Context
	beats, j.stopBeats = context.WithCancel(a.final)
	go a.heartbeat(beats, j)
	j.log.Info("command started")
	return j
}

// stop ends the job's heartbeats and context.
func (j *job) stop() {
	j.stopBeats()
	<-j.beatsDone
	j.cancel(context.Canceled)
}

// deliveryBegins notes the first try to deliver j's result.
func (j *job) deliveryBegins() {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.delivering.IsZero() {
		j.delivering = time.Now()
	}
}

// deliveringSince is when the first try to deliver j's result was made;
// zero before.
func (j *job) deliveringSince() time.Time {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.delivering
}

func (j *job) expiry() time.Time {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.expires
}

func (j *job) isLost() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.lost
}

// dropLost drops j's result, which the broker refused (err) for a lease
// that is not this agent's any more: one line, with the broker's answer.
// (Taken for a lease lost while the handler ran, it was said twice: "lease
// lost", then "result not delivered".)
func (j *job) dropLost(err error) {
	j.mu.Lock()
	j.lost = true
	j.mu.Unlock()
	j.log.Warn("result not delivered: the lease was lost", "err", err, "status", j.res.status)
}

// loseLease records that the command is someone else's now and cancels the
// handler, whose work no longer counts.
func (j *job) loseLease(err error) {
	j.mu.Lock()
	first := !j.lost
	j.lost = true
	j.mu.Unlock()
	if first {
		j.log.Warn("lease lost: the command is no longer this agent's", "err", err)
		j.cancel(ErrLeaseLost)
	}
}

// heartbeat extends j's lease every third of its duration until ctx ends;
// after a failure it tries again sooner, with back-off. Neither a request
// that hangs nor a long back-off keeps the handler running past the lease
// by the agent's clock: a request gets no longer than the lease has left,
// and after a failure the next try comes no later than the lease's end.
//
// Once the result's delivery has gone on for a lease's duration, it
// extends the lease no more: a result the broker keeps refusing (a 500 on
// every try) would otherwise hold the command for ever, and a queue that
// runs one command at a time behind it. The lease then runs out and the
// broker gives the command again, while deliver still offers the result
// until it sees that (given).
func (a *runner) heartbeat(ctx context.Context, j *job) {
	defer close(j.beatsDone)
	defer j.news.gone(j)
	interval := j.dur / 3
	next := interval
	failures := 0
	var lastErr error
	for wait(ctx, next) {
		sent := time.Now()
		if d := j.deliveringSince(); !d.IsZero() && sent.Sub(d) >= j.dur {
			j.news.givenUp(j, sent.Sub(d))
			return
		}
		left := j.expiry().Sub(sent)
		if left <= 0 {
			j.expire(lastErr)
		}
		timeout := min(a.opts.CallTimeout, j.dur)
		if left > 0 {
			timeout = min(timeout, left)
		}
		cctx, cancel := context.WithTimeout(ctx, timeout)
		_, err := a.c.Heartbeat(cctx, j.cmd.ID, j.token, j.dur)
		cancel()
		switch code := spinbroker.ErrorCode(err); {
		case err == nil:
			j.mu.Lock()
			j.expires = sent.Add(j.dur)
			j.mu.Unlock()
			j.news.ok(j)
			a.answers.tell()
			failures, next, lastErr = 0, interval, nil
		case ctx.Err() != nil:
			return
		case code == spinbroker.ESTALE || code == spinbroker.ENOTFOUND || code == spinbroker.ECONFLICT:
			if !j.deliveringSince().IsZero() {
				// The result has been sent: the broker that recorded it
				// ended the lease, and refuses heartbeats for that, while
				// the answer is on its way or was lost. That is no lost
				// lease; the result's own answer, or the next try's, says
				// what became of it (deliver).
				j.log.Debug("heartbeat refused once the result was sent; the result's answer will tell", "err", err)
				return
			}
			j.loseLease(err)
			return
		case fatal(err):
			// A revoked token does not come back: no retry will get
			// through, nor will the result.
			j.news.refused(j, err)
			j.cancel(fmt.Errorf("%w: %w", ErrRefused, err))
			return
		default:
			failures++
			// A call cut short by the lease's own end (its timeout is what
			// was left of it) says nothing of the broker: the reason keeps
			// what the calls before it were told, a 503 say, rather than
			// "could not be reached".
			if lastErr == nil || !errors.Is(err, context.DeadlineExceeded) || time.Now().Before(j.expiry()) {
				lastErr = err
			}
			// No later than the next beat would come, unless the broker
			// asked for a longer pause; and in any case before the lease
			// runs out, below.
			next = max(min(a.backoff(failures), interval), min(retryAfter(err), a.opts.MaxBackoff))
			left := time.Until(j.expiry())
			j.news.failed(j, err, failures, left)
			if left <= 0 {
				j.expire(lastErr)
			} else {
				next = min(next, left)
			}
		}
	}
}

// beatNews keeps what the heartbeats of one batch log to a line per round
// of an outage, and one when they get through again, rather than a line of
// each per command: a batch of 100 commands wrote 100 lines a round. A
// failure unlike those logged already (another error, or a round further)
// is logged all the same; a command's own news (its lease lost, or expired
// by the agent's clock) is logged by the command.
type beatNews struct {
	size    int // the commands of the batch; 1 outside batch mode
	mu      sync.Mutex
	failing map[*job]bool
	worst   map[string]int  // the furthest round logged of each error (failureKey), this outage
	refusal map[string]bool // the refusals logged (a revoked token's 401), by failureKey
	gaveUp  bool            // a lease is no longer extended: the line is logged
}

func newBeatNews(size int) *beatNews {
	return &beatNews{size: size, failing: map[*job]bool{}, worst: map[string]int{}, refusal: map[string]bool{}}
}

// refused logs that the broker refuses j's heartbeats for good (err: the
// agent's token revoked, say), unless a command of the batch has logged
// that refusal: a revoked token refuses every command's heartbeat, and a
// batch of 100 wrote 100 error lines of the same 401.
func (n *beatNews) refused(j *job, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	key := failureKey(j, err)
	if n.refusal[key] {
		return
	}
	n.refusal[key] = true
	if n.size > 1 {
		j.log.Error("the broker refuses this agent's heartbeats; stopping the batch's handlers", "err", err, "batch", n.size)
		return
	}
	j.log.Error("the broker refuses this agent's heartbeats; stopping the handler", "err", err)
}

// failed notes j's failures-th failed heartbeat in a row, err, and logs it
// unless a command of the batch has logged that round of that error.
func (n *beatNews) failed(j *job, err error, failures int, left time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.failing[j] = true
	key := failureKey(j, err)
	if failures <= n.worst[key] {
		return
	}
	n.worst[key] = failures
	args := []any{"err", err, "failures", failures, "lease_expires_in", left.Round(time.Millisecond).String()}
	if n.size > 1 {
		args = append(args, "batch", n.size)
	}
	j.log.Warn("heartbeat failed; retrying", args...)
}

// failureKey is err, a failure of j's heartbeat, as the commands of a
// batch share it: without j's command id, which an error with no answer
// carries in its request's URL (Post ".../commands/ID/heartbeat":
// connection refused), so that the same outage seen by every command of
// the batch is one failure, not one per command.
func failureKey(j *job, err error) string {
	return strings.ReplaceAll(err.Error(), j.cmd.ID, "ID")
}

// givenUp logs that j's lease is extended no more, its result undelivered
// for a lease's duration (for): once for the batch, whose results are
// delivered together and given up together. A batch of 100 wrote 100
// lines of it.
func (n *beatNews) givenUp(j *job, d time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.gaveUp {
		return
	}
	n.gaveUp = true
	msg := "the result is still not delivered after a lease's duration; no longer extending the lease, so that the broker can give the command again"
	args := []any{"delivering_for", d.Round(time.Millisecond).String()}
	if n.size > 1 {
		msg = "the batch's results are still not delivered after a lease's duration; no longer extending their leases, so that the broker can give the commands again"
		args = append(args, "batch", n.size)
	}
	j.log.Warn(msg, args...)
}

// ok notes that j's heartbeat got through, and logs it when j was the last
// command of the batch whose heartbeats failed.
func (n *beatNews) ok(j *job) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.failing[j] {
		return
	}
	delete(n.failing, j)
	if len(n.failing) > 0 {
		return
	}
	rounds := 0
	for _, r := range n.worst {
		rounds = max(rounds, r)
	}
	args := []any{"after_failures", rounds}
	if n.size > 1 {
		args = append(args, "batch", n.size)
	}
	j.log.Info("heartbeats get through again", args...)
	clear(n.worst)
}

// gone notes that j heartbeats no more.
func (n *beatNews) gone(j *job) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.failing, j)
	if len(n.failing) == 0 {
		clear(n.worst)
	}
}

// expire stops the handler of a job whose lease ran out by the agent's
// clock with no heartbeat able to extend it (err the last one's error).
// Its result, if any, is still offered: the broker takes it while nobody
// else holds the command. A handler that has returned already was not too
// slow: its result was (its delivery retried through an outage, or a
// batch's waiting for the batch's slowest command), and the line says so.
func (j *job) expire(err error) {
	if context.Cause(j.ctx) != nil {
		return
	}
	j.mu.Lock()
	ran := j.ran
	j.mu.Unlock()
	if ran {
		j.log.Warn("lease expired by this agent's clock before the result was delivered", "err", err)
	} else {
		j.log.Warn("lease expired by this agent's clock; stopping the handler", "err", err)
	}
	j.cancel(&leaseExpired{last: err})
}

// leaseExpired is the cause of a handler stopped because its lease ran
// out: ErrLeaseExpired (errors.Is), with what the last heartbeat met, for
// the reason.
type leaseExpired struct{ last error }

func (e *leaseExpired) Error() string        { return ErrLeaseExpired.Error() }
func (e *leaseExpired) Is(target error) bool { return target == ErrLeaseExpired }

// why says what kept the heartbeats from extending the lease: the broker's
// answer, no answer, or no heartbeat at all (a process paused or starved
// past its lease, whose network was fine).
func (e *leaseExpired) why() string {
	var ce *client.Error
	switch {
	case e.last == nil:
		return "no heartbeat went out in time: was the agent paused, or starved of CPU?"
	case errors.As(e.last, &ce):
		return "the broker refused the heartbeats: " + e.last.Error()
	default:
		return "the broker could not be reached: " + e.last.Error()
	}
}

// execute runs the command's handler and sets j.res. It returns early only
// when the grace period is over and the handler ignores its cancelled
// context.
func (a *runner) execute(j *job) {
	defer func() {
		j.took = time.Since(j.begin)
		j.mu.Lock()
		j.ran = true
		j.mu.Unlock()
	}()
	h, ok := a.handlers[j.cmd.Action]
	if !ok {
		// What it has tells a misspelt action from an agent not rolled
		// out yet.
		has := strings.Join(slices.Sorted(maps.Keys(a.handlers)), ", ")
		j.res = outcome{reason: fmt.Sprintf("agent for %s has no action %q (it has: %s)", a.resource, j.cmd.Action, has)}
		return
	}
	done := make(chan outcome, 1)
	go func() {
		// call recovers a panic, so it ends without returning only by
		// runtime.Goexit (t.FailNow in code lifted from a test, a library
		// that calls it): its deferred calls still run, and this one sends
		// the result that would otherwise never come, the command held,
		// and the queue behind it, until the agent stopped.
		returned := false
		defer func() {
			if !returned {
				j.log.Error("handler called runtime.Goexit instead of returning")
				done <- outcome{reason: goexitReason}
			}
		}()
		res := a.call(j, h)
		returned = true
		done <- res
	}()
	select {
	case j.res = <-done:
		return
	case <-a.hard.Done():
	}
	select {
	case j.res = <-done:
	case <-time.After(abandonAfter):
		j.log.Error("handler did not return after the grace period; abandoning it")
		j.res = outcome{reason: "agent stopped before the command finished", retry: true}
	}
}

// goexitReason is the reason of a command whose handler called
// runtime.Goexit: for good, as a panic's, since it would only do it again.
const goexitReason = "agent error: the handler called runtime.Goexit instead of returning (t.FailNow and the like do)"

// call runs one handler, turning its result, error or panic into an outcome.
func (a *runner) call(j *job, h Handler) (res outcome) {
	defer func() {
		if v := recover(); v != nil {
			j.log.Error("handler panicked", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			res = outcome{reason: cutReason(fmt.Sprintf("agent error: the handler panicked: %v", v))}
		}
	}()
	out, err := h.run(j.ctx, j.cmd.Parameters)
	var pe *ParamError
	switch {
	case err == nil:
		return outcome{status: true, output: out}
	case errors.As(err, &pe):
		return outcome{reason: cutReason(pe.Error())}
	case a.hard.Err() != nil:
		// Stopped by the end of the grace, whatever error that made: a
		// command run with exec.CommandContext says "signal: killed",
		// not context.Canceled, and is no more a failure for it.
		reason := "agent stopped before the command finished"
		if !errors.Is(err, ErrStopped) { // a handler returning context.Cause(ctx) would say it twice
			reason += ": " + errorText(err)
		}
		return outcome{reason: cutReason(reason), retry: true}
	case errors.Is(context.Cause(j.ctx), ErrRefused):
		cause := context.Cause(j.ctx)
		reason := "agent error: " + cause.Error()
		if !errors.Is(err, ErrRefused) { // a handler returning context.Cause(ctx) would say it twice
			reason += ": " + errorText(err)
		}
		return outcome{reason: cutReason(reason), retry: true}
	case errors.Is(context.Cause(j.ctx), ErrLeaseExpired):
		reason := "agent error: " + ErrLeaseExpired.Error()
		if le := (*leaseExpired)(nil); errors.As(context.Cause(j.ctx), &le) {
			reason += " (" + le.why() + ")"
		}
		if !errors.Is(err, ErrLeaseExpired) { // a handler returning context.Cause(ctx) would say it twice
			reason += ": " + errorText(err)
		}
		return outcome{reason: cutReason(reason), retry: true}
	default:
		return outcome{reason: cutReason(errorText(err)), retry: IsTransient(err)}
	}
}

// errorText is an error's text, or a word that it had none: a command
// failed with the reason "" says nothing to whoever looks at it.
func errorText(err error) string {
	if s := err.Error(); strings.TrimSpace(s) != "" {
		return s
	}
	return fmt.Sprintf("the handler returned an error with no text (%T)", err)
}

// maxReason is how much of a failure's reason the agent sends: the broker
// takes 64 KiB, and an error that carries a program's whole stderr would
// otherwise never be recorded, its command run again until its attempts
// ran out on lease expiries.
const maxReason = 16 << 10

// cutReason shortens a reason to maxReason bytes, on a character boundary,
// saying how much was cut.
func cutReason(s string) string {
	if len(s) <= maxReason {
		return s
	}
	kept := strings.TrimSuffix(spinbroker.Truncate(s, maxReason-64), "…")
	return fmt.Sprintf("%s… (%d more bytes cut)", kept, len(s)-len(kept))
}

// refuseOutput makes j's result say that the broker refused its output
// (err): sent in its place, the command fails saying so rather than expire
// and fail the same way again.
func (j *job) refuseOutput(err error) {
	j.log.Error("the broker refuses the output", "err", err)
	j.res = outcome{reason: "agent error: the broker refused the command's output: " + spinbroker.ErrorMessage(err)}
}

// finished logs a result that the broker has recorded: a failure at warn,
// so that an agent logging only warnings and errors still shows its failed
// commands. The duration is the handler's, not the wait for a batch's
// completion request.
func (j *job) finished(settled *spinbroker.Command) {
	args := []any{"status", j.res.status, "duration", j.took.Round(time.Millisecond).String()}
	if j.res.status {
		j.log.Info("command finished", args...)
		return
	}
	// A retry asked for on the last attempt fails the command for good:
	// retry=true would promise a run that never comes.
	retry := j.res.retry && (j.cmd.MaxAttempts <= 0 || j.cmd.Attempts < j.cmd.MaxAttempts)
	var more []any
	switch {
	case j.res.retry && !retry:
		more = []any{"max_attempts", j.cmd.MaxAttempts}
	case retry && settled != nil && settled.State.Terminal():
		// So does one of a package cancelled while it ran: the broker's
		// answer says so (in batch mode, whose answer has no command, a
		// read after it: settledOf).
		retry, more = false, []any{"state", settled.State}
	}
	args = append(append(args, "reason", j.res.reason, "retry", retry), more...)
	j.log.Warn("command finished", args...)
}

// deliver completes j's command with its result, retrying what may succeed
// later, until the broker has it, says the lease is lost, or the agent
// stops. A lease that expired by the agent's clock is no reason to give
// up: the broker takes the result while nobody else holds the command (a
// broker that was down for a while, its sweeper not yet run).
func (a *runner) deliver(j *job) {
	j.deliveryBegins()
	unsure := false // an earlier try's answer was lost: it may have been recorded
	for attempt := 1; ; attempt++ {
		if j.isLost() {
			j.log.Warn("result not delivered: the lease was lost", "status", j.res.status)
			return
		}
		cctx, cancel := context.WithTimeout(a.final, a.opts.CallTimeout)
		settled, err := a.c.Complete(cctx, j.cmd.ID, j.res.result(j.token))
		cancel()
		code := spinbroker.ErrorCode(err)
		switch {
		case err == nil:
			j.finished(settled)
			return
		case code == spinbroker.ESTALE && unsure && j.res.retry:
			// A retry, once recorded, ends the lease: the try whose answer
			// was lost is the likely reason the lease is gone, not another
			// agent. (A success or a final failure sent again is simply
			// taken again.)
			j.log.Info("result most likely recorded by an earlier try whose answer was lost", "status", j.res.status, "retry", true)
			return
		case code == spinbroker.ESTALE:
			j.dropLost(err)
			return
		case a.final.Err() != nil:
			j.log.Error("result not delivered before the agent stopped; the broker will deliver the command again", "err", err)
			return
		case (code == spinbroker.EINVALID || code == spinbroker.ETOOLARGE) && len(j.res.output) > 0:
			// The output is what the broker refuses: report that instead
			// of leaving the command to expire and fail the same way again.
			j.refuseOutput(err)
			continue
		case !client.Temporary(err):
			j.log.Error("the broker refuses the result", "err", err)
			return
		}
		unsure = unsure || mayHaveArrived(err)
		if why, _ := a.given(j); why != "" {
			j.log.Warn("result not delivered: "+why, "err", err, "status", j.res.status)
			return
		}
		d := a.pause(attempt, err)
		j.log.Warn("cannot deliver the result; retrying", "err", err, "delivery_try", attempt, "retry_in", d.Round(time.Millisecond).String())
		a.waitToDeliver(d, err)
	}
}

// waitToDeliver waits d before a result is offered again after err, and
// reports whether the agent may still deliver. When err says the broker
// was away (no answer, or a 502, 503 or 504: a restart) the wait ends as
// soon as a heartbeat gets through, past the Retry-After the answer asked
// for: the back-off grows to MaxBackoff during a restart, and the result,
// with the queue's slot its command holds, would otherwise wait that long
// after the broker is back. A broker that answers and refuses (a 500)
// is given the whole back-off.
func (a *runner) waitToDeliver(d time.Duration, err error) bool {
	if !brokerAway(err) {
		return wait(a.final, d)
	}
	back := a.answers.next()
	t := time.NewTimer(d)
	defer t.Stop()
	if !wait(a.final, min(retryAfter(err), d)) {
		return false
	}
	select {
	case <-t.C:
	case <-back:
	case <-a.final.Done():
		return false
	}
	return true
}

// brokerAway reports whether err says that the broker did not answer (it
// is stopped, restarting or out of reach), as opposed to an answer that
// refuses: no HTTP answer at all, or a proxy's or a stopping broker's
// 502, 503 or 504.
func brokerAway(err error) bool {
	var ce *client.Error
	if errors.As(err, &ce) {
		switch ce.StatusCode {
		case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return true
		}
		return false
	}
	var se *spinbroker.Error
	if errors.As(err, &se) {
		return false // an item of a batched completion: the broker answered it
	}
	return client.Temporary(err)
}

// given says why the broker will not take j's result any more, once its
// lease has run out by the agent's clock and a try to deliver it failed:
// the command is no longer leased at this attempt (put back in its queue,
// given to another agent, settled), or its lease has run out by the
// broker's word and the broker will give it again. It is "" while the
// command may still be this attempt's, or when the broker cannot say (it
// is out of reach: the result is then offered until it is back, and err
// says why it could not be asked). Without it, a result refused on every
// try (a 500) would be retried for ever, and the agent take no other work.
func (a *runner) given(j *job) (why string, err error) {
	if time.Now().Before(j.expiry()) {
		return "", nil
	}
	ctx, cancel := context.WithTimeout(a.final, a.opts.CallTimeout)
	defer cancel()
	c, err := a.c.Command(ctx, j.cmd.ID)
	switch {
	case err != nil:
		return "", err
	case c.State != spinbroker.Leased || c.Attempts != j.cmd.Attempts:
		return fmt.Sprintf("the lease ran out and the broker has moved the command on (now %s, attempt %d)", c.State, c.Attempts), nil
	case c.LeaseExpiresAt != nil && c.LeaseExpiresAt.Before(j.brokerNow()):
		return "the lease ran out and the broker will give the command again", nil
	}
	return "", nil
}

// brokerNow is, at the latest, the broker's time now: when it leased j's
// command by its clock, plus the time since the command came by this
// agent's (monotonic) clock. lease_expires_at is a time on the broker's
// clock: compared with this agent's, ahead of the broker's, a lease the
// broker still held (heartbeats that got through, their answers lost)
// looked past, the result was dropped though the broker would have taken
// it, and the broker gave the command again: the work was done twice.
// (It is behind the broker's by the answer's time on the network, so a
// lease is judged run out late rather than early.)
func (j *job) brokerNow() time.Time {
	if j.leasedAt.IsZero() {
		return time.Now()
	}
	return j.leasedAt.Add(time.Since(j.begin))
}

// dropGiven drops from pending the results that the broker will not take
// any more (given), after a try to deliver them failed. A broker that does
// not answer is asked no further this round: asking about each other
// command would wait out CallTimeout each, a batch of 100 for 25 minutes
// with the default, before the results went again.
func (a *runner) dropGiven(pending map[string]*job) {
	for id, j := range pending {
		why, err := a.given(j)
		if err != nil {
			return
		}
		if why != "" {
			j.log.Warn("result not delivered: "+why, "status", j.res.status)
			delete(pending, id)
		}
	}
}

// mayHaveArrived reports whether a failed request may have been carried out
// by the broker all the same: its answer never came (a timeout, a dropped
// connection, a proxy's 502 or 504). An answer with another status (a
// 503) says it was not, and a refused connection means nothing was sent.
func mayHaveArrived(err error) bool {
	var ce *client.Error
	if errors.As(err, &ce) {
		// A proxy's bad gateway or timeout: the broker's answer never
		// came back through it.
		return ce.StatusCode == http.StatusBadGateway || ce.StatusCode == http.StatusGatewayTimeout
	}
	return !errors.Is(err, syscall.ECONNREFUSED)
}

// deliverBatch completes the jobs' commands in as few requests as the
// broker's 1 MiB limit on a body allows (results with large outputs add
// up), each delivered by deliverChunk.
func (a *runner) deliverBatch(jobs []*job) {
	var chunk []*job
	size := 0
	for _, j := range jobs {
		n := resultSize(j)
		if n > batchBudget {
			// Too large for any request: deliver finds that out and says
			// so in the command's place, as for a single command.
			a.deliver(j)
			j.stop()
			continue
		}
		if size+n > batchBudget {
			a.deliverChunk(chunk)
			chunk, size = nil, 0
		}
		chunk = append(chunk, j)
		size += n
	}
	if len(chunk) > 0 {
		a.deliverChunk(chunk)
	}
}

// batchBudget is the bytes of results one batched completion carries:
// under the broker's 1 MiB, with room for the JSON around them.
const batchBudget = spinbroker.MaxBodyBytes - 64<<10

// resultSize is the bytes a job's result takes in a batch, as encoded:
// escapes can make an output of HTML or logs several times its size.
func resultSize(j *job) int {
	b, err := json.Marshal(spinbroker.BatchResult{ID: j.cmd.ID, Result: j.res.result(j.token)})
	if err != nil {
		return batchBudget + 1 // deliver says what is wrong with it
	}
	return len(b) + 1 // and a comma
}

// settledOf reads j's command once a batch has recorded its result, for
// the one case its "command finished" line needs the broker's word: a
// retry asked for while attempts remain, which the broker does not make
// for a command whose package was cancelled, and a batch's answer has no
// command to say so. nil when not needed, when the read fails, or when the
// command has been leased again since (it was retried): the line then
// says what was asked.
func (a *runner) settledOf(j *job) *spinbroker.Command {
	if j.res.status || !j.res.retry || (j.cmd.MaxAttempts > 0 && j.cmd.Attempts >= j.cmd.MaxAttempts) {
		return nil
	}
	ctx, cancel := context.WithTimeout(a.final, a.opts.CallTimeout)
	defer cancel()
	c, err := a.c.Command(ctx, j.cmd.ID)
	if err != nil || c.Attempts != j.cmd.Attempts {
		return nil
	}
	return c
}

// deliverChunk completes the jobs' commands in one request per attempt,
// retrying the whole request and the items the broker could not take for
// now, as deliver does for one.
func (a *runner) deliverChunk(jobs []*job) {
	pending := make(map[string]*job, len(jobs))
	for _, j := range jobs {
		pending[j.cmd.ID] = j
		j.deliveryBegins()
	}
	unsure := false // an earlier try's answer was lost: it may have been recorded
	for attempt := 1; ; attempt++ {
		var items []spinbroker.BatchResult
		for id, j := range pending {
			if j.isLost() {
				j.log.Warn("result not delivered: the lease was lost", "status", j.res.status)
				delete(pending, id)
				continue
			}
			items = append(items, spinbroker.BatchResult{ID: id, Result: j.res.result(j.token)})
		}
		if len(items) == 0 {
			return
		}
		cctx, cancel := context.WithTimeout(a.final, a.opts.CallTimeout)
		outcomes, err := a.c.CompleteBatch(cctx, items)
		cancel()
		if err == nil {
			var itemErr error // the last item refused for now, to say why below
			for _, o := range outcomes {
				j := pending[o.ID]
				if j == nil {
					continue
				}
				switch {
				case o.HTTPStatus >= 200 && o.HTTPStatus < 300:
					j.stop() // no heartbeats for a command recorded, while later chunks go
					j.finished(a.settledOf(j))
					delete(pending, o.ID)
				case o.Error != nil && o.Error.Code == spinbroker.ESTALE && unsure && j.res.retry:
					// As deliver does: a retry, once recorded, ends the
					// lease, so the try whose answer was lost is the
					// likely reason the lease is gone.
					j.log.Info("result most likely recorded by an earlier try whose answer was lost", "status", j.res.status, "retry", true)
					j.stop()
					delete(pending, o.ID)
				case o.Error != nil && o.Error.Code == spinbroker.ESTALE:
					j.dropLost(o.Error)
					j.stop()
					delete(pending, o.ID)
				case o.Error != nil && (o.Error.Code == spinbroker.EINVALID || o.Error.Code == spinbroker.ETOOLARGE) && len(j.res.output) > 0:
					// As deliver does: the output is what is refused, so
					// say that in the result rather than lose it.
					j.refuseOutput(o.Error)
				case o.HTTPStatus >= 500 || o.HTTPStatus == 429:
					// Left pending: tried again below.
					itemErr = o.Error
				default:
					j.log.Error("the broker refuses the result", "http_status", o.HTTPStatus, "err", o.Error)
					delete(pending, o.ID)
				}
			}
			if len(pending) == 0 {
				return
			}
			if itemErr == nil {
				// Only results to send otherwise (an output refused) or
				// to drop (a lease lost): nothing to wait out.
				continue
			}
			err = itemErr
		} else if spinbroker.ErrorCode(err) == spinbroker.ETOOLARGE && a.final.Err() == nil {
			// The estimate fell short: one at a time, each with its own
			// fallback.
			for _, j := range pending {
				a.deliver(j)
				j.stop()
			}
			return
		} else if !client.Temporary(err) || a.final.Err() != nil {
			a.log.Error("results not delivered", "err", err, "commands", len(pending))
			return
		} else {
			unsure = unsure || mayHaveArrived(err)
		}
		// As deliver does, after a failed try and not before the next
		// one: a broker back from an outage longer than the lease takes
		// the results while nobody else holds the commands, and asked
		// first it would say that the leases ran out, and the results be
		// dropped and the work done again.
		a.dropGiven(pending)
		if len(pending) == 0 {
			return
		}
		d := a.pause(attempt, err)
		a.log.Warn("cannot deliver every result; retrying", "err", err, "pending", len(pending), "retry_in", d.Round(time.Millisecond).String())
		if !a.waitToDeliver(d, err) {
			a.log.Error("results not delivered before the agent stopped", "commands", len(pending))
			return
		}
	}
}
