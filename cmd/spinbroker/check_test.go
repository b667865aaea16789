package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/client"
	"github.com/spin-broker/spinbroker/internal/store"
)

// checkOut is the part of check -o json the tests read.
type checkOut struct {
	Consistent bool `json:"consistent"`
	Repaired   bool `json:"repaired"`
	Counts     []struct {
		Table   string `json:"table"`
		ID      string `json:"id"`
		Missing bool   `json:"missing"`
		Columns []struct {
			Column         string
			Stored, Actual int64
		} `json:"columns"`
	} `json:"counts"`
}

// rows lists "table id column stored→actual" for each column.
func (c checkOut) rows() []string {
	var out []string
	for _, r := range c.Counts {
		for _, col := range r.Columns {
			out = append(out, strings.Join([]string{r.Table, r.ID, col.Column, strconv.FormatInt(col.Stored, 10) + "→" + strconv.FormatInt(col.Actual, 10)}, " "))
		}
	}
	return out
}

func parseCheck(t *testing.T, r result) checkOut {
	t.Helper()
	var c checkOut
	if err := json.Unmarshal([]byte(r.stdout), &c); err != nil {
		t.Fatalf("check -o json: %v\n%s", err, r)
	}
	return c
}

// TestCheck_FindsAndRepairsCounts runs the real binary on a database whose
// counts were changed by hand: check names exactly those rows (exit 1),
// beside a running broker too; --repair is refused beside it (exit 2),
// and so is serve --check, naming the repair; once the broker is stopped,
// --repair sets them to what the commands say (exit 0), a second check
// finds nothing (exit 0), and the broker shows the package's true state.
func TestCheck_FindsAndRepairsCounts(t *testing.T) {
	db := filepath.Join(t.TempDir(), "c.db")
	b := startBroker(t, db)
	c, _ := client.New(b.url)
	ctx := context.Background()
	done, err := c.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{{Resource: "storage", Action: "a"}}})
	if err != nil {
		t.Fatal(err)
	}
	cmd, err := c.Next(ctx, "storage", 0, 0)
	if err != nil || cmd == nil {
		t.Fatalf("next: %v %v", cmd, err)
	}
	if _, err := c.Complete(ctx, cmd.ID, spinbroker.Result{Status: ptr(true), Lease: cmd.Lease.Token}); err != nil {
		t.Fatal(err)
	}
	queued, err := c.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{{Resource: "storage", Action: "b"}, {Resource: "emulation", Action: "c"}}})
	if err != nil {
		t.Fatal(err)
	}
	if r := spin(t, "check", "--db", db); r.code != 0 || !strings.Contains(r.stdout, "counts        ok (2 packages, 2 queues, 3 commands)") {
		t.Fatalf("check of a consistent database beside its broker: %s", r)
	}

	// By hand, as the sqlite3 shell would, while the broker runs.
	raw, err := sql.Open("sqlite", "file:"+db+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`UPDATE packages SET total = total + 1 WHERE id = '` + done.ID + `'`,
		`UPDATE packages SET n_ready = n_ready + 3 WHERE id = '` + queued.ID + `'`,
		`UPDATE queues SET n_leased = 2 WHERE resource = 'emulation'`,
		`DELETE FROM queues WHERE resource = 'storage'`,
	} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	raw.Close()
	if p, err := c.Package(ctx, done.ID); err != nil || p.State != spinbroker.PackageRunning {
		t.Fatalf("the package made wrong by hand: %v %v; the test needs it to show running", p, err)
	}

	want := []string{
		"packages " + done.ID + " total 2→1",
		"packages " + queued.ID + " n_ready 5→2",
		"queues emulation n_leased 2→0",
		"queues storage n_blocked 0→0",
		"queues storage n_ready 0→1",
		"queues storage n_leased 0→0",
	}
	if queued.ID < done.ID {
		want[0], want[1] = want[1], want[0]
	}
	r := spin(t, "check", "--db", db, "-o", "json")
	if got := parseCheck(t, r); r.code != 1 || got.Consistent || !slices.Equal(got.rows(), want) {
		t.Fatalf("check beside the broker: exit %d, rows\n%v\nwant\n%v\n%s", r.code, got.rows(), want, r)
	}
	r = spin(t, "check", "--db", db)
	if r.code != 1 || !strings.Contains(r.stdout, "counts        4 rows differ") || !strings.Contains(r.stdout, "queues    storage") ||
		!strings.Contains(r.stderr, "run 'spinbroker check --db "+db+" --repair' with its broker stopped") {
		t.Fatalf("check, table: %s", r)
	}
	r = spin(t, "check", "--db", db, "--repair")
	if r.code != 2 || !strings.Contains(r.stderr, "is in use") || !strings.Contains(r.stderr, "--repair needs it stopped") || r.stdout != "" {
		t.Fatalf("check --repair beside the broker: %s", r)
	}
	if err := b.stop(t); err != nil {
		t.Fatalf("broker's exit: %v\n%s", err, b.logs)
	}

	// serve --check refuses the wrong counts, and says how to mend them.
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(sctx, serveBinary(t), "serve", "--check", "--addr", "127.0.0.1:0", "--db", db).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "run 'spinbroker check --db "+db+" --repair'") ||
		!strings.Contains(string(out), "queue storage: no row") {
		t.Fatalf("serve --check on wrong counts: %v\n%s", err, out)
	}

	r = spin(t, "check", "--db", db, "--repair", "-o", "json")
	if got := parseCheck(t, r); r.code != 0 || !got.Consistent || !got.Repaired || !slices.Equal(got.rows(), want) {
		t.Fatalf("check --repair: exit %d, rows\n%v\nwant\n%v\n%s", r.code, got.rows(), want, r)
	}
	r = spin(t, "check", "--db", db)
	if r.code != 0 || !strings.Contains(r.stdout, "counts        ok") || r.stderr != "" {
		t.Fatalf("check after the repair: %s", r)
	}

	b = startBroker(t, db, "--check")
	if !strings.Contains(b.logs.String(), "counts check passed") {
		t.Fatalf("serve --check after the repair:\n%s", b.logs)
	}
	c, _ = client.New(b.url)
	if p, err := c.Package(ctx, done.ID); err != nil || p.State != spinbroker.PackageSucceeded || p.Total != 1 {
		t.Fatalf("the package after the repair: %+v %v", p, err)
	}
	// The storage queue has its row again: its command is delivered.
	if cmd, err := c.Next(ctx, "storage", 0, 0); err != nil || cmd == nil {
		t.Fatalf("next on storage after the repair: %v %v", cmd, err)
	}
}

// TestCheck_CannotRun: what check cannot read exits 2, saying why.
func TestCheck_CannotRun(t *testing.T) {
	dir := t.TempDir()
	other := filepath.Join(dir, "other.db")
	raw, err := sql.Open("sqlite", "file:"+other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`CREATE TABLE x (y)`); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"check", "--db", filepath.Join(dir, "none.db")}, "no database at"},
		{[]string{"check", "--db", filepath.Join(dir, "none.db"), "--repair"}, "no database at"},
		{[]string{"check", "--db", dir}, "is a folder"},
		{[]string{"check", "--db", other}, "is not a spin-broker database"},
		{[]string{"check", "--db", other, "--repair"}, "is not a spin-broker database"},
		{[]string{"check", "--db", other, "--url", "http://x"}, "--url is for the commands that talk to a broker"},
		{[]string{"check", "--db", other, "-o", "yaml"}, "--output must be table or json"},
		{[]string{"check", "extra"}, "no arguments"},
	} {
		if r := spin(t, tc.args...); r.code != 2 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: want exit 2 saying %q: %s", tc.args, tc.want, r)
		}
	}
}

// TestCheck_LostParameters: a command whose parameters were kept aside
// and whose row of command_parameters is gone (a hand edit, a damaged
// restore) fails the check (exit 1), named in the table and in -o json:
// served, it would be handed out with "parameters": null.
func TestCheck_LostParameters(t *testing.T) {
	db := filepath.Join(t.TempDir(), "l.db")
	ctx := context.Background()
	st, err := store.Open(ctx, db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p, _, err := st.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{
		{Resource: "storage", Action: "a", Parameters: json.RawMessage(`{"x":"` + strings.Repeat("y", 5000) + `"}`)},
		{Resource: "storage", Action: "b"},
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if r := spin(t, "check", "--db", db); r.code != 0 || !strings.Contains(r.stdout, "parameters    ok") {
		t.Fatalf("check before the edit: %s", r)
	}
	raw, err := sql.Open("sqlite", "file:"+db)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`DELETE FROM command_parameters`); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	lost := p.Commands[0].ID
	r := spin(t, "check", "--db", db)
	if r.code != 1 || !strings.Contains(r.stdout, "parameters    command "+lost+": lost") || !strings.Contains(r.stderr, "1 command of "+db+" lost its parameters") {
		t.Fatalf("check after the edit: %s", r)
	}
	r = spin(t, "check", "--db", db, "-o", "json")
	var got struct {
		Consistent     bool     `json:"consistent"`
		LostParameters []string `json:"lost_parameters"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || r.code != 1 || got.Consistent || !slices.Equal(got.LostParameters, []string{lost}) {
		t.Fatalf("check -o json after the edit: %v %+v\n%s", err, got, r)
	}
}

// TestCheck_OrphanRows: a row whose command is gone (here kept-aside
// parameters, written with foreign keys off as the sqlite3 shell has them)
// is found, and the exit's sentence agrees with its count.
func TestCheck_OrphanRows(t *testing.T) {
	db := filepath.Join(t.TempDir(), "o.db")
	st, err := store.Open(context.Background(), db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := sql.Open("sqlite", "file:"+db)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	for i, want := range []string{"1 row of " + db + " names a package", "2 rows of " + db + " name a package"} {
		if _, err := raw.Exec(`INSERT INTO command_parameters (command_id, parameters) VALUES (?, '{}')`, fmt.Sprintf("gone-%d", i)); err != nil {
			t.Fatal(err)
		}
		if r := spin(t, "check", "--db", db); r.code != 1 || !strings.Contains(r.stderr, want) {
			t.Fatalf("check with %d orphan rows: want exit 1 and %q: %s", i+1, want, r)
		}
	}
}
