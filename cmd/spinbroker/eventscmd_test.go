package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/client"
	"github.com/spin-broker/spinbroker/internal/brokertest"
	"github.com/spin-broker/spinbroker/internal/httpapi"
	"github.com/spin-broker/spinbroker/internal/syncbuf"
)

// eventsRun is a 'spinbroker events' running in the background, its stdout
// read line by line as it comes.
type eventsRun struct {
	t      *testing.T
	cmd    *exec.Cmd
	lines  chan string // stdout, a line at a time; closed at its end
	stderr syncbuf.Buffer
	done   chan struct{}
	err    error

	mu   sync.Mutex
	seen []string // the lines taken from lines so far
}

// startEvents starts 'spinbroker events args... --url url'.
func startEvents(t *testing.T, url string, args ...string) *eventsRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	r := &eventsRun{t: t, lines: make(chan string, 1000), done: make(chan struct{})}
	r.cmd = command(ctx, nil, append(append([]string{"events"}, args...), "--url", url)...)
	r.cmd.Stderr = &r.stderr
	out, err := r.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	read := make(chan struct{})
	go func() {
		defer close(read)
		defer close(r.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			r.lines <- sc.Text()
		}
	}()
	go func() {
		<-read // Wait closes the pipe: read it all first
		r.err = r.cmd.Wait()
		close(r.done)
	}()
	t.Cleanup(func() {
		select {
		case <-r.done:
		default:
			r.cmd.Process.Kill()
			<-r.done
		}
	})
	return r
}

// waitFor returns the first line that matches, read already or still to
// come, failing the test if none comes within d. Lines read before count:
// the broker sends a package's events and its commands' from different
// places, in no set order between them.
func (r *eventsRun) waitFor(d time.Duration, what string, match func(line string) bool) string {
	r.t.Helper()
	for _, line := range r.taken() {
		if match(line) {
			return line
		}
	}
	deadline := time.After(d)
	for {
		select {
		case line, ok := <-r.lines:
			if !ok {
				<-r.done
				r.t.Fatalf("events ended (%v) before %s:\n%s\nstderr:\n%s", r.err, what, strings.Join(r.taken(), "\n"), r.stderr.String())
			}
			r.mu.Lock()
			r.seen = append(r.seen, line)
			r.mu.Unlock()
			if match(line) {
				return line
			}
		case <-deadline:
			r.t.Fatalf("no %s within %s:\n%s\nstderr:\n%s", what, d, strings.Join(r.taken(), "\n"), r.stderr.String())
		}
	}
}

// waitStderr waits until stderr holds want.
func (r *eventsRun) waitStderr(d time.Duration, want string) {
	r.t.Helper()
	for deadline := time.Now().Add(d); !strings.Contains(r.stderr.String(), want); {
		if time.Now().After(deadline) {
			r.t.Fatalf("stderr does not say %q within %s:\n%s", want, d, r.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// taken returns the lines waitFor has read.
func (r *eventsRun) taken() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.seen)
}

// header waits for the table's header, which events prints once the
// broker has answered the subscription: every change from then on is sent.
func (r *eventsRun) header() {
	r.t.Helper()
	r.waitFor(30*time.Second, "header", func(l string) bool { return strings.HasPrefix(l, "TIME ") })
}

// exited waits for events to exit by itself and returns how.
func (r *eventsRun) exited(within time.Duration) result {
	r.t.Helper()
	select {
	case <-r.done:
	case <-time.After(within):
		r.t.Fatalf("events did not exit within %s:\n%s", within, r.stderr.String())
	}
	res := result{stderr: r.stderr.String()}
	for l := range r.lines {
		res.stdout += l + "\n"
	}
	var ee *exec.ExitError
	if errors.As(r.err, &ee) {
		res.code = ee.ExitCode()
	} else if r.err != nil {
		r.t.Fatal(r.err)
	}
	return res
}

// interrupt sends SIGINT, as Ctrl-C does, and returns how events exited.
func (r *eventsRun) interrupt() result {
	r.t.Helper()
	if err := r.cmd.Process.Signal(os.Interrupt); err != nil {
		r.t.Fatal(err)
	}
	return r.exited(15 * time.Second)
}

// cells splits a table line into its columns (no cell but CHANGE has a
// space).
func cells(line string) (kind, pkg, cmd, resource, attempts, change string) {
	f := strings.Fields(line)
	if len(f) < 8 {
		return
	}
	return f[2], f[3], f[4], f[5], f[6], strings.Join(f[7:], " ")
}

// isLine returns a match for a table line of that kind, package (or "")
// and whose change is change.
func isLine(kind, pkg, change string) func(string) bool {
	return func(l string) bool {
		k, p, _, _, _, c := cells(l)
		return k == kind && (pkg == "" || p == pkg) && c == change
	}
}

// leaseNext takes the next command of resource, failing the test if none.
func leaseNext(t *testing.T, cl *client.Client, resource string) *spinbroker.Command {
	t.Helper()
	c, err := cl.Next(context.Background(), resource, 5*time.Second, 0)
	if err != nil || c == nil {
		t.Fatalf("next %s: %v, %v", resource, c, err)
	}
	return c
}

func complete(t *testing.T, cl *client.Client, c *spinbroker.Command) {
	t.Helper()
	ok := true
	if _, err := cl.Complete(context.Background(), c.ID, spinbroker.Result{Status: &ok, Lease: c.Lease.Token}); err != nil {
		t.Fatal(err)
	}
}

func createPackage(t *testing.T, cl *client.Client, resources ...string) *spinbroker.Package {
	t.Helper()
	in := spinbroker.NewPackage{Enqueue: true}
	for _, r := range resources {
		in.Commands = append(in.Commands, spinbroker.NewCommand{Resource: r, Action: "act"})
	}
	p, err := cl.CreatePackage(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestEvents_Table: a line for each step of a command's life, the
// package's and the queue's, a deleted package said so; Ctrl-C ends it
// with 130 and no message.
func TestEvents_Table(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	ev := startEvents(t, b.url)
	ev.header()
	p := createPackage(t, b.cl, "storage")
	const d = 30 * time.Second
	line := ev.waitFor(d, "staged → ready", isLine("command", p.ID, "staged → ready"))
	if _, _, cmd, res, att, _ := cells(line); cmd != p.Commands[0].ID || res != "storage" || att != "0" {
		t.Errorf("command line %q: want command %s, resource storage, attempts 0", line, p.Commands[0].ID)
	}
	c := leaseNext(t, b.cl, "storage")
	ev.waitFor(d, "ready → leased", isLine("command", p.ID, "ready → leased"))
	complete(t, b.cl, c)
	ev.waitFor(d, "leased → succeeded", isLine("command", p.ID, "leased → succeeded"))
	ev.waitFor(d, "the package succeeded", isLine("package", p.ID, "succeeded, 1/1 done"))
	if err := b.cl.DeletePackage(context.Background(), p.ID); err != nil {
		t.Fatal(err)
	}
	ev.waitFor(d, "the package deleted", isLine("package", p.ID, "deleted"))
	if !slices.ContainsFunc(ev.taken(), func(l string) bool {
		k, _, _, res, _, _ := cells(l)
		return k == "queue" && res == "storage"
	}) {
		t.Errorf("no queue line for storage:\n%s", strings.Join(ev.taken(), "\n"))
	}
	// Aligned: every change starts under the header's CHANGE.
	lines := ev.taken()
	at := strings.Index(lines[0], "CHANGE")
	for _, l := range lines[1:] {
		if len(l) <= at || l[at-1] != ' ' || l[at] == ' ' {
			t.Errorf("line %q: its change does not start under CHANGE of %q", l, lines[0])
		}
	}
	r := ev.interrupt()
	if r.code != 130 || r.stderr != "" {
		t.Errorf("events after SIGINT: %s; want exit 130 and nothing on stderr", r)
	}
}

// TestEvents_JSON: -o json is JSON Lines, each the kind and the broker's
// data, for jq.
func TestEvents_JSON(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	ev := startEvents(t, b.url, "-o", "json")
	type line struct {
		Received time.Time       `json:"received"`
		Kind     string          `json:"kind"`
		Data     json.RawMessage `json:"data"`
	}
	parse := func(s string) line {
		var l line
		dec := json.NewDecoder(strings.NewReader(s))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&l); err != nil {
			t.Fatalf("line %q: %v", s, err)
		}
		return l
	}
	// JSON has no header to say that the stream is open: until a change
	// reaches it, make another.
	for opened := false; !opened; {
		createPackage(t, b.cl, "storage")
		select {
		case s := <-ev.lines:
			ev.mu.Lock()
			ev.seen = append(ev.seen, s)
			ev.mu.Unlock()
			opened = true
		case <-time.After(time.Second):
		}
	}
	c := leaseNext(t, b.cl, "storage")
	complete(t, b.cl, c)
	var cmd spinbroker.Change
	ev.waitFor(30*time.Second, "a succeeded command", func(s string) bool {
		l := parse(s)
		if l.Kind != "command" {
			return false
		}
		dec := json.NewDecoder(strings.NewReader(string(l.Data)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&cmd); err != nil {
			t.Fatalf("command data %s: %v", l.Data, err)
		}
		return cmd.To == spinbroker.Succeeded && cmd.CommandID == c.ID
	})
	if cmd.From != spinbroker.Leased || cmd.Resource != "storage" || cmd.Attempts != 1 {
		t.Errorf("command event %+v, want %s leased → succeeded on storage, attempts 1", cmd, c.ID)
	}
	ev.waitFor(30*time.Second, "a package event", func(s string) bool { return parse(s).Kind == "package" })
	kinds := map[string]bool{}
	for _, s := range ev.taken() {
		l := parse(s)
		kinds[l.Kind] = true
		if time.Since(l.Received) > time.Minute || l.Received.Location() != time.UTC {
			t.Errorf("line %q: received is not a time of now in UTC", s)
		}
	}
	if !kinds["command"] || !kinds["package"] {
		t.Errorf("kinds seen %v, want command and package", kinds)
	}
	if r := ev.interrupt(); r.code != 130 || r.stderr != "" {
		t.Errorf("events -o json after SIGINT: %s", r)
	}
}

// TestEvents_Filters: --resource, --kind and --package keep what they say
// and nothing else. A witness without filters says when every event has
// been sent; the last change then reaches every stream after all of them.
func TestEvents_Filters(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	w := startEvents(t, b.url)
	byRes := startEvents(t, b.url, "--resource", "storage")
	byKind := startEvents(t, b.url, "--kind", "command")
	w.header()
	byRes.header()
	byKind.header()
	p2 := createPackage(t, b.cl, "emulation")
	byPkg := startEvents(t, b.url, "--package", strings.ToUpper(p2.ID)) // the broker's filter, not the CLI's
	byPkg.header()
	p2c := leaseNext(t, b.cl, "emulation") // a change of p2 that byPkg sees
	p1 := createPackage(t, b.cl, "storage")
	const d = 30 * time.Second
	for _, want := range []func(string) bool{
		isLine("package", p2.ID, "running, 0/1 done"),
		isLine("package", p1.ID, "queued, 0/1 done"),
		func(l string) bool { k, _, _, r, _, _ := cells(l); return k == "queue" && r == "emulation" },
		func(l string) bool { k, _, _, r, _, _ := cells(l); return k == "queue" && r == "storage" },
	} {
		w.waitFor(d, "the witness's events", want)
	}
	// The last change, after all of the above: a command of p1 leased.
	complete(t, b.cl, p2c)
	c := leaseNext(t, b.cl, "storage")
	last := isLine("command", p1.ID, "ready → leased")
	byRes.waitFor(d, "the last change", last)
	byKind.waitFor(d, "the last change", last)
	// For byPkg, p2 deleted: after all of p1's changes.
	complete(t, b.cl, c)
	if err := b.cl.DeletePackage(context.Background(), p2.ID); err != nil {
		t.Fatal(err)
	}
	byPkg.waitFor(d, "p2 deleted", isLine("package", p2.ID, "deleted"))

	for _, l := range byRes.taken()[1:] {
		if k, _, _, r, _, _ := cells(l); k != "package" && r != "storage" {
			t.Errorf("--resource storage printed %q", l)
		}
	}
	if !slices.ContainsFunc(byRes.taken(), isLine("package", p2.ID, "running, 0/1 done")) {
		t.Errorf("--resource left out a package event:\n%s", strings.Join(byRes.taken(), "\n"))
	}
	kinds := map[string]int{}
	for _, l := range byKind.taken()[1:] {
		k, _, _, _, _, _ := cells(l)
		kinds[k]++
	}
	if len(kinds) != 1 || kinds["command"] < 3 {
		t.Errorf("--kind command printed kinds %v:\n%s", kinds, strings.Join(byKind.taken(), "\n"))
	}
	for _, l := range byPkg.taken()[1:] {
		if _, p, _, _, _, _ := cells(l); p != p2.ID {
			t.Errorf("--package %s printed %q", p2.ID, l)
		}
	}
	if !slices.ContainsFunc(byPkg.taken(), isLine("command", p2.ID, "leased → succeeded")) {
		t.Errorf("--package %s left out its command:\n%s", p2.ID, strings.Join(byPkg.taken(), "\n"))
	}
}

// TestEvents_BrokerRestarts: a restart is said on stderr, once, and
// followed through; what happens after it is printed.
func TestEvents_BrokerRestarts(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "broker.db")
	addr := loopbackAddr(t)
	sp := startBroker(t, db, "--addr", addr)
	cl, err := client.New(sp.url)
	if err != nil {
		t.Fatal(err)
	}
	ev := startEvents(t, sp.url)
	ev.header()
	p := createPackage(t, cl, "storage")
	const d = 30 * time.Second
	ev.waitFor(d, "a line before the restart", isLine("command", p.ID, "staged → ready"))
	if err := sp.stop(t); err != nil {
		t.Fatalf("serve exited with %v:\n%s", err, sp.logs)
	}
	ev.waitStderr(d, "reconnecting…")
	startBroker(t, db, "--addr", addr)
	ev.waitStderr(d, "connected again")
	c := leaseNext(t, cl, "storage")
	complete(t, cl, c)
	ev.waitFor(d, "a line after the restart", isLine("command", p.ID, "leased → succeeded"))
	r := ev.interrupt()
	if r.code != 130 {
		t.Errorf("events after SIGINT: %s", r)
	}
	if n := strings.Count(r.stderr, "\n"); n != 2 || !strings.Contains(r.stderr, "spinbroker: the event stream dropped (the broker ended it") {
		t.Errorf("stderr across one restart, want two lines:\n%s", r.stderr)
	}
}

// TestEvents_TokenRevoked: a stream that the broker ends because its token
// was revoked is not said to be a broker stopping or restarting: events
// exits 1 with the broker's refusal alone, as a command started then would.
func TestEvents_TokenRevoked(t *testing.T) {
	t.Parallel()
	b := serveBroker(t, brokertest.WithAPI(httpapi.Options{Auth: true, TokenCacheTTL: 100 * time.Millisecond}))
	db := b.db
	tok, viewer, err := db.CreateToken(context.Background(), spinbroker.RoleViewer, "", "watcher")
	if err != nil {
		t.Fatal(err)
	}
	ev := startEvents(t, b.url, "--token", viewer)
	ev.header()
	if _, _, err := db.RevokeToken(context.Background(), tok.ID); err != nil {
		t.Fatal(err)
	}
	r := ev.exited(30 * time.Second)
	if r.code != 1 || !strings.HasPrefix(r.stderr, "spinbroker: the token was revoked at ") ||
		strings.Contains(r.stderr, "stopping or restarting") || strings.Contains(r.stderr, "was refused") || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("events whose token was revoked: %s", r)
	}
}

// TestEvents_BrokerGone: a broker away for longer than --reconnect-for is
// given up on, exit 4; one never reached fails at once, exit 4.
func TestEvents_BrokerGone(t *testing.T) {
	t.Parallel()
	sp := startBroker(t, filepath.Join(t.TempDir(), "broker.db"))
	ev := startEvents(t, sp.url, "--reconnect-for", "1s")
	ev.header()
	if err := sp.stop(t); err != nil {
		t.Fatalf("serve exited with %v:\n%s", err, sp.logs)
	}
	r := ev.exited(30 * time.Second)
	if r.code != exitTryAgain || !strings.Contains(r.stderr, "(--reconnect-for): cannot reach the broker") {
		t.Errorf("events after the broker stopped for good: %s", r)
	}

	r = spin(t, "events", "--url", sp.url) // nothing listens there now
	if r.code != exitTryAgain || !strings.HasPrefix(r.stderr, "spinbroker: cannot reach the broker: ") || r.stdout != "" {
		t.Errorf("events with no broker: %s", r)
	}
}

// TestEvents_Refused: the broker's refusals as other commands say them,
// exit 1; a viewer token is enough.
func TestEvents_Refused(t *testing.T) {
	t.Parallel()
	b := serveBroker(t, brokertest.WithAPI(httpapi.Options{Auth: true}))
	_, viewer, err := b.db.CreateToken(context.Background(), spinbroker.RoleViewer, "", "watcher")
	if err != nil {
		t.Fatal(err)
	}
	ev := startEvents(t, b.url, "--token", viewer)
	ev.header()
	if r := ev.interrupt(); r.code != 130 || r.stderr != "" {
		t.Errorf("events with a viewer token: %s", r)
	}
	if r := b.spin("events"); r.code != 1 || !strings.Contains(r.stderr, "(unauthorized); give --token or set SPINBROKER_TOKEN") {
		t.Errorf("events without a token: %s", r)
	}
	if r := b.spin("events", "--token", viewer, "--package", "nope"); r.code != 1 || r.stderr != "spinbroker: package \"nope\" is not an id (invalid_request)\n" {
		t.Errorf("events --package nope: %s", r)
	}
}

// TestEvents_SilentStream: a stream on which nothing comes, not even the
// broker's keep-alive, is said to have gone silent before events
// reconnects. It was said "cannot reach the broker: client: event
// stream: …", of a broker that had answered. In-process, to shorten the
// client's wait for the keep-alive (45s).
func TestEvents_SilentStream(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		select { // and then nothing
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	var stdout, stderr syncbuf.Buffer
	a := &app{url: srv.URL, output: "table", stdout: &stdout, stderr: &stderr}
	cl, err := a.client()
	if err != nil {
		t.Fatal(err)
	}
	f := &eventFollower{a: a, cl: cl, reconnectFor: time.Minute, table: &eventTable{w: &stdout, resWidth: len("RESOURCE")}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- f.follow(ctx, []client.EventsOption{client.IdleTimeout(300 * time.Millisecond)}) }()
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(stderr.String(), "connected again"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no reconnect after a silent stream within 20s; stderr:\n%s", stderr.String())
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("follow after its context ended: %v", err)
	}
	first, _, _ := strings.Cut(stderr.String(), "\n")
	if want := "spinbroker: the event stream went silent for 300ms (no keep-alive from the broker); reconnecting…"; first != want {
		t.Errorf("stderr after a silent stream:\n%s\nwant its first line to be:\n%s", stderr.String(), want)
	}
}

// TestEvents_PageOnReconnect: a stream that ends and, asked for again, is
// answered by a page (a proxy's login page once its session ran out) is
// given up at once, exit 1, in the words of the other commands (and only
// those: the end was not a restart), rather than asked for again until
// --reconnect-for.
func TestEvents_PageOnReconnect(t *testing.T) {
	t.Parallel()
	var asked atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if asked.Add(1) == 1 {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, ": keep-alive\n\n") // and the stream ends
			return
		}
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, "<html><body>Sign in</body></html>\n")
	}))
	t.Cleanup(srv.Close)
	r := spin(t, "events", "--url", srv.URL)
	if r.code != 1 || asked.Load() != 2 || !strings.HasPrefix(r.stdout, "TIME ") {
		t.Errorf("events answered a page on its reconnect (%d requests): %s", asked.Load(), r)
	}
	wantContains(t, "stderr", r.stderr, "not spin-broker", `answered 200 OK with text/html, not an event stream`, "--url or SPINBROKER_URL")
	// The stream's end is said only once the next try says why it ended:
	// here not a broker stopping, so no word of one.
	if strings.Contains(r.stderr, "stopping or restarting") {
		t.Errorf("stderr says the broker restarted, which it did not:\n%s", r.stderr)
	}
}

// TestEvents_PackageIsACommand: --package given a command's id (what
// 'message add' printed) followed nothing, silently, until Ctrl-C: the
// broker's filter matches no package by it. It is refused, exit 1, naming
// the package the command belongs to. An id that names nothing yet is
// followed (a client may create a package with its own id), with a word on
// stderr that no such package exists so far.
func TestEvents_PackageIsACommand(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	p := createPackage(t, b.cl, "storage")
	cmdID := p.Commands[0].ID
	r := b.spin("events", "--package", cmdID)
	want := "is a command's id (of package " + p.ID + "): spinbroker events --package " + p.ID
	if r.code != 1 || !strings.Contains(r.stderr, want) || r.stdout != "" {
		t.Errorf("events --package with a command's id: %s\nwant exit 1 and stderr with %q", r, want)
	}

	unknown := "01a22249-3f52-7506-bbb5-534b4fea8262"
	ev := startEvents(t, b.url, "--package", unknown)
	ev.header()
	ev.waitStderr(30*time.Second, "no package "+unknown+" (yet)")
	if r := ev.interrupt(); r.code != 130 {
		t.Errorf("events --package of a package still to be made, after SIGINT: %s", r)
	}
}

// TestEvents_ReaderGone: 'spinbroker events | head -1' hung the shell: head
// exits after the header, but events only learnt that its stdout was gone
// when it next wrote, and on a quiet broker, or with filters that keep
// nothing, that is never. It notices the pipe's reader going, and ends as a
// program that wrote to it would (exit 141, SIGPIPE's), without a word.
func TestEvents_ReaderGone(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	for _, args := range [][]string{{"events"}, {"events", "--resource", "quiet", "-o", "json"}} {
		rd, wr, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := command(ctx, nil, append(args, "--url", b.url)...)
		var stderr syncbuf.Buffer
		cmd.Stdout, cmd.Stderr = wr, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		wr.Close() // the child holds its own
		if args[0] == "events" && len(args) == 1 {
			line, err := bufio.NewReader(rd).ReadString('\n')
			if err != nil || !strings.HasPrefix(line, "TIME") {
				t.Fatalf("events' first line %q, %v", line, err)
			}
		} else {
			time.Sleep(500 * time.Millisecond) // the stream is open, nothing comes
		}
		rd.Close() // as head does once it has its line
		start := time.Now()
		err = cmd.Wait()
		late := ctx.Err() != nil
		cancel()
		var ee *exec.ExitError
		if late || !errors.As(err, &ee) || ee.ExitCode() != 141 || stderr.String() != "" {
			t.Errorf("spinbroker %s with its reader gone: %v after %s, stderr %q; want exit 141 at once, quietly",
				strings.Join(args, " "), err, time.Since(start).Round(time.Millisecond), stderr.String())
		}
	}
}
