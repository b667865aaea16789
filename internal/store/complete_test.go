package store_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/store"
)

func TestDB_Complete(t *testing.T) {
	db, _ := open(t)
	p := enqueue(t, db, keyed("a", "r", "a"), keyed("b", "r", "b", "a"), keyed("c", "r", "c"))
	a := mustNext(t, db, "r")

	_, err := db.Complete(ctx, a.ID, spinbroker.Result{Lease: a.Lease.Token})
	wantCode(t, err, spinbroker.EINVALID) // status is required
	_, err = db.Complete(ctx, a.ID, spinbroker.Result{Status: ptr(true), Lease: a.Lease.Token, Output: json.RawMessage(`[1,2]`)})
	wantCode(t, err, spinbroker.EINVALID)
	_, err = db.Complete(ctx, "0190c3a4-5a6b-7c8d-9e0f-a1b2c3d4e5f6", spinbroker.Result{Status: ptr(true)})
	wantCode(t, err, spinbroker.ENOTFOUND)
	_, err = db.Complete(ctx, a.ID, spinbroker.Result{Status: ptr(true), Lease: "not-the-lease"})
	wantCode(t, err, spinbroker.ESTALE)
	_, err = db.Complete(ctx, p.Commands[1].ID, spinbroker.Result{Status: ptr(true)})
	wantCode(t, err, spinbroker.ECONFLICT) // blocked

	got, err := db.Complete(ctx, a.ID, spinbroker.Result{Status: ptr(true), Lease: a.Lease.Token,
		Reason: ptr("made it"), Output: json.RawMessage(`{ "path": "vol/a.img", "size": 1 }`)})
	if err != nil {
		t.Fatal(err)
	}
	if got.State != spinbroker.Succeeded || string(got.Output) != `{"path":"vol/a.img","size":1}` || deref(got.Reason) != "made it" || got.FinishedAt == nil {
		t.Fatalf("completed: %s", mustJSON(got))
	}
	// The same result again: 200 and the first reason stands.
	again, err := db.Complete(ctx, a.ID, spinbroker.Result{Status: ptr(true), Lease: a.Lease.Token, Reason: ptr("second")})
	if err != nil || deref(again.Reason) != "made it" {
		t.Fatalf("repeat: %v %s", err, deref(again.Reason))
	}
	_, err = db.Complete(ctx, a.ID, spinbroker.Result{Status: ptr(false), Lease: a.Lease.Token})
	wantCode(t, err, spinbroker.ECONFLICT)

	// By hand, without a lease: a ready command can be settled.
	c := p.Commands[2]
	wantState(t, db, c.ID, spinbroker.Ready)
	if _, err := db.Complete(ctx, c.ID, spinbroker.Result{Status: ptr(false), Reason: ptr("operator says no")}); err != nil {
		t.Fatal(err)
	}
	wantState(t, db, c.ID, spinbroker.Failed)
	_, err = db.Complete(ctx, c.ID, spinbroker.Result{Status: ptr(false)})
	if err != nil {
		t.Fatalf("a repeated failure is the same result: %v", err)
	}

	// A staged command cannot be completed.
	s, _, _ := db.CreatePackage(ctx, spinbroker.NewPackage{Commands: []spinbroker.NewCommand{cmd("r", "x")}}, nil)
	_, err = db.Complete(ctx, s.Commands[0].ID, spinbroker.Result{Status: ptr(true)})
	wantCode(t, err, spinbroker.ECONFLICT)
}

func TestDB_Complete_Cascade(t *testing.T) {
	db, clock := open(t)
	// a ← b ← c, a ← d, and e in another package depends on c.
	p := enqueue(t, db, keyed("a", "r", "a"), keyed("b", "s", "b", "a"), keyed("c", "s", "c", "b"), keyed("d", "t", "d", "a"), keyed("f", "t", "free"))
	q := enqueue(t, db, cmd("u", "e", p.Commands[2].ID))
	a := mustNext(t, db, "r")
	clock.Add(time.Second)
	finish(t, db, a, false, "disk on fire")

	ids := map[string]string{}
	for _, c := range p.Commands {
		ids[deref(c.Key)] = c.ID
	}
	want := map[string]string{
		p.Commands[1].ID: "dependency " + ids["a"] + " failed",
		p.Commands[2].ID: "dependency " + ids["b"] + " cancelled",
		p.Commands[3].ID: "dependency " + ids["a"] + " failed",
		q.Commands[0].ID: "dependency " + ids["c"] + " cancelled",
	}
	for id, reason := range want {
		c := wantState(t, db, id, spinbroker.Cancelled)
		if deref(c.Reason) != reason {
			t.Errorf("%s: reason %q, want %q", c.Action, deref(c.Reason), reason)
		}
	}
	wantState(t, db, ids["f"], spinbroker.Ready)
	pkg := getPkg(t, db, p.ID)
	if pkg.State != spinbroker.PackageRunning || deref(pkg.Causer) != a.ID || deref(pkg.Reason) != "disk on fire" {
		t.Fatalf("package: %s causer %s", pkg.State, deref(pkg.Causer))
	}
	succeed(t, db, mustNext(t, db, "t"))
	if s := getPkg(t, db, p.ID).State; s != spinbroker.PackageFailed {
		t.Fatalf("package %s, want failed", s)
	}
	other := getPkg(t, db, q.ID)
	if other.State != spinbroker.PackageFailed || deref(other.Causer) != q.Commands[0].ID {
		t.Fatalf("the other package: %s causer %s", other.State, deref(other.Causer))
	}
	// Completing a cancelled command with a failure is the same result;
	// with a success it is a conflict.
	if _, err := db.Complete(ctx, ids["b"], spinbroker.Result{Status: ptr(false)}); err != nil {
		t.Fatal(err)
	}
	_, err := db.Complete(ctx, ids["b"], spinbroker.Result{Status: ptr(true)})
	wantCode(t, err, spinbroker.ECONFLICT)
}

func TestDB_CompleteBatch(t *testing.T) {
	db, _ := open(t)
	if _, err := db.SetQueue(ctx, "r", spinbroker.QueueSettings{Concurrency: ptr(10)}); err != nil {
		t.Fatal(err)
	}
	enqueue(t, db, cmd("r", "1"), cmd("r", "2"), cmd("r", "3"))
	cmds, _, err := db.Claim(ctx, "r", 3, 0)
	if err != nil || len(cmds) != 3 {
		t.Fatal(err, len(cmds))
	}
	errs, err := db.CompleteBatch(ctx, []spinbroker.BatchResult{
		{ID: cmds[0].ID, Result: spinbroker.Result{Status: ptr(true), Lease: cmds[0].Lease.Token}},
		{ID: cmds[1].ID, Result: spinbroker.Result{Status: ptr(true), Lease: "stale"}},
		{ID: "0190c3a4-5a6b-7c8d-9e0f-a1b2c3d4e5f6", Result: spinbroker.Result{Status: ptr(true)}},
		{ID: "not-an-id", Result: spinbroker.Result{Status: ptr(true)}},
		{Result: spinbroker.Result{Status: ptr(true)}},
		{ID: cmds[2].ID, Result: spinbroker.Result{Lease: cmds[2].Lease.Token}},
		{ID: cmds[2].ID, Result: spinbroker.Result{Status: ptr(false), Lease: cmds[2].Lease.Token, Reason: ptr("no")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	codes := make([]string, len(errs))
	for i, e := range errs {
		codes[i] = spinbroker.ErrorCode(e)
	}
	want := []string{"", spinbroker.ESTALE, spinbroker.ENOTFOUND, spinbroker.ENOTFOUND, spinbroker.ENOTFOUND, spinbroker.EINVALID, ""}
	if mustJSON(codes) != mustJSON(want) {
		t.Fatalf("codes %v, want %v", codes, want)
	}
	if msg := spinbroker.ErrorMessage(errs[4]); !strings.Contains(msg, "without an id") {
		t.Errorf("a result without an id: %q", msg)
	}
	wantState(t, db, cmds[0].ID, spinbroker.Succeeded)
	wantState(t, db, cmds[1].ID, spinbroker.Leased)
	wantState(t, db, cmds[2].ID, spinbroker.Failed)
}

// TestDB_CompleteBatchAtOnce: a batch of results that all carry a lease is
// applied by one statement; it must do what the results one by one would:
// exact outputs and reasons, releases, cascades, counts, and a stale lease
// still judged (and refused) alone.
func TestDB_CompleteBatchAtOnce(t *testing.T) {
	db, _ := open(t)
	for _, r := range []string{"r", "s"} {
		if _, err := db.SetQueue(ctx, r, spinbroker.QueueSettings{Concurrency: ptr(10)}); err != nil {
			t.Fatal(err)
		}
	}
	p := enqueue(t, db, keyed("a", "r", "a"), keyed("b", "r", "b"), keyed("c", "r", "c"), keyed("d", "r", "d"),
		keyed("after-a", "s", "x", "a"), keyed("after-b", "s", "y", "b"))
	ids := map[string]string{}
	for _, c := range p.Commands {
		ids[deref(c.Key)] = c.ID
	}
	cmds, _, err := db.Claim(ctx, "r", 4, 0)
	if err != nil || len(cmds) != 4 {
		t.Fatal(err, len(cmds))
	}
	// Outputs are stored compacted (as one by one); escapes and non-ASCII
	// text must come through the statement's JSON argument unchanged.
	output := json.RawMessage(`{ "s": "quote \" and \u00e9 é", "n": [1, 2] }`)
	var compact bytes.Buffer
	if err := json.Compact(&compact, output); err != nil {
		t.Fatal(err)
	}
	errs, err := db.CompleteBatch(ctx, []spinbroker.BatchResult{
		{ID: cmds[0].ID, Result: spinbroker.Result{Status: ptr(true), Lease: cmds[0].Lease.Token, Output: output}},
		{ID: strings.ToUpper(cmds[1].ID), Result: spinbroker.Result{Status: ptr(false), Lease: cmds[1].Lease.Token}},
		{ID: cmds[2].ID, Result: spinbroker.Result{Status: ptr(false), Lease: cmds[2].Lease.Token, Reason: ptr("disk full")}},
		{ID: cmds[3].ID, Result: spinbroker.Result{Status: ptr(true), Lease: "stale"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	codes := make([]string, len(errs))
	for i, e := range errs {
		codes[i] = spinbroker.ErrorCode(e)
	}
	if want := []string{"", "", "", spinbroker.ESTALE}; mustJSON(codes) != mustJSON(want) {
		t.Fatalf("codes %v, want %v", codes, want)
	}
	a := wantState(t, db, ids["a"], spinbroker.Succeeded)
	if string(a.Output) != compact.String() {
		t.Fatalf("output %s, want %s", a.Output, compact.String())
	}
	if b := wantState(t, db, ids["b"], spinbroker.Failed); deref(b.Reason) != "failed" {
		t.Fatalf("b reason %q", deref(b.Reason))
	}
	if c := wantState(t, db, ids["c"], spinbroker.Failed); deref(c.Reason) != "disk full" {
		t.Fatalf("c reason %q", deref(c.Reason))
	}
	wantState(t, db, ids["d"], spinbroker.Leased)
	wantState(t, db, ids["after-a"], spinbroker.Ready)
	wantState(t, db, ids["after-b"], spinbroker.Cancelled)
	got := getPkg(t, db, p.ID)
	want := spinbroker.Counts{Ready: 1, Leased: 1, Succeeded: 1, Failed: 2, Cancelled: 1}
	if got.Counts != want || got.FinishedAt != nil {
		t.Fatalf("package counts %+v, want %+v", got.Counts, want)
	}
	q, err := db.Queue(ctx, "r")
	if err != nil || q.Counts != (spinbroker.QueueCounts{Leased: 1}) {
		t.Fatalf("queue r counts %+v (%v)", q.Counts, err)
	}
}

func TestDB_Heartbeat(t *testing.T) {
	db, clock := open(t)
	enqueue(t, db, cmd("r", "x"))
	c, _, err := db.Next(ctx, "r", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	clock.Add(20 * time.Second)
	exp, err := db.Heartbeat(ctx, c.ID, c.Lease.Token, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := clock.Now().Add(30 * time.Second); !exp.Equal(want) {
		t.Fatalf("extended to %v, want now + the lease's own 30s", exp)
	}
	exp, err = db.Heartbeat(ctx, c.ID, c.Lease.Token, 2*time.Minute)
	if err != nil || !exp.Equal(clock.Now().Add(2*time.Minute)) {
		t.Fatalf("extend 2m: %v %v", exp, err)
	}
	clock.Add(time.Minute)
	noNext(t, db, "r") // the lease held
	_, err = db.Heartbeat(ctx, c.ID, "other", 0)
	wantCode(t, err, spinbroker.ESTALE)
	_, err = db.Heartbeat(ctx, "0190c3a4-5a6b-7c8d-9e0f-a1b2c3d4e5f6", c.Lease.Token, 0)
	wantCode(t, err, spinbroker.ENOTFOUND)
	_, err = db.Heartbeat(ctx, c.ID, c.Lease.Token, time.Millisecond)
	wantCode(t, err, spinbroker.EINVALID)
	succeed(t, db, c)
	_, err = db.Heartbeat(ctx, c.ID, c.Lease.Token, 0)
	wantCode(t, err, spinbroker.ESTALE)
}

func TestDB_Retry(t *testing.T) {
	db, _ := open(t)
	p := enqueue(t, db, keyed("a", "r", "a"), keyed("b", "s", "b", "a"), keyed("c", "s", "c", "b"), keyed("x", "t", "x"), keyed("d", "s", "d", "a", "x"))
	a := mustNext(t, db, "r")
	finish(t, db, a, false, "broken")
	x := mustNext(t, db, "t")
	finish(t, db, x, false, "also broken")
	ids := map[string]string{}
	for _, c := range p.Commands {
		ids[deref(c.Key)] = c.ID
	}
	_, err := db.Retry(ctx, ids["b"])
	wantCode(t, err, spinbroker.ECONFLICT) // its dependency a is still failed

	got, err := db.Retry(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != spinbroker.Ready || got.Attempts != 0 || got.Reason != nil || got.FinishedAt != nil || *got.Seq != *a.Seq {
		t.Fatalf("retried: %s", mustJSON(got))
	}
	b := wantState(t, db, ids["b"], spinbroker.Blocked)
	if b.Reason != nil {
		t.Fatalf("b reason %s", deref(b.Reason))
	}
	wantState(t, db, ids["c"], spinbroker.Blocked)
	// d also waits on x, which is still failed: it stays cancelled and now
	// names x.
	d := wantState(t, db, ids["d"], spinbroker.Cancelled)
	if deref(d.Reason) != "dependency "+x.ID+" failed" {
		t.Fatalf("d reason %s", deref(d.Reason))
	}
	if s := getPkg(t, db, p.ID).State; s != spinbroker.PackageRunning {
		t.Fatalf("package %s", s)
	}
	again := mustNext(t, db, "r")
	if again.ID != a.ID || again.Attempts != 1 {
		t.Fatalf("redelivered %s attempt %d", again.Action, again.Attempts)
	}
	succeed(t, db, again)
	succeed(t, db, mustNext(t, db, "s"))
	if c := mustNext(t, db, "s"); c.ID != ids["c"] {
		t.Fatalf("got %s", c.Action)
	}
	if _, err := db.Retry(ctx, x.ID); err != nil {
		t.Fatal(err)
	}
	wantState(t, db, ids["d"], spinbroker.Blocked)

	_, err = db.Retry(ctx, a.ID)
	wantCode(t, err, spinbroker.ECONFLICT) // succeeded
	_, err = db.Retry(ctx, "0190c3a4-5a6b-7c8d-9e0f-a1b2c3d4e5f6")
	wantCode(t, err, spinbroker.ENOTFOUND)
}

// denseCascade enqueues a seed and three layers of w commands, each
// command of a layer depending on every command of the layer before (the
// first on the seed), and leases the seed. It answers the package, the
// keys by command id, and the seed.
func denseCascade(t testing.TB, db *store.DB, w int) (*spinbroker.Package, map[string]string, *spinbroker.Command) {
	t.Helper()
	cmds := []spinbroker.NewCommand{keyed("s", "seed", "s")}
	for layer, name := range []string{"a", "b", "c"} {
		for i := 0; i < w; i++ {
			deps := []string{"s"}
			if layer > 0 {
				deps = deps[:0]
				for j := 0; j < w; j++ {
					deps = append(deps, fmt.Sprint("abc"[layer-1:layer], j))
				}
			}
			cmds = append(cmds, keyed(fmt.Sprint(name, i), "dense", "x", deps...))
		}
	}
	p := enqueue(t, db, cmds...)
	ids := map[string]string{}
	for _, c := range p.Commands {
		ids[c.ID] = deref(c.Key)
	}
	return p, ids, mustNext(t, db, "seed")
}

// TestDB_Complete_DenseCascade: a failure whose cascade meets a densely
// connected graph cancels every command once, each naming the right
// dependency. (The cascade used to expand a command once per dependency
// it had in the cascade, the sum of in-degree times out-degree: three
// layers of 200 held the writer 15 s. BenchmarkDenseCascade times it.)
func TestDB_Complete_DenseCascade(t *testing.T) {
	db, _ := open(t)
	const w = 40
	p, ids, seed := denseCascade(t, db, w)
	finish(t, db, seed, false, "boom")
	got := getPkg(t, db, p.ID)
	if got.Counts.Cancelled != 3*w {
		t.Fatalf("cancelled %d, want %d", got.Counts.Cancelled, 3*w)
	}
	for _, c := range got.Commands[1:] {
		key := deref(c.Key)
		r := deref(c.Reason)
		dep, verb, ok := strings.Cut(strings.TrimPrefix(r, "dependency "), " ")
		// The seed's own dependents name it; the others name a dependency
		// of the layer before, which the cascade cancelled.
		want := map[byte]string{'a': "s", 'b': "a", 'c': "b"}[key[0]]
		if !ok || !strings.HasPrefix(ids[dep], want) || (want == "s") != (verb == "failed") || (want != "s") != (verb == "cancelled") {
			t.Fatalf("%s: reason %q", key, r)
		}
	}
}

// BenchmarkDenseCascade times the failure of a command that three layers
// of 150 depend on, each command of a layer on every command of the layer
// before (45,000 edges): the cascade cancels 450 commands. Quadratic per
// command before session 11, it took about 6 s.
func BenchmarkDenseCascade(b *testing.B) {
	db, _ := open(b)
	for b.Loop() {
		b.StopTimer()
		_, _, seed := denseCascade(b, db, 150)
		b.StartTimer()
		finish(b, db, seed, false, "boom")
	}
}
