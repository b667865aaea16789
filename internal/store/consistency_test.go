package store_test

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/store"
)

// sqlOn opens a plain connection to the database file at path, as the
// sqlite3 shell would: for a test to change rows behind the store's back.
func sqlOn(t *testing.T, path string) *sql.DB {
	t.Helper()
	c, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func execSQL(t *testing.T, c *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := c.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// consistencyFixture is a database with work in every state: a package
// that succeeded, one queued on storage, one with a leased command on
// emulation and a blocked one behind it, one that failed, one cancelled,
// one in staging.
type consistencyFixture struct {
	db                                            *store.DB
	path                                          string
	succeeded, queued, running, failed, cancelled string
}

func newConsistencyFixture(t *testing.T) *consistencyFixture {
	t.Helper()
	db, _ := open(t)
	f := &consistencyFixture{db: db, path: db.Path()}
	p := enqueue(t, db, cmd("storage", "a"), cmd("storage", "b"))
	f.succeeded = p.ID
	for range 2 {
		c := mustNext(t, db, "storage")
		if _, err := db.Complete(ctx, c.ID, spinbroker.Result{Status: ptr(true), Lease: c.Lease.Token}); err != nil {
			t.Fatal(err)
		}
	}
	f.queued = enqueue(t, db, cmd("storage", "x"), cmd("storage", "y"), cmd("storage", "z")).ID
	f.running = enqueue(t, db, keyed("first", "emulation", "start"), keyed("then", "emulation", "stop", "first")).ID
	mustNext(t, db, "emulation")
	f.failed = enqueue(t, db, cmd("network", "up")).ID
	c := mustNext(t, db, "network")
	if _, err := db.Complete(ctx, c.ID, spinbroker.Result{Status: ptr(false), Lease: c.Lease.Token}); err != nil {
		t.Fatal(err)
	}
	f.cancelled = enqueue(t, db, cmd("network", "down")).ID
	if _, err := db.CancelPackage(ctx, f.cancelled); err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Commands: []spinbroker.NewCommand{cmd("storage", "s")}}, nil); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestConsistency_ConsistentReportsNothing(t *testing.T) {
	f := newConsistencyFixture(t)
	c, err := f.db.CheckConsistency(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !c.OK() || c.Packages != 6 || c.Commands != 10 || c.Queues != 3 {
		t.Fatalf("a database only the store wrote: %+v", *c)
	}
	fc, err := store.CheckFile(ctx, f.path)
	if err != nil {
		t.Fatal(err)
	}
	if !fc.OK() || fc.Packages != 6 {
		t.Fatalf("CheckFile beside the open store: %+v", *fc)
	}
	fixed, err := f.db.RepairCounts(ctx)
	if err != nil || len(fixed) != 0 {
		t.Fatalf("repair of a consistent database: %v, %+v", err, fixed)
	}
}

// TestConsistency_NamesExactlyTheWrongRows: counts changed by hand (an
// older build, the sqlite3 shell) are found, those rows and no others, with
// what is stored and what the commands say; a repair sets them to a fresh
// recount, and the package's state is right again.
func TestConsistency_NamesExactlyTheWrongRows(t *testing.T) {
	f := newConsistencyFixture(t)
	raw := sqlOn(t, f.path)
	execSQL(t, raw, `UPDATE packages SET n_ready = n_ready + 3 WHERE id = ?`, f.queued)
	// Schema 1's triggers counting a command twice: the package never
	// ends, it says running.
	execSQL(t, raw, `UPDATE packages SET total = total + 1 WHERE id = ?`, f.succeeded)
	execSQL(t, raw, `UPDATE queues SET n_leased = 5 WHERE resource = 'emulation'`)
	execSQL(t, raw, `DELETE FROM queues WHERE resource = 'storage'`)

	if p, err := f.db.Package(ctx, f.succeeded); err != nil || p.State != spinbroker.PackageRunning {
		t.Fatalf("the corrupted package: %v %+v; the test needs it to show running", err, p)
	}
	c, err := f.db.CheckConsistency(ctx)
	if err != nil {
		t.Fatal(err)
	}
	type diff struct{ table, id, column string }
	var got []diff
	for _, m := range c.Miscounts {
		for _, d := range m.Diffs() {
			got = append(got, diff{m.Table, m.ID, fmt.Sprintf("%s %d→%d", d.Column, d.Stored, d.Actual)})
		}
	}
	// The packages by id, then the queues by resource. The queued
	// package's three commands are ready: its row says six.
	pkgs := []diff{{"packages", f.succeeded, "total 3→2"}, {"packages", f.queued, "n_ready 6→3"}}
	if f.queued < f.succeeded {
		pkgs[0], pkgs[1] = pkgs[1], pkgs[0]
	}
	want := append(pkgs,
		diff{"queues", "emulation", "n_leased 5→1"},
		// A missing row lists all its columns.
		diff{"queues", "storage", "n_blocked 0→0"},
		diff{"queues", "storage", "n_ready 0→3"},
		diff{"queues", "storage", "n_leased 0→0"},
	)
	if !slices.Equal(got, want) {
		t.Fatalf("miscounts:\n got %v\nwant %v", got, want)
	}
	if c.OK() || len(c.Integrity) != 0 || len(c.ForeignKeys) != 0 {
		t.Fatalf("check: %+v", *c)
	}
	var missing []string
	for _, m := range c.Miscounts {
		if m.Missing {
			missing = append(missing, m.ID)
		}
	}
	if !slices.Equal(missing, []string{"storage"}) {
		t.Errorf("missing queue rows: %v", missing)
	}
	fc, err := store.CheckFile(ctx, f.path)
	if err != nil || !slices.Equal(fc.Miscounts, c.Miscounts) {
		t.Fatalf("CheckFile: %v\n%+v\nwant %+v", err, fc, c.Miscounts)
	}
	// The storage queue has no row: nothing of it is delivered.
	noNext(t, f.db, "storage")

	fixed, err := f.db.RepairCounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(fixed, c.Miscounts) {
		t.Fatalf("repair changed\n%+v\nwant %+v", fixed, c.Miscounts)
	}
	after, err := f.db.CheckConsistency(ctx)
	if err != nil || !after.OK() {
		t.Fatalf("after the repair: %v %+v", err, after)
	}
	if p, err := f.db.Package(ctx, f.succeeded); err != nil || p.State != spinbroker.PackageSucceeded || p.Total != 2 {
		t.Fatalf("the package after the repair: %v %+v", err, p)
	}
	if q, err := f.db.Queue(ctx, "storage"); err != nil || q.Counts.Ready != 3 || q.Concurrency != spinbroker.DefaultConcurrency {
		t.Fatalf("the storage queue after the repair: %v %+v", err, q)
	}
	mustNext(t, f.db, "storage")
}

// TestConsistency_LastFinishedAt: a finished package whose finish time is
// not its last command's (a hand edit) is found and mended; the API shows
// the finish time again.
func TestConsistency_LastFinishedAt(t *testing.T) {
	f := newConsistencyFixture(t)
	raw := sqlOn(t, f.path)
	execSQL(t, raw, `UPDATE packages SET last_finished_at = NULL WHERE id = ?`, f.failed)
	p, err := f.db.Package(ctx, f.failed)
	if err != nil || p.FinishedAt != nil {
		t.Fatalf("the corrupted package: %v %+v", err, p)
	}
	fixed, err := f.db.RepairCounts(ctx)
	if err != nil || len(fixed) != 1 || fixed[0].ID != f.failed || len(fixed[0].Diffs()) != 1 || fixed[0].Diffs()[0].Column != "last_finished_at" {
		t.Fatalf("repair: %v %+v", err, fixed)
	}
	p, err = f.db.Package(ctx, f.failed)
	if err != nil || p.FinishedAt == nil || !p.FinishedAt.Equal(*p.Commands[0].FinishedAt) {
		t.Fatalf("after the repair: %v %+v", err, p)
	}
}

// TestConsistency_ForeignKeys: a command whose package was deleted with
// foreign keys off (the sqlite3 shell's default) is reported.
func TestConsistency_ForeignKeys(t *testing.T) {
	f := newConsistencyFixture(t)
	raw := sqlOn(t, f.path)
	execSQL(t, raw, `DELETE FROM packages WHERE id = ?`, f.cancelled)
	c, err := store.CheckFile(ctx, f.path)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.ForeignKeys) != 1 || c.ForeignKeys[0].Table != "commands" || c.ForeignKeys[0].Parent != "packages" || c.OK() {
		t.Fatalf("foreign keys: %+v", c.ForeignKeys)
	}
}

// TestCheckFile_Refuses: a file that is not there, or not spin-broker's,
// is an error, not a clean report.
func TestCheckFile_Refuses(t *testing.T) {
	dir := t.TempDir()
	if _, err := store.CheckFile(ctx, filepath.Join(dir, "none.db")); err == nil {
		t.Error("a missing file: no error")
	}
	other := filepath.Join(dir, "other.db")
	execSQL(t, sqlOn(t, other), `CREATE TABLE x (y)`)
	if _, err := store.CheckFile(ctx, other); err == nil {
		t.Error("another program's database: no error")
	}
}

// TestConsistency_LostParameters: a command whose parameters are kept
// aside (its row holds ”) but whose row in command_parameters is gone (a
// hand edit with the sqlite3 shell, a restore from a damaged copy) is
// reported: the store would hand it out with "parameters": null, which an
// agent decodes as no parameters at all, and a claim on its queue fails
// reading its size. Commands whose parameters are whole, inline or aside,
// are not.
func TestConsistency_LostParameters(t *testing.T) {
	f := newConsistencyFixture(t)
	big := spinbroker.NewCommand{Resource: "big", Action: "a",
		Parameters: json.RawMessage(`{"x":"` + strings.Repeat("y", 5000) + `"}`)}
	kept := spinbroker.NewCommand{Resource: "big", Action: "b",
		Parameters: json.RawMessage(`{"x":"` + strings.Repeat("z", 5000) + `"}`)}
	p := enqueue(t, f.db, big, kept, cmd("big", "c"))
	if c, err := f.db.CheckConsistency(ctx); err != nil || !c.OK() {
		t.Fatalf("before the edit: %v %+v", err, c)
	}
	lost := p.Commands[0].ID
	raw := sqlOn(t, f.path)
	execSQL(t, raw, `DELETE FROM command_parameters WHERE command_id = ?`, lost)
	for how, check := range map[string]func() (*store.Consistency, error){
		"CheckConsistency": func() (*store.Consistency, error) { return f.db.CheckConsistency(ctx) },
		"CheckFile":        func() (*store.Consistency, error) { return store.CheckFile(ctx, f.path) },
	} {
		c, err := check()
		if err != nil {
			t.Fatalf("%s: %v", how, err)
		}
		if c.OK() || !slices.Equal(c.LostParameters, []string{lost}) || len(c.ForeignKeys) != 0 || len(c.Miscounts) != 0 {
			t.Errorf("%s after its parameters were deleted: %+v, want %s's parameters lost", how, *c, lost)
		}
	}
}
