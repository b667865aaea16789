// Package brokertest serves a real broker in-process for tests: the store on
// a SQLite file, the HTTP API behind an httptest server, and a client of it,
// all stopped when the test ends.
//
// It is for _test.go files only (of agent, the commands, the agents' actions,
// loadgen…): no other package imports it, so the SDK and the binaries never
// link it. The client package's own tests cannot use it (they are inside
// client, which this imports), nor do internal/httpapi's, which keep their
// helpers next to the handlers they test.
package brokertest

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/spin-broker/spinbroker/client"
	"github.com/spin-broker/spinbroker/internal/httpapi"
	"github.com/spin-broker/spinbroker/internal/store"
	"github.com/spin-broker/spinbroker/internal/store/storetest"
)

// Broker is a broker served until the test ends.
type Broker struct {
	URL    string
	DB     *store.DB
	Client *client.Client
	// Clock is the clock the broker reads, with WithClock; nil otherwise.
	Clock *storetest.Clock
}

// Option changes how Start serves the broker.
type Option func(*config)

type config struct {
	clock  bool
	skew   time.Duration
	path   string
	api    httpapi.Options
	logger *slog.Logger
	wrap   func(http.Handler) http.Handler
}

// WithClock makes the broker read a clock that moves only when the test
// moves it (Broker.Clock), rather than the wall clock.
func WithClock() Option {
	return func(c *config) { c.clock = true }
}

// WithSkew makes the broker read the wall clock skew behind the test's
// (and its agents'): a host whose clock is off, or an agent's that is.
func WithSkew(skew time.Duration) Option {
	return func(c *config) { c.skew = skew }
}

// WithFile serves the database at path, which may already exist (made by
// a command under test, say), rather than a new one in a temporary folder.
func WithFile(path string) Option {
	return func(c *config) { c.path = path }
}

// WithAPI serves the API with opts (Auth, TokenCacheTTL…). Their Now is
// replaced by the store's clock, which the API must share.
func WithAPI(opts httpapi.Options) Option {
	return func(c *config) { c.api = opts }
}

// WithLogger gives the API logger rather than one that discards.
func WithLogger(logger *slog.Logger) Option {
	return func(c *config) { c.logger = logger }
}

// Wrap serves wrap(h) rather than the API's handler h: a faulty network, a
// route taken away, answers rewritten.
func Wrap(wrap func(http.Handler) http.Handler) Option {
	return func(c *config) { c.wrap = wrap }
}

// Start serves a broker until tb ends: a new database in tb's temporary
// folder unless WithFile, read on the wall clock unless WithClock.
func Start(tb testing.TB, opts ...Option) *Broker {
	tb.Helper()
	var c config
	for _, o := range opts {
		o(&c)
	}
	now := time.Now
	if c.skew != 0 {
		now = func() time.Time { return time.Now().Add(-c.skew) }
	}
	sopts := store.Options{Now: now}
	if c.clock {
		sopts.Now = nil // storetest's own clock
	}
	var db *store.DB
	var clock *storetest.Clock
	if c.path != "" {
		db, clock = storetest.MustOpenFile(tb, c.path, sopts)
	} else {
		db, clock = storetest.MustOpen(tb, sopts)
	}
	c.api.Now = now
	if clock != nil {
		c.api.Now = clock.Now
	}
	if c.logger == nil {
		c.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	api := httpapi.New(db, c.logger, c.api)
	h := api.Handler()
	if c.wrap != nil {
		h = c.wrap(h)
	}
	srv := httptest.NewServer(h)
	// Registered after the store's Close, so run before it: long-polls are
	// answered and requests finish while the database is still open.
	tb.Cleanup(func() {
		api.Shutdown()
		srv.Close()
	})
	cl, err := client.New(srv.URL)
	if err != nil {
		tb.Fatal(err)
	}
	return &Broker{URL: srv.URL, DB: db, Client: cl, Clock: clock}
}
