// Package httpapi serves spin-broker's HTTP API version 1 (API.md): chi
// routes, JSON in and out, the error table, auth, long-poll waits,
// Server-Sent Events, metrics and the dashboard.
//
// Handlers decode and validate, make one store call, and encode the answer;
// the business rules live in the store, behind the Store interface declared
// here, so another backend can serve the same handlers.
package httpapi

import (
	"cmp"
	"context"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"

	spinbroker "github.com/spin-broker/spinbroker"
)

// Store is what the HTTP layer needs from a database: one method per use
// case, each one transaction.
type Store interface {
	CreatePackage(ctx context.Context, in spinbroker.NewPackage, idem *spinbroker.Idempotency) (*spinbroker.Package, []byte, error)
	AddCommand(ctx context.Context, pkgID string, in spinbroker.NewCommand, idem *spinbroker.Idempotency) (*spinbroker.Command, []byte, error)
	Enqueue(ctx context.Context, pkgID string) (*spinbroker.Package, error)
	CancelPackage(ctx context.Context, pkgID string) (*spinbroker.Package, error)
	// CancelPackageOnly is CancelPackage without the package read back, for
	// a caller that shows none of it (the dashboard's button).
	CancelPackageOnly(ctx context.Context, pkgID string) error
	DeletePackage(ctx context.Context, pkgID string) error
	Package(ctx context.Context, pkgID string) (*spinbroker.Package, error)
	// PackageEach reads what Package does, all of one moment, handing the
	// package (without commands) to head and then each command in order
	// to each as it reads them, so that a large package is never held
	// whole.
	PackageEach(ctx context.Context, pkgID string, head func(*spinbroker.Package) error, each func(*spinbroker.Command) error) error
	PackageInfo(ctx context.Context, pkgID string) (*spinbroker.Package, error)
	Packages(ctx context.Context, f spinbroker.PackageFilter) (*spinbroker.PackageList, error)

	// Command reads a command whole. A command always has parameters ({}
	// when it was given none); nil ones are lost, kept aside and gone
	// (`spinbroker check` lists them).
	Command(ctx context.Context, id string) (*spinbroker.Command, error)
	CommandResources(ctx context.Context, ids []string) (map[string]string, error)
	Complete(ctx context.Context, id string, res spinbroker.Result) (*spinbroker.Command, error)
	CompleteBatch(ctx context.Context, items []spinbroker.BatchResult) ([]error, error)
	Heartbeat(ctx context.Context, id, token string, extend time.Duration) (time.Time, error)
	Retry(ctx context.Context, id string) (*spinbroker.Command, error)
	RetryRefusal(ctx context.Context, id string) error // why Retry would refuse, or nil

	Queues(ctx context.Context) ([]spinbroker.Queue, error)
	QueuesNamed(ctx context.Context, resources []string) ([]spinbroker.Queue, error) // those of resources that have a queue
	// QueueEach reads a queue and its first 50 enqueued, unfinished
	// commands in queue order, all of one moment, handing the queue
	// (without commands) to head and then each command to each as it
	// reads them, so that their parameters are never held all at once.
	QueueEach(ctx context.Context, resource string, head func(*spinbroker.Queue) error, each func(*spinbroker.Command) error) error
	SetQueue(ctx context.Context, resource string, s spinbroker.QueueSettings) (*spinbroker.Queue, error)
	Next(ctx context.Context, resource string, lease time.Duration) (*spinbroker.Command, time.Time, error)
	Claim(ctx context.Context, resource string, max int, lease time.Duration) ([]spinbroker.Command, time.Time, error)
	Release(ctx context.Context, cmds []spinbroker.Command) error // leases of an answer never delivered
	// Peek tells, reading only, whether a claim might lease something now,
	// or when it might without another write.
	Peek(ctx context.Context, resource string) (bool, time.Time, error)

	Ping(ctx context.Context) error
	WriteFailure(ctx context.Context) error
	Listen(f func(*spinbroker.Commit))
	Authenticate(ctx context.Context, secret string) (*spinbroker.Token, error)

	// The dashboard's reads, each through an index, bounded. The commands
	// they read come without their parameters and outputs, which only a
	// command's own page shows (read with Command).
	Completions(ctx context.Context, since time.Time, minutes int) ([]spinbroker.Counts, error)
	QueueCommands(ctx context.Context, resource string, afterSeq int64, limit int) ([]spinbroker.Command, error)
	// QueuePage reads a queue as Queue does, with up to limit (none with
	// 0) of its commands whose seq is greater than afterSeq.
	QueuePage(ctx context.Context, resource string, afterSeq int64, limit int) (*spinbroker.Queue, error)
	// PackagePage reads a package with up to limit of its commands from
	// the from-th (the first is 0).
	PackagePage(ctx context.Context, pkgID string, from, limit int) (*spinbroker.Package, error)
	QueueHead(ctx context.Context, resource string) (*spinbroker.Command, time.Time, error)
	CommandsByID(ctx context.Context, ids []string) (map[string]spinbroker.Command, error)
	Dependents(ctx context.Context, id string, limit int) ([]spinbroker.Command, error)
	Search(ctx context.Context, prefix string, limit int) ([]spinbroker.Package, []spinbroker.Command, error)
	SearchQueues(ctx context.Context, prefix string, limit int) ([]spinbroker.Queue, error)
	// BusiestQueues lists the limit queues with the most commands (a
	// paused one first among equals) by name, and counts every queue.
	BusiestQueues(ctx context.Context, limit int) ([]spinbroker.Queue, int, error)
}

// Options configure a Server. The zero value serves without auth.
type Options struct {
	// Auth requires a bearer token on every request but /healthz.
	Auth bool
	// MetricsOpen serves /metrics without a token even when Auth is on.
	MetricsOpen bool
	// Now is the clock the store uses; long-poll wake-ups (lease expiry,
	// back-off) are computed against it. time.Now when nil.
	Now func() time.Time
	// Registry receives the metrics of the broker as a whole (the
	// per-queue ones are gathered apart, so that an agent's scrape reads
	// only its queue's), and /metrics serves whatever else it holds; a new
	// registry when nil.
	Registry *prometheus.Registry
	// TokenCacheTTL is how long a checked token is trusted before the
	// database is asked again (default 5s); revocation takes effect within
	// it.
	TokenCacheTTL time.Duration
	// MaxWrites is how many state-changing requests are served at once
	// (default 256; next and claim are not counted, they wait on queues).
	// The others wait up to MaxWriteWait (default 10s) for a turn, then
	// are answered 503 unavailable, which clients retry.
	MaxWrites    int
	MaxWriteWait time.Duration
	// MaxBodyMemory is how many bytes the bodies of state-changing
	// requests may hold at once (default MaxWrites MiB, at least 1 MiB). A
	// body is read before its request takes a turn, so a slow upload never
	// holds one; a body that finds them holding this much is answered 503
	// at once: a flood of large creates waits in bounded memory, not in the
	// whole heap. Heartbeats and completions draw on a budget of their own,
	// a quarter of this (at least one body), so that clients' uploads never
	// keep agents from reporting.
	MaxBodyMemory int64
	// LocalHostOnly answers only requests whose Host names this machine
	// (localhost, a loopback address), for a broker without auth on a
	// loopback address: a web page whose own name an attacker re-points
	// at 127.0.0.1 (DNS rebinding) would otherwise be a same-origin admin.
	LocalHostOnly bool
	// MaxWaitsPerToken is how many requests one token may hold open
	// waiting at once: long-polls (next, claim) that block, and event
	// streams, the dashboard's included. Past it a request that would wait
	// is answered 503 unavailable at once; one that would not (wait=0) is
	// served as ever. 0, the zero value, caps nothing. Without Auth there
	// is no token, and nothing is capped.
	MaxWaitsPerToken int
}

// Server is the HTTP API over a Store.
type Server struct {
	store    Store
	log      *slog.Logger
	opts     Options
	now      func() time.Time
	notifier *notifier
	polls    *polls
	writes   chan struct{} // a token per state-changing request being served
	bodies   *budget       // memory for the bodies of those and of those waiting
	settles  *budget       // the same for heartbeats and completions
	waits    *waits        // requests held open waiting, per token
	hub      *hub
	metrics  *metrics
	tokens   *tokenCache
	router   chi.Router
	ui       *ui      // the dashboard, which answers the errors of its own paths
	causes   causeLog // the lines that give a 503's cause

	quit     chan struct{} // closed by Shutdown: long-polls answer 503, streams end
	quitOnce sync.Once
	cut      atomic.Bool // set by CutOff: requests still running are being cut off
}

// New returns a Server that serves st. It registers itself as a listener
// of st's commits, to wake long-polls, feed /events and count metrics.
func New(st Store, logger *slog.Logger, opts Options) *Server {
	if logger == nil {
		logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	if opts.TokenCacheTTL <= 0 {
		opts.TokenCacheTTL = 5 * time.Second
	}
	if opts.MaxWrites <= 0 {
		opts.MaxWrites = 256
	}
	if opts.MaxWriteWait <= 0 {
		opts.MaxWriteWait = 10 * time.Second
	}
	if opts.MaxBodyMemory <= 0 {
		opts.MaxBodyMemory = int64(opts.MaxWrites) * (spinbroker.MaxBodyBytes + 1)
	}
	opts.MaxBodyMemory = max(opts.MaxBodyMemory, spinbroker.MaxBodyBytes+1) // one whole body fits
	s := &Server{
		store:    st,
		log:      logger,
		opts:     opts,
		now:      opts.Now,
		notifier: newNotifier(),
		polls:    newPolls(opts.Now()),
		writes:   make(chan struct{}, opts.MaxWrites),
		bodies:   newBudget(opts.MaxBodyMemory),
		settles:  newBudget(max(opts.MaxBodyMemory/4, spinbroker.MaxBodyBytes+1)),
		waits:    newWaits(max(opts.MaxWaitsPerToken, 0)),
		quit:     make(chan struct{}),
	}
	s.tokens = newTokenCache(st, opts.TokenCacheTTL, opts.Now)
	s.hub = newHub(st, logger, s.quit)
	s.metrics = newMetrics(opts.Registry, st, s.agentsOf, func() int { return len(s.writes) },
		func() int64 { return s.bodies.held.Load() + s.settles.held.Load() }, s.waits.all.Load)
	st.Listen(s.committed)
	s.router = s.routes()
	return s
}

// agents says whether agents are asking a queue for work: how many
// long-polls wait on it now, and who asked last and when, if one did since
// the broker started.
type agents struct {
	Waiting int
	Last    *ask
}

func (s *Server) agentsOf(resource string) agents {
	a := agents{Waiting: s.notifier.waiting(resource)}
	if q, ok := s.polls.lastAsked(resource); ok {
		a.Last = &q
	}
	return a
}

// Handler returns the root handler.
func (s *Server) Handler() http.Handler { return s.router }

// Shutdown answers waiting long-polls with 503 and ends event streams at
// once, so that http.Server.Shutdown does not wait for them. Requests that
// arrive afterwards are still served until the listener closes.
func (s *Server) Shutdown() {
	s.quitOnce.Do(func() { close(s.quit) })
}

// CutOff tells the server that the requests still running are being cut
// off (their connections closed, as http.Server.Close does when a graceful
// stop runs out of time). Each is then logged and counted as a 503
// unavailable with cut_off=true, whatever its handler made of the closed
// connection: an upload whose body stopped arriving would otherwise be
// logged as the client's 400, though its client was never answered. It
// implies Shutdown.
func (s *Server) CutOff() {
	s.Shutdown()
	s.cut.Store(true)
}

// stopping reports whether Shutdown has been called: its 503s are a
// planned stop, logged at info.
func (s *Server) stopping() bool {
	select {
	case <-s.quit:
		return true
	default:
		return false
	}
}

// committed hears every commit of the store: it wakes the queues that
// changed, feeds the event stream and moves the counters. It runs on the
// store's writer goroutine and must not block.
func (s *Server) committed(c *spinbroker.Commit) {
	for r, n := range wakes(c) {
		s.notifier.notify(r, n)
	}
	s.metrics.count(c)
	if len(c.Forgotten) > 0 {
		s.polls.forget(c.Forgotten, s.now().Add(-spinbroker.MaxWait))
	}
	s.hub.publish(c)
	s.logExpired(c.Expired)
	s.logFailed(c)
}

// manyLines is how many leases run out, or commands failed, in one commit
// are logged at warn a line each; more are one line that counts them.
const manyLines = 10

// logExpired logs the leases that ran out in a commit, from what the
// commit already holds (no query), whether the sweeper or a queue's own
// next or claim settled them. A lease that ran out is an agent that died,
// hung or lost the broker: rare, and what on-call looks for, so each has
// its line at warn; but when a fleet of agents is lost at once (a node
// pool gone), thousands run out together, and a line each, written on the
// store's writer goroutine, held every write meanwhile (10,000 lines,
// 0.25 s) for a log nobody reads line by line. A commit with more than
// manyLines of them logs one warn line instead, "leases expired", with
// how many went back to ready and how many failed, how many queues, and
// the queues with the most (up to 10); each lease's own line is at debug.
func (s *Server) logExpired(es []spinbroker.Change) {
	many := len(es) > manyLines
	if many {
		failed := 0
		for _, ch := range es {
			if ch.To == spinbroker.Failed {
				failed++
			}
		}
		n, resources := byQueue(es)
		s.log.Warn("leases expired", "leases", len(es), "ready", len(es)-failed, "failed", failed,
			"queues", n, "resources", resources)
		if !s.log.Enabled(context.Background(), slog.LevelDebug) {
			return
		}
	}
	for _, ch := range es {
		attrs := []any{"command_id", ch.CommandID, "package_id", ch.PackageID, "resource", ch.Resource,
			"attempts", ch.Attempts, "state", string(ch.To)}
		if many {
			s.log.Debug("lease expired", attrs...)
		} else {
			s.log.Warn("lease expired", attrs...)
		}
	}
}

// logFailed logs the commands of a commit that failed for good (their
// agents' results, or a person's): what on-call looks for too, and only
// the agents said so. One whose lease ran out has logExpired's line, and
// the commands a failure cancels downstream are its consequence, not lines
// of their own. As with leases, more than manyLines in one commit (a batch
// of results from agents whose dependency is down) are one warn line,
// "commands failed", with how many, how many queues and the queues with
// the most; each command's own line is at debug.
func (s *Server) logFailed(c *spinbroker.Commit) {
	// (A set, not a scan of c.Expired per failure: 1,000 leases run out
	// to failed in one sweep batch were a million comparisons.)
	var expired map[spinbroker.Change]bool
	for _, ch := range c.Expired {
		if ch.To == spinbroker.Failed {
			if expired == nil {
				expired = make(map[spinbroker.Change]bool, len(c.Expired))
			}
			expired[ch] = true
		}
	}
	var failed []spinbroker.Change
	for _, ch := range c.Commands {
		if ch.To == spinbroker.Failed && ch.From != spinbroker.Failed && !expired[ch] {
			failed = append(failed, ch)
		}
	}
	many := len(failed) > manyLines
	if many {
		n, resources := byQueue(failed)
		s.log.Warn("commands failed", "commands", len(failed), "queues", n, "resources", resources)
		if !s.log.Enabled(context.Background(), slog.LevelDebug) {
			return
		}
	}
	for _, ch := range failed {
		attrs := []any{"command_id", ch.CommandID, "package_id", ch.PackageID, "resource", ch.Resource, "attempts", ch.Attempts}
		if many {
			s.log.Debug("command failed", attrs...)
		} else {
			s.log.Warn("command failed", attrs...)
		}
	}
}

// byQueue counts the queues of chs, and names up to 10 of them, those
// with the most changes first, joined with commas.
func byQueue(chs []spinbroker.Change) (int, string) {
	counts := map[string]int{}
	for _, ch := range chs {
		counts[ch.Resource]++
	}
	queues := make([]string, 0, len(counts))
	for r := range counts {
		queues = append(queues, r)
	}
	slices.SortFunc(queues, func(a, b string) int {
		if c := cmp.Compare(counts[b], counts[a]); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	return len(queues), strings.Join(queues[:min(len(queues), 10)], ",")
}
