package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
)

// These tests live inside the package so that TestUIPlans can read the
// queries; they use only the exported methods otherwise.

// uiClock is a clock the test moves by hand.
type uiClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *uiClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *uiClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func uiOpen(t *testing.T) (*DB, *uiClock) {
	t.Helper()
	clock := &uiClock{t: time.Date(2026, 3, 4, 5, 6, 30, 0, time.UTC)}
	db, err := Open(context.Background(), filepath.Join(t.TempDir(), "ui.db"),
		Options{Now: clock.Now, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, clock
}

func uiID(n int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012d", n) }

func uiEnqueue(t *testing.T, db *DB, id int, cmds ...spinbroker.NewCommand) *spinbroker.Package {
	t.Helper()
	p, _, err := db.CreatePackage(context.Background(), spinbroker.NewPackage{ID: uiID(id), Commands: cmds, Enqueue: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func uiCmd(id int, resource, action string, deps ...string) spinbroker.NewCommand {
	return spinbroker.NewCommand{ID: uiID(id), Resource: resource, Action: action, Dependencies: deps}
}

func uiFinish(t *testing.T, db *DB, resource string, ok, retry bool) *spinbroker.Command {
	t.Helper()
	ctx := context.Background()
	c, _, err := db.Next(ctx, resource, 0)
	if err != nil || c == nil {
		t.Fatalf("next %s: %v %v", resource, c, err)
	}
	reason := "boom"
	if _, err := db.Complete(ctx, c.ID, spinbroker.Result{Status: &ok, Lease: c.Lease.Token, Retry: retry, Reason: &reason}); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestDB_Completions(t *testing.T) {
	db, clock := uiOpen(t)
	ctx := context.Background()
	since := clock.Now().Truncate(time.Minute)
	uiEnqueue(t, db, 1, uiCmd(101, "r", "a"), uiCmd(102, "r", "b"), uiCmd(103, "r", "c", uiID(102)))
	uiFinish(t, db, "r", true, false)
	clock.Add(2 * time.Minute)
	uiFinish(t, db, "r", false, false) // b fails, c is cancelled by the cascade
	got, err := db.Completions(ctx, since, 5)
	if err != nil {
		t.Fatal(err)
	}
	want := []spinbroker.Counts{{Succeeded: 1}, {}, {Failed: 1, Cancelled: 1}, {}, {}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %v, want %v", got, want)
	}
	// A window that starts later leaves the early minutes out.
	got, err = db.Completions(ctx, since.Add(time.Minute), 2)
	if err != nil || fmt.Sprint(got) != fmt.Sprint([]spinbroker.Counts{{}, {Failed: 1, Cancelled: 1}}) {
		t.Errorf("got %v %v", got, err)
	}
	if _, err := db.Completions(ctx, since, 0); spinbroker.ErrorCode(err) != spinbroker.EINVALID {
		t.Errorf("0 minutes: %v", err)
	}
}

func TestDB_QueueCommandsAndHead(t *testing.T) {
	db, clock := uiOpen(t)
	ctx := context.Background()
	uiEnqueue(t, db, 1, uiCmd(100, "gate", "g"))
	var cmds []spinbroker.NewCommand
	for i := 1; i <= 7; i++ {
		c := uiCmd(100+i, "r", fmt.Sprintf("c%d", i))
		if i <= 2 {
			c.Dependencies = []string{uiID(100)} // blocked at the head
		}
		cmds = append(cmds, c)
	}
	uiEnqueue(t, db, 2, cmds...)

	page1, err := db.QueueCommands(ctx, "r", 0, 4)
	if err != nil {
		t.Fatal(err)
	}
	page2, err := db.QueueCommands(ctx, "r", *page1[3].Seq, 4)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range append(page1, page2...) {
		names = append(names, c.Action)
	}
	if got := strings.Join(names, " "); got != "c1 c2 c3 c4 c5 c6 c7" {
		t.Errorf("pages: %s", got)
	}
	if len(page1[0].Dependencies) != 1 || page1[0].Dependencies[0] != uiID(100) {
		t.Errorf("dependencies not loaded: %v", page1[0].Dependencies)
	}

	// The head of line is the first ready command, past the blocked ones.
	head, backoff, err := db.QueueHead(ctx, "r")
	if err != nil || head == nil || head.Action != "c3" || !backoff.IsZero() {
		t.Fatalf("head %v, back-off %v, %v", head, backoff, err)
	}
	// Failed with a retry, it waits out a back-off in place and stays the
	// head.
	uiFinish(t, db, "r", false, true)
	head, backoff, err = db.QueueHead(ctx, "r")
	if err != nil || head == nil || head.Action != "c3" || !backoff.Equal(clock.Now().Add(time.Second)) {
		t.Fatalf("head %v, back-off %v, %v", head, backoff, err)
	}
	clock.Add(2 * time.Second)
	if _, backoff, _ = db.QueueHead(ctx, "r"); !backoff.IsZero() {
		t.Errorf("back-off %v after it ended", backoff)
	}
	if head, _, err := db.QueueHead(ctx, "empty"); head != nil || err != nil {
		t.Errorf("empty queue: %v %v", head, err)
	}
	if _, err := db.QueueCommands(ctx, "NOT OK", 0, 1); spinbroker.ErrorCode(err) != spinbroker.EINVALID {
		t.Errorf("bad name: %v", err)
	}
}

func TestDB_CommandsByIDAndDependents(t *testing.T) {
	db, _ := uiOpen(t)
	ctx := context.Background()
	uiEnqueue(t, db, 1, uiCmd(101, "r", "a"), uiCmd(102, "r", "b", uiID(101)), uiCmd(103, "s", "c", uiID(101)))
	uiEnqueue(t, db, 2, uiCmd(201, "r", "d", uiID(101)))
	got, err := db.CommandsByID(ctx, []string{uiID(101), uiID(103), uiID(999)})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[uiID(101)].State != spinbroker.Ready || got[uiID(103)].State != spinbroker.Blocked {
		t.Errorf("got %v", got)
	}
	if none, err := db.CommandsByID(ctx, nil); err != nil || len(none) != 0 {
		t.Errorf("no ids: %v %v", none, err)
	}
	deps, err := db.Dependents(ctx, uiID(101), 10)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range deps {
		names = append(names, c.Action)
	}
	if strings.Join(names, " ") != "b c d" {
		t.Errorf("dependents: %v", names)
	}
	if deps, _ := db.Dependents(ctx, uiID(101), 2); len(deps) != 2 {
		t.Errorf("limit: %d", len(deps))
	}
}

func TestDB_Search(t *testing.T) {
	db, _ := uiOpen(t)
	ctx := context.Background()
	uiEnqueue(t, db, 1, uiCmd(101, "r", "a"))
	uiEnqueue(t, db, 2, uiCmd(201, "r", "b"))
	for _, tt := range []struct {
		q          string
		pkgs, cmds int
	}{
		{uiID(1), 1, 0},
		{strings.ToUpper(uiID(201)), 0, 1},
		{"00000000-0000-4000-8000-0000000000", 2, 0},
		{"00000000-0000-4000-8000-000000000", 2, 2},
		{"  " + uiID(2) + "  ", 1, 0},
		{"ffff", 0, 0},
		{"", 0, 0},
		{"' OR 1=1 --", 0, 0},
		{"%", 0, 0},
		{strings.Repeat("0", 40), 0, 0},
	} {
		pkgs, cmds, err := db.Search(ctx, tt.q, 10)
		if err != nil || len(pkgs) != tt.pkgs || len(cmds) != tt.cmds {
			t.Errorf("Search(%q): %d packages, %d commands, %v; want %d, %d", tt.q, len(pkgs), len(cmds), err, tt.pkgs, tt.cmds)
		}
	}
	if pkgs, _, _ := db.Search(ctx, "0", 1); len(pkgs) != 1 {
		t.Errorf("limit: %d", len(pkgs))
	}
}

// TestDB_PackagePage: a package's page reads the package, its counts and
// causer, and only the commands in its window, with their dependencies,
// equal to the same commands of the whole package's read but for their
// parameters and outputs, left out (nil); a window past
// the end is empty, one of no rows reads none, and bad arguments are
// refused.
func TestDB_PackagePage(t *testing.T) {
	db, _ := uiOpen(t)
	ctx := context.Background()
	uiEnqueue(t, db, 1, uiCmd(101, "ext", "e"))
	var cmds []spinbroker.NewCommand
	for i := range 7 {
		c := uiCmd(200+i, "r", fmt.Sprintf("c%d", i))
		switch i {
		case 2:
			c.Dependencies = []string{uiID(201), uiID(101)} // in order given, not by id
		case 4:
			c.Dependencies = []string{uiID(203)}
		case 6:
			c.Dependencies = []string{uiID(205), uiID(200)}
		}
		cmds = append(cmds, c)
	}
	uiEnqueue(t, db, 2, cmds...)
	uiFinish(t, db, "r", false, false) // c0 fails, c6 is cancelled
	whole, err := db.Package(ctx, uiID(2))
	if err != nil {
		t.Fatal(err)
	}
	if whole.Causer == nil || *whole.Causer != uiID(200) {
		t.Fatalf("causer %v", whole.Causer)
	}
	for _, w := range []struct{ from, limit int }{{0, 3}, {3, 3}, {6, 3}, {0, 7}, {0, 100}, {7, 3}, {1000, 3}, {2, 0}} {
		p, err := db.PackagePage(ctx, uiID(2), w.from, w.limit)
		if err != nil {
			t.Fatalf("window %v: %v", w, err)
		}
		want := *whole
		want.Commands = slices.Clone(whole.Commands[min(w.from, 7):min(w.from+w.limit, 7)])
		for i := range want.Commands {
			want.Commands[i].Parameters, want.Commands[i].Output = nil, nil
		}
		if !reflect.DeepEqual(*p, want) {
			got, _ := json.Marshal(p)
			exp, _ := json.Marshal(want)
			t.Errorf("window %v:\n got %s\nwant %s", w, got, exp)
		}
	}
	for _, w := range []struct{ from, limit int }{{-1, 3}, {0, -1}} {
		if _, err := db.PackagePage(ctx, uiID(2), w.from, w.limit); spinbroker.ErrorCode(err) != spinbroker.EINVALID {
			t.Errorf("window %v: %v, want invalid_request", w, err)
		}
	}
	if _, err := db.PackagePage(ctx, uiID(3), 0, 3); spinbroker.ErrorCode(err) != spinbroker.ENOTFOUND {
		t.Errorf("no such package: %v", err)
	}
}

// TestDB_SearchQueues: queues by name prefix, in name order, up to the
// limit, with their counts; a prefix no name can start with finds none.
func TestDB_SearchQueues(t *testing.T) {
	db, _ := uiOpen(t)
	ctx := context.Background()
	uiEnqueue(t, db, 1, uiCmd(101, "net-b", "a"), uiCmd(102, "net-a", "b"), uiCmd(103, "net_c", "c"), uiCmd(104, "nfs", "d"), uiCmd(105, "ne", "e"))
	for _, tt := range []struct {
		q    string
		want string
	}{
		{"net", "net-a net-b net_c"},
		{" NET-", "net-a net-b"},
		{"n", "ne net-a net-b"}, // the limit
		{"net-a", "net-a"},
		{"net-a-", ""},
		{"", ""},
		{"n%", ""},
		{"ne~", ""},
		{strings.Repeat("n", 65), ""},
	} {
		qs, err := db.SearchQueues(ctx, tt.q, 3)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, q := range qs {
			names = append(names, q.Resource)
		}
		if got := strings.Join(names, " "); got != tt.want {
			t.Errorf("SearchQueues(%q): %q, want %q", tt.q, got, tt.want)
		}
	}
	qs, err := db.SearchQueues(ctx, "net-a", 3)
	if err != nil || len(qs) != 1 || qs[0].Counts.Ready != 1 || qs[0].Concurrency != spinbroker.DefaultConcurrency {
		t.Errorf("net-a: %+v %v", qs, err)
	}
}

// TestDB_BusiestQueues: the queues with the most commands, a paused one
// first among equals, then by name, listed by name, and how many queues
// there are.
func TestDB_BusiestQueues(t *testing.T) {
	db, _ := uiOpen(t)
	ctx := context.Background()
	uiEnqueue(t, db, 1, uiCmd(101, "c", "a"), uiCmd(102, "c", "b"), uiCmd(103, "a", "c"), uiCmd(104, "d", "d"), uiCmd(105, "d", "e"), uiCmd(106, "d", "f"))
	for _, r := range []string{"z", "y", "b"} { // no commands, settings
		if _, err := db.SetQueue(ctx, r, spinbroker.QueueSettings{Concurrency: new(2)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.SetQueue(ctx, "z", spinbroker.QueueSettings{Paused: new(true)}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		limit int
		want  string
	}{
		{1, "d"},
		{2, "c d"},
		{3, "a c d"},
		{4, "a c d z"}, // paused first among the empty
		{5, "a b c d z"},
		{10, "a b c d y z"},
	} {
		qs, total, err := db.BusiestQueues(ctx, tt.limit)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, q := range qs {
			names = append(names, q.Resource)
		}
		if got := strings.Join(names, " "); got != tt.want || total != 6 {
			t.Errorf("BusiestQueues(%d): %q of %d, want %q of 6", tt.limit, got, total, tt.want)
		}
		if len(qs) > 0 && qs[len(qs)-1].Resource == "d" && qs[len(qs)-1].Counts.Ready != 3 {
			t.Errorf("d: %+v", qs[len(qs)-1])
		}
	}
}

// TestDB_DashboardReadsLeaveValuesOut: the dashboard's reads of commands
// leave out their parameters and outputs (nil), which may be near 1 MiB
// each and which only a command's own page shows, and read every other
// field as the API's reads do; those (Command, Package, Queue) keep them.
func TestDB_DashboardReadsLeaveValuesOut(t *testing.T) {
	db, _ := uiOpen(t)
	ctx := context.Background()
	params := func(i int) json.RawMessage {
		return json.RawMessage(fmt.Sprintf(`{"i": %d, "blob": "%s"}`, i, strings.Repeat("x", 1000)))
	}
	withParams := func(c spinbroker.NewCommand, i int) spinbroker.NewCommand {
		c.Parameters, c.Key = params(i), fmt.Sprintf("k%d", i)
		return c
	}
	// 201 succeeds with an output; 203 waits for it in a back-off, after a
	// failure with a reason; 204 is blocked behind 203.
	uiEnqueue(t, db, 1, withParams(uiCmd(201, "done", "a"), 1))
	first, _, err := db.Next(ctx, "done", 0)
	if err != nil || first == nil {
		t.Fatalf("next: %v %v", first, err)
	}
	ok, output := true, json.RawMessage(`{"out": "`+strings.Repeat("y", 1000)+`"}`)
	if _, err := db.Complete(ctx, first.ID, spinbroker.Result{Status: &ok, Lease: first.Lease.Token, Output: output}); err != nil {
		t.Fatal(err)
	}
	uiEnqueue(t, db, 2, withParams(uiCmd(203, "r", "b", uiID(201)), 3), withParams(uiCmd(204, "r", "c", uiID(203)), 4))
	uiFinish(t, db, "r", false, true)

	full := map[string]spinbroker.Command{}
	for _, id := range []int{201, 203, 204} {
		c, err := db.Command(ctx, uiID(id))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(c.Parameters, []byte(strings.Repeat("x", 1000))) {
			t.Errorf("Command %d: parameters %.40s", id, c.Parameters)
		}
		full[c.ID] = *c
	}
	if !bytes.Contains(full[uiID(201)].Output, []byte(strings.Repeat("y", 1000))) {
		t.Errorf("Command: output %.40s", full[uiID(201)].Output)
	}
	// light is what a dashboard's read must return for c: c without its
	// parameters and output, and without its dependencies unless deps.
	check := func(read string, got spinbroker.Command, deps bool) {
		t.Helper()
		want := full[got.ID]
		want.Parameters, want.Output = nil, nil
		if !deps {
			want.Dependencies = []string{}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got\n%+v\nwant\n%+v", read, got, want)
		}
	}
	p, err := db.PackagePage(ctx, uiID(2), 0, 10)
	if err != nil || len(p.Commands) != 2 {
		t.Fatalf("PackagePage: %v %v", p, err)
	}
	for _, c := range p.Commands {
		check("PackagePage", c, true)
	}
	q, err := db.QueuePage(ctx, "r", 0, 10)
	if err != nil || len(q.Commands) != 2 {
		t.Fatalf("QueuePage: %v %v", q, err)
	}
	for _, c := range q.Commands {
		check("QueuePage", c, true)
	}
	cmds, err := db.QueueCommands(ctx, "r", 0, 10)
	if err != nil || len(cmds) != 2 {
		t.Fatalf("QueueCommands: %v %v", cmds, err)
	}
	for _, c := range cmds {
		check("QueueCommands", c, true)
	}
	head, _, err := db.QueueHead(ctx, "r")
	if err != nil || head == nil || head.ID != uiID(203) {
		t.Fatalf("QueueHead: %v %v", head, err)
	}
	check("QueueHead", *head, true)
	byID, err := db.CommandsByID(ctx, []string{uiID(201), uiID(203), uiID(204)})
	if err != nil || len(byID) != 3 {
		t.Fatalf("CommandsByID: %v %v", byID, err)
	}
	for _, c := range byID {
		check("CommandsByID", c, false)
	}
	dependents, err := db.Dependents(ctx, uiID(203), 10)
	if err != nil || len(dependents) != 1 {
		t.Fatalf("Dependents: %v %v", dependents, err)
	}
	check("Dependents", dependents[0], false)
	_, found, err := db.Search(ctx, uiID(201)[:20], 10)
	if err != nil || len(found) != 3 {
		t.Fatalf("Search: %v %v", found, err)
	}
	for _, c := range found {
		check("Search", c, false)
	}

	// The API's reads keep them.
	whole, err := db.Package(ctx, uiID(2))
	if err != nil || len(whole.Commands) != 2 {
		t.Fatalf("Package: %v %v", whole, err)
	}
	for _, c := range whole.Commands {
		if !reflect.DeepEqual(c, full[c.ID]) {
			t.Errorf("Package: got\n%+v\nwant\n%+v", c, full[c.ID])
		}
	}
	api, err := db.Queue(ctx, "r")
	if err != nil || len(api.Commands) != 2 {
		t.Fatalf("Queue: %v %v", api, err)
	}
	for _, c := range api.Commands {
		if !reflect.DeepEqual(c, full[c.ID]) {
			t.Errorf("Queue: got\n%+v\nwant\n%+v", c, full[c.ID])
		}
	}
	// QueuePage is Queue but for its commands.
	api.Commands, q.Commands = nil, nil
	if !reflect.DeepEqual(api, q) {
		t.Errorf("QueuePage: got\n%+v\nwant\n%+v", q, api)
	}
}

// TestDB_QueuePage: a queue's page lists the commands after a sequence
// number, none when asked for none, and refuses a negative start or size.
func TestDB_QueuePage(t *testing.T) {
	db, _ := uiOpen(t)
	ctx := context.Background()
	uiEnqueue(t, db, 1, uiCmd(101, "r", "a"), uiCmd(102, "r", "b"), uiCmd(103, "r", "c"))
	q, err := db.QueuePage(ctx, "r", 0, 0)
	if err != nil || q.Counts.Ready != 3 || q.Commands == nil || len(q.Commands) != 0 {
		t.Fatalf("no commands: %+v %v", q, err)
	}
	all, err := db.QueuePage(ctx, "r", 0, 10)
	if err != nil || len(all.Commands) != 3 {
		t.Fatalf("all: %+v %v", all, err)
	}
	later, err := db.QueuePage(ctx, "r", *all.Commands[0].Seq, 1)
	if err != nil || len(later.Commands) != 1 || later.Commands[0].ID != uiID(102) {
		t.Fatalf("after the first, one: %+v %v", later, err)
	}
	if q, err := db.QueuePage(ctx, "never-used", 0, 10); err != nil || q.Resource != "never-used" || len(q.Commands) != 0 {
		t.Errorf("a queue never used: %+v %v", q, err)
	}
	for _, bad := range [][2]int{{-1, 1}, {0, -1}} {
		if _, err := db.QueuePage(ctx, "r", int64(bad[0]), bad[1]); spinbroker.ErrorCode(err) != spinbroker.EINVALID {
			t.Errorf("QueuePage(%d, %d): %v", bad[0], bad[1], err)
		}
	}
	if _, err := db.QueuePage(ctx, "NOT OK", 0, 1); spinbroker.ErrorCode(err) != spinbroker.EINVALID {
		t.Errorf("bad name: %v", err)
	}
}
