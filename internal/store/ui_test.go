package store

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"reflect"
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
// equal to the same commands of the whole package's read; a window past
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
		want.Commands = whole.Commands[min(w.from, 7):min(w.from+w.limit, 7)]
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
