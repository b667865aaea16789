package store_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/store"
)

func TestDB_CreatePackage(t *testing.T) {
	db, clock := open(t)

	t.Run("EmptyStaging", func(t *testing.T) {
		p, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if p.State != spinbroker.PackageStaging || p.Total != 0 || p.Commands == nil || len(p.Commands) != 0 {
			t.Fatalf("got %s", mustJSON(p))
		}
		if !p.CreatedAt.Equal(clock.Now()) || p.EnqueuedAt != nil || p.FinishedAt != nil {
			t.Fatalf("times: %s", mustJSON(p))
		}
		if _, ok := spinbroker.ParseID(p.ID); !ok {
			t.Fatalf("id %q is not a v4/v7 UUID", p.ID)
		}
	})

	t.Run("StagedCommands", func(t *testing.T) {
		p, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Commands: []spinbroker.NewCommand{
			keyed("a", "storage", "add_volume"), keyed("b", "storage", "create_image", "a"),
		}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if p.State != spinbroker.PackageStaging || p.Counts.Staged != 2 {
			t.Fatalf("got %s", mustJSON(p))
		}
		for _, c := range p.Commands {
			if c.State != spinbroker.Staged || c.Seq != nil || c.EnqueuedAt != nil {
				t.Fatalf("command %s", mustJSON(c))
			}
		}
		if got := p.Commands[1].Dependencies; len(got) != 1 || got[0] != p.Commands[0].ID {
			t.Fatalf("dependencies by key resolve to ids: got %v", got)
		}
		if next(t, db, "storage") != nil {
			t.Fatal("a staged command was delivered")
		}
	})

	t.Run("ClientIDs", func(t *testing.T) {
		pid, cid := "0190c3a4-5a6b-7c8d-9e0f-a1b2c3d4e5f6", "0190C3A4-5A6B-4C8D-9E0F-A1B2C3D4E5F7"
		p, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{ID: pid, Commands: []spinbroker.NewCommand{{ID: cid, Resource: "r", Action: "a"}}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if p.ID != pid || p.Commands[0].ID != strings.ToLower(cid) {
			t.Fatalf("ids: %s %s", p.ID, p.Commands[0].ID)
		}
		_, _, err = db.CreatePackage(ctx, spinbroker.NewPackage{ID: pid}, nil)
		wantCode(t, err, spinbroker.ECONFLICT)
		_, _, err = db.CreatePackage(ctx, spinbroker.NewPackage{Commands: []spinbroker.NewCommand{{ID: cid, Resource: "r", Action: "a"}}}, nil)
		wantCode(t, err, spinbroker.ECONFLICT)
	})

	t.Run("EnqueueInline", func(t *testing.T) {
		p, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{
			keyed("a", "inline", "x"), keyed("b", "inline", "y", "a"),
		}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if p.State != spinbroker.PackageQueued || p.Commands[0].State != spinbroker.Ready || p.Commands[1].State != spinbroker.Blocked {
			t.Fatalf("got %s", mustJSON(p))
		}
		if *p.Commands[1].Seq != *p.Commands[0].Seq+1 {
			t.Fatalf("seqs %d %d", *p.Commands[0].Seq, *p.Commands[1].Seq)
		}
	})

	t.Run("AllOrNothing", func(t *testing.T) {
		before, _ := db.Packages(ctx, spinbroker.PackageFilter{Limit: 1000})
		_, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{
			keyed("a", "atomic", "x"), keyed("b", "atomic", "y", "nope"),
		}}, nil)
		wantCode(t, err, spinbroker.EUNKNOWNDEP)
		after, _ := db.Packages(ctx, spinbroker.PackageFilter{Limit: 1000})
		if len(after.Packages) != len(before.Packages) {
			t.Fatalf("a failed create left a package behind: %d → %d", len(before.Packages), len(after.Packages))
		}
		if q, _ := db.Queue(ctx, "atomic"); q.Counts.Ready != 0 || len(q.Commands) != 0 {
			t.Fatalf("a failed create left commands: %s", mustJSON(q))
		}
	})
}

func TestDB_CreatePackage_Invalid(t *testing.T) {
	db, _ := open(t)
	existing := enqueue(t, db, cmd("r", "a"))
	many := make([]string, spinbroker.MaxDependencies+1)
	for i := range many {
		many[i] = existing.Commands[0].ID
	}
	tests := []struct {
		name string
		in   spinbroker.NewPackage
		code string
	}{
		{"BadPackageID", spinbroker.NewPackage{ID: "nope"}, spinbroker.EINVALID},
		{"V1PackageID", spinbroker.NewPackage{ID: "a8098c1a-f86e-11da-bd1a-00112444be1e"}, spinbroker.EINVALID},
		{"BadCommandID", spinbroker.NewPackage{Commands: []spinbroker.NewCommand{{ID: "x", Resource: "r", Action: "a"}}}, spinbroker.EINVALID},
		{"EmptyResource", spinbroker.NewPackage{Commands: []spinbroker.NewCommand{cmd("", "a")}}, spinbroker.EINVALID},
		{"UpperResource", spinbroker.NewPackage{Commands: []spinbroker.NewCommand{cmd("Storage", "a")}}, spinbroker.EINVALID},
		{"ResourceLeadingDot", spinbroker.NewPackage{Commands: []spinbroker.NewCommand{cmd(".r", "a")}}, spinbroker.EINVALID},
		{"LongResource", spinbroker.NewPackage{Commands: []spinbroker.NewCommand{cmd(strings.Repeat("r", 65), "a")}}, spinbroker.EINVALID},
		{"NULInAction", spinbroker.NewPackage{Commands: []spinbroker.NewCommand{cmd("r", "a\x00b")}}, spinbroker.EINVALID},
		{"ParamsArray", spinbroker.NewPackage{Commands: []spinbroker.NewCommand{{Resource: "r", Action: "a", Parameters: json.RawMessage(`[1]`)}}}, spinbroker.EINVALID},
		{"ParamsNull", spinbroker.NewPackage{Commands: []spinbroker.NewCommand{{Resource: "r", Action: "a", Parameters: json.RawMessage(`null`)}}}, spinbroker.EINVALID},
		{"KeyTooLong", spinbroker.NewPackage{Commands: []spinbroker.NewCommand{keyed(strings.Repeat("k", 129), "r", "a")}}, spinbroker.EINVALID},
		{"KeyLooksLikeID", spinbroker.NewPackage{Commands: []spinbroker.NewCommand{keyed(existing.Commands[0].ID, "r", "a")}}, spinbroker.EINVALID},
		{"KeyControl", spinbroker.NewPackage{Commands: []spinbroker.NewCommand{keyed("a\nb", "r", "a")}}, spinbroker.EINVALID},
		{"DuplicateKey", spinbroker.NewPackage{Commands: []spinbroker.NewCommand{keyed("k", "r", "a"), keyed("k", "r", "b")}}, spinbroker.ECONFLICT},
		{"SelfByKey", spinbroker.NewPackage{Commands: []spinbroker.NewCommand{keyed("k", "r", "a", "k")}}, spinbroker.EINVALID},
		{"SelfByID", spinbroker.NewPackage{Commands: []spinbroker.NewCommand{{ID: "0190c3a4-5a6b-7c8d-9e0f-a1b2c3d4e5aa", Resource: "r", Action: "a", Dependencies: []string{"0190c3a4-5a6b-7c8d-9e0f-a1b2c3d4e5aa"}}}}, spinbroker.EINVALID},
		{"UnknownKey", spinbroker.NewPackage{Commands: []spinbroker.NewCommand{cmd("r", "a", "later")}}, spinbroker.EUNKNOWNDEP},
		{"LaterKey", spinbroker.NewPackage{Commands: []spinbroker.NewCommand{cmd("r", "a", "b"), keyed("b", "r", "b")}}, spinbroker.EUNKNOWNDEP},
		{"UnknownID", spinbroker.NewPackage{Commands: []spinbroker.NewCommand{cmd("r", "a", "0190c3a4-5a6b-7c8d-9e0f-a1b2c3d4e5ff")}}, spinbroker.EUNKNOWNDEP},
		{"EmptyDep", spinbroker.NewPackage{Commands: []spinbroker.NewCommand{cmd("r", "a", "")}}, spinbroker.EINVALID},
		{"TooManyDeps", spinbroker.NewPackage{Commands: []spinbroker.NewCommand{cmd("r", "a", many...)}}, spinbroker.EINVALID},
		{"ZeroAttempts", spinbroker.NewPackage{Commands: []spinbroker.NewCommand{{Resource: "r", Action: "a", MaxAttempts: ptr(0)}}}, spinbroker.EINVALID},
		{"HugeAttempts", spinbroker.NewPackage{Commands: []spinbroker.NewCommand{{Resource: "r", Action: "a", MaxAttempts: ptr(1 << 40)}}}, spinbroker.EINVALID},
		{"ShortLease", spinbroker.NewPackage{Commands: []spinbroker.NewCommand{{Resource: "r", Action: "a", LeaseDuration: ptr(spinbroker.Duration(time.Millisecond))}}}, spinbroker.EINVALID},
		{"NegativeLease", spinbroker.NewPackage{Commands: []spinbroker.NewCommand{{Resource: "r", Action: "a", LeaseDuration: ptr(spinbroker.Duration(-time.Second))}}}, spinbroker.EINVALID},
		{"EmptyEnqueue", spinbroker.NewPackage{Enqueue: true}, spinbroker.EEMPTY},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := db.CreatePackage(ctx, tt.in, nil)
			wantCode(t, err, tt.code)
			if msg := spinbroker.ErrorMessage(err); msg == "" || msg == "internal error" {
				t.Fatalf("message %q does not say what is wrong", msg)
			} else if tt.code == spinbroker.EUNKNOWNDEP && !spinbroker.LooksLikeID(tt.in.Commands[0].Dependencies[0]) || tt.code == spinbroker.EEMPTY {
				// The id the request would have had exists nowhere.
				if !strings.Contains(msg, "the package this request creates") {
					t.Errorf("message %q names the package the request did not create", msg)
				}
			}
		})
	}
	list, err := db.Packages(ctx, spinbroker.PackageFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Packages) != 1 {
		t.Fatalf("refused creates left %d packages, want only the first", len(list.Packages))
	}
}

// TestDB_CreatePackageAnswer: the answer to a create is built from what was
// inserted, not read back; it must equal a read, staged or enqueued, with
// dependencies met, pending and delayed.
func TestDB_CreatePackageAnswer(t *testing.T) {
	db, clock := open(t)
	done := enqueue(t, db, cmd("r", "done"))
	succeed(t, db, mustNext(t, db, "r"))
	pending := enqueue(t, db, cmd("r", "pending"))
	later := clock.Now().Add(time.Hour + 123456789)
	earlier := clock.Now().Add(-time.Minute)
	full := spinbroker.NewCommand{Key: "full", Resource: "s", Action: "z", Parameters: json.RawMessage(`{ "n": [1, 2] }`),
		Dependencies: []string{"a"}, MaxAttempts: ptr(7), LeaseDuration: ptr(spinbroker.Duration(90 * time.Second))}
	cmds := []spinbroker.NewCommand{
		keyed("a", "r", "x"),
		keyed("b", "s", "y", "a", "a"),
		cmd("r", "on-done", done.Commands[0].ID),
		cmd("s", "on-pending", strings.ToUpper(pending.Commands[0].ID)),
		{Resource: "t", Action: "later", NotBefore: &later},
		{Resource: "t", Action: "earlier", NotBefore: &earlier},
		full,
	}
	for _, enq := range []bool{false, true} {
		got, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Commands: cmds, Enqueue: enq}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if read := getPkg(t, db, got.ID); mustJSON(read) != mustJSON(got) {
			t.Fatalf("create (enqueue %v) answered\n%s\nbut a read says\n%s", enq, mustJSON(got), mustJSON(read))
		}
		if enq && (got.Counts.Ready != 3 || got.Counts.Blocked != 4) {
			t.Fatalf("enqueued package counts %+v, want 3 ready and 4 blocked", got.Counts)
		}
	}
}

func TestDB_AddCommand(t *testing.T) {
	db, clock := open(t)
	clockNow := func(*store.DB) time.Time { return clock.Now().Add(time.Minute + 123456789) }
	p, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, _, err := db.AddCommand(ctx, p.ID, keyed("a", "r", "x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := db.AddCommand(ctx, p.ID, keyed("b", "r", "y", "a", a.ID), nil)
	if err != nil {
		t.Fatal(err)
	}
	// The answer to an add is built, not read back: it must equal a read.
	at := clockNow(db)
	full := spinbroker.NewCommand{Key: "full", Resource: "r", Action: "z", Parameters: json.RawMessage(`{ "n": [1, 2] }`),
		Dependencies: []string{"b"}, MaxAttempts: ptr(7), LeaseDuration: ptr(spinbroker.Duration(90 * time.Second)), NotBefore: &at}
	for _, in := range []spinbroker.NewCommand{cmd("r", "plain"), full} {
		got, _, err := db.AddCommand(ctx, p.ID, in, nil)
		if err != nil {
			t.Fatal(err)
		}
		if read := getCmd(t, db, got.ID); mustJSON(read) != mustJSON(got) {
			t.Fatalf("add answered\n%s\nbut a read says\n%s", mustJSON(got), mustJSON(read))
		}
	}
	if len(b.Dependencies) != 1 || b.Dependencies[0] != a.ID {
		t.Fatalf("a dependency named twice is stored once: %v", b.Dependencies)
	}
	_, _, err = db.AddCommand(ctx, p.ID, keyed("a", "r", "z"), nil)
	wantCode(t, err, spinbroker.ECONFLICT)

	_, _, err = db.AddCommand(ctx, "0190c3a4-5a6b-7c8d-9e0f-a1b2c3d4e5f6", cmd("r", "x"), nil)
	wantCode(t, err, spinbroker.ENOTFOUND)
	// A missing package wins over a bad body (API.md, Errors).
	_, _, err = db.AddCommand(ctx, "0190c3a4-5a6b-7c8d-9e0f-a1b2c3d4e5f6", cmd("BAD", "x"), nil)
	wantCode(t, err, spinbroker.ENOTFOUND)

	if _, err := db.Enqueue(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	_, _, err = db.AddCommand(ctx, p.ID, cmd("r", "late"), nil)
	wantCode(t, err, spinbroker.ECONFLICT)

	// Dependencies on commands of other packages, by id.
	q, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := db.AddCommand(ctx, q.ID, cmd("s", "after", strings.ToUpper(b.ID)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Dependencies[0] != b.ID {
		t.Fatalf("dependency id not normalised: %v", c.Dependencies)
	}
	// A key of another package is not visible.
	_, _, err = db.AddCommand(ctx, q.ID, cmd("s", "x", "a"), nil)
	wantCode(t, err, spinbroker.EUNKNOWNDEP)
}

func TestDB_Enqueue(t *testing.T) {
	db, _ := open(t)
	p, _, _ := db.CreatePackage(ctx, spinbroker.NewPackage{}, nil)
	_, err := db.Enqueue(ctx, p.ID)
	wantCode(t, err, spinbroker.EEMPTY)
	_, err = db.Enqueue(ctx, "0190c3a4-5a6b-7c8d-9e0f-a1b2c3d4e5f6")
	wantCode(t, err, spinbroker.ENOTFOUND)

	if _, _, err := db.AddCommand(ctx, p.ID, cmd("r", "x"), nil); err != nil {
		t.Fatal(err)
	}
	first, err := db.Enqueue(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	again, err := db.Enqueue(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	if mustJSON(first) != mustJSON(again) {
		t.Fatalf("a second enqueue changed the package:\n%s\n%s", mustJSON(first), mustJSON(again))
	}

	s, _, _ := db.CreatePackage(ctx, spinbroker.NewPackage{Commands: []spinbroker.NewCommand{cmd("r", "x")}}, nil)
	if _, err := db.CancelPackage(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	_, err = db.Enqueue(ctx, s.ID)
	wantCode(t, err, spinbroker.ECONFLICT)
}

func TestDB_Enqueue_DependencyAlreadyFailed(t *testing.T) {
	db, _ := open(t)
	p := enqueue(t, db, cmd("r", "doomed"))
	c := mustNext(t, db, "r")
	finish(t, db, c, false, "boom")

	q, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Commands: []spinbroker.NewCommand{
		keyed("a", "s", "x", p.Commands[0].ID), keyed("b", "s", "y", "a"), keyed("c", "s", "free"),
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	q, err = db.Enqueue(ctx, q.ID)
	if err != nil {
		t.Fatal(err)
	}
	a, b, free := q.Commands[0], q.Commands[1], q.Commands[2]
	if a.State != spinbroker.Cancelled || deref(a.Reason) != "dependency "+c.ID+" failed" {
		t.Fatalf("a: %s %s", a.State, deref(a.Reason))
	}
	if b.State != spinbroker.Cancelled || deref(b.Reason) != "dependency "+a.ID+" cancelled" {
		t.Fatalf("b: %s %s", b.State, deref(b.Reason))
	}
	if free.State != spinbroker.Ready {
		t.Fatalf("free: %s", free.State)
	}
	if q.State != spinbroker.PackageRunning || deref(q.Causer) != a.ID {
		t.Fatalf("package: %s causer %s", q.State, deref(q.Causer))
	}
}

func TestDB_PackageState(t *testing.T) {
	db, clock := open(t)
	p := enqueue(t, db, cmd("r", "one"), cmd("r", "two"), cmd("s", "three"))
	if p.State != spinbroker.PackageQueued {
		t.Fatalf("state %s", p.State)
	}
	one := mustNext(t, db, "r")
	if s := getPkg(t, db, p.ID).State; s != spinbroker.PackageRunning {
		t.Fatalf("after a lease: %s", s)
	}
	clock.Add(time.Second)
	finish(t, db, one, false, "first failure")
	three := mustNext(t, db, "s")
	clock.Add(time.Second)
	finish(t, db, three, false, "second failure")
	two := mustNext(t, db, "r")
	if s := getPkg(t, db, p.ID).State; s != spinbroker.PackageRunning {
		t.Fatalf("with one command left: %s", s)
	}
	clock.Add(time.Second)
	succeed(t, db, two)
	got := getPkg(t, db, p.ID)
	if got.State != spinbroker.PackageFailed || deref(got.Causer) != one.ID || deref(got.Reason) != "first failure" {
		t.Fatalf("got %s causer %s reason %s", got.State, deref(got.Causer), deref(got.Reason))
	}
	if got.FinishedAt == nil || !got.FinishedAt.Equal(clock.Now()) {
		t.Fatalf("finished_at %v, want %v", got.FinishedAt, clock.Now())
	}
	want := spinbroker.Counts{Succeeded: 1, Failed: 2}
	if got.Counts != want {
		t.Fatalf("counts %+v", got.Counts)
	}
}

func TestDB_CancelPackage(t *testing.T) {
	db, _ := open(t)
	p := enqueue(t, db, keyed("a", "r", "running"), keyed("b", "r", "waiting"), keyed("c", "s", "blocked", "a"))
	other := enqueue(t, db, cmd("t", "elsewhere", p.Commands[2].ID))
	a := mustNext(t, db, "r")

	got, err := db.CancelPackage(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != spinbroker.PackageCancelled || got.FinishedAt == nil {
		t.Fatalf("state %s", got.State)
	}
	wantState(t, db, a.ID, spinbroker.Leased)
	b := wantState(t, db, p.Commands[1].ID, spinbroker.Cancelled)
	if deref(b.Reason) != "package cancelled" {
		t.Fatalf("reason %s", deref(b.Reason))
	}
	e := wantState(t, db, other.Commands[0].ID, spinbroker.Cancelled)
	if deref(e.Reason) != "dependency "+p.Commands[2].ID+" cancelled" {
		t.Fatalf("cascade reason %s", deref(e.Reason))
	}
	if got.Causer != nil {
		t.Fatalf("a client's cancel names no causer, got %s", *got.Causer)
	}
	noNext(t, db, "r")
	noNext(t, db, "s")

	// The leased command's result is still recorded, and the package stays
	// cancelled.
	succeed(t, db, a)
	if s := getPkg(t, db, p.ID).State; s != spinbroker.PackageCancelled {
		t.Fatalf("after the last result: %s", s)
	}
	// Cancelling a finished package changes nothing.
	before := getPkg(t, db, other.ID)
	after, err := db.CancelPackage(ctx, other.ID)
	if err != nil {
		t.Fatal(err)
	}
	if before.State != spinbroker.PackageFailed || after.State != before.State {
		t.Fatalf("cancel of a finished package: %s → %s", before.State, after.State)
	}
	_, err = db.CancelPackage(ctx, "0190c3a4-5a6b-7c8d-9e0f-a1b2c3d4e5f6")
	wantCode(t, err, spinbroker.ENOTFOUND)
}

func TestDB_CancelPackage_LeasedIsNotRetried(t *testing.T) {
	db, clock := open(t)
	p := enqueue(t, db, cmd("r", "x"), cmd("r", "y"))
	x := mustNext(t, db, "r")
	if _, err := db.CancelPackage(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	res, err := db.Complete(ctx, x.ID, spinbroker.Result{Status: ptr(false), Retry: true, Lease: x.Lease.Token})
	if err != nil {
		t.Fatal(err)
	}
	if res.State != spinbroker.Failed {
		t.Fatalf("retry in a cancelled package: %s", res.State)
	}
	_, err = db.Retry(ctx, x.ID)
	wantCode(t, err, spinbroker.ECONFLICT)

	// Nor is a lease that expires.
	q := enqueue(t, db, cmd("s", "z"))
	z := mustNext(t, db, "s")
	if _, err := db.CancelPackage(ctx, q.ID); err != nil {
		t.Fatal(err)
	}
	clock.Add(2 * time.Minute)
	noNext(t, db, "s")
	if c := wantState(t, db, z.ID, spinbroker.Failed); deref(c.Reason) != "lease expired" {
		t.Fatalf("reason %s", deref(c.Reason))
	}
}

func TestDB_DeletePackage(t *testing.T) {
	db, clock := open(t)
	staging, _, _ := db.CreatePackage(ctx, spinbroker.NewPackage{Commands: []spinbroker.NewCommand{cmd("r", "x")}}, nil)
	running := enqueue(t, db, cmd("r", "y"))
	waiter := enqueue(t, db, cmd("s", "after", staging.Commands[0].ID))
	stagedWaiter, _, _ := db.CreatePackage(ctx, spinbroker.NewPackage{Commands: []spinbroker.NewCommand{cmd("s", "staged-after", staging.Commands[0].ID)}}, nil)

	wantCode(t, db.DeletePackage(ctx, running.ID), spinbroker.ECONFLICT)
	if err := db.DeletePackage(ctx, staging.ID); err != nil {
		t.Fatal(err)
	}
	_, err := db.Package(ctx, staging.ID)
	wantCode(t, err, spinbroker.ENOTFOUND)
	_, err = db.Command(ctx, staging.Commands[0].ID)
	wantCode(t, err, spinbroker.ENOTFOUND)
	for _, id := range []string{waiter.Commands[0].ID, stagedWaiter.Commands[0].ID} {
		c := wantState(t, db, id, spinbroker.Cancelled)
		if deref(c.Reason) != "dependency "+staging.Commands[0].ID+" deleted" {
			t.Fatalf("reason %s", deref(c.Reason))
		}
		if !slices.Equal(c.Dependencies, []string{staging.Commands[0].ID}) {
			t.Fatalf("dependencies %v after their package was deleted; they stay as given", c.Dependencies)
		}
		_, err := db.Retry(ctx, id)
		wantCode(t, err, spinbroker.ECONFLICT)
	}
	// Until then its package is still in staging, the client's to add to,
	// enqueue or delete, with the cause already said (README, API notes).
	sw, err := db.Package(ctx, stagedWaiter.ID)
	if err != nil {
		t.Fatal(err)
	}
	if sw.State != spinbroker.PackageStaging || sw.Counts.Cancelled != 1 || deref(sw.Causer) != stagedWaiter.Commands[0].ID || sw.EnqueuedAt != nil || sw.FinishedAt != nil {
		t.Fatalf("a staged package whose only command a deletion cancelled: %s", mustJSON(sw))
	}
	// The staged waiter's package, enqueued later, has failed: not before
	// it was enqueued.
	clock.Add(time.Minute)
	p, err := db.Enqueue(ctx, stagedWaiter.ID)
	if err != nil {
		t.Fatal(err)
	}
	if p.State != spinbroker.PackageFailed || p.FinishedAt == nil || p.EnqueuedAt == nil || p.FinishedAt.Before(*p.EnqueuedAt) {
		t.Fatalf("enqueued after its command was cancelled: %s", mustJSON(p))
	}

	// A cancelled package whose leased command still runs waits for it,
	// and the refusal says so, not "cancel it".
	y := mustNext(t, db, "r")
	if _, err := db.CancelPackage(ctx, running.ID); err != nil {
		t.Fatal(err)
	}
	err = db.DeletePackage(ctx, running.ID)
	wantCode(t, err, spinbroker.ECONFLICT)
	if msg := spinbroker.ErrorMessage(err); !strings.Contains(msg, "is cancelled but has 1 unfinished command still leased") || strings.Contains(msg, "cancel it") {
		t.Errorf("deleting a cancelled package with a lease out: %q", msg)
	}

	// A finished package can go; dependents of its successes keep running.
	after := enqueue(t, db, cmd("s", "needs-y", y.ID), cmd("s", "needs-y-too", y.ID))
	succeed(t, db, y)
	if err := db.DeletePackage(ctx, running.ID); err != nil {
		t.Fatal(err)
	}
	for _, c := range after.Commands {
		got := wantState(t, db, c.ID, spinbroker.Ready)
		if !slices.Equal(got.Dependencies, []string{y.ID}) {
			t.Fatalf("dependencies %v after their package was deleted; they stay as given", got.Dependencies)
		}
	}
	wantCode(t, db.DeletePackage(ctx, running.ID), spinbroker.ENOTFOUND)
}

// TestDB_DeletePackage_CancelledLeaseRunOut: a cancelled package whose
// last lease has run out can be deleted at once, as the 409 before said
// ("once … their leases expire"): the delete settles the expired lease
// itself. It was refused until the sweeper's next round, or a poll on
// that queue, had settled it.
func TestDB_DeletePackage_CancelledLeaseRunOut(t *testing.T) {
	db, clock := open(t)
	p := enqueue(t, db, cmd("r", "x"), cmd("r", "y"))
	x := mustNext(t, db, "r")
	if _, err := db.CancelPackage(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	wantCode(t, db.DeletePackage(ctx, p.ID), spinbroker.ECONFLICT)
	clock.Add(x.LeaseExpiresAt.Sub(clock.Now()) + time.Second)
	if err := db.DeletePackage(ctx, p.ID); err != nil {
		t.Fatalf("delete of a cancelled package whose lease ran out: %v", err)
	}
	_, err := db.Package(ctx, p.ID)
	wantCode(t, err, spinbroker.ENOTFOUND)
	cons, err := db.CheckConsistency(ctx)
	if err != nil || !cons.OK() {
		t.Fatalf("consistency: %+v %v", cons, err)
	}
}

// TestDB_DeletePackage_DependentCancelledBefore: a command already
// cancelled by another dependency's failure when a package it also waits
// on is deleted, that command not having succeeded, is never run by a
// retry of that other dependency: what it waited for is gone, as for one
// the deletion cancels itself (README, API notes). It used to come back
// blocked with the deleted dependency no longer counted, and ran.
func TestDB_DeletePackage_DependentCancelledBefore(t *testing.T) {
	db, _ := open(t)
	once := cmd("r", "a")
	once.MaxAttempts = ptr(1)
	a := enqueue(t, db, once).Commands[0]
	staged, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Commands: []spinbroker.NewCommand{cmd("z", "never-run")}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	z := staged.Commands[0].ID
	b := enqueue(t, db, cmd("s", "needs-a-and-z", a.ID, z)).Commands[0]
	c := enqueue(t, db, cmd("u", "needs-b", b.ID)).Commands[0]
	finish(t, db, mustNext(t, db, "r"), false, "broken")
	wantState(t, db, b.ID, spinbroker.Cancelled)

	if err := db.DeletePackage(ctx, staged.ID); err != nil {
		t.Fatal(err)
	}
	got := wantState(t, db, b.ID, spinbroker.Cancelled)
	if deref(got.Reason) != "dependency "+z+" deleted" {
		t.Fatalf("reason %s, want the deleted dependency named", deref(got.Reason))
	}
	if _, err := db.Retry(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	wantState(t, db, b.ID, spinbroker.Cancelled)
	wantState(t, db, c.ID, spinbroker.Cancelled)
	succeed(t, db, mustNext(t, db, "r"))
	noNext(t, db, "s")
	_, err = db.Retry(ctx, b.ID)
	wantCode(t, err, spinbroker.ECONFLICT)
	if !strings.Contains(spinbroker.ErrorMessage(err), "deleted") {
		t.Fatalf("refusal %q does not say its dependency was deleted", spinbroker.ErrorMessage(err))
	}

	// A dependency that succeeded before its package was deleted holds
	// no one back: the retry of the other one runs the dependent.
	a2 := enqueue(t, db, once).Commands[0]
	done := enqueue(t, db, cmd("y", "done")).Commands[0]
	succeed(t, db, mustNext(t, db, "y"))
	d := enqueue(t, db, cmd("s", "needs-a2-and-done", a2.ID, done.ID)).Commands[0]
	finish(t, db, mustNext(t, db, "r"), false, "broken")
	if err := db.DeletePackage(ctx, done.PackageID); err != nil {
		t.Fatal(err)
	}
	got = wantState(t, db, d.ID, spinbroker.Cancelled)
	if deref(got.Reason) != "dependency "+a2.ID+" failed" {
		t.Fatalf("reason %s, want the failed dependency still named", deref(got.Reason))
	}
	if _, err := db.Retry(ctx, a2.ID); err != nil {
		t.Fatal(err)
	}
	wantState(t, db, d.ID, spinbroker.Blocked)
}

func TestDB_Packages(t *testing.T) {
	db, clock := open(t)
	var ids []string
	for i := 0; i < 7; i++ {
		p, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Commands: []spinbroker.NewCommand{cmd("r", "x")}, Enqueue: i%2 == 0}, nil)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, p.ID)
		if i != 3 { // two packages share a timestamp: the id breaks the tie
			clock.Add(time.Second)
		}
	}
	var got []string
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("paging does not end")
		}
		list, err := db.Packages(ctx, spinbroker.PackageFilter{Limit: 3, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range list.Packages {
			if p.Commands != nil {
				t.Fatal("lists leave commands out")
			}
			got = append(got, p.ID)
		}
		if list.NextCursor == nil {
			break
		}
		cursor = *list.NextCursor
	}
	if len(got) != 7 {
		t.Fatalf("paged through %d packages, want 7", len(got))
	}
	for i := range got {
		if got[i] != ids[6-i] && !(i == 3 || i == 4) {
			t.Fatalf("order: got %v, want newest first %v", got, ids)
		}
	}
	queued, err := db.Packages(ctx, spinbroker.PackageFilter{State: spinbroker.PackageQueued})
	if err != nil {
		t.Fatal(err)
	}
	if len(queued.Packages) != 4 {
		t.Fatalf("queued: %d, want 4", len(queued.Packages))
	}
	_, err = db.Packages(ctx, spinbroker.PackageFilter{Cursor: "garbage"})
	wantCode(t, err, spinbroker.EINVALID)
	_, err = db.Packages(ctx, spinbroker.PackageFilter{State: "bogus"})
	wantCode(t, err, spinbroker.EINVALID)
	big, err := db.Packages(ctx, spinbroker.PackageFilter{Limit: 5000})
	if err != nil || len(big.Packages) != 7 {
		t.Fatalf("a limit over 1000 is clamped, not refused: %v", err)
	}
}

func TestDB_Idempotency(t *testing.T) {
	db, clock := open(t)
	idem := &spinbroker.Idempotency{Scope: "POST /packages", Key: "k1", Hash: []byte("h1")}
	in := spinbroker.NewPackage{Commands: []spinbroker.NewCommand{cmd("r", "x")}, Enqueue: true}
	p, replay, err := db.CreatePackage(ctx, in, idem)
	if err != nil || replay != nil {
		t.Fatal(err, replay)
	}
	mustNext(t, db, "r") // the state moves on; the replay still answers the first response
	_, replay, err = db.CreatePackage(ctx, in, idem)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := json.Marshal(p); !bytes.Equal(replay, want) {
		t.Fatalf("replay:\n%s\nwant:\n%s", replay, want)
	}
	_, _, err = db.CreatePackage(ctx, in, &spinbroker.Idempotency{Scope: "POST /packages", Key: "k1", Hash: []byte("h2")})
	wantCode(t, err, spinbroker.ECONFLICT)
	// Another scope is another key.
	_, replay, err = db.CreatePackage(ctx, in, &spinbroker.Idempotency{Scope: "other", Key: "k1", Hash: []byte("h1")})
	if err != nil || replay != nil {
		t.Fatal("scopes must not share keys", err)
	}
	list, _ := db.Packages(ctx, spinbroker.PackageFilter{})
	if len(list.Packages) != 2 {
		t.Fatalf("%d packages, want 2", len(list.Packages))
	}
	// After 24 hours the key is forgotten (and swept).
	clock.Add(spinbroker.IdempotencyTTL + time.Minute)
	res, err := db.Sweep(ctx, store.SweepOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.KeysDeleted != 2 {
		t.Fatalf("swept %d keys, want 2", res.KeysDeleted)
	}
	_, replay, err = db.CreatePackage(ctx, in, idem)
	if err != nil || replay != nil {
		t.Fatal("an expired key must create anew", err)
	}

	// Adding commands honours keys too.
	s, _, _ := db.CreatePackage(ctx, spinbroker.NewPackage{}, nil)
	add := &spinbroker.Idempotency{Scope: "POST /packages/" + s.ID + "/commands", Key: "a", Hash: []byte("x")}
	c, _, err := db.AddCommand(ctx, s.ID, cmd("r", "x"), add)
	if err != nil {
		t.Fatal(err)
	}
	_, replay, err = db.AddCommand(ctx, s.ID, cmd("r", "x"), add)
	if err != nil || !strings.Contains(string(replay), c.ID) {
		t.Fatalf("replay %s, %v", replay, err)
	}
	if got := getPkg(t, db, s.ID); got.Total != 1 {
		t.Fatalf("a replayed add added a command: total %d", got.Total)
	}
}

func TestDB_Sweep(t *testing.T) {
	db, clock := open(t)
	old, _, _ := db.CreatePackage(ctx, spinbroker.NewPackage{Commands: []spinbroker.NewCommand{cmd("r", "x")}}, nil)
	done := enqueue(t, db, cmd("r", "y"))
	succeed(t, db, mustNext(t, db, "r"))
	leased := enqueue(t, db, cmd("r", "z"))
	z := mustNext(t, db, "r")
	clock.Add(25 * time.Hour)
	fresh, _, _ := db.CreatePackage(ctx, spinbroker.NewPackage{}, nil)

	res, err := db.Sweep(ctx, store.SweepOptions{Retain: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if res.StagingDeleted != 1 || res.LeasesSettled != 1 {
		t.Fatalf("sweep: %+v", res)
	}
	_, err = db.Package(ctx, old.ID)
	wantCode(t, err, spinbroker.ENOTFOUND)
	getPkg(t, db, fresh.ID)
	// The finished package is past retention; the one whose lease was
	// requeued is not finished.
	_, err = db.Package(ctx, done.ID)
	wantCode(t, err, spinbroker.ENOTFOUND)
	if res.RetainedDeleted != 1 {
		t.Fatalf("retained deleted %d", res.RetainedDeleted)
	}
	wantState(t, db, z.ID, spinbroker.Ready)
	getPkg(t, db, leased.ID)

	// Without retention nothing finished is deleted.
	p := enqueue(t, db, cmd("q", "w"))
	succeed(t, db, mustNext(t, db, "q"))
	clock.Add(1000 * time.Hour)
	if _, err := db.Sweep(ctx, store.SweepOptions{}); err != nil {
		t.Fatal(err)
	}
	getPkg(t, db, p.ID)
}

// TestDB_SweepForgetsIdleQueues: with retention, a queue idle for longer
// than it, with default settings and nothing enqueued, leaves the list;
// one with settings, work, a recent change or an agent asking it for work
// stays; a forgotten queue comes
// back, counts right, when one of its commands moves again. Without
// retention no queue is forgotten.
func TestDB_SweepForgetsIdleQueues(t *testing.T) {
	db, clock := open(t)
	var mu sync.Mutex
	var forgotten []string
	db.Listen(func(c *spinbroker.Commit) {
		mu.Lock()
		forgotten = append(forgotten, c.Forgotten...)
		mu.Unlock()
	})
	once := cmd("gone", "x")
	once.MaxAttempts = ptr(1)
	p := enqueue(t, db, once, cmd("stay", "y"), cmd("polled", "w"))
	failed := finish(t, db, mustNext(t, db, "gone"), false, "broken")
	if failed.State != spinbroker.Failed {
		t.Fatalf("failed: %s", mustJSON(failed))
	}
	enqueue(t, db, cmd("busy", "z")) // never taken
	if _, err := db.SetQueue(ctx, "preset", spinbroker.QueueSettings{Concurrency: ptr(3)}); err != nil {
		t.Fatal(err)
	}
	succeed(t, db, mustNext(t, db, "polled"))
	clock.Add(2 * time.Hour)
	succeed(t, db, mustNext(t, db, "stay")) // the package finishes now
	noNext(t, db, "polled")                 // an agent waits for work there

	res, err := db.Sweep(ctx, store.SweepOptions{Retain: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if res.QueuesForgotten != 1 || res.RetainedDeleted != 0 {
		t.Fatalf("sweep: %+v", res)
	}
	mu.Lock()
	if !slices.Equal(forgotten, []string{"gone"}) {
		t.Errorf("commits said forgotten %q", forgotten)
	}
	mu.Unlock()
	queueNames := func() string {
		t.Helper()
		qs, err := db.Queues(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, q := range qs {
			names = append(names, fmt.Sprintf("%s:%d", q.Resource, q.Counts.Ready))
		}
		return strings.Join(names, " ")
	}
	if got := queueNames(); got != "busy:1 polled:0 preset:0 stay:0" {
		t.Fatalf("queues after the sweep: %s", got)
	}
	q, err := db.Queue(ctx, "gone")
	if err != nil || q.Concurrency != 1 || len(q.Commands) != 0 {
		t.Fatalf("a forgotten queue: %s, %v", mustJSON(q), err)
	}
	getPkg(t, db, p.ID) // finished an hour ago at most: kept

	// A retry of its failed command brings the queue back, counted.
	if _, err := db.Retry(ctx, failed.ID); err != nil {
		t.Fatal(err)
	}
	if got := queueNames(); got != "busy:1 gone:1 polled:0 preset:0 stay:0" {
		t.Fatalf("queues after the retry: %s", got)
	}
	if c := mustNext(t, db, "gone"); c.ID != failed.ID {
		t.Fatalf("delivered %s, want the retried %s", c.ID, failed.ID)
	}

	// Without retention, nothing is forgotten however long it idles.
	clock.Add(1000 * time.Hour)
	res, err = db.Sweep(ctx, store.SweepOptions{})
	if err != nil || res.QueuesForgotten != 0 {
		t.Fatalf("sweep without retention: %+v, %v", res, err)
	}
	if got := queueNames(); got != "busy:1 gone:0 polled:0 preset:0 stay:0" {
		t.Fatalf("queues without retention: %s", got)
	}
}

// TestDB_SweepKeepsAQueueAnAgentWaitsOn: an agent's poll is recorded at
// most once a minute, and a long-poll asks again only when it ends; with a
// retention shorter than that, the queue of a waiting agent still stays.
func TestDB_SweepKeepsAQueueAnAgentWaitsOn(t *testing.T) {
	db, clock := open(t)
	enqueue(t, db, cmd("r", "x"))
	succeed(t, db, mustNext(t, db, "r"))
	clock.Add(50 * time.Second)
	noNext(t, db, "r")          // not recorded: the last activity is under a minute old
	clock.Add(60 * time.Second) // a long-poll's wait, then the sweep
	res, err := db.Sweep(ctx, store.SweepOptions{Retain: 30 * time.Second})
	if err != nil || res.QueuesForgotten != 0 {
		t.Fatalf("the queue of an agent that asked 60s ago, retention 30s: %+v, %v", res, err)
	}
	clock.Add(3 * time.Minute) // no agent since
	if res, err := db.Sweep(ctx, store.SweepOptions{Retain: 30 * time.Second}); err != nil || res.QueuesForgotten != 1 {
		t.Fatalf("an idle queue past retention and the polls' lag: %+v, %v", res, err)
	}
}

func TestDB_Queues(t *testing.T) {
	db, clock := open(t)
	q, err := db.Queue(ctx, "never-used")
	if err != nil {
		t.Fatal(err)
	}
	if q.Concurrency != 1 || q.Paused || q.Commands == nil || len(q.Commands) != 0 {
		t.Fatalf("an unused queue: %s", mustJSON(q))
	}
	_, err = db.Queue(ctx, "Bad Name")
	wantCode(t, err, spinbroker.EINVALID)

	if _, err := db.SetQueue(ctx, "preset", spinbroker.QueueSettings{Concurrency: ptr(4), Paused: ptr(true)}); err != nil {
		t.Fatal(err)
	}
	_, err = db.SetQueue(ctx, "preset", spinbroker.QueueSettings{Concurrency: ptr(0)})
	wantCode(t, err, spinbroker.EINVALID)

	enqueue(t, db, keyed("a", "work", "a"), keyed("b", "work", "b", "a"), keyed("c", "work", "c"))
	clock.Add(90 * time.Second)
	mustNext(t, db, "work")
	qs, err := db.Queues(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(qs) != 2 || qs[0].Resource != "preset" || qs[1].Resource != "work" {
		t.Fatalf("queues %s", mustJSON(qs))
	}
	if !qs[0].Paused || qs[0].Concurrency != 4 {
		t.Fatalf("preset %s", mustJSON(qs[0]))
	}
	w := qs[1]
	if w.Counts != (spinbroker.QueueCounts{Blocked: 1, Ready: 1, Leased: 1}) || w.OldestReadyAgeSeconds != 90 {
		t.Fatalf("work %s", mustJSON(w))
	}
	one, err := db.Queue(ctx, "work")
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, c := range one.Commands {
		order = append(order, fmt.Sprintf("%s:%s", c.Action, c.State))
	}
	if got := strings.Join(order, " "); got != "a:leased b:blocked c:ready" {
		t.Fatalf("queue commands: %s", got)
	}
}

// TestDB_BadDependencyBeforeConflict: a request that is both a conflict
// (an existing id, a package past staging) and names a dependency that
// does not exist is answered for the dependency: API.md orders 400 before
// 409. Without the bad dependency the conflict stands.
func TestDB_BadDependencyBeforeConflict(t *testing.T) {
	db, _ := open(t)
	p := enqueue(t, db, keyed("a", "r", "x"))
	existing := p.Commands[0].ID
	unknownID := "0190c3a4-5a6b-7c8d-9e0f-a1b2c3d4e5f6"

	t.Run("AddToEnqueued", func(t *testing.T) {
		_, _, err := db.AddCommand(ctx, p.ID, keyed("b", "r", "x", "nokey"), nil)
		wantCode(t, err, spinbroker.EUNKNOWNDEP)
		_, _, err = db.AddCommand(ctx, p.ID, keyed("b", "r", "x", unknownID), nil)
		wantCode(t, err, spinbroker.EUNKNOWNDEP)
		_, _, err = db.AddCommand(ctx, p.ID, keyed("b", "r", "x", "a"), nil)
		wantCode(t, err, spinbroker.ECONFLICT)
	})
	t.Run("AddToCancelled", func(t *testing.T) {
		s, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.CancelPackage(ctx, s.ID); err != nil {
			t.Fatal(err)
		}
		_, _, err = db.AddCommand(ctx, s.ID, cmd("r", "x", "nokey"), nil)
		wantCode(t, err, spinbroker.EUNKNOWNDEP)
		_, _, err = db.AddCommand(ctx, s.ID, cmd("r", "x"), nil)
		wantCode(t, err, spinbroker.ECONFLICT)
	})
	t.Run("ExistingCommandID", func(t *testing.T) {
		s, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		c := cmd("r", "x", "nokey")
		c.ID = existing
		_, _, err = db.AddCommand(ctx, s.ID, c, nil)
		wantCode(t, err, spinbroker.EUNKNOWNDEP)
		c.Dependencies = []string{existing}
		_, _, err = db.AddCommand(ctx, s.ID, c, nil)
		wantCode(t, err, spinbroker.EINVALID) // itself
		c.Dependencies = nil
		_, _, err = db.AddCommand(ctx, s.ID, c, nil)
		wantCode(t, err, spinbroker.ECONFLICT)
	})
	t.Run("ExistingPackageID", func(t *testing.T) {
		in := spinbroker.NewPackage{ID: p.ID, Commands: []spinbroker.NewCommand{keyed("a", "r", "x"), cmd("r", "x", "a", "nokey")}}
		_, _, err := db.CreatePackage(ctx, in, nil)
		wantCode(t, err, spinbroker.EUNKNOWNDEP)
		// Keys name earlier commands of the request only, not the
		// existing package's.
		in.Commands = []spinbroker.NewCommand{cmd("r", "x", "a")}
		_, _, err = db.CreatePackage(ctx, in, nil)
		wantCode(t, err, spinbroker.EUNKNOWNDEP)
		in.Commands = []spinbroker.NewCommand{keyed("a", "r", "x"), cmd("r", "x", "a", existing)}
		_, _, err = db.CreatePackage(ctx, in, nil)
		wantCode(t, err, spinbroker.ECONFLICT)
	})
	t.Run("LaterCommandAfterConflict", func(t *testing.T) {
		first := cmd("r", "x")
		first.ID = existing
		in := spinbroker.NewPackage{Commands: []spinbroker.NewCommand{keyed("k", "r", "x"), first, cmd("r", "x", "k", unknownID)}}
		_, _, err := db.CreatePackage(ctx, in, nil)
		wantCode(t, err, spinbroker.EUNKNOWNDEP)
		in.Commands[2].Dependencies = []string{"k", existing}
		_, _, err = db.CreatePackage(ctx, in, nil)
		wantCode(t, err, spinbroker.ECONFLICT)
	})
	// Nothing of the refused requests was kept.
	if got := getPkg(t, db, p.ID); got.Total != 1 {
		t.Fatalf("the enqueued package has %d commands", got.Total)
	}
}

// TestDB_QueuesNamed answers the named queues only, as Queues has them.
func TestDB_QueuesNamed(t *testing.T) {
	db, _ := open(t)
	enqueue(t, db, cmd("a", "x"), cmd("b", "x"), cmd("c", "x"))
	all, err := db.Queues(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := db.QueuesNamed(ctx, []string{"c", "a", "never"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !reflect.DeepEqual(got[0], all[0]) || !reflect.DeepEqual(got[1], all[2]) {
		t.Fatalf("got %+v, want a and c of %+v", got, all)
	}
	if got, err := db.QueuesNamed(ctx, nil); err != nil || len(got) != 0 {
		t.Fatalf("none: %v %v", got, err)
	}
}

// TestDB_SweepInBoundedTransactions: a sweep with a large backlog (leases
// that expired during an outage, delayed commands all due at once,
// finished packages of thousands of commands) settles and deletes all of
// it, but a bounded part per transaction, so that other writes get the
// writer in between: in one transaction each, 200 packages of 10,000
// commands held it for 7.7s.
func TestDB_SweepInBoundedTransactions(t *testing.T) {
	db, clock := open(t)
	if _, err := db.SetQueue(ctx, "leased", spinbroker.QueueSettings{Concurrency: new(2000)}); err != nil {
		t.Fatal(err)
	}
	enqueue(t, db, many("leased", 1500)...)
	for _, n := range []int{1000, 500} {
		if cs, _, err := db.Claim(ctx, "leased", n, time.Minute); err != nil || len(cs) != n {
			t.Fatalf("claim %d: %d, %v", n, len(cs), err)
		}
	}
	at := clock.Now().Add(time.Minute)
	late := many("late", 1200)
	for i := range late {
		late[i].NotBefore = &at
	}
	enqueue(t, db, late...)
	var done []string
	for range 3 {
		p := enqueue(t, db, many("done", 2000)...)
		if _, err := db.CancelPackage(ctx, p.ID); err != nil {
			t.Fatal(err)
		}
		done = append(done, p.ID)
	}
	clock.Add(2 * time.Hour)

	before, _, _ := db.WriteStats()
	res, err := db.Sweep(ctx, store.SweepOptions{Retain: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	after, _, _ := db.WriteStats()
	if res.LeasesSettled != 1500 || res.RetainedDeleted != 3 {
		t.Errorf("sweep: %+v, want 1500 leases settled and 3 packages deleted", res)
	}
	// Leases: 1,000 then 500; delays: 1,000 then 200; packages: 6,000
	// commands in at least two; and the rest of the sweep.
	if n := after - before; n < 6 {
		t.Errorf("the sweep took %d transactions, want at least 6 (bounded batches)", n)
	}
	for r, want := range map[string]int{"leased": 1500, "late": 1200} {
		q, err := db.Queue(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		if q.Counts.Ready != want || q.Counts.Leased != 0 || q.Counts.Blocked != 0 {
			t.Errorf("queue %s: %+v, want %d ready", r, q.Counts, want)
		}
	}
	for _, id := range done {
		_, err := db.Package(ctx, id)
		wantCode(t, err, spinbroker.ENOTFOUND)
	}
}

// TestDB_SweepDeletesFewCommandsATransaction: retention deletes at most
// about 500 commands a transaction. On a database of 2 million commands a
// command costs 15-30 µs to delete (its row, seven indexes, its
// dependency edges), and every agent write waits for the batch running
// when it comes: batches of 5,000 commands made them wait 20-40 ms (p50)
// and up to half a second for the 15-35 s that --retain took to clear a
// months-old backlog of 100,000 packages.
func TestDB_SweepDeletesFewCommandsATransaction(t *testing.T) {
	db, clock := open(t)
	const packages, each = 40, 50
	for range packages {
		p := enqueue(t, db, many("done", each)...)
		if _, err := db.CancelPackage(ctx, p.ID); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var batches []int // packages deleted by each commit
	db.Listen(func(c *spinbroker.Commit) {
		if len(c.Deleted) > 0 {
			mu.Lock()
			batches = append(batches, len(c.Deleted))
			mu.Unlock()
		}
	})
	clock.Add(2 * time.Hour)
	res, err := db.Sweep(ctx, store.SweepOptions{Retain: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if res.RetainedDeleted != packages {
		t.Fatalf("sweep deleted %d packages, want %d", res.RetainedDeleted, packages)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, n := range batches {
		if n*each > 500 {
			t.Errorf("a transaction deleted %d packages of %d commands: %d commands, want at most 500 (batches %v)", n, each, n*each, batches)
			break
		}
	}
}

// TestDB_ReadsAfterClose: a read that comes after Close (a request still
// in flight at the last moment of a stop) is told the broker is shutting
// down, as a write is: unavailable, a 503 the client may repeat, not
// database/sql's "database is closed", a 500.
func TestDB_ReadsAfterClose(t *testing.T) {
	db, _ := open(t)
	p := enqueue(t, db, many("r", 2)...)
	if _, err := db.Queues(ctx); err != nil { // prepares the readers' statements
		t.Fatal(err)
	}
	if _, err := db.Command(ctx, p.Commands[0].ID); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	for name, read := range map[string]func() error{
		"Package":  func() error { _, err := db.Package(ctx, p.ID); return err },
		"Command":  func() error { _, err := db.Command(ctx, p.Commands[0].ID); return err },
		"Queues":   func() error { _, err := db.Queues(ctx); return err },
		"Queue":    func() error { _, err := db.Queue(ctx, "r"); return err },
		"Packages": func() error { _, err := db.Packages(ctx, spinbroker.PackageFilter{}); return err },
		"Write":    func() error { _, err := db.CancelPackage(ctx, p.ID); return err },
	} {
		if err := read(); spinbroker.ErrorCode(err) != spinbroker.EUNAVAILABLE {
			t.Errorf("%s after Close: %v (%s), want unavailable", name, err, spinbroker.ErrorCode(err))
		}
	}
}

// TestDB_SweepForgetsManyIdleQueues: a sweep forgets every idle queue
// however many batches they take, in any order of their names among the
// queues it keeps, and says each one forgotten once.
func TestDB_SweepForgetsManyIdleQueues(t *testing.T) {
	db, clock := open(t)
	var mu sync.Mutex
	forgotten := map[string]int{}
	db.Listen(func(c *spinbroker.Commit) {
		mu.Lock()
		for _, r := range c.Forgotten {
			forgotten[r]++
		}
		mu.Unlock()
	})
	// 1,000 queues set up, then set back to the defaults: idle ones, and
	// every third kept by a setting made later.
	const n = 1000
	name := func(i int) string { return fmt.Sprintf("q%04d", (i*7919)%n) } // names out of the order made
	for i := range n {
		if _, err := db.SetQueue(ctx, name(i), spinbroker.QueueSettings{Concurrency: ptr(1)}); err != nil {
			t.Fatal(err)
		}
	}
	clock.Add(2 * time.Hour)
	kept := map[string]bool{}
	for i := 0; i < n; i += 3 {
		if _, err := db.SetQueue(ctx, name(i), spinbroker.QueueSettings{Paused: ptr(false)}); err != nil {
			t.Fatal(err)
		}
		kept[name(i)] = true
	}
	res, err := db.Sweep(ctx, store.SweepOptions{Retain: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if want := n - len(kept); res.QueuesForgotten != want {
		t.Errorf("forgot %d queues, want %d", res.QueuesForgotten, want)
	}
	qs, err := db.Queues(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		if !kept[q.Resource] {
			t.Errorf("idle queue %s is still listed", q.Resource)
		}
	}
	if len(qs) != len(kept) {
		t.Errorf("%d queues listed, want %d", len(qs), len(kept))
	}
	mu.Lock()
	defer mu.Unlock()
	for r, c := range forgotten {
		if kept[r] || c != 1 {
			t.Errorf("%s said forgotten %d times (kept: %v)", r, c, kept[r])
		}
	}
	if len(forgotten) != n-len(kept) {
		t.Errorf("%d queues said forgotten, want %d", len(forgotten), n-len(kept))
	}
}
