package client

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
)

// waitResult is what a WaitPackage run in the background returned.
type waitResult struct {
	p   *spinbroker.Package
	err error
}

// startWait runs c.WaitPackage in the background; reads gets every package
// OnRead was given.
func startWait(ctx context.Context, c *Client, id string, opts ...WaitOption) (reads <-chan *spinbroker.Package, result <-chan waitResult) {
	rc := make(chan *spinbroker.Package, 1000)
	res := make(chan waitResult, 1)
	opts = append(opts, OnRead(func(p *spinbroker.Package) { rc <- p }))
	go func() {
		p, err := c.WaitPackage(ctx, id, opts...)
		res <- waitResult{p, err}
	}()
	return rc, res
}

// onePackage creates an enqueued package of one command and returns it.
func onePackage(t *testing.T, c *Client) *spinbroker.Package {
	t.Helper()
	p, err := c.CreatePackage(context.Background(), spinbroker.NewPackage{Commands: []spinbroker.NewCommand{{Resource: "r", Action: "a"}}, Enqueue: true})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// succeed completes command id by hand, as a success.
func succeed(t *testing.T, c *Client, id string) {
	t.Helper()
	yes := true
	if _, err := c.Complete(context.Background(), id, spinbroker.Result{Status: &yes}); err != nil {
		t.Fatal(err)
	}
}

// firstRead waits for WaitPackage's first read.
func firstRead(t *testing.T, ctx context.Context, reads <-chan *spinbroker.Package, result <-chan waitResult) *spinbroker.Package {
	t.Helper()
	select {
	case p := <-reads:
		return p
	case r := <-result:
		t.Fatalf("WaitPackage returned before its first read: %v, %v", r.p, r.err)
	case <-ctx.Done():
		t.Fatal("WaitPackage never read the package")
	}
	return nil
}

// finished waits for WaitPackage to return and checks that it returned
// the package in state want.
func finished(t *testing.T, ctx context.Context, result <-chan waitResult, want spinbroker.PackageState) {
	t.Helper()
	select {
	case r := <-result:
		if r.err != nil || r.p == nil || r.p.State != want {
			t.Fatalf("WaitPackage = %+v, %v; want the package %s", r.p, r.err, want)
		}
	case <-ctx.Done():
		t.Fatalf("WaitPackage did not return once the package was %s", want)
	}
}

func TestWaitPackage_Finishes(t *testing.T) {
	c, _, _ := newBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := onePackage(t, c)
	reads, result := startWait(ctx, c, p.ID)
	if got := firstRead(t, ctx, reads, result); got.State != spinbroker.PackageQueued {
		t.Fatalf("first read: %s, want queued", got.State)
	}
	succeed(t, c, p.Commands[0].ID)
	finished(t, ctx, result, spinbroker.PackageSucceeded)
	var last *spinbroker.Package
	for len(reads) > 0 {
		last = <-reads
	}
	if last == nil || last.State != spinbroker.PackageSucceeded {
		t.Errorf("OnRead was not given the finished package (last: %+v)", last)
	}
}

func TestWaitPackage_AlreadyFinished(t *testing.T) {
	c, _, _ := newBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := onePackage(t, c)
	if _, err := c.CancelPackage(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	reads, result := startWait(ctx, c, p.ID)
	finished(t, ctx, result, spinbroker.PackageCancelled)
	if n := len(reads); n != 1 {
		t.Errorf("%d reads of a package finished already, want 1", n)
	}
}

func TestWaitPackage_Deadline(t *testing.T) {
	c, _, _ := newBroker(t)
	p := onePackage(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	got, err := c.WaitPackage(ctx, p.ID)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitPackage past its deadline: error %v, want context.DeadlineExceeded", err)
	}
	if got == nil || got.ID != p.ID || got.State != spinbroker.PackageQueued {
		t.Fatalf("WaitPackage past its deadline returned %+v, want the package as last read (queued)", got)
	}
}

// TestWaitPackage_Refused: a package that does not exist, or that goes
// away while waited for, is an error at once, not a wait.
func TestWaitPackage_Refused(t *testing.T) {
	c, _, _ := newBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reads, result := startWait(ctx, c, "0190c3e4-7a6b-7c1d-9e2f-3a4b5c6d7e8f")
	select {
	case r := <-result:
		if r.p != nil || spinbroker.ErrorCode(r.err) != spinbroker.ENOTFOUND {
			t.Fatalf("WaitPackage of an unknown package = %+v, %v; want nil, not_found", r.p, r.err)
		}
	case <-ctx.Done():
		t.Fatal("WaitPackage of an unknown package did not return")
	}
	if len(reads) != 0 {
		t.Error("OnRead called for a package that does not exist")
	}

	staged, err := c.CreatePackage(ctx, spinbroker.NewPackage{})
	if err != nil {
		t.Fatal(err)
	}
	reads, result = startWait(ctx, c, staged.ID)
	firstRead(t, ctx, reads, result)
	if err := c.DeletePackage(ctx, staged.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-result:
		if spinbroker.ErrorCode(r.err) != spinbroker.ENOTFOUND {
			t.Fatalf("WaitPackage of a package deleted meanwhile = %+v, %v; want not_found", r.p, r.err)
		}
		// A bare "not found" read as a wrong id, when the id was right
		// and someone (or the staging TTL's sweep) deleted the package.
		if !strings.Contains(r.err.Error(), "deleted while") || !strings.Contains(r.err.Error(), staged.ID) {
			t.Errorf("WaitPackage of a package deleted meanwhile: %q, want it to say the package %s was deleted while waited for", r.err, staged.ID)
		}
		if r.p == nil || r.p.ID != staged.ID || r.p.State != spinbroker.PackageStaging {
			t.Errorf("WaitPackage of a package deleted meanwhile returned %+v, want the package as last read", r.p)
		}
	case <-ctx.Done():
		t.Fatal("WaitPackage of a deleted package did not return")
	}
}

// proxy stands between a client and the broker: it counts the event
// streams it lets through, cuts them, and refuses what it is told to.
type proxy struct {
	mu      sync.Mutex
	cuts    []context.CancelFunc // of the streams open now
	streams atomic.Int32         // event streams let through
	refused atomic.Int32         // event streams refused
	noEvent atomic.Bool          // refuse GET /events with 502
	down    atomic.Bool          // answer everything 503
}

func (x *proxy) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if x.down.Load() {
			http.Error(w, `{"error": {"code": "unavailable", "message": "the broker is stopping"}}`, http.StatusServiceUnavailable)
			return
		}
		if r.URL.Path != "/events" {
			h.ServeHTTP(w, r)
			return
		}
		if x.noEvent.Load() {
			x.refused.Add(1)
			http.Error(w, "bad gateway", http.StatusBadGateway)
			return
		}
		ctx, cut := context.WithCancel(r.Context())
		x.mu.Lock()
		x.cuts = append(x.cuts, cut)
		x.mu.Unlock()
		x.streams.Add(1)
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}

// cut ends every event stream open now.
func (x *proxy) cut() {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, cut := range x.cuts {
		cut()
	}
	x.cuts = nil
}

// proxied serves the broker behind x and returns a client through it; c
// (of newBroker) still reaches the broker directly.
func proxied(t *testing.T, x *proxy) (direct, through *Client) {
	t.Helper()
	direct, through, _ = fronted(t, x.wrap)
	return direct, through
}

// fronted serves the broker's handler wrapped by wrap (a proxy, a login
// page, a redirect) and returns a client through it, the server, and c (of
// newBroker), which still reaches the broker directly.
func fronted(t *testing.T, wrap func(http.Handler) http.Handler) (direct, through *Client, srv *httptest.Server) {
	t.Helper()
	direct, api, _ := newBroker(t)
	srv = httptest.NewServer(wrap(api.Handler()))
	t.Cleanup(srv.Close)
	through, err := New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return direct, through, srv
}

// eventually waits until cond holds, failing the test when ctx ends first.
func eventually(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("never: %s", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestWaitPackage_StreamCut: an event stream cut mid-wait (a proxy's idle
// timeout, a broker's restart), and refused for a while after, is opened
// again, and the wait still ends when the package does.
func TestWaitPackage_StreamCut(t *testing.T) {
	var x proxy
	direct, c := proxied(t, &x)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p := onePackage(t, direct)
	reads, result := startWait(ctx, c, p.ID)
	firstRead(t, ctx, reads, result)
	eventually(t, ctx, "the event stream opened", func() bool { return x.streams.Load() == 1 })

	x.noEvent.Store(true)
	x.cut()
	time.Sleep(1500 * time.Millisecond) // a try or two refused
	x.noEvent.Store(false)
	eventually(t, ctx, "the event stream opened again", func() bool { return x.streams.Load() >= 2 })

	succeed(t, direct, p.Commands[0].ID)
	finished(t, ctx, result, spinbroker.PackageSucceeded)
	if n, r := x.streams.Load(), x.refused.Load(); n > 4 || r > 4 {
		t.Errorf("%d event streams opened and %d refused for one cut of 1.5s, want 2 and 1 or 2 (a back-off between tries)", n, r)
	}
}

// TestWaitPackage_BrokerAway: a broker that answers 503 for a while after
// the package was read is waited out, and the caller told once that it
// went away and once that it came back.
func TestWaitPackage_BrokerAway(t *testing.T) {
	var x proxy
	direct, c := proxied(t, &x)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p := onePackage(t, direct)
	var mu sync.Mutex
	var news []string
	away := make(chan struct{})
	reads, result := startWait(ctx, c, p.ID, PollEvery(50*time.Millisecond),
		OnBrokerAway(func(err error) {
			mu.Lock()
			defer mu.Unlock()
			if !Temporary(err) || spinbroker.ErrorCode(err) != spinbroker.EUNAVAILABLE {
				t.Errorf("OnBrokerAway told of %v, want a Temporary unavailable", err)
			}
			news = append(news, "away")
			if len(news) == 1 {
				close(away)
			}
		}),
		OnBrokerBack(func() {
			mu.Lock()
			defer mu.Unlock()
			news = append(news, "back")
		}))
	firstRead(t, ctx, reads, result)

	x.down.Store(true)
	x.cut()
	select {
	case <-away:
	case r := <-result:
		t.Fatalf("WaitPackage gave up on a broker that answers 503: %+v, %v", r.p, r.err)
	case <-ctx.Done():
		t.Fatal("OnBrokerAway never called")
	}
	time.Sleep(500 * time.Millisecond) // many reads refused, none said again
	succeed(t, direct, p.Commands[0].ID)
	x.down.Store(false)
	finished(t, ctx, result, spinbroker.PackageSucceeded)
	mu.Lock()
	defer mu.Unlock()
	if len(news) != 2 || news[0] != "away" || news[1] != "back" {
		t.Errorf("the caller was told %v, want [away back]", news)
	}
}

// TestWaitPackage_NotAStream: an event stream answered by something else
// (a proxy's login page, 200 text/html), which Events refuses, leaves
// WaitPackage to its reads: it still ends when the package does, and asks
// for the stream again with its back-off, not in a tight loop.
func TestWaitPackage_NotAStream(t *testing.T) {
	var pages atomic.Int32
	direct, c, _ := fronted(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/events" {
				h.ServeHTTP(w, r)
				return
			}
			pages.Add(1)
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			io.WriteString(w, "<html><body>Sign in</body></html>\n")
		})
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := onePackage(t, direct)
	reads, result := startWait(ctx, c, p.ID, PollEvery(50*time.Millisecond))
	firstRead(t, ctx, reads, result)
	time.Sleep(1500 * time.Millisecond) // a try or two refused
	succeed(t, direct, p.Commands[0].ID)
	finished(t, ctx, result, spinbroker.PackageSucceeded)
	if n := pages.Load(); n < 1 || n > 3 {
		t.Errorf("%d event streams asked for in about 1.5s, want 2 or so (a back-off between tries)", n)
	}
}
