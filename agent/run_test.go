package agent_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"io"
	"log"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/agent"
	"github.com/spin-broker/spinbroker/client"
	"github.com/spin-broker/spinbroker/internal/brokertest"
	"github.com/spin-broker/spinbroker/internal/httpapi"
	"github.com/spin-broker/spinbroker/internal/store"
	"github.com/spin-broker/spinbroker/internal/syncbuf"
	"github.com/spin-broker/spinbroker/internal/tlsalert"
)

// broker is a real in-process broker: the store on a temporary file and
// the HTTP API, optionally behind a faulty network (wrap).
type broker struct {
	c     *client.Client
	url   string
	db    *store.DB
	admin string // the secret of c's admin token, with auth on (startAuthBroker)
}

func startBroker(t *testing.T, opts httpapi.Options, wrap func(http.Handler) http.Handler) *broker {
	t.Helper()
	sb := brokertest.Start(t, brokertest.WithAPI(opts), brokertest.WithLogger(quietLogger()), brokertest.Wrap(wrap))
	return &broker{c: sb.Client, url: sb.URL, db: sb.DB}
}

// counting counts in n the requests whose path ends in suffix
// ("/heartbeat", "/claim"), for startBroker's wrap.
func counting(suffix string, n *atomic.Int32) func(http.Handler) http.Handler {
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, suffix) {
				n.Add(1)
			}
			h.ServeHTTP(w, r)
		})
	}
}

// startAuthBroker is startBroker with opts.Auth on: the broker's own client
// holds an admin token (b.admin), and the one returned an agent token of resource
// "test" named name, with its id.
func startAuthBroker(t *testing.T, opts httpapi.Options, name string) (b *broker, agentClient *client.Client, tokenID string) {
	t.Helper()
	opts.Auth = true
	b = startBroker(t, opts, nil)
	ctx := context.Background()
	tok, secret, err := b.db.CreateToken(ctx, spinbroker.RoleAgent, "test", name)
	if err != nil {
		t.Fatal(err)
	}
	_, admin, err := b.db.CreateToken(ctx, spinbroker.RoleAdmin, "", "admin")
	if err != nil {
		t.Fatal(err)
	}
	if b.c, err = client.New(b.url, client.WithToken(admin)); err != nil {
		t.Fatal(err)
	}
	b.admin = admin
	if agentClient, err = client.New(b.url, client.WithToken(secret)); err != nil {
		t.Fatal(err)
	}
	return b, agentClient, tok.ID
}

func quietLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// enqueue enqueues one package of commands of resource "test" and returns
// their ids.
func (b *broker) enqueue(t *testing.T, cmds ...spinbroker.NewCommand) []string {
	t.Helper()
	for i := range cmds {
		if cmds[i].Resource == "" {
			cmds[i].Resource = "test"
		}
	}
	p, err := b.c.CreatePackage(context.Background(), spinbroker.NewPackage{Commands: cmds, Enqueue: true})
	if err != nil {
		t.Fatalf("create package: %v", err)
	}
	ids := make([]string, len(p.Commands))
	for i, c := range p.Commands {
		ids[i] = c.ID
	}
	return ids
}

func cmd(action, params string) spinbroker.NewCommand {
	return spinbroker.NewCommand{Action: action, Parameters: json.RawMessage(params)}
}

// await waits until the command is in a terminal state (or in want, when
// given) and returns it.
func (b *broker) await(t *testing.T, id string, want ...spinbroker.CommandState) *spinbroker.Command {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := b.c.Command(context.Background(), id)
		if err != nil {
			t.Fatalf("read command: %v", err)
		}
		done := c.State.Terminal()
		if len(want) > 0 {
			done = c.State == want[0]
		}
		if done {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("command %s is still %s (attempts %d)", id, c.State, c.Attempts)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// highWater counts the handlers running at once, and keeps the most seen.
type highWater struct{ now, most atomic.Int32 }

// enter notes a handler starting; the func it returns notes it ending.
func (h *highWater) enter() (leave func()) {
	n := h.now.Add(1)
	for m := h.most.Load(); n > m && !h.most.CompareAndSwap(m, n); m = h.most.Load() {
	}
	return func() { h.now.Add(-1) }
}

// cancelPackageOf cancels the package of the command id.
func (b *broker) cancelPackageOf(t *testing.T, id string) {
	t.Helper()
	c, err := b.c.Command(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.c.CancelPackage(context.Background(), c.PackageID); err != nil {
		t.Fatal(err)
	}
}

// runAgent runs an agent until the test ends and returns a stop function
// that cancels it and returns Run's error.
func runAgent(t *testing.T, b *broker, handlers []agent.Handler, opts agent.Options) func() error {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	if opts.Wait == 0 {
		opts.Wait = 2 * time.Second
	}
	if opts.MinBackoff == 0 {
		opts.MinBackoff, opts.MaxBackoff = 10*time.Millisecond, 100*time.Millisecond
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- agent.Run(ctx, b.c, "test", handlers, opts) }()
	var once sync.Once
	var err error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-errc:
			case <-time.After(30 * time.Second):
				err = errors.New("Run did not return")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

type greet struct {
	Name string `json:"name" spin:"required"`
}

func greeter(ran *atomic.Int32) agent.Handler {
	return agent.Handle("greet", func(ctx context.Context, p greet) (any, error) {
		if ran != nil {
			ran.Add(1)
		}
		return map[string]string{"greeting": "hello, " + p.Name}, nil
	})
}

func TestRun_Succeeds(t *testing.T) {
	b := startBroker(t, httpapi.Options{}, nil)
	runAgent(t, b, []agent.Handler{greeter(nil)}, agent.Options{})
	ids := b.enqueue(t, cmd("greet", `{"name":"world"}`))
	c := b.await(t, ids[0])
	if c.State != spinbroker.Succeeded || string(c.Output) != `{"greeting":"hello, world"}` {
		t.Errorf("command %s, output %s", c.State, c.Output)
	}
}

func TestRun_BadParameters(t *testing.T) {
	b := startBroker(t, httpapi.Options{}, nil)
	var ran atomic.Int32
	runAgent(t, b, []agent.Handler{greeter(&ran)}, agent.Options{})
	cases := []struct{ params, reason string }{
		{`{}`, `invalid parameter "name": required parameter is missing`},
		{`{"name":"x","colour":"red"}`, `invalid parameter "colour": unknown parameter`},
		{`{"name":3}`, `invalid parameter "name": want a string, got a JSON number`},
	}
	for _, tc := range cases {
		ids := b.enqueue(t, cmd("greet", tc.params))
		c := b.await(t, ids[0])
		if c.State != spinbroker.Failed || c.Reason == nil || *c.Reason != tc.reason || c.Attempts != 1 {
			t.Errorf("parameters %s: command %s after %d attempts, reason %v; want failed once with %q", tc.params, c.State, c.Attempts, deref(c.Reason), tc.reason)
		}
	}
	ids := b.enqueue(t, cmd("frobnicate", `{}`))
	if c := b.await(t, ids[0]); c.State != spinbroker.Failed || !strings.Contains(deref(c.Reason), `no action "frobnicate"`) {
		t.Errorf("unknown action: %s, %q", c.State, deref(c.Reason))
	}
	// The reason names the actions the agent has, so that a client that
	// misspelt one ("greeet") or an agent not rolled out yet is told apart.
	ids = b.enqueue(t, cmd("greeet", `{}`))
	if c := b.await(t, ids[0]); deref(c.Reason) != `agent for test has no action "greeet" (it has: greet)` {
		t.Errorf("unknown action: reason %q, want it to name the agent's actions", deref(c.Reason))
	}
	if n := ran.Load(); n != 0 {
		t.Errorf("the handler ran %d times on bad parameters", n)
	}
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

func TestRun_ErrorsAndPanics(t *testing.T) {
	b := startBroker(t, httpapi.Options{}, nil)
	var flaky atomic.Int32
	handlers := []agent.Handler{
		greeter(nil),
		agent.Handle("fail", func(ctx context.Context, p struct{}) (any, error) {
			return nil, errors.New("disk full")
		}),
		agent.Handle("flaky", func(ctx context.Context, p struct{}) (any, error) {
			if flaky.Add(1) == 1 {
				return nil, agent.Transient(errors.New("device busy"))
			}
			return nil, nil
		}),
		agent.Handle("panic", func(ctx context.Context, p struct{}) (any, error) {
			panic("out of cheese")
		}),
		agent.Handle("bad_output", func(ctx context.Context, p struct{}) (any, error) {
			return []int{1}, nil
		}),
		agent.Handle("mute", func(ctx context.Context, p struct{}) (any, error) {
			return nil, errors.New(" ")
		}),
		agent.Handle("stderr", func(ctx context.Context, p struct{}) (any, error) {
			return nil, errors.New("ä" + strings.Repeat("x", 2<<20)) // a program's whole stderr
		}),
	}
	runAgent(t, b, handlers, agent.Options{})
	ids := b.enqueue(t, cmd("fail", `{}`), cmd("panic", `{}`), cmd("bad_output", `{}`), cmd("flaky", `{}`), cmd("greet", `{"name":"after"}`),
		cmd("mute", `{}`), cmd("stderr", `{}`))
	want := []struct {
		state    spinbroker.CommandState
		reason   string
		attempts int
	}{
		{spinbroker.Failed, "disk full", 1},
		{spinbroker.Failed, "agent error: the handler panicked: out of cheese", 1},
		{spinbroker.Failed, "the handler's output is not a JSON object: a []int encodes to a JSON array", 1},
		{spinbroker.Succeeded, "", 2},
		{spinbroker.Succeeded, "", 1},
		{spinbroker.Failed, "the handler returned an error with no text (*errors.errorString)", 1},
		{spinbroker.Failed, "", 1}, // below: recorded, cut, on its first attempt
	}
	for i, id := range ids {
		c := b.await(t, id)
		if c.State != want[i].state || c.Attempts != want[i].attempts || want[i].reason != "" && deref(c.Reason) != want[i].reason {
			t.Errorf("command %d: %s after %d attempts, reason %.80q; want %s after %d, %q", i, c.State, c.Attempts, deref(c.Reason), want[i].state, want[i].attempts, want[i].reason)
		}
	}
	// A reason of megabytes is cut to what the broker takes, not refused.
	if c, _ := b.c.Command(context.Background(), ids[6]); len(deref(c.Reason)) > 16<<10 || !strings.HasPrefix(deref(c.Reason), "äxxx") || !strings.Contains(deref(c.Reason), "more bytes cut)") {
		t.Errorf("a 2 MiB reason recorded as %d bytes: %.60q…", len(deref(c.Reason)), deref(c.Reason))
	}
}

// A handler that runs longer than its lease keeps it with heartbeats.
func TestRun_Heartbeats(t *testing.T) {
	var beats atomic.Int32
	b := startBroker(t, httpapi.Options{}, counting("/heartbeat", &beats))
	slow := agent.Handle("slow", func(ctx context.Context, p struct{}) (any, error) {
		select {
		case <-time.After(2500 * time.Millisecond):
			return map[string]bool{"done": true}, nil
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	})
	runAgent(t, b, []agent.Handler{slow}, agent.Options{Lease: time.Second})
	ids := b.enqueue(t, cmd("slow", `{}`))
	c := b.await(t, ids[0])
	if c.State != spinbroker.Succeeded || c.Attempts != 1 {
		t.Errorf("command %s after %d attempts (%q)", c.State, c.Attempts, deref(c.Reason))
	}
	if n := beats.Load(); n < 5 {
		t.Errorf("%d heartbeats in 2.5s with a 1s lease, want at least 5", n)
	}
}

// When the lease is lost (here a person settles the command by hand), the
// handler's context is cancelled: the work is someone else's now.
func TestRun_LeaseLostCancelsHandler(t *testing.T) {
	b := startBroker(t, httpapi.Options{}, nil)
	started := make(chan struct{})
	cause := make(chan error, 1)
	block := agent.Handle("block", func(ctx context.Context, p struct{}) (any, error) {
		close(started)
		<-ctx.Done()
		cause <- context.Cause(ctx)
		return nil, ctx.Err()
	})
	runAgent(t, b, []agent.Handler{block, greeter(nil)}, agent.Options{Lease: 1500 * time.Millisecond})
	ids := b.enqueue(t, cmd("block", `{}`), cmd("greet", `{"name":"next"}`))
	<-started
	ok := false
	if _, err := b.c.Complete(context.Background(), ids[0], spinbroker.Result{Status: &ok, Reason: new("settled by hand")}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-cause:
		if err == nil || !strings.Contains(err.Error(), "lease") {
			t.Errorf("cause = %v, want the lost lease", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the handler's context was not cancelled after the lease was lost")
	}
	if c := b.await(t, ids[0]); deref(c.Reason) != "settled by hand" {
		t.Errorf("the hand-made result was overwritten: %q", deref(c.Reason))
	}
	if c := b.await(t, ids[1]); c.State != spinbroker.Succeeded {
		t.Errorf("the next command: %s", c.State)
	}
}

// faults makes the network between agent and broker fail: the first n
// requests whose path matches answer 503, or (lose) reach the broker but
// lose its answer.
type faults struct {
	match func(r *http.Request) bool
	n     atomic.Int32
	lose  bool
	seen  atomic.Int32
}

func (f *faults) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !f.match(r) {
			h.ServeHTTP(w, r)
			return
		}
		f.seen.Add(1)
		if f.n.Add(-1) < 0 {
			h.ServeHTTP(w, r)
			return
		}
		if !f.lose {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `{"error":{"code":"unavailable","message":"injected"}}`)
			return
		}
		h.ServeHTTP(httptest.NewRecorder(), r)
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	})
}

func isComplete(r *http.Request) bool {
	return r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/commands/") && strings.HasSuffix(r.URL.Path, "/complete")
}

func TestRun_CompletionIsRetried(t *testing.T) {
	for _, lose := range []bool{false, true} {
		name := map[bool]string{false: "Unavailable", true: "AnswerLost"}[lose]
		t.Run(name, func(t *testing.T) {
			f := &faults{match: isComplete, lose: lose}
			f.n.Store(3)
			b := startBroker(t, httpapi.Options{}, f.wrap)
			runAgent(t, b, []agent.Handler{greeter(nil)}, agent.Options{})
			ids := b.enqueue(t, cmd("greet", `{"name":"again"}`))
			c := b.await(t, ids[0])
			if c.State != spinbroker.Succeeded || c.Attempts != 1 || string(c.Output) != `{"greeting":"hello, again"}` {
				t.Errorf("command %s after %d attempts, output %s", c.State, c.Attempts, c.Output)
			}
			time.Sleep(100 * time.Millisecond)
			if n := f.seen.Load(); n != 4 {
				t.Errorf("%d completion requests, want 4 (3 failed, 1 delivered)", n)
			}
		})
	}
	// A retry whose answer was lost was recorded: the lease it ended is
	// no lost lease to warn of, in batch mode too (the stale_lease of the
	// next try is that retry's own doing).
	for _, claim := range []int{0, 4} {
		t.Run(map[int]string{0: "RetryAnswerLost", 4: "BatchRetryAnswerLost"}[claim], func(t *testing.T) {
			f := &faults{match: isComplete, lose: true}
			f.n.Store(1)
			b := startBroker(t, httpapi.Options{}, f.wrap)
			var tries atomic.Int32
			busy := agent.Handle("busy", func(ctx context.Context, p struct{}) (any, error) {
				if tries.Add(1) == 1 {
					return nil, agent.Transient(errors.New("device busy"))
				}
				return nil, nil
			})
			var logs syncbuf.Buffer
			runAgent(t, b, []agent.Handler{busy}, agent.Options{Claim: claim, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			ids := b.enqueue(t, cmd("busy", `{}`))
			if c := b.await(t, ids[0]); c.State != spinbroker.Succeeded || c.Attempts != 2 {
				t.Errorf("command %s after %d attempts", c.State, c.Attempts)
			}
			if got := logs.String(); strings.Contains(got, "lease lost") || strings.Contains(got, "not delivered") || !strings.Contains(got, "most likely recorded by an earlier try") {
				t.Errorf("the agent's log:\n%s", got)
			}
		})
	}
}

func TestRun_BrokerUnavailable(t *testing.T) {
	f := &faults{match: func(r *http.Request) bool { return strings.HasSuffix(r.URL.Path, "/next") }}
	f.n.Store(4)
	b := startBroker(t, httpapi.Options{}, f.wrap)
	var logs syncbuf.Buffer
	runAgent(t, b, []agent.Handler{greeter(nil)}, agent.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	ids := b.enqueue(t, cmd("greet", `{"name":"x"}`))
	if c := b.await(t, ids[0]); c.State != spinbroker.Succeeded {
		t.Errorf("command %s", c.State)
	}
	if n := f.seen.Load(); n < 5 {
		t.Errorf("%d next requests, want at least 5", n)
	}
	// The warnings end with a word that the agent works again.
	if got := logs.String(); !strings.Contains(got, "cannot take commands; retrying") || !strings.Contains(got, `msg="taking commands again"`) || !strings.Contains(got, "after_failures=4") {
		t.Errorf("the agent's log:\n%s", got)
	}
}

// TestRun_BrokerBackSaidAtOnce: after an outage the agent says it takes
// commands again as soon as the broker answers, not when its next
// long-poll on an empty queue ends (Wait later).
func TestRun_BrokerBackSaidAtOnce(t *testing.T) {
	f := &faults{match: func(r *http.Request) bool { return strings.HasSuffix(r.URL.Path, "/next") }}
	f.n.Store(2)
	b := startBroker(t, httpapi.Options{}, f.wrap)
	var logs syncbuf.Buffer
	runAgent(t, b, []agent.Handler{greeter(nil)}, agent.Options{Wait: time.Minute, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(logs.String(), `msg="taking commands again"`) {
		if time.Now().After(deadline) {
			t.Fatalf("20s after a two-request outage, with a minute's long-poll and no work, the log says nothing of the broker being back:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRun_MaxBackoffAlone: a MaxBackoff below the default MinBackoff, set
// alone to retry quickly, caps the back-off. It was taken for a mistake
// and replaced by the default 30s, the opposite of what was asked.
func TestRun_MaxBackoffAlone(t *testing.T) {
	f := &faults{match: func(r *http.Request) bool { return strings.HasSuffix(r.URL.Path, "/next") }}
	f.n.Store(6) // the default back-off waits 0.1+0.2+0.4+0.8+1.6+3.2s at least
	b := startBroker(t, httpapi.Options{}, f.wrap)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- agent.Run(ctx, b.c, "test", []agent.Handler{greeter(nil)},
			agent.Options{Logger: quietLogger(), Wait: time.Second, MaxBackoff: 50 * time.Millisecond})
	}()
	t.Cleanup(func() { cancel(); <-done })
	ids := b.enqueue(t, cmd("greet", `{"name":"soon"}`))
	begin := time.Now()
	b.await(t, ids[0])
	if d := time.Since(begin); d > 2*time.Second {
		t.Errorf("6 refused polls took %s to get past with a 50ms MaxBackoff", d.Round(time.Millisecond))
	}
}

func TestRun_Unauthorized(t *testing.T) {
	b := startBroker(t, httpapi.Options{Auth: true}, nil)
	if err := runGivingUp(t, b.c, "Run goes on without a valid token"); spinbroker.ErrorCode(err) != spinbroker.EUNAUTHORIZED {
		t.Errorf("Run = %v, want unauthorized", err)
	}
}

// TestRun_TokenFromFile: a token read from a file (a mounted secret) ends
// in a newline, which no HTTP header may carry. It works: before, every
// request failed below HTTP and the agent retried for ever, looking
// healthy, with "invalid header field value".
func TestRun_TokenFromFile(t *testing.T) {
	b := startBroker(t, httpapi.Options{Auth: true}, nil)
	_, secret, err := b.db.CreateToken(context.Background(), spinbroker.RoleAgent, "test", "from-file")
	if err != nil {
		t.Fatal(err)
	}
	_, admin, err := b.db.CreateToken(context.Background(), spinbroker.RoleAdmin, "", "admin")
	if err != nil {
		t.Fatal(err)
	}
	if b.c, err = client.New(b.url, client.WithToken(admin)); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(b.url, client.WithToken(secret+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	runAgent(t, &broker{c: c, url: b.url}, []agent.Handler{greeter(nil)}, agent.Options{})
	ids := b.enqueue(t, cmd("greet", `{"name":"file"}`))
	if c := b.await(t, ids[0]); c.State != spinbroker.Succeeded {
		t.Errorf("command %s (%q)", c.State, deref(c.Reason))
	}
	// A token with a control character inside is refused at once, saying
	// why, rather than retried for ever.
	if _, err := client.New(b.url, client.WithToken("sbt_a\x00b")); err == nil || !strings.Contains(err.Error(), "token") {
		t.Errorf("New with a NUL in the token: %v", err)
	}
}

// TestRun_WrongURL: a URL with a path before the broker's (a proxy prefix
// forgotten, or added) answers 404 to next; Run stops and says so, rather
// than retrying forever.
func TestRun_WrongURL(t *testing.T) {
	b := startBroker(t, httpapi.Options{}, nil)
	c, err := client.New(b.url + "/api")
	if err != nil {
		t.Fatal(err)
	}
	err = runGivingUp(t, c, "Run goes on asking a URL that is not a broker's")
	if spinbroker.ErrorCode(err) != spinbroker.ENOTFOUND || !strings.Contains(err.Error(), "base URL") {
		t.Errorf("Run = %v, want not_found naming the base URL", err)
	}
}

// TestRun_ProxyMethodNotAllowed: a proxy in front of the broker that
// refuses the agent's POST (nginx's 405 page for a path it serves files
// from) refuses it every time; Run stops and says so, as it does for the
// invalid request its code used to read as, rather than retry for ever.
func TestRun_ProxyMethodNotAllowed(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusMethodNotAllowed)
		io.WriteString(w, "<html><center><h1>405 Not Allowed</h1></center>nginx</html>")
	}))
	defer srv.Close()
	c, err := client.New(srv.URL + "/spin/")
	if err != nil {
		t.Fatal(err)
	}
	err = runGivingUp(t, c, "Run goes on asking a proxy that refuses its method")
	if spinbroker.ErrorCode(err) != spinbroker.EMETHOD {
		t.Errorf("Run = %v, want method_not_allowed", err)
	}
}

// TestRun_ProxyRateLimit: a proxy in front of the broker that rate-limits
// the agent (nginx's limit_req answers 429 with a page of its own) is a
// reason to ask again later, for a take and for a result alike. Its 429
// read as invalid_request: Run stopped as for a request it could never
// make, and a result with an output was reported as a failure of the
// command ("the broker refuses the output").
func TestRun_ProxyRateLimit(t *testing.T) {
	var limited atomic.Int32
	b := startBroker(t, httpapi.Options{}, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if (strings.HasSuffix(r.URL.Path, "/next") || strings.HasSuffix(r.URL.Path, "/complete")) && limited.Add(1)%2 == 1 {
				w.Header().Set("Content-Type", "text/html")
				w.WriteHeader(http.StatusTooManyRequests)
				io.WriteString(w, "<html><center><h1>429 Too Many Requests</h1></center>nginx</html>")
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	runAgent(t, b, []agent.Handler{greeter(nil)}, agent.Options{})
	ids := b.enqueue(t, cmd("greet", `{"name":"limited"}`), cmd("greet", `{"name":"again"}`))
	for _, id := range ids {
		if c := b.await(t, id); c.State != spinbroker.Succeeded {
			t.Errorf("command %s behind a rate limit: %s (%q)", id, c.State, deref(c.Reason))
		}
	}
	if limited.Load() < 4 {
		t.Errorf("the proxy refused %d calls, want the test to have made it refuse some", limited.Load())
	}
}

func TestRun_GracefulStop(t *testing.T) {
	t.Run("FinishesWithinGrace", func(t *testing.T) {
		b := startBroker(t, httpapi.Options{}, nil)
		started := make(chan struct{})
		slow := agent.Handle("slow", func(ctx context.Context, p struct{}) (any, error) {
			close(started)
			time.Sleep(500 * time.Millisecond)
			return map[string]bool{"finished": true}, ctx.Err()
		})
		stop := runAgent(t, b, []agent.Handler{slow, greeter(nil)}, agent.Options{Grace: 5 * time.Second})
		ids := b.enqueue(t, cmd("slow", `{}`), cmd("greet", `{"name":"never"}`))
		<-started
		if err := stop(); err != nil {
			t.Fatalf("Run: %v", err)
		}
		if c := b.await(t, ids[0]); c.State != spinbroker.Succeeded {
			t.Errorf("the running command: %s (%q)", c.State, deref(c.Reason))
		}
		if c, _ := b.c.Command(context.Background(), ids[1]); c.State != spinbroker.Ready {
			t.Errorf("the next command was taken after the stop: %s", c.State)
		}
	})
	t.Run("CancelledAfterGrace", func(t *testing.T) {
		b := startBroker(t, httpapi.Options{}, nil)
		started := make(chan struct{})
		forever := agent.Handle("forever", func(ctx context.Context, p struct{}) (any, error) {
			close(started)
			<-ctx.Done()
			return nil, ctx.Err()
		})
		stop := runAgent(t, b, []agent.Handler{forever}, agent.Options{Grace: 300 * time.Millisecond})
		ids := b.enqueue(t, cmd("forever", `{}`))
		<-started
		begin := time.Now()
		if err := stop(); err != nil {
			t.Fatalf("Run: %v", err)
		}
		if d := time.Since(begin); d < 300*time.Millisecond || d > 3*time.Second {
			t.Errorf("Run returned %s after the stop, want just after the 300ms grace", d)
		}
		// Put back for another agent, not failed.
		c, _ := b.c.Command(context.Background(), ids[0])
		if c.State != spinbroker.Ready || !strings.Contains(deref(c.Reason), "agent stopped") {
			t.Errorf("the interrupted command: %s, %q; want ready again", c.State, deref(c.Reason))
		}
	})
	t.Run("CancelledWithItsOwnError", func(t *testing.T) {
		// What exec.CommandContext returns when the grace ends: not
		// context.Canceled, and no failure of the command for that.
		b := startBroker(t, httpapi.Options{}, nil)
		started := make(chan struct{})
		killed := agent.Handle("killed", func(ctx context.Context, p struct{}) (any, error) {
			close(started)
			<-ctx.Done()
			return nil, errors.New("sleep: signal: killed")
		})
		stop := runAgent(t, b, []agent.Handler{killed}, agent.Options{Grace: 200 * time.Millisecond})
		ids := b.enqueue(t, cmd("killed", `{}`))
		<-started
		if err := stop(); err != nil {
			t.Fatalf("Run: %v", err)
		}
		c, _ := b.c.Command(context.Background(), ids[0])
		if c.State != spinbroker.Ready || !strings.Contains(deref(c.Reason), "agent stopped before the command finished: sleep: signal: killed") {
			t.Errorf("the command stopped at the grace's end: %s, %q; want ready again", c.State, deref(c.Reason))
		}
	})
}

func TestRun_Batch(t *testing.T) {
	var batches atomic.Int32
	b := startBroker(t, httpapi.Options{}, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/commands/complete" {
				batches.Add(1)
			}
			h.ServeHTTP(w, r)
		})
	})
	conc := 4
	if _, err := b.c.SetQueue(context.Background(), "test", spinbroker.QueueSettings{Concurrency: &conc}); err != nil {
		t.Fatal(err)
	}
	var running highWater
	work := agent.Handle("work", func(ctx context.Context, p struct {
		N int `json:"n"`
	}) (any, error) {
		defer running.enter()()
		time.Sleep(50 * time.Millisecond)
		if p.N == 3 {
			return nil, errors.New("three is bad")
		}
		return map[string]int{"n": p.N}, nil
	})
	var cmds []spinbroker.NewCommand
	for i := range 12 {
		cmds = append(cmds, cmd("work", `{"n":`+string(rune('0'+i%10))+`}`))
	}
	cmds = append(cmds, cmd("work", `{"x":1}`))
	ids := b.enqueue(t, cmds...)
	runAgent(t, b, []agent.Handler{work}, agent.Options{Claim: 8})
	for i, id := range ids {
		c := b.await(t, id)
		wantOK := i != 3 && i != 12
		if (c.State == spinbroker.Succeeded) != wantOK {
			t.Errorf("command %d: %s (%q)", i, c.State, deref(c.Reason))
		}
	}
	if n := batches.Load(); n < 3 || n > 6 {
		t.Errorf("%d batched completions for 13 commands at concurrency 4, want about 4", n)
	}
	if m := running.most.Load(); m < 2 || m > 4 {
		t.Errorf("at most %d handlers ran at once, want between 2 and the queue's concurrency 4", m)
	}
}

// TestRun_FinishedLine holds the "command finished" line to what an
// operator reads it for: a failure shows at warn, and in batch mode each
// command's duration is its handler's, not the wait for the slowest one of
// its batch.
func TestRun_FinishedLine(t *testing.T) {
	b := startBroker(t, httpapi.Options{}, nil)
	conc := 2
	if _, err := b.c.SetQueue(context.Background(), "test", spinbroker.QueueSettings{Concurrency: &conc}); err != nil {
		t.Fatal(err)
	}
	quick := agent.Handle("quick", func(ctx context.Context, _ struct{}) (any, error) {
		return nil, errors.New("quick says no")
	})
	slow := agent.Handle("slow", func(ctx context.Context, _ struct{}) (any, error) {
		time.Sleep(1500 * time.Millisecond)
		return nil, nil
	})
	ids := b.enqueue(t, cmd("quick", `{}`), cmd("slow", `{}`))
	var warn, all syncbuf.Buffer
	log := slog.New(slog.NewMultiHandler(slog.NewTextHandler(&warn, &slog.HandlerOptions{Level: slog.LevelWarn}), slog.NewTextHandler(&all, nil)))
	runAgent(t, b, []agent.Handler{quick, slow}, agent.Options{Claim: 2, Logger: log})
	for _, id := range ids {
		b.await(t, id)
	}
	durations := map[string]time.Duration{}
	deadline := time.Now().Add(10 * time.Second)
	for len(durations) < 2 && time.Now().Before(deadline) {
		for _, line := range strings.Split(all.String(), "\n") {
			if !strings.Contains(line, `msg="command finished"`) {
				continue
			}
			_, rest, _ := strings.Cut(line, " duration=")
			d, err := time.ParseDuration(strings.Fields(rest)[0])
			if err != nil {
				t.Fatalf("duration in %q: %v", line, err)
			}
			_, action, _ := strings.Cut(line, " action=")
			durations[strings.Fields(action)[0]] = d
		}
		time.Sleep(20 * time.Millisecond)
	}
	if durations["slow"] < time.Second || durations["quick"] >= durations["slow"]/2 {
		t.Errorf("durations %v: the quick command's should be its own, not its batch's", durations)
	}
	got := warn.String()
	if !strings.Contains(got, `level=WARN msg="command finished"`) || !strings.Contains(got, "quick says no") || strings.Contains(got, "action=slow") {
		t.Errorf("at warn, the failure and only it should show:\n%s", got)
	}
}

// outage fails every request that match takes while down is set: with 503
// unavailable, or with status (500 internal) when it is set, or (drop)
// with no answer at all, its connection closed, as of a broker out of
// reach.
type outage struct {
	match  func(r *http.Request) bool
	status int
	drop   bool
	down   atomic.Bool
	seen   atomic.Int32
}

func (o *outage) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if o.match(r) && o.down.Load() {
			o.seen.Add(1)
			if o.drop {
				if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
					conn.Close()
				}
				return
			}
			status, code := http.StatusServiceUnavailable, "unavailable"
			if o.status != 0 {
				status, code = o.status, "internal"
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_, _ = io.WriteString(w, `{"error":{"code":"`+code+`","message":"injected"}}`)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// TestRun_LeaseExpiredStopsHandler: when no heartbeat gets through and the
// lease runs out by the agent's clock, the handler is stopped: the broker
// may give the command to another agent, and a queue runs one command at a
// time. The attempt is reported for a retry, which then succeeds.
func TestRun_LeaseExpiredStopsHandler(t *testing.T) {
	o := &outage{match: func(r *http.Request) bool { return strings.HasSuffix(r.URL.Path, "/heartbeat") }}
	o.down.Store(true)
	b := startBroker(t, httpapi.Options{}, o.wrap)
	var runs atomic.Int32
	cause := make(chan error, 1)
	block := agent.Handle("block", func(ctx context.Context, p struct{}) (any, error) {
		if runs.Add(1) > 1 {
			return map[string]bool{"done": true}, nil
		}
		<-ctx.Done()
		cause <- context.Cause(ctx)
		return nil, ctx.Err()
	})
	runAgent(t, b, []agent.Handler{block}, agent.Options{Lease: 1500 * time.Millisecond})
	ids := b.enqueue(t, cmd("block", `{}`))
	select {
	case err := <-cause:
		if err == nil || !strings.Contains(err.Error(), "expired") {
			t.Errorf("cause = %v, want the expired lease", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the handler ran on past its lease with every heartbeat failing")
	}
	c := b.await(t, ids[0])
	if c.State != spinbroker.Succeeded || c.Attempts != 2 || o.seen.Load() == 0 {
		t.Errorf("command %s after %d attempts (%d heartbeats refused)", c.State, c.Attempts, o.seen.Load())
	}
}

// leaseRunsOut runs an agent with leases of 1s whose handler waits for its
// context and returns its cause, on one command of a single attempt, and
// returns that command once it has finished: when no heartbeat extends the
// lease, it fails with the agent's reason.
func leaseRunsOut(t *testing.T, b *broker) *spinbroker.Command {
	t.Helper()
	block := agent.Handle("block", func(ctx context.Context, p struct{}) (any, error) {
		<-ctx.Done()
		return nil, context.Cause(ctx)
	})
	runAgent(t, b, []agent.Handler{block}, agent.Options{Lease: time.Second})
	once := 1
	c := cmd("block", `{}`)
	c.MaxAttempts = &once
	return b.await(t, b.enqueue(t, c)[0])
}

// TestRun_LeaseExpiredReasonSaysItOnce: a handler that returns
// context.Cause(ctx), as the package's doc invites, gets a reason that
// says the lease expired once, not twice in a row.
func TestRun_LeaseExpiredReasonSaysItOnce(t *testing.T) {
	o := &outage{match: func(r *http.Request) bool { return strings.HasSuffix(r.URL.Path, "/heartbeat") }}
	o.down.Store(true)
	got := leaseRunsOut(t, startBroker(t, httpapi.Options{}, o.wrap))
	if reason := deref(got.Reason); got.State != spinbroker.Failed || strings.Count(reason, "lease expired") != 1 {
		t.Errorf("command %s, reason %q; want failed, saying once that the lease expired", got.State, reason)
	}
	// The broker answered the heartbeats (503): the reason says so, not
	// that it could not be reached.
	if reason := deref(got.Reason); !strings.Contains(reason, "the broker refused the heartbeats") || !strings.Contains(reason, "HTTP 503") {
		t.Errorf("reason %q; want it to say the broker refused the heartbeats, with its answer", reason)
	}
}

// TestRun_LeaseExpiredReasonKeepsTheAnswer: the last heartbeat before the
// lease runs out has only what is left of the lease to get an answer in;
// cut short by that end, it must not hide what the broker answered the
// ones before it. On a loaded machine the reason said "the broker could not
// be reached: context deadline exceeded" of a broker that answered 503.
func TestRun_LeaseExpiredReasonKeepsTheAnswer(t *testing.T) {
	var beats atomic.Int32
	hang := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !strings.HasSuffix(r.URL.Path, "/heartbeat") {
				h.ServeHTTP(w, r)
				return
			}
			if beats.Add(1) > 1 {
				// No answer before the agent gives up (its call ends with
				// the lease), nor for a while after.
				select {
				case <-r.Context().Done():
				case <-time.After(1500 * time.Millisecond):
				}
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `{"error":{"code":"unavailable","message":"injected"}}`)
		})
	}
	got := leaseRunsOut(t, startBroker(t, httpapi.Options{}, hang))
	if reason := deref(got.Reason); got.State != spinbroker.Failed || !strings.Contains(reason, "the broker refused the heartbeats") || !strings.Contains(reason, "HTTP 503") {
		t.Errorf("command %s, reason %q; want failed, with the broker's 503", got.State, reason)
	}
	if n := beats.Load(); n < 2 {
		t.Errorf("%d heartbeats, want the 503 and at least one cut short by the lease's end", n)
	}
}

// TestRun_ResultDeliveredAfterLocalExpiry: a broker out of reach for longer
// than the lease still gets the result once it is back, as long as nobody
// else took the command meanwhile; the work is not done twice.
func TestRun_ResultDeliveredAfterLocalExpiry(t *testing.T) {
	o := &outage{match: func(r *http.Request) bool { return strings.HasPrefix(r.URL.Path, "/commands/") }}
	b := startBroker(t, httpapi.Options{}, o.wrap)
	var runs atomic.Int32
	quick := agent.Handle("quick", func(ctx context.Context, p struct{}) (any, error) {
		o.down.Store(true) // the broker goes out of reach as the handler ends
		runs.Add(1)
		return map[string]bool{"done": true}, nil
	})
	runAgent(t, b, []agent.Handler{quick}, agent.Options{Lease: time.Second})
	ids := b.enqueue(t, cmd("quick", `{}`))
	time.Sleep(2500 * time.Millisecond) // the lease runs out by every clock
	o.down.Store(false)
	c := b.await(t, ids[0])
	if c.State != spinbroker.Succeeded || c.Attempts != 1 || runs.Load() != 1 || o.seen.Load() == 0 {
		t.Errorf("command %s after %d attempts, %d runs, %d refused requests", c.State, c.Attempts, runs.Load(), o.seen.Load())
	}
}

// TestRun_BatchOfLargeResults: results whose outputs add up past the
// broker's 1 MiB are delivered in several requests; none is lost, and no
// command runs twice.
func TestRun_BatchOfLargeResults(t *testing.T) {
	b := startBroker(t, httpapi.Options{}, nil)
	conc := 10
	if _, err := b.c.SetQueue(context.Background(), "test", spinbroker.QueueSettings{Concurrency: &conc}); err != nil {
		t.Fatal(err)
	}
	var runs atomic.Int32
	big := agent.Handle("big", func(ctx context.Context, p struct{ Bytes int }) (any, error) {
		runs.Add(1)
		return map[string]string{"blob": strings.Repeat("b", p.Bytes)}, nil
	})
	var cmds []spinbroker.NewCommand
	for range 6 {
		cmds = append(cmds, cmd("big", `{"Bytes": 400000}`))
	}
	cmds = append(cmds, cmd("big", `{"Bytes": 2000000}`)) // over 1 MiB alone
	ids := b.enqueue(t, cmds...)
	runAgent(t, b, []agent.Handler{big}, agent.Options{Claim: 10})
	for i, id := range ids {
		c := b.await(t, id)
		switch {
		case i < 6 && (c.State != spinbroker.Succeeded || len(c.Output) < 400000):
			t.Errorf("result %d: %s, %d bytes of output, %q", i, c.State, len(c.Output), deref(c.Reason))
		case i == 6 && (c.State != spinbroker.Failed || !strings.Contains(deref(c.Reason), "refused the command's output")):
			t.Errorf("the oversized result: %s, %q", c.State, deref(c.Reason))
		}
		if c.Attempts != 1 {
			t.Errorf("result %d took %d attempts", i, c.Attempts)
		}
	}
	if n := runs.Load(); n != 7 {
		t.Errorf("%d runs of 7 commands", n)
	}
}

// runGivingUp runs an agent on c that must give up by itself, and returns
// why; stillRunning is the failure when it has not within 10s.
func runGivingUp(t *testing.T, c *client.Client, stillRunning string) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		done <- agent.Run(context.Background(), c, "test", []agent.Handler{greeter(nil)}, agent.Options{Logger: quietLogger()})
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal(stillRunning)
		return nil
	}
}

// TestRun_UntrustedCertificate: a broker whose TLS certificate this host
// does not trust stops Run with a word on what to do, rather than a retry
// loop that looks healthy.
func TestRun_UntrustedCertificate(t *testing.T) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	c, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	err = runGivingUp(t, c, "Run retries an untrusted certificate for ever")
	if err == nil || !strings.Contains(err.Error(), "SSL_CERT_FILE") {
		t.Errorf("Run = %v, want the certificate named", err)
	}
	if !client.Untrusted(err) || client.Temporary(err) {
		t.Errorf("Run = %v: Untrusted %v, Temporary %v; want an error Untrusted reports, not Temporary", err, client.Untrusted(err), client.Temporary(err))
	}
}

// TestRun_RedirectingURL: a broker URL that redirects (a proxy sending
// http to https) would have each next sent again as a GET without its
// body, for ever: Run stops and names the address to give instead.
func TestRun_RedirectingURL(t *testing.T) {
	b := startBroker(t, httpapi.Options{}, nil)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, b.url+r.URL.RequestURI(), http.StatusMovedPermanently)
	}))
	defer proxy.Close()
	c, err := client.New(proxy.URL)
	if err != nil {
		t.Fatal(err)
	}
	err = runGivingUp(t, c, "Run retries a redirecting URL for ever")
	if err == nil || !strings.Contains(err.Error(), "redirect") || !strings.Contains(err.Error(), b.url) {
		t.Errorf("Run = %v, want the redirect and its target named", err)
	}
	if re := (*client.RedirectError)(nil); !errors.As(err, &re) || re.To == nil || re.To.Host != strings.TrimPrefix(b.url, "http://") {
		t.Errorf("Run = %v, in which errors.As finds no *client.RedirectError to the broker", err)
	}
}

// TestRun_RedirectLoop: a broker URL that redirects in a loop (a proxy
// whose http-to-https rule matches https too) answers every poll the same
// way: Run stops and says so. It took the client's "stopped after 10
// redirects" for an outage and polled for ever, looking healthy.
func TestRun_RedirectLoop(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, r.URL.RequestURI(), http.StatusTemporaryRedirect)
	}))
	defer srv.Close()
	c, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	err = runGivingUp(t, c, "Run retries a URL that redirects in a loop for ever")
	if err == nil || !strings.Contains(err.Error(), "redirected 10 times") {
		t.Errorf("Run = %v, want the loop named", err)
	}
	if re := (*client.RedirectError)(nil); !errors.As(err, &re) || !re.Loop || client.Temporary(err) {
		t.Errorf("Run = %v: want a *client.RedirectError of a loop, not Temporary", err)
	}
}

// TestRun_PlainHTTPAtHTTPS: an https:// broker URL whose server speaks
// plain HTTP answers every poll the same way: Run stops and names the
// http:// URL to give instead. It polled for ever, looking healthy.
func TestRun_PlainHTTPAtHTTPS(t *testing.T) {
	b := startBroker(t, httpapi.Options{}, nil)
	c, err := client.New(strings.Replace(b.url, "http://", "https://", 1))
	if err != nil {
		t.Fatal(err)
	}
	err = runGivingUp(t, c, "Run retries plain HTTP at an https:// URL for ever")
	if err == nil || !strings.Contains(err.Error(), "("+b.url+")") {
		t.Errorf("Run = %v, want the http:// URL named", err)
	}
	if se := (*client.SchemeError)(nil); !errors.As(err, &se) || se.Want != "http" || client.Temporary(err) {
		t.Errorf("Run = %v: want a *client.SchemeError that wants http, not Temporary", err)
	}
}

// TestRun_TLSAtHTTP: an http:// broker URL whose server speaks TLS
// answers every poll the same way: Run stops and names the https:// URL
// to give instead. A TLS server that answers with an alert record (as
// OpenSSL's do) was polled for ever; Go's, whose 400 page stopped Run as
// "the broker refuses to hand out commands", was not said to be TLS.
func TestRun_TLSAtHTTP(t *testing.T) {
	goTLS := httptest.NewUnstartedServer(http.NotFoundHandler())
	goTLS.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are the test
	goTLS.StartTLS()
	defer goTLS.Close()
	alert := tlsalert.Listen(t)
	for name, addr := range map[string]string{"alert": alert, "Go": goTLS.Listener.Addr().String()} {
		c, err := client.New("http://" + addr)
		if err != nil {
			t.Fatal(err)
		}
		err = runGivingUp(t, c, name+": Run retries TLS at an http:// URL for ever")
		if err == nil || !strings.Contains(err.Error(), "(https://"+addr+")") {
			t.Errorf("%s: Run = %v, want the https:// URL named", name, err)
		}
		if se := (*client.SchemeError)(nil); !errors.As(err, &se) || se.Want != "https" || client.Temporary(err) {
			t.Errorf("%s: Run = %v: want a *client.SchemeError that wants https, not Temporary", name, err)
		}
	}
}

// TestRun_ExpiredCertificateIsWaitedOut: a certificate the host trusts but
// that has expired (a renewal not yet picked up) is retried, not fatal: the
// broker takes a renewed one without a restart, and the agent must still
// be running to see it.
func TestRun_ExpiredCertificateIsWaitedOut(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "broker"},
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	srv.StartTLS()
	defer srv.Close()
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	c, err := client.New(srv.URL, client.WithHTTPClient(&http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- agent.Run(ctx, c, "test", []agent.Handler{greeter(nil)},
			agent.Options{Logger: quietLogger(), MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	}()
	select {
	case err := <-done:
		t.Fatalf("Run gave up on an expired certificate: %v", err)
	case <-time.After(2 * time.Second):
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run after the stop: %v", err)
	}
}

// TestRun_StartLineNamesTheBroker: the first line says which broker the
// agent asks, so that an agent pointed at the wrong one (a staging URL left
// in a unit file) shows it before anything fails, or when nothing does.
func TestRun_StartLineNamesTheBroker(t *testing.T) {
	b := startBroker(t, httpapi.Options{}, nil)
	var logs syncbuf.Buffer
	stop := runAgent(t, b, []agent.Handler{greeter(nil)}, agent.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	line, _, _ := strings.Cut(logs.String(), "\n")
	if !strings.Contains(line, `msg="agent started"`) || !strings.Contains(line, "url="+b.url) {
		t.Errorf("the agent's first line: %s", line)
	}
}

// TestRun_StartLineFirstWhenStoppedAtOnce: an agent whose context is done
// as it starts still says "agent started" first: the goroutine that says
// it stops could log before the start line did.
func TestRun_StartLineFirstWhenStoppedAtOnce(t *testing.T) {
	b := startBroker(t, httpapi.Options{}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for range 50 {
		var logs syncbuf.Buffer
		if err := agent.Run(ctx, b.c, "test", []agent.Handler{greeter(nil)}, agent.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))}); err != nil {
			t.Fatal(err)
		}
		if line, _, _ := strings.Cut(logs.String(), "\n"); !strings.Contains(line, `msg="agent started"`) {
			t.Fatalf("the first line of an agent stopped at once: %s", line)
		}
	}
}

// TestRun_StopLinesInOrder: an idle agent told to stop says "stopping"
// before "agent stopped", once each: its loop could end, and log the
// second, before the goroutine that logs the first had run.
func TestRun_StopLinesInOrder(t *testing.T) {
	b := startBroker(t, httpapi.Options{}, nil)
	for range 20 {
		var logs syncbuf.Buffer
		stop := runAgent(t, b, []agent.Handler{greeter(nil)}, agent.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		got := logs.String()
		i, j := strings.Index(got, "stopping: no new commands"), strings.Index(got, `msg="agent stopped"`)
		if i < 0 || j < 0 || i > j || strings.Count(got, "stopping: no new commands") != 1 {
			t.Fatalf("the agent's log:\n%s", got)
		}
	}
}

// TestRun_LeaseExpiredStopsHandlerOnTime: heartbeats that hang (a broker
// stopped, packets dropped) or fail with a long back-off must not keep the
// handler running past its lease by the agent's clock: another agent may
// have the command by then.
func TestRun_LeaseExpiredStopsHandlerOnTime(t *testing.T) {
	for _, tc := range []struct {
		name       string
		hang       bool
		minBackoff time.Duration
	}{
		{"hung heartbeats", true, 10 * time.Millisecond},
		{"refused heartbeats, growing back-off", false, 10 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			down := make(chan struct{})
			wrap := func(h http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if strings.HasSuffix(r.URL.Path, "/heartbeat") {
						select {
						case <-down:
							if tc.hang {
								// Read the body, so that the server sees the
								// client go away.
								_, _ = io.Copy(io.Discard, r.Body)
								<-r.Context().Done()
								return
							}
							w.Header().Set("Content-Type", "application/json")
							w.WriteHeader(http.StatusServiceUnavailable)
							_, _ = io.WriteString(w, `{"error":{"code":"unavailable","message":"injected"}}`)
							return
						default:
						}
					}
					h.ServeHTTP(w, r)
				})
			}
			b := startBroker(t, httpapi.Options{}, wrap)
			const lease = 3 * time.Second
			started := make(chan time.Time, 1)
			late := make(chan time.Duration, 1)
			block := agent.Handle("block", func(ctx context.Context, p struct{}) (any, error) {
				start := time.Now()
				started <- start
				<-ctx.Done()
				late <- time.Since(start) - lease
				return nil, ctx.Err()
			})
			runAgent(t, b, []agent.Handler{block}, agent.Options{Lease: lease,
				MinBackoff: tc.minBackoff, MaxBackoff: 10 * time.Second})
			b.enqueue(t, cmd("block", `{}`))
			<-started
			close(down) // from the first heartbeat on, none gets through
			select {
			case d := <-late:
				if d > 300*time.Millisecond {
					t.Errorf("the handler was cancelled %s after its lease ran out", d)
				}
			case <-time.After(3 * lease):
				t.Fatal("the handler ran on past its lease")
			}
		})
	}
}

// TestRun_NoHandlers: an agent given no handlers would fail every command
// of its queue for good; Run refuses to start instead.
func TestRun_NoHandlers(t *testing.T) {
	c, err := client.New("http://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	err = agent.Run(context.Background(), c, "test", nil, agent.Options{Logger: quietLogger()})
	if err == nil || !strings.Contains(err.Error(), "no handlers") {
		t.Errorf("Run with no handlers: %v", err)
	}
}

// TestRun_HeartbeatsBackSaysSo: after heartbeats failed, the first that
// gets through is logged, as polls that work again are: the warnings
// otherwise end in nothing, and read as a lease still at risk.
func TestRun_HeartbeatsBackSaysSo(t *testing.T) {
	o := &outage{match: func(r *http.Request) bool { return strings.HasSuffix(r.URL.Path, "/heartbeat") }}
	o.down.Store(true)
	b := startBroker(t, httpapi.Options{}, o.wrap)
	slow := agent.Handle("slow", func(ctx context.Context, p struct{}) (any, error) {
		time.Sleep(2500 * time.Millisecond)
		return nil, nil
	})
	var logs syncbuf.Buffer
	runAgent(t, b, []agent.Handler{slow}, agent.Options{Lease: 3 * time.Second, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	ids := b.enqueue(t, cmd("slow", `{}`))
	for o.seen.Load() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	o.down.Store(false)
	if c := b.await(t, ids[0]); c.State != spinbroker.Succeeded || c.Attempts != 1 {
		t.Errorf("command %s after %d attempts", c.State, c.Attempts)
	}
	if got := logs.String(); !strings.Contains(got, "heartbeat failed; retrying") || !strings.Contains(got, `msg="heartbeats get through again"`) {
		t.Errorf("the agent's log:\n%s", got)
	}
}

// TestRun_HandlerTimeout: a handler with a time limit that hangs is
// cancelled at it, and its command retried, then failed once its attempts
// are spent, the reason saying it timed out; one that finishes in time is
// not touched.
func TestRun_HandlerTimeout(t *testing.T) {
	b := startBroker(t, httpapi.Options{}, nil)
	var runs atomic.Int32
	hang := agent.Handle("hang", func(ctx context.Context, p struct{}) (any, error) {
		runs.Add(1)
		<-ctx.Done()
		return nil, ctx.Err()
	}).WithTimeout(200 * time.Millisecond)
	quick := agent.Handle("quick", func(ctx context.Context, p struct{}) (any, error) {
		return map[string]bool{"ok": true}, nil
	}).WithTimeout(time.Minute)
	runAgent(t, b, []agent.Handler{hang, quick}, agent.Options{})
	two := 2
	p, err := b.c.CreatePackage(context.Background(), spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{
		{Resource: "test", Action: "hang", MaxAttempts: &two}, {Resource: "test", Action: "quick"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	c := b.await(t, p.Commands[0].ID)
	if c.State != spinbroker.Failed || c.Attempts != 2 || c.Reason == nil || !strings.Contains(*c.Reason, "timed out after 200ms") {
		t.Errorf("the hung command: %s after %d attempts, reason %v", c.State, c.Attempts, c.Reason)
	}
	if n := runs.Load(); n != 2 {
		t.Errorf("the hung handler ran %d times, want 2", n)
	}
	if c := b.await(t, p.Commands[1].ID); c.State != spinbroker.Succeeded {
		t.Errorf("the quick command: %s", c.State)
	}
	// Without a broker, as tests of handlers call it.
	if _, err := hang.Call(context.Background(), nil); !agent.IsTransient(err) || !strings.Contains(err.Error(), "timed out") {
		t.Errorf("Call of the hung handler: %v", err)
	}
}

// TestRun_GraceLoggedAsAsked: the start and stopping lines say the grace
// the caller asked for. A grace of a nanosecond is how Options asks for
// none (the shipped agents' -grace 0), and the log said "grace=1ns": a
// value nobody typed, which reads like a bug in the flag.
func TestRun_GraceLoggedAsAsked(t *testing.T) {
	b := startBroker(t, httpapi.Options{}, nil)
	for _, tc := range []struct {
		grace time.Duration
		want  string
	}{
		{time.Nanosecond, "grace=0s"},
		{0, "grace=30s"},
		{90 * time.Second, "grace=1m30s"},
	} {
		var logs syncbuf.Buffer
		stop := runAgent(t, b, []agent.Handler{greeter(nil)}, agent.Options{Grace: tc.grace, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		for _, msg := range []string{`msg="agent started"`, `msg="stopping: no new commands"`} {
			line := ""
			for l := range strings.Lines(logs.String()) {
				if strings.Contains(l, msg) {
					line = l
				}
			}
			if !strings.Contains(line, " "+tc.want) {
				t.Errorf("Grace %s: the line %s says %q, want %s", tc.grace, msg, line, tc.want)
			}
		}
	}
}

// TestRun_FinishedLineLastAttempt: a retry asked for on a command's last
// attempt fails it for good, and its "command finished" line says so: no
// retry=true for a command that will not run again.
func TestRun_FinishedLineLastAttempt(t *testing.T) {
	for _, claim := range []int{0, 4} {
		t.Run(map[int]string{0: "Next", 4: "Claim"}[claim], func(t *testing.T) {
			b := startBroker(t, httpapi.Options{}, nil)
			busy := agent.Handle("busy", func(ctx context.Context, _ struct{}) (any, error) {
				return nil, agent.Transient(errors.New("device busy"))
			})
			var logs syncbuf.Buffer
			runAgent(t, b, []agent.Handler{busy}, agent.Options{Claim: claim, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			one := 1
			c := cmd("busy", `{}`)
			c.MaxAttempts = &one
			ids := b.enqueue(t, c)
			if c := b.await(t, ids[0]); c.State != spinbroker.Failed || c.Attempts != 1 {
				t.Fatalf("command %s after %d attempts", c.State, c.Attempts)
			}
			awaitLog(t, &logs, `msg="command finished"`)
			line := grepLine(logs.String(), `msg="command finished"`)
			if !strings.Contains(line, "retry=false") || !strings.Contains(line, "device busy") {
				t.Errorf("the line of a command failed on its last attempt:\n%s", line)
			}
		})
	}
}

// TestRun_CancelCauseIs: a handler tells why its context was cancelled with
// errors.Is on context.Cause, not by the cause's text: the lease lost to a
// hand-made result, the lease run out with heartbeats failing, or the
// agent stopped and its grace over.
func TestRun_CancelCauseIs(t *testing.T) {
	cases := []struct {
		name string
		want error
	}{
		{"LeaseLost", agent.ErrLeaseLost},
		{"LeaseExpired", agent.ErrLeaseExpired},
		{"Stopped", agent.ErrStopped},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := &outage{match: func(r *http.Request) bool { return strings.HasSuffix(r.URL.Path, "/heartbeat") }}
			o.down.Store(tc.want == agent.ErrLeaseExpired)
			b := startBroker(t, httpapi.Options{}, o.wrap)
			started := make(chan struct{}, 1)
			cause := make(chan error, 1)
			block := agent.Handle("block", func(ctx context.Context, p struct{}) (any, error) {
				started <- struct{}{}
				<-ctx.Done()
				cause <- context.Cause(ctx)
				return nil, ctx.Err()
			})
			stop := runAgent(t, b, []agent.Handler{block}, agent.Options{Lease: 1500 * time.Millisecond, Grace: 100 * time.Millisecond})
			ids := b.enqueue(t, cmd("block", `{}`))
			<-started
			switch tc.want {
			case agent.ErrLeaseLost:
				ok := false
				if _, err := b.c.Complete(context.Background(), ids[0], spinbroker.Result{Status: &ok, Reason: new("settled by hand")}); err != nil {
					t.Fatal(err)
				}
			case agent.ErrStopped:
				go func() { _ = stop() }()
			}
			select {
			case err := <-cause:
				if !errors.Is(err, tc.want) {
					t.Errorf("cause = %v, want %v", err, tc.want)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the handler's context was not cancelled")
			}
		})
	}
}

// TestRun_ArgumentErrorLogged: every error Run returns is in its log, the
// refusal of its arguments too, so that a program may just exit with it
// (as examples/greeter does) and still say why.
func TestRun_ArgumentErrorLogged(t *testing.T) {
	c, err := client.New("http://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	var logs syncbuf.Buffer
	err = agent.Run(context.Background(), c, "Not A Resource", []agent.Handler{greeter(nil)}, agent.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err == nil {
		t.Fatal("Run took a resource name with capitals and spaces")
	}
	if got := logs.String(); !strings.Contains(got, "level=ERROR") || !strings.Contains(got, "agent not started") || !strings.Contains(got, "resource") {
		t.Errorf("Run returned %q and logged:\n%s", err, got)
	}
}

// TestRun_ResultSentWhenBrokerBack: a result that could not be delivered
// because the broker was away (a restart) is sent as soon as the agent's
// heartbeats get through again, not at the end of its back-off: in a
// restart drill the results of a batch (and the queue's slots they hold)
// waited 16s more after the broker was back.
func TestRun_ResultSentWhenBrokerBack(t *testing.T) {
	for _, claim := range []int{0, 4} {
		t.Run(map[int]string{0: "Next", 4: "Claim"}[claim], func(t *testing.T) {
			o := &outage{match: func(r *http.Request) bool {
				return r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/complete")
			}}
			b := startBroker(t, httpapi.Options{}, o.wrap)
			var runs atomic.Int32
			quick := agent.Handle("quick", func(ctx context.Context, p struct{}) (any, error) {
				if runs.Add(1) == 1 {
					o.down.Store(true) // the broker stops as the handler ends
				}
				return map[string]bool{"done": true}, nil
			})
			// A back-off (5s to 10s at first) longer than the heartbeats'
			// interval (2s).
			runAgent(t, b, []agent.Handler{quick}, agent.Options{Claim: claim, Lease: 6 * time.Second,
				MinBackoff: 10 * time.Second, MaxBackoff: 20 * time.Second})
			ids := b.enqueue(t, cmd("quick", `{}`))
			for o.seen.Load() == 0 {
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(100 * time.Millisecond)
			o.down.Store(false)
			back := time.Now()
			c := b.await(t, ids[0])
			if took := time.Since(back); took > 3500*time.Millisecond {
				t.Errorf("the result was delivered %v after the broker was back, with heartbeats getting through every 2s", took.Round(time.Millisecond))
			}
			if c.State != spinbroker.Succeeded || c.Attempts != 1 || runs.Load() != 1 {
				t.Errorf("command %s after %d attempts, %d runs", c.State, c.Attempts, runs.Load())
			}
		})
	}
}

// TestRun_OptionsRefused: an Options field Run cannot take as given (a
// negative duration or claim, a lease the broker refuses) stops Run before
// it starts, naming the field. Before, a negative Grace meant the default
// 30s (the opposite of "none"), a negative Lease the command's own, and a
// lease outside 1s–24h started the agent only for the broker's first answer
// to stop it.
func TestRun_OptionsRefused(t *testing.T) {
	c, err := client.New("http://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		field string
		opts  agent.Options
	}{
		{"Grace", agent.Options{Grace: -time.Second}},
		{"Lease", agent.Options{Lease: -time.Second}},
		{"Lease", agent.Options{Lease: 10 * time.Millisecond}},
		{"Lease", agent.Options{Lease: 48 * time.Hour}},
		{"Wait", agent.Options{Wait: -1}},
		{"CallTimeout", agent.Options{CallTimeout: -1}},
		{"MinBackoff", agent.Options{MinBackoff: -1}},
		{"MaxBackoff", agent.Options{MaxBackoff: -1}},
		{"Claim", agent.Options{Claim: -2}},
	} {
		t.Run(tc.field, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			var logs syncbuf.Buffer
			tc.opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			err := agent.Run(ctx, c, "test", []agent.Handler{greeter(nil)}, tc.opts)
			if err == nil || !strings.Contains(err.Error(), "Options."+tc.field) {
				t.Fatalf("Run with %+v returned %v, want an error naming Options.%s", tc.opts, err, tc.field)
			}
			if ctx.Err() != nil {
				t.Errorf("Run ran until its context ended before refusing: %v", err)
			}
			if got := logs.String(); !strings.Contains(got, "agent not started") {
				t.Errorf("Run returned %q and logged:\n%s", err, got)
			}
		})
	}
	// The zero value, and the nanosecond that asks for no grace, still run.
	for _, o := range []agent.Options{{}, {Grace: time.Nanosecond, Lease: time.Second, Claim: 1}} {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		o.Logger = quietLogger()
		if err := agent.Run(ctx, c, "test", []agent.Handler{greeter(nil)}, o); err != nil {
			t.Errorf("Run with %+v: %v", o, err)
		}
		cancel()
	}
}

// TestRun_NilHandlerFunc: a handler made with a nil function (a field not
// set yet) stops Run before it starts, naming the action. Before, Run took
// it, and every command of that action failed for good with "the handler
// panicked: invalid memory address or nil pointer dereference".
func TestRun_NilHandlerFunc(t *testing.T) {
	c, err := client.New("http://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var fn func(context.Context, struct{}) (any, error)
	h := agent.Handle("create_bridge", fn)
	err = agent.Run(ctx, c, "test", []agent.Handler{greeter(nil), h}, agent.Options{Logger: quietLogger()})
	if err == nil || !strings.Contains(err.Error(), `"create_bridge"`) || !strings.Contains(err.Error(), "nil") {
		t.Fatalf("Run with a nil handler function returned %v, want an error naming the action", err)
	}
	if ctx.Err() != nil {
		t.Errorf("Run ran until its context ended before refusing: %v", err)
	}
	if _, err := h.Call(context.Background(), nil); err == nil || !strings.Contains(err.Error(), `"create_bridge"`) {
		t.Errorf("Call of a nil handler function: %v", err)
	}
}

// TestRun_StartLineNamesActions: the start line names the actions the agent
// serves, sorted, so that whoever rolls out a new action (agents before the
// clients that send it) can see in the log that this agent has it. Before,
// it said only how many there were (actions=2).
func TestRun_StartLineNamesActions(t *testing.T) {
	c, err := client.New("http://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	var logs syncbuf.Buffer
	nop := func(ctx context.Context, p struct{}) (any, error) { return nil, nil }
	hs := []agent.Handler{agent.Handle("delete_bridge", nop), agent.Handle("create_bridge", nop)}
	if err := agent.Run(ctx, c, "network", hs, agent.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))}); err != nil {
		t.Fatal(err)
	}
	start, _, _ := strings.Cut(logs.String(), "\n")
	if !strings.Contains(start, `msg="agent started"`) || !strings.Contains(start, "actions=create_bridge,delete_bridge ") {
		t.Errorf("the start line does not name the actions, sorted:\n%s", start)
	}
}

// objectUnmarshaler decodes itself, from an object too.
type objectUnmarshaler []string

func (o *objectUnmarshaler) UnmarshalJSON([]byte) error { return nil }

// TestRun_ParamsTypeNotObject: parameters are a JSON object, so a handler
// whose P can never be decoded from one (an int, a string, a slice) stops
// Run before it starts, naming the action and the type. Before, Run took it
// and failed every command of that action for good with "invalid
// parameters: want an integer, got a JSON object", which blames the
// parameters for the handler's mistake.
func TestRun_ParamsTypeNotObject(t *testing.T) {
	c, err := client.New("http://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	for name, h := range map[string]agent.Handler{
		"int":     agent.Handle("set_mtu", func(ctx context.Context, p int) (any, error) { return nil, nil }),
		"*string": agent.Handle("set_mtu", func(ctx context.Context, p *string) (any, error) { return nil, nil }),
		"[]int":   agent.Handle("set_mtu", func(ctx context.Context, p []int) (any, error) { return nil, nil }),
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := agent.Run(ctx, c, "test", []agent.Handler{h}, agent.Options{Logger: quietLogger()})
		if err == nil || !strings.Contains(err.Error(), `"set_mtu"`) || !strings.Contains(err.Error(), name) {
			t.Errorf("Run with parameters of type %s returned %v, want an error naming the action and the type", name, err)
		}
		if ctx.Err() != nil {
			t.Errorf("%s: Run ran until its context ended before refusing: %v", name, err)
		}
		cancel()
	}
	// What can come from an object still runs: a struct, a pointer to one,
	// a map, any, a type that decodes itself.
	for _, h := range []agent.Handler{
		agent.Handle("a", func(ctx context.Context, p struct{}) (any, error) { return nil, nil }),
		agent.Handle("b", func(ctx context.Context, p *struct{ A int }) (any, error) { return nil, nil }),
		agent.Handle("c", func(ctx context.Context, p map[string]any) (any, error) { return nil, nil }),
		agent.Handle("d", func(ctx context.Context, p any) (any, error) { return nil, nil }),
		agent.Handle("e", func(ctx context.Context, p objectUnmarshaler) (any, error) { return nil, nil }),
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		if err := agent.Run(ctx, c, "test", []agent.Handler{h}, agent.Options{Logger: quietLogger()}); err != nil {
			t.Errorf("Run with action %s: %v", h.Action(), err)
		}
		cancel()
	}
}

// TestRun_LeaseExpiredAfterHandlerReturned: a lease that runs out while
// the result waits to be delivered (the broker out of reach as the
// handler returns) is said to have run out before the result was
// delivered. The line said "stopping the handler" of a handler that had
// returned, as if it had been too slow.
func TestRun_LeaseExpiredAfterHandlerReturned(t *testing.T) {
	for _, claim := range []int{0, 4} {
		t.Run(map[int]string{0: "Single", 4: "Batch"}[claim], func(t *testing.T) {
			o := &outage{match: func(r *http.Request) bool { return strings.HasPrefix(r.URL.Path, "/commands/") }}
			b := startBroker(t, httpapi.Options{}, o.wrap)
			quick := agent.Handle("quick", func(ctx context.Context, p struct{}) (any, error) {
				// Past the first heartbeat (at 500ms), which extends the
				// lease: it runs out 1.5s after that, before the result
				// has waited the lease's 1.5s that ends the heartbeats.
				time.Sleep(900 * time.Millisecond)
				o.down.Store(true) // the broker goes out of reach as the handler ends
				return map[string]bool{"done": true}, nil
			})
			var logs syncbuf.Buffer
			runAgent(t, b, []agent.Handler{quick}, agent.Options{Claim: claim, Lease: 1500 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			ids := b.enqueue(t, cmd("quick", `{}`))
			awaitLog(t, &logs, "lease expired by this agent's clock")
			o.down.Store(false)
			if c := b.await(t, ids[0]); c.State != spinbroker.Succeeded || c.Attempts != 1 {
				t.Errorf("command %s after %d attempts", c.State, c.Attempts)
			}
			line := grepLine(logs.String(), "lease expired by this agent's clock")
			if !strings.Contains(line, "before the result was delivered") || strings.Contains(line, "stopping the handler") {
				t.Errorf("the lease's expiry after the handler returned is said as %q", line)
			}
		})
	}
}

// TestRun_NonPositiveTimeout: WithTimeout(0) (a limit read from a setting
// left unset) or a negative one would cancel the handler's context as it
// starts, so that every command of the action failed "timed out after 0s",
// for a retry, until its attempts were spent: Run refuses to start with it,
// naming the action and the limit, as it does with a nil handler function.
func TestRun_NonPositiveTimeout(t *testing.T) {
	c, err := client.New("http://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	waits := agent.Handle("resize", func(ctx context.Context, p struct{}) (any, error) {
		<-ctx.Done() // a handler that honours its context, as it should
		return nil, context.Cause(ctx)
	})
	for _, d := range []time.Duration{0, -time.Second} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		h := waits.WithTimeout(d)
		err = agent.Run(ctx, c, "test", []agent.Handler{greeter(nil), h}, agent.Options{Logger: quietLogger()})
		if err == nil || !strings.Contains(err.Error(), `"resize"`) || !strings.Contains(err.Error(), d.String()) {
			t.Errorf("Run with WithTimeout(%s) returned %v, want an error naming the action and the limit", d, err)
		}
		if ctx.Err() != nil {
			t.Errorf("Run with WithTimeout(%s) ran until its context ended before refusing: %v", d, err)
		}
		cancel()
		if _, err := h.Call(context.Background(), nil); err == nil || agent.IsTransient(err) || !strings.Contains(err.Error(), `"resize"`) {
			t.Errorf("Call with WithTimeout(%s) = %v, want the refusal", d, err)
		}
	}
	// A Handler not made by Handle is refused as one, a time limit or not.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err = agent.Run(ctx, c, "test", []agent.Handler{greeter(nil), agent.Handler{}.WithTimeout(time.Minute)}, agent.Options{Logger: quietLogger()})
	if err == nil || !strings.Contains(err.Error(), "made with Handle") {
		t.Errorf("Run with Handler{}.WithTimeout(1m) returned %v, want it refused as not made by Handle", err)
	}
}

// TestRun_UnknownSpinTag: a `spin` tag the agent does not know (a typo,
// "requried", or the API types' "nonempty" and "nonnull", which Decode
// does not apply) stops Run before it starts, naming the action and the
// field. Before, Decode ignored it: a field meant to be required went to
// the handler as its zero value, without a word, on every command.
func TestRun_UnknownSpinTag(t *testing.T) {
	c, err := client.New("http://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	type disk struct {
		Path string `json:"path" spin:"requried"`
	}
	type vm struct {
		Disks []disk `json:"disks"`
	}
	type named struct {
		Name string `json:"name" spin:"nonempty"`
	}
	for field, h := range map[string]agent.Handler{
		"vm.disks[].path": agent.Handle("create_vm", func(ctx context.Context, p struct {
			VM *vm `json:"vm" spin:"required"`
		}) (any, error) {
			return nil, nil
		}),
		"name": agent.Handle("create_vm", func(ctx context.Context, p named) (any, error) { return nil, nil }),
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := agent.Run(ctx, c, "test", []agent.Handler{greeter(nil), h}, agent.Options{Logger: quietLogger()})
		if err == nil || !strings.Contains(err.Error(), `"create_vm"`) || !strings.Contains(err.Error(), field) || !strings.Contains(err.Error(), `spin:"required"`) {
			t.Errorf("Run with an unknown spin tag on %s returned %v, want an error naming the action, the field and spin:\"required\"", field, err)
		}
		if ctx.Err() != nil {
			t.Errorf("%s: Run ran until its context ended before refusing: %v", field, err)
		}
		cancel()
		if _, err := h.Call(context.Background(), json.RawMessage(`{}`)); err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: Call = %v, want the refusal", field, err)
		}
	}
	// The API's own types keep their tags, which the broker applies: a
	// parameter may hold a package to create.
	ctx0, cancel0 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel0()
	submit := agent.Handle("submit", func(ctx context.Context, p struct {
		Pkg spinbroker.NewPackage `json:"package"`
	}) (any, error) {
		return nil, nil
	})
	if err := agent.Run(ctx0, c, "test", []agent.Handler{submit}, agent.Options{Logger: quietLogger()}); err != nil {
		t.Errorf("Run with a spinbroker.NewPackage parameter: %v", err)
	}
	// A recursive type is walked once.
	type node struct {
		Next *node `json:"next"`
		Kids []node
		N    int `spin:"required"`
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := agent.Run(ctx, c, "test", []agent.Handler{agent.Handle("walk", func(ctx context.Context, p node) (any, error) { return nil, nil })}, agent.Options{Logger: quietLogger()}); err != nil {
		t.Errorf("Run with a recursive type: %v", err)
	}
}
