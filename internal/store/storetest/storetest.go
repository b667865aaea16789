// Package storetest opens real spin-broker databases for tests: a SQLite file
// in the test's temporary directory, migrations applied, closed at cleanup.
package storetest

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spin-broker/spinbroker/internal/store"
)

// MustOpen opens a new database in tb's temporary directory and closes it
// when the test ends. A nil Now in opts gets a Clock of its own, returned,
// which is also its Mono.
func MustOpen(tb testing.TB, opts store.Options) (*store.DB, *Clock) {
	tb.Helper()
	return MustOpenFile(tb, filepath.Join(tb.TempDir(), "spinbroker.db"), opts)
}

// MustOpenFile is MustOpen on the database at path, which may already
// exist: one that a command under test made, say.
func MustOpenFile(tb testing.TB, path string, opts store.Options) (*store.DB, *Clock) {
	tb.Helper()
	var clock *Clock
	if opts.Now == nil {
		clock = NewClock()
		opts.Now = clock.Now
		opts.Mono = clock.Mono
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	db, err := store.Open(context.Background(), path, opts)
	if err != nil {
		tb.Fatalf("open store: %v", err)
	}
	tb.Cleanup(func() {
		if err := db.Close(); err != nil {
			tb.Errorf("close store: %v", err)
		}
	})
	return db, clock
}

// Clock is a clock that moves only when told to: a wall clock and a
// monotonic one, which Add moves together and Step does not.
type Clock struct {
	mu   sync.Mutex
	t    time.Time
	mono time.Duration
}

// NewClock returns a clock set to a fixed instant.
func NewClock() *Clock {
	return &Clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Mono returns the time the clock has run for: its monotonic reading,
// which Step does not move.
func (c *Clock) Mono() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mono
}

// Add moves the clock forward by d: time passes.
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	c.mono += d
}

// Step moves the wall clock alone by d (back when d is negative), as NTP
// or an operator setting a server's clock does: no time passes.
func (c *Clock) Step(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
