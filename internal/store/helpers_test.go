package store_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/store"
	"github.com/spin-broker/spinbroker/internal/store/storetest"
)

var ctx = context.Background()

func ptr[T any](v T) *T { return &v }

func open(t testing.TB) (*store.DB, *storetest.Clock) {
	t.Helper()
	return storetest.MustOpen(t, store.Options{})
}

// cmd builds a new command for resource r doing action a.
func cmd(r, a string, deps ...string) spinbroker.NewCommand {
	return spinbroker.NewCommand{Resource: r, Action: a, Dependencies: deps}
}

// many is n commands for resource r.
func many(r string, n int) []spinbroker.NewCommand {
	cmds := make([]spinbroker.NewCommand, n)
	for i := range cmds {
		cmds[i] = cmd(r, "x")
	}
	return cmds
}

func keyed(key, r, a string, deps ...string) spinbroker.NewCommand {
	c := cmd(r, a, deps...)
	c.Key = key
	return c
}

// enqueue creates and enqueues a package of cmds.
func enqueue(t testing.TB, db *store.DB, cmds ...spinbroker.NewCommand) *spinbroker.Package {
	t.Helper()
	p, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Commands: cmds, Enqueue: true}, nil)
	if err != nil {
		t.Fatalf("create package: %v", err)
	}
	return p
}

func next(t testing.TB, db *store.DB, resource string) *spinbroker.Command {
	t.Helper()
	c, _, err := db.Next(ctx, resource, 0)
	if err != nil {
		t.Fatalf("next %s: %v", resource, err)
	}
	return c
}

func mustNext(t testing.TB, db *store.DB, resource string) *spinbroker.Command {
	t.Helper()
	c := next(t, db, resource)
	if c == nil {
		t.Fatalf("next %s: nothing delivered", resource)
	}
	return c
}

func noNext(t testing.TB, db *store.DB, resource string) time.Time {
	t.Helper()
	c, wake, err := db.Next(ctx, resource, 0)
	if err != nil {
		t.Fatalf("next %s: %v", resource, err)
	}
	if c != nil {
		t.Fatalf("next %s: delivered %s (%s), want nothing", resource, c.ID, c.Action)
	}
	return wake
}

func succeed(t testing.TB, db *store.DB, c *spinbroker.Command) *spinbroker.Command {
	t.Helper()
	return finish(t, db, c, true, "")
}

func finish(t testing.TB, db *store.DB, c *spinbroker.Command, ok bool, reason string) *spinbroker.Command {
	t.Helper()
	res := spinbroker.Result{Status: &ok, Lease: c.Lease.Token}
	if reason != "" {
		res.Reason = &reason
	}
	got, err := db.Complete(ctx, c.ID, res)
	if err != nil {
		t.Fatalf("complete %s: %v", c.ID, err)
	}
	return got
}

func getCmd(t testing.TB, db *store.DB, id string) *spinbroker.Command {
	t.Helper()
	c, err := db.Command(ctx, id)
	if err != nil {
		t.Fatalf("command %s: %v", id, err)
	}
	return c
}

func getPkg(t testing.TB, db *store.DB, id string) *spinbroker.Package {
	t.Helper()
	p, err := db.Package(ctx, id)
	if err != nil {
		t.Fatalf("package %s: %v", id, err)
	}
	return p
}

func wantCode(t testing.TB, err error, code string) {
	t.Helper()
	if got := spinbroker.ErrorCode(err); got != code {
		t.Fatalf("error = %v (code %q), want code %q", err, got, code)
	}
}

func wantState(t testing.TB, db *store.DB, id string, want spinbroker.CommandState) *spinbroker.Command {
	t.Helper()
	c := getCmd(t, db, id)
	if c.State != want {
		t.Fatalf("command %s (%s) is %s, want %s (reason %v)", id, c.Action, c.State, want, deref(c.Reason))
	}
	return c
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}
