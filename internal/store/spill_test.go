package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	spinbroker "github.com/spin-broker/spinbroker"
)

// spillParams is a parameters object of n bytes.
func spillParams(n int) json.RawMessage {
	return json.RawMessage(`{"x":"` + strings.Repeat("y", n-8) + `"}`)
}

// rowParameters reads, on the write connection, what command id's row
// and command_parameters hold for it (aside is "" when it has no row
// there).
func rowParameters(t *testing.T, db *DB, id string) (row, aside string) {
	t.Helper()
	err := db.maintain(context.Background(), func(c *sql.Conn) error {
		if err := c.QueryRowContext(context.Background(), `SELECT parameters FROM commands WHERE id = ?`, id).Scan(&row); err != nil {
			return err
		}
		err := c.QueryRowContext(context.Background(), `SELECT parameters FROM command_parameters WHERE command_id = ?`, id).Scan(&aside)
		if err == sql.ErrNoRows {
			return nil
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return row, aside
}

// TestParameters_LargeKeptAside: parameters longer than spillBytes are
// kept in command_parameters, the command's row holding an empty string,
// and every way of reading a command gives them back as they were given:
// the create's answer, next, claim, the command, its package, its queue,
// the completion's answer. Those up to spillBytes stay in the row. A
// deleted package takes its commands' parameters with it.
func TestParameters_LargeKeptAside(t *testing.T) {
	db := openQuiet(t, filepath.Join(t.TempDir(), "spill.db"), Options{})
	defer db.Close()
	ctx := context.Background()
	sizes := []int{16, spillBytes, spillBytes + 1, 200 << 10}
	if _, err := db.SetQueue(ctx, "claim", spinbroker.QueueSettings{Concurrency: ptrTo(len(sizes))}); err != nil {
		t.Fatal(err)
	}
	var in []spinbroker.NewCommand
	given := map[string]json.RawMessage{} // by action
	for i, n := range sizes {
		for _, r := range []string{"next", "claim"} {
			c := spinbroker.NewCommand{Resource: r, Action: fmt.Sprintf("%s%d", r, i), Parameters: spillParams(n)}
			in, given[c.Action] = append(in, c), c.Parameters
		}
	}
	pkg, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Commands: in, Enqueue: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	same := func(how string, c spinbroker.Command) {
		t.Helper()
		if want := given[c.Action]; string(c.Parameters) != string(want) {
			t.Errorf("%s: %s's parameters are %d bytes, not the %d given", how, c.Action, len(c.Parameters), len(want))
		}
	}
	for _, c := range pkg.Commands {
		same("the create's answer", c)
		row, aside := rowParameters(t, db, c.ID)
		want := string(given[c.Action])
		if big := len(want) > spillBytes; big && (row != "" || aside != want) || !big && (row != want || aside != "") {
			t.Errorf("%s, of %d bytes: %d bytes in its row, %d aside", c.Action, len(want), len(row), len(aside))
		}
	}
	queue, err := db.Queue(ctx, "claim")
	if err != nil || len(queue.Commands) != len(sizes) {
		t.Fatalf("the queue: %+v, %v", queue, err)
	}
	for _, c := range queue.Commands {
		same("the queue", c)
	}
	got, err := db.Package(ctx, pkg.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range got.Commands {
		same("the package", c)
	}
	claimed, _, err := db.Claim(ctx, "claim", 100, 0)
	if err != nil || len(claimed) != len(sizes) {
		t.Fatalf("claim: %d commands, %v", len(claimed), err)
	}
	var results []spinbroker.BatchResult
	for _, c := range claimed {
		same("claim", c)
		results = append(results, spinbroker.BatchResult{ID: c.ID, Result: spinbroker.Result{Status: ptrTo(true), Lease: c.Lease.Token}})
	}
	errs, err := db.CompleteBatch(ctx, results)
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range errs {
		if err != nil {
			t.Fatalf("a result of the batch: %v", err)
		}
	}
	for range sizes {
		c, _, err := db.Next(ctx, "next", 0)
		if err != nil || c == nil {
			t.Fatalf("next: %v, %v", c, err)
		}
		same("next", *c)
		done, err := db.Complete(ctx, c.ID, spinbroker.Result{Status: ptrTo(true), Lease: c.Lease.Token})
		if err != nil {
			t.Fatal(err)
		}
		same("the completion's answer", *done)
		c, err = db.Command(ctx, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		same("the command", *c)
	}
	if err := db.DeletePackage(ctx, pkg.ID); err != nil {
		t.Fatal(err)
	}
	var left int
	if err := db.maintain(ctx, func(c *sql.Conn) error {
		return c.QueryRowContext(ctx, `SELECT count(*) FROM command_parameters`).Scan(&left)
	}); err != nil || left != 0 {
		t.Fatalf("after the package's deletion, command_parameters holds %d rows (%v)", left, err)
	}
}

func ptrTo[T any](v T) *T { return &v }

// TestParameters_LostAsideStillClaimed: a command whose kept-aside
// parameters are gone (a hand edit, a damaged restore; `spinbroker check`
// names it) does not stop a claim on its queue. It is delivered as next
// delivers it, with null parameters, and the commands around it as they
// were given.
func TestParameters_LostAsideStillClaimed(t *testing.T) {
	db := openQuiet(t, filepath.Join(t.TempDir(), "lost.db"), Options{})
	defer db.Close()
	ctx := context.Background()
	if _, err := db.SetQueue(ctx, "q", spinbroker.QueueSettings{Concurrency: ptrTo(3)}); err != nil {
		t.Fatal(err)
	}
	small, big := spillParams(16), spillParams(spillBytes+1)
	pkg, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{
		{Resource: "q", Action: "a", Parameters: small},
		{Resource: "q", Action: "lost", Parameters: big},
		{Resource: "q", Action: "c", Parameters: big},
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	lost := pkg.Commands[1].ID
	if err := db.maintain(ctx, func(c *sql.Conn) error {
		_, err := c.ExecContext(ctx, `DELETE FROM command_parameters WHERE command_id = ?`, lost)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	claimed, _, err := db.Claim(ctx, "q", 10, 0)
	if err != nil || len(claimed) != 3 {
		t.Fatalf("claim: %d commands, %v; want all 3", len(claimed), err)
	}
	want := map[string]string{"a": string(small), "lost": "", "c": string(big)}
	for _, c := range claimed {
		if string(c.Parameters) != want[c.Action] {
			t.Errorf("%s: parameters of %d bytes, want %d", c.Action, len(c.Parameters), len(want[c.Action]))
		}
	}
}
