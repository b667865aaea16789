package store

import (
	"bytes"
	"context"
	"database/sql"
	"log/slog"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pressly/goose/v3"

	"github.com/spin-broker/spinbroker/migrations"
)

// migrationDB opens a new database file with the migrations ready to run
// one by one.
func migrationDB(t *testing.T) (*sql.DB, *goose.Provider) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "m.db")
	raw, err := sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath()+"?_pragma=foreign_keys(1)&_pragma=journal_mode(WAL)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	raw.SetMaxOpenConns(1)
	p, err := goose.NewProvider(goose.DialectSQLite3, raw, migrations.FS)
	if err != nil {
		t.Fatal(err)
	}
	return raw, p
}

// TestMigration_DependenciesOutliveDeletion: migration 00003 keeps every
// edge and its order; after it a deleted dependency stays in its
// dependents' lists, and its Down drops those edges again, as the schema
// before it would have.
func TestMigration_DependenciesOutliveDeletion(t *testing.T) {
	ctx := context.Background()
	raw, p := migrationDB(t)
	if _, err := p.UpTo(ctx, 2); err != nil {
		t.Fatal(err)
	}
	// A dependent with three dependencies, given out of id order, written
	// under the schema before the migration.
	for _, q := range []string{
		`INSERT INTO packages (id, created_at) VALUES ('p1', 0), ('p2', 0)`,
		`INSERT INTO commands (id, package_id, pos, resource, action, parameters, state, max_attempts, created_at, n_deps)
			VALUES ('c', 'p1', 0, 'r', 'a', '{}', 'staged', 1, 0, 0), ('a', 'p1', 1, 'r', 'a', '{}', 'staged', 1, 0, 0),
			       ('b', 'p2', 0, 'r', 'a', '{}', 'staged', 1, 0, 0), ('d', 'p2', 1, 'r', 'a', '{}', 'staged', 1, 0, 3)`,
		`INSERT INTO command_deps (command_id, depends_on) VALUES ('d', 'c'), ('d', 'a'), ('d', 'b')`,
	} {
		if _, err := raw.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	deps := func() []string {
		t.Helper()
		rows, err := raw.QueryContext(ctx, `SELECT depends_on FROM command_deps WHERE command_id = 'd' ORDER BY rowid`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			out = append(out, s)
		}
		return out
	}
	if _, err := p.UpTo(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if got := deps(); !slices.Equal(got, []string{"c", "a", "b"}) {
		t.Fatalf("after Up the edges are %v, want c a b in the order given", got)
	}
	if _, err := raw.ExecContext(ctx, `DELETE FROM packages WHERE id = 'p1'`); err != nil {
		t.Fatal(err)
	}
	if got := deps(); !slices.Equal(got, []string{"c", "a", "b"}) {
		t.Fatalf("after deleting a dependency's package the edges are %v, want c a b", got)
	}
	if _, err := p.DownTo(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if got := deps(); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("after Down the edges are %v, want only b", got)
	}
	var fk int
	if err := raw.QueryRowContext(ctx, `SELECT count(*) FROM pragma_foreign_key_list('command_deps') WHERE "from" = 'depends_on'`).Scan(&fk); err != nil || fk != 1 {
		t.Fatalf("after Down, depends_on references commands: %d %v", fk, err)
	}
}

// TestMigration_QueueActivity: migration 00004 counts the queues that exist
// as active when it runs, so that the sweeper forgets none of them before
// they have idled for the retention period; its Down drops the column.
func TestMigration_QueueActivity(t *testing.T) {
	ctx := context.Background()
	raw, p := migrationDB(t)
	if _, err := p.UpTo(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.ExecContext(ctx, `INSERT INTO queues (resource) VALUES ('a'), ('b')`); err != nil {
		t.Fatal(err)
	}
	before := time.Now().Add(-time.Second).UnixNano()
	if _, err := p.UpTo(ctx, 4); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := raw.QueryRowContext(ctx, `SELECT count(*) FROM queues WHERE last_active_at >= ?`, before).Scan(&n); err != nil || n != 2 {
		t.Fatalf("queues counted active by the migration: %d, %v", n, err)
	}
	if _, err := p.DownTo(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if err := raw.QueryRowContext(ctx, `SELECT count(*) FROM pragma_table_info('queues') WHERE name = 'last_active_at'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("after Down, last_active_at is still there: %d, %v", n, err)
	}
}

// TestMigration_UpgradeIsLogged: opening a database of an older schema
// logs the upgrade once, from which version to which, naming what ran;
// opening it again, or a new database, logs none. Operators upgrade in
// place (stop the old broker, start the new one), and the log is what an
// incident is read from: it said nothing of the schema changing under
// the file.
func TestMigration_UpgradeIsLogged(t *testing.T) {
	ctx := context.Background()
	raw, p := migrationDB(t)
	if _, err := p.UpTo(ctx, 1); err != nil {
		t.Fatal(err)
	}
	var path string
	if err := raw.QueryRowContext(ctx, `SELECT file FROM pragma_database_list WHERE name = 'main'`).Scan(&path); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	reopen := func(path string) string {
		t.Helper()
		var buf bytes.Buffer
		db, err := Open(ctx, path, Options{Logger: slog.New(slog.NewTextHandler(&buf, nil))})
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		return buf.String()
	}
	log := reopen(path)
	if !strings.Contains(log, `msg="migrated the database schema"`) || !strings.Contains(log, "from=1 to=6") ||
		!strings.Contains(log, "00002_counts_in_store.sql") || !strings.Contains(log, "00004_queue_activity.sql") || !strings.Contains(log, "00005_token_expiry.sql") ||
		!strings.Contains(log, "00006_large_parameters.sql") {
		t.Fatalf("the upgrade's log: %s", log)
	}
	if log := reopen(path); strings.Contains(log, "migrated") {
		t.Fatalf("a database up to date logged: %s", log)
	}
	if log := reopen(filepath.Join(t.TempDir(), "new.db")); strings.Contains(log, "migrated") {
		t.Fatalf("a new database logged: %s", log)
	}
}

// TestMigration_TokenExpiry: migration 00005 keeps every token as it was,
// with no end (tokens made before it never expire); its Down drops the
// column.
func TestMigration_TokenExpiry(t *testing.T) {
	ctx := context.Background()
	raw, p := migrationDB(t)
	if _, err := p.UpTo(ctx, 4); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.ExecContext(ctx, `INSERT INTO tokens (id, name, hash, role, created_at) VALUES ('t', 'ops', x'01', 'admin', 0)`); err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 5); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := raw.QueryRowContext(ctx, `SELECT count(*) FROM tokens WHERE id = 't' AND name = 'ops' AND expires_at IS NULL`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("the token after Up: %d, %v", n, err)
	}
	if _, err := raw.ExecContext(ctx, `UPDATE tokens SET expires_at = 5 WHERE id = 't'`); err != nil {
		t.Fatal(err)
	}
	if _, err := p.DownTo(ctx, 4); err != nil {
		t.Fatal(err)
	}
	if err := raw.QueryRowContext(ctx, `SELECT count(*) FROM pragma_table_info('tokens') WHERE name = 'expires_at'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("after Down, expires_at is still there: %d, %v", n, err)
	}
	if err := raw.QueryRowContext(ctx, `SELECT count(*) FROM tokens WHERE id = 't'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("after Down, the token: %d, %v", n, err)
	}
}

// TestMigration_LargeParameters: the Down of migration 00006 moves the
// parameters kept aside back into their commands' rows before it drops
// their table, and leaves those kept in their rows as they were.
func TestMigration_LargeParameters(t *testing.T) {
	ctx := context.Background()
	raw, p := migrationDB(t)
	if _, err := p.UpTo(ctx, 6); err != nil {
		t.Fatal(err)
	}
	big := `{"x":"` + strings.Repeat("y", 5000) + `"}`
	for _, q := range []string{
		`INSERT INTO packages (id, created_at) VALUES ('p', 0)`,
		`INSERT INTO commands (id, package_id, pos, resource, action, parameters, state, max_attempts, created_at)
			VALUES ('inline', 'p', 0, 'r', 'a', '{"n":1}', 'staged', 1, 0), ('aside', 'p', 1, 'r', 'a', '', 'staged', 1, 0)`,
		`INSERT INTO command_parameters (command_id, parameters) VALUES ('aside', '` + big + `')`,
	} {
		if _, err := raw.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.DownTo(ctx, 5); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]string{"inline": `{"n":1}`, "aside": big} {
		var got string
		if err := raw.QueryRowContext(ctx, `SELECT parameters FROM commands WHERE id = ?`, id).Scan(&got); err != nil || got != want {
			t.Fatalf("after Down, %s's parameters: %d bytes, not %d (%v)", id, len(got), len(want), err)
		}
	}
	var n int
	if err := raw.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema WHERE name = 'command_parameters'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("after Down, command_parameters is still there: %d, %v", n, err)
	}
}

// TestConsistency_SchemaBeforeLargeParameters: a database not yet
// migrated to 00006 ('spinbroker check' reads one with migrations pending
// as it is) has no command_parameters to look in, and is checked without
// it.
func TestConsistency_SchemaBeforeLargeParameters(t *testing.T) {
	ctx := context.Background()
	raw, p := migrationDB(t)
	if _, err := p.UpTo(ctx, 5); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.ExecContext(ctx, `INSERT INTO packages (id, created_at, total, n_staged) VALUES ('p', 0, 1, 1);
		INSERT INTO commands (id, package_id, pos, resource, action, parameters, state, max_attempts, created_at)
			VALUES ('c', 'p', 0, 'r', 'a', '{"n":1}', 'staged', 1, 0)`); err != nil {
		t.Fatal(err)
	}
	c, err := consistency(ctx, raw)
	if err != nil || !c.OK() || c.Commands != 1 {
		t.Fatalf("the check of a schema-5 database: %v %+v", err, c)
	}
}
