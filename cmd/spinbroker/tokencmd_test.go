package main

import (
	"context"
	"database/sql"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/pressly/goose/v3"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/brokertest"
	"github.com/spin-broker/spinbroker/internal/httpapi"
	"github.com/spin-broker/spinbroker/internal/store"
	"github.com/spin-broker/spinbroker/migrations"
)

// TestDatabaseCommands_NoDatabase: the commands on a database file say
// plainly that there is none at the path, and make none; migrate up makes
// one, as serve would.
func TestDatabaseCommands_NoDatabase(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "missing.db")
	for _, args := range [][]string{
		{"migrate", "status", "--db", path},
		{"backup", "--db", path, "--to", filepath.Join(dir, "copy.db")},
		{"compact", "--db", path},
	} {
		if r := spin(t, args...); r.code != 1 || r.stderr != "spinbroker: no database at "+path+" (give --db or set SPINBROKER_DB)\n" {
			t.Errorf("%v: %s", args, r)
		}
		if _, err := os.Stat(path); err == nil {
			t.Fatalf("%v made the database", args)
		}
	}
	if r := spin(t, "compact", "--db", dir); r.code != 1 || !strings.Contains(r.stderr, "is a folder, not a database file") {
		t.Errorf("compact of a folder: %s", r)
	}
	if r := spin(t, "migrate", "up", "--db", path); r.code != 0 {
		t.Errorf("migrate up of a new database: %s", r)
	}
}

// TestTokenCreateBadName: a name the database refuses is a mistake in the
// command line (exit 2), found before a database is made for it: it exited
// 1, as a failure does, and left behind a new, empty database.
func TestTokenCreateBadName(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "new.db")
	r := spin(t, "token", "create", "--db", path, "--role", "viewer", "--name", "line\nbreak")
	if r.code != 2 || !strings.Contains(r.stderr, "--name must be at most 200 characters") || r.stdout != "" {
		t.Fatalf("a name with a line break: %s", r)
	}
	if _, err := os.Stat(path); err == nil {
		t.Fatal("token create with a bad name made a database")
	}
}

func TestTokenCommands(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "broker.db")

	if r := spin(t, "token", "ls", "--db", path); r.code != 1 || !strings.Contains(r.stderr, "no database at "+path) {
		t.Fatalf("token ls of a missing database: %s", r)
	}
	if _, err := os.Stat(path); err == nil {
		t.Fatal("token ls created the database")
	}

	// create: the token is the last word, shown once.
	create := func(pattern string, args ...string) (id, secret string) {
		t.Helper()
		r := spin(t, append([]string{"token", "create", "--db", path}, args...)...)
		if r.code != 0 {
			t.Fatalf("token create %v: %s", args, r)
		}
		m := regexp.MustCompile(`^` + pattern + `\n$`).FindStringSubmatch(r.stdout)
		if m == nil {
			t.Fatalf("token create %v printed %q, want %s", args, r.stdout, pattern)
		}
		words := strings.Fields(r.stdout)
		if secret = words[len(words)-1]; !strings.HasPrefix(secret, "sbt_") {
			t.Fatalf("last word %q is not a token", secret)
		}
		return m[1], secret
	}
	const uuid = `([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})`
	admin, adminSecret := create(`Created admin token `+uuid+` named "ops team" \(shown once\): sbt_\S+`, "--role", "admin", "--name", "ops team")
	agent, agentSecret := create(`Created agent token `+uuid+` for resource storage \(shown once\): sbt_\S+`, "--role", "agent", "--resource", "storage")

	r := spinEnv(t, []string{"SPINBROKER_DB=" + path}, "token", "create", "--role", "viewer", "-o", "json")
	if r.code != 0 || strings.Contains(r.stderr, "creating") {
		t.Fatalf("token create -o json with $SPINBROKER_DB: %s", r)
	}
	var created createdToken
	decodeJSON(t, r.stdout, &created)
	if created.Role != "viewer" || !strings.HasPrefix(created.Secret, "sbt_") || created.ID == "" {
		t.Errorf("token create -o json = %+v", created)
	}
	viewer := created.ID

	// A broker with auth on, serving the same file while the CLI writes it.
	b := serveBroker(t, brokertest.WithFile(path), brokertest.WithAPI(httpapi.Options{Auth: true, TokenCacheTTL: time.Millisecond}))
	if r := b.spin("queue", "ls", "--token", adminSecret); r.code != 0 {
		t.Errorf("queue ls with the admin token: %s", r)
	}
	if r := spinEnv(t, []string{"SPINBROKER_URL=" + b.url, "SPINBROKER_TOKEN=" + adminSecret}, "message", "new"); r.code != 0 {
		t.Errorf("message new with the admin token from the environment: %s", r)
	}
	if r := b.spin("queue", "ls"); r.code != 1 || !strings.Contains(r.stderr, "(unauthorized); give --token or set SPINBROKER_TOKEN") {
		t.Errorf("queue ls without a token: %s", r)
	}
	if r := b.spin("message", "new", "--token", agentSecret); r.code != 1 || !strings.Contains(r.stderr, "(forbidden)") {
		t.Errorf("message new with an agent token: %s", r)
	}

	// ls: oldest first, revoked ones included.
	rows := lines(spin(t, "token", "ls", "--db", path).stdout)
	if strings.Join(rows[0], " ") != "ID NAME ROLE RESOURCE CREATED REVOKED EXPIRES" || len(rows) != 4 {
		t.Fatalf("token ls: %v", rows)
	}
	if rows[1][0] != admin || strings.Join(rows[1][1:4], " ") != "ops team admin" || rows[2][0] != agent ||
		strings.Join(rows[2][1:4], " ") != "- agent storage" || rows[3][0] != viewer || rows[1][len(rows[1])-2] != "-" || rows[1][len(rows[1])-1] != "-" {
		t.Errorf("token ls: %v", rows)
	}

	// Token ids are random (v4), so 8 characters name one; fewer are refused.
	if r := spin(t, "token", "revoke", "--db", path, admin[:7]); r.code != 2 || !strings.Contains(r.stderr, "first 8 characters") {
		t.Errorf("token revoke of a 7-character prefix: %s", r)
	}
	// revoke by a prefix; the broker refuses the token from then on.
	if r := spin(t, "token", "revoke", "--db", path, admin[:8]); r.code != 0 || r.stdout != "Revoked token "+admin+"\n" {
		t.Fatalf("token revoke: %s", r)
	}
	time.Sleep(10 * time.Millisecond) // the broker's token cache
	if r := b.spin("queue", "ls", "--token", adminSecret); r.code != 1 || !strings.Contains(r.stderr, "(unauthorized)") {
		t.Errorf("queue ls with a revoked token: %s", r)
	}
	toks := listTokens(t, path)
	if len(toks) != 3 || toks[0].ID != admin || toks[0].RevokedAt == nil || toks[1].RevokedAt != nil || toks[0].Expired {
		t.Errorf("token ls -o json = %+v", toks)
	}
	// Again: it says so, rather than revoke it once more.
	if r := spin(t, "token", "revoke", "--db", path, admin); r.code != 0 || !strings.HasPrefix(r.stdout, "Token "+admin+" was revoked already, at ") {
		t.Errorf("token revoke of a revoked token: %s", r)
	}
	var revoked spinbroker.Token
	decodeJSON(t, spin(t, "token", "revoke", "--db", path, admin, "-o", "json").stdout, &revoked)
	if revoked.ID != admin || revoked.RevokedAt == nil || !revoked.RevokedAt.Equal(*toks[0].RevokedAt) {
		t.Errorf("token revoke -o json of a revoked token = %+v", revoked)
	}
	if r := spin(t, "token", "revoke", "--db", path, "ffffffff"); r.code != 1 || !strings.Contains(r.stderr, "(not_found)") {
		t.Errorf("token revoke of no token: %s", r)
	}
}

func TestTokenCreateNewDatabase(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "new.db")
	r := spin(t, "token", "create", "--db", path, "--role", "client")
	if r.code != 0 || r.stderr != "spinbroker: creating a new database at "+path+"\n" || !strings.HasPrefix(r.stdout, "Created client token ") {
		t.Fatalf("token create on a new database: %s", r)
	}
	if r := spin(t, "token", "ls", "--db", path); r.code != 0 || len(lines(r.stdout)) != 2 {
		t.Errorf("token ls: %s", r)
	}
}

// TestDatabaseCommands_PlainErrors: the commands on a database file say
// what went wrong in one sentence that names the file, without the store's
// Go prefixes ("store: backup: ...", "store: create X: open X: ..."); a
// token create or a migrate up in a folder that does not exist says so
// (not "cannot lock X: open X.lock: no such file or directory"), and does
// not first announce a database it will not make.
func TestDatabaseCommands_PlainErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	db := filepath.Join(dir, "b.db")
	if r := spin(t, "migrate", "up", "--db", db); r.code != 0 {
		t.Fatalf("migrate up: %s", r)
	}
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, []byte(strings.Repeat("not a database ", 512)), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.db")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	damaged := filepath.Join(dir, "damaged.db")
	if r := spin(t, "migrate", "up", "--db", damaged); r.code != 0 {
		t.Fatalf("migrate up: %s", r)
	}
	os.Remove(damaged + "-wal")
	os.Remove(damaged + "-shm")
	if err := os.Truncate(damaged, 5000); err != nil {
		t.Fatal(err)
	}
	isDamaged := damaged + " is damaged (database disk image is malformed): restore it from a backup"
	missing := filepath.Join(dir, "missing", "sub")
	// A file that is no database is said so in the same sentence by
	// every command, without a code: "(unavailable)" read as a fault a
	// retry might clear.
	notSQLite := garbage + " is not a spin-broker database: it is not an SQLite database at all"
	for _, tt := range []struct {
		args []string
		want string // the whole of stderr, after "spinbroker: "
	}{
		{[]string{"backup", "--db", db, "--to", filepath.Join(missing, "x.db")}, "cannot write " + filepath.Join(missing, "x.db") + ": its folder " + missing + " does not exist"},
		{[]string{"backup", "--db", db, "--to", db}, db + " already exists, and a backup never replaces a file: give --to a new name, or move that file away first"},
		{[]string{"backup", "--db", empty, "--to", filepath.Join(dir, "e.bak")}, empty + " is not a spin-broker database"},
		{[]string{"backup", "--db", garbage, "--to", filepath.Join(dir, "g.bak")}, notSQLite},
		{[]string{"compact", "--db", garbage}, notSQLite},
		{[]string{"compact", "--db", empty}, empty + " is not a spin-broker database"},
		{[]string{"migrate", "status", "--db", garbage}, notSQLite},
		{[]string{"migrate", "up", "--db", garbage}, notSQLite},
		{[]string{"token", "ls", "--db", garbage}, notSQLite},
		{[]string{"token", "create", "--role", "admin", "--db", garbage}, notSQLite},
		{[]string{"token", "revoke", "--db", garbage, "7c78d9df"}, notSQLite},
		{[]string{"migrate", "status", "--db", damaged}, isDamaged},
		{[]string{"token", "ls", "--db", damaged}, isDamaged},
		{[]string{"backup", "--db", damaged, "--to", filepath.Join(dir, "d.bak")}, isDamaged},
		{[]string{"compact", "--db", damaged}, isDamaged},
		{[]string{"token", "create", "--role", "admin", "--db", filepath.Join(missing, "x.db")}, "cannot create a database at " + filepath.Join(missing, "x.db") + ": its folder " + missing + " does not exist"},
		{[]string{"migrate", "up", "--db", filepath.Join(missing, "x.db")}, "cannot create a database at " + filepath.Join(missing, "x.db") + ": its folder " + missing + " does not exist"},
	} {
		r := spin(t, tt.args...)
		if r.code != 1 || r.stdout != "" {
			t.Errorf("%v: %s", tt.args, r)
		}
		if !strings.HasPrefix(r.stderr, "spinbroker: "+tt.want) || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("%v: stderr = %q, want one line starting %q", tt.args, r.stderr, "spinbroker: "+tt.want)
		}
		if strings.Contains(r.stderr, "(unavailable)") || strings.Contains(r.stderr, "(26)") || strings.Contains(r.stderr, "(11)") {
			t.Errorf("%v: stderr has a code: %q", tt.args, r.stderr)
		}
		for _, prefix := range []string{"store:", "backup:", "compact:", "migrate:"} {
			if strings.Contains(r.stderr, prefix) {
				t.Errorf("%v: stderr has the Go prefix %q: %q", tt.args, prefix, r.stderr)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "missing")); err == nil {
		t.Error("a failed command made the missing folder")
	}
}

// TestTokenCommands_DoNotMigrate: the token commands run beside a broker,
// so they work on a database as it is. They opened it as a broker does,
// applying pending migrations: a newer binary's 'token ls' upgraded the
// schema under the older broker still serving it (which 'migrate up'
// refuses to do), and 'token ls' of an empty file made it a database.
func TestTokenCommands_DoNotMigrate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	old := filepath.Join(dir, "old.db")
	conn, err := sql.Open("sqlite", old)
	if err != nil {
		t.Fatal(err)
	}
	p, err := goose.NewProvider(goose.DialectSQLite3, conn, migrations.FS)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	version := func() int64 {
		v, err := p.GetDBVersion(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	empty := filepath.Join(dir, "empty.db")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"token", "ls", "--db", old},
		{"token", "revoke", "--db", old, "ffffffff"},
		{"token", "create", "--role", "admin", "--db", old},
	} {
		r := spin(t, args...)
		if r.code != 1 || !strings.Contains(r.stderr, "spinbroker migrate up --db "+old) || r.stdout != "" {
			t.Errorf("%v on a database with migrations pending: %s", args, r)
		}
		if v := version(); v != 1 {
			t.Fatalf("%v migrated the database to version %d", args, v)
		}
	}
	conn.Close()
	for _, args := range [][]string{{"token", "ls", "--db", empty}, {"token", "revoke", "--db", empty, "ffffffff"}} {
		if r := spin(t, args...); r.code != 1 || !strings.Contains(r.stderr, empty+" is empty, not a spin-broker database") {
			t.Errorf("%v: %s", args, r)
		}
		if fi, err := os.Stat(empty); err != nil || fi.Size() != 0 {
			t.Fatalf("%v wrote to the empty file: %v", args, err)
		}
	}
	// create makes a database, in an empty file too, as serve would.
	if r := spin(t, "token", "create", "--role", "admin", "--db", empty); r.code != 0 {
		t.Errorf("token create in an empty file: %s", r)
	}
}

// TestTokenCommands_ThroughAnotherHardLink: beside a broker, the token
// commands through a second name of its database, a hard link made after it
// started, are refused, saying why, and leave nothing beside the link.
// SQLite keeps the -wal beside the name it is given: a token created
// through the link went to two.db-wal, which the broker never reads, so the
// token did not work, and an open through the link once the broker had
// moved on would copy that -wal's stale pages over the broker's. Through
// the served name they work.
func TestTokenCommands_ThroughAnotherHardLink(t *testing.T) {
	dir := t.TempDir()
	db, other := filepath.Join(dir, "one.db"), filepath.Join(dir, "two.db")
	startBroker(t, db)
	if err := os.Link(db, other); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"token", "create", "--db", other, "--role", "admin", "--name", "ops"},
		{"token", "ls", "--db", other},
	} {
		r := spin(t, args...)
		if r.code != 1 || !strings.Contains(r.stderr, "two.db has 2 hard links") || !strings.Contains(r.stderr, "-samefile") || !strings.Contains(r.stderr, "the name the broker serves") {
			t.Errorf("%v through a hard link beside the broker: %s", args[:2], r)
		}
	}
	for _, f := range []string{other + "-wal", other + "-shm"} {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("the refused token commands left %s", filepath.Base(f))
		}
	}
	if r := spin(t, "token", "create", "--db", db, "--role", "admin", "--name", "ops"); r.code != 0 {
		t.Fatalf("token create through the name the broker serves: %s", r)
	}
	if r := spin(t, "token", "ls", "--db", db); r.code != 0 || !strings.Contains(r.stdout, "ops") {
		t.Fatalf("token ls through the name the broker serves: %s", r)
	}
}

// TestServe_PlainDatabaseErrors: serve says why it cannot open its
// database in the same sentence as the other database commands, naming
// the file once, without the store's Go prefixes ("open the database x.db:
// store: x.db is not ...").
func TestServe_PlainDatabaseErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, []byte(strings.Repeat("not a database ", 512)), 0o600); err != nil {
		t.Fatal(err)
	}
	folder := filepath.Join(dir, "folder.db")
	if err := os.Mkdir(folder, 0o700); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	for _, tt := range []struct {
		db, want string // want: the start of stderr, after "spinbroker: "
	}{
		{garbage, garbage + " is not a spin-broker database: it is not an SQLite database at all"},
		{folder, folder + " is a folder, not a database file"},
		{filepath.Join(missing, "x.db"), "cannot create a database at " + filepath.Join(missing, "x.db") + ": its folder " + missing + " does not exist"},
	} {
		r := spin(t, "serve", "--addr", "127.0.0.1:0", "--db", tt.db)
		if r.code != 1 || r.stdout != "" || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("serve --db %s: %s", tt.db, r)
		}
		if !strings.HasPrefix(r.stderr, "spinbroker: "+tt.want) || strings.Count(r.stderr, tt.db) != 1 {
			t.Errorf("serve --db %s: stderr = %q, want one line starting %q that names the file once", tt.db, r.stderr, "spinbroker: "+tt.want)
		}
		for _, prefix := range []string{"store:", "open the database"} {
			if strings.Contains(r.stderr, prefix) {
				t.Errorf("serve --db %s: stderr has %q: %q", tt.db, prefix, r.stderr)
			}
		}
	}
}

// TestTokenCreateNameInCharacters: --name is at most 200 characters, as the
// usage error says, in any script: a 150-character Cyrillic name was
// refused "at most 200 characters" (it counted 300 bytes).
func TestTokenCreateNameInCharacters(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "b.db")
	name := strings.Repeat("я", 150)
	if r := spin(t, "token", "create", "--db", path, "--role", "viewer", "--name", name); r.code != 0 {
		t.Fatalf("a name of 150 Cyrillic characters: %s", r)
	}
	if r := spin(t, "token", "ls", "--db", path, "-o", "json"); r.code != 0 || !strings.Contains(r.stdout, name) {
		t.Errorf("token ls: %s", r)
	}
	r := spin(t, "token", "create", "--db", path, "--role", "viewer", "--name", strings.Repeat("я", 201))
	if r.code != 2 || !strings.Contains(r.stderr, "--name must be at most 200 characters") {
		t.Errorf("a name of 201 Cyrillic characters: %s", r)
	}
	// Latin-1 from an old terminal is not UTF-8: token ls would show it
	// back as U+FFFD, never as typed.
	r = spin(t, "token", "create", "--db", path, "--role", "viewer", "--name", "caf\xe9")
	if r.code != 2 || !strings.Contains(r.stderr, `of UTF-8 text`) || !strings.Contains(r.stderr, `"caf\xe9"`) {
		t.Errorf("a name that is not UTF-8: %s", r)
	}
}

// TestUnauthorizedHint: a 401 after the user gave a token says that token
// was refused, and where it came from; telling them to "give --token" when
// they just did sent them looking for a typo in the flag. Without a token
// the hint stays how to give one.
func TestUnauthorizedHint(t *testing.T) {
	t.Parallel()
	b := serveBroker(t, brokertest.WithAPI(httpapi.Options{Auth: true, TokenCacheTTL: time.Millisecond}))
	db := b.db
	revoked, secret, err := db.CreateToken(context.Background(), spinbroker.RoleAdmin, "", "old")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.RevokeToken(context.Background(), revoked.ID); err != nil {
		t.Fatal(err)
	}
	_, expired, err := db.CreateExpiringToken(context.Background(), spinbroker.RoleAdmin, "", "ended", time.Nanosecond)
	if err != nil {
		t.Fatal(err)
	}
	const noToken = "give --token or set SPINBROKER_TOKEN"
	for _, tt := range []struct {
		name string
		r    result
		want string
	}{
		{"Flag", b.spin("queue", "ls", "--token", "sbt_mistyped"), "the token given with --token was refused"},
		{"Env", spinEnv(t, []string{"SPINBROKER_URL=" + b.url, "SPINBROKER_TOKEN=sbt_mistyped"}, "queue", "ls"), "the token given in SPINBROKER_TOKEN was refused"},
		{"None", b.spin("queue", "ls"), noToken},
		// The broker's sentence says what to do; no typo to look for.
		{"Expired", b.spin("queue", "ls", "--token", expired), "the token expired at "},
		{"Revoked", b.spin("queue", "ls", "--token", secret), "the token was revoked at "},
	} {
		if tt.r.code != 1 || !strings.Contains(tt.r.stderr, "(unauthorized)") || !strings.Contains(tt.r.stderr, tt.want) {
			t.Errorf("%s: %s, want %q", tt.name, tt.r, tt.want)
		}
		hinted := strings.Contains(tt.r.stderr, "revoked, mistyped, or made for another broker")
		told := tt.name == "Expired" || tt.name == "Revoked" // the broker said why
		if tt.name != "None" && !told && (strings.Contains(tt.r.stderr, noToken) || !hinted) {
			t.Errorf("%s: %s", tt.name, tt.r)
		}
		if told && (hinted || strings.Contains(tt.r.stderr, noToken) || strings.Contains(tt.r.stderr, "was refused")) {
			t.Errorf("%s: a token the broker said why it refused is told to look for a typo: %s", tt.name, tt.r)
		}
	}
}

// TestWarnNoTokens_Expired: a database whose only token has expired has no
// token that works, and serve --auth says so at start as for none at all.
func TestWarnNoTokens_Expired(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "broker.db")
	past := func() time.Time { return time.Now().Add(-2 * time.Hour) }
	db, err := store.Open(context.Background(), path, store.Options{Now: past, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, _, err := db.CreateExpiringToken(context.Background(), spinbroker.RoleAdmin, "", "ops", time.Hour); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	warnNoTokens(context.Background(), db, slog.New(slog.NewTextHandler(&log, nil)), path)
	if !strings.Contains(log.String(), "has no token that works") {
		t.Errorf("only an expired token: the log says %q", log.String())
	}
	if _, _, err := db.CreateExpiringToken(context.Background(), spinbroker.RoleAdmin, "", "ops", 3*time.Hour); err != nil {
		t.Fatal(err)
	}
	log.Reset()
	warnNoTokens(context.Background(), db, slog.New(slog.NewTextHandler(&log, nil)), path)
	if log.Len() != 0 {
		t.Errorf("a token that works: the log says %q", log.String())
	}
}

// TestTokenCreate_Expires: --expires takes days, Go durations or both, and
// the token stops working then; create says when, ls shows it and marks
// tokens past it, and a broker refuses such a token saying it expired.
// Without --expires a token never expires, as before.
func TestTokenCreate_Expires(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "broker.db")
	const uuid = `([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})`
	for _, tt := range []struct {
		expires string
		want    time.Duration
	}{
		{"90d", 90 * 24 * time.Hour},
		{"720h", 720 * time.Hour},
		{"1d12h", 36 * time.Hour},
		{"36500d", 36500 * 24 * time.Hour},
	} {
		before := time.Now().Truncate(time.Second)
		r := spin(t, "token", "create", "--db", path, "--role", "viewer", "--name", "ci", "--expires", tt.expires)
		m := regexp.MustCompile(`^Created viewer token ` + uuid + ` named "ci", expires (\S+) \(shown once\): sbt_\S+\n$`).FindStringSubmatch(r.stdout)
		if r.code != 0 || m == nil {
			t.Fatalf("--expires %s: %s", tt.expires, r)
		}
		at, err := time.Parse(time.RFC3339, m[2])
		if err != nil || at.Before(before.Add(tt.want)) || at.After(time.Now().Add(tt.want)) {
			t.Errorf("--expires %s: expires %s, want about %s", tt.expires, m[2], before.Add(tt.want).UTC())
		}
	}
	for _, bad := range []string{"90", "ninety", "d", "1.5d", "0", "0d", "-1h", "1d-2h", "36501d", "876001h", "99999999999999999999d"} {
		r := spin(t, "token", "create", "--db", path, "--role", "viewer", "--expires", bad)
		if r.code != 2 || !strings.Contains(r.stderr, "--expires must") || r.stdout != "" {
			t.Errorf("--expires %s: %s", bad, r)
		}
	}
	// A negative part is named as the fault: 1d-1h is 23h, more than 0,
	// and "must be more than 0" said nothing of what was wrong with it.
	if r := spin(t, "token", "create", "--db", path, "--role", "viewer", "--expires", "1d-1h"); r.code != 2 || !strings.Contains(r.stderr, `--expires must have no negative part, not "1d-1h"`) {
		t.Errorf("--expires 1d-1h: %s", r)
	}
	r := spin(t, "token", "create", "--db", path, "--role", "client", "--expires", "1h", "-o", "json")
	var created createdToken
	decodeJSON(t, r.stdout, &created)
	if created.ExpiresAt == nil || created.ExpiresAt.Sub(created.CreatedAt) != time.Hour {
		t.Errorf("token create --expires 1h -o json: %s", r.stdout)
	}

	// A token that expired an hour ago (made through the store with its
	// clock set back), and one that never expires.
	db, err := store.Open(context.Background(), path, store.Options{Now: func() time.Time { return time.Now().Add(-2 * time.Hour) }, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	old, oldSecret, err := db.CreateExpiringToken(context.Background(), spinbroker.RoleAdmin, "", "old", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	forever := spin(t, "token", "create", "--db", path, "--role", "admin", "--name", "forever")
	if forever.code != 0 || strings.Contains(forever.stdout, "expires") {
		t.Fatalf("token create without --expires: %s", forever)
	}
	foreverSecret := strings.Fields(forever.stdout)[len(strings.Fields(forever.stdout))-1]

	r = spin(t, "token", "ls", "--db", path)
	if r.code != 0 {
		t.Fatalf("token ls: %s", r)
	}
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		switch f := strings.Fields(line); {
		case f[0] == "ID":
			if f[len(f)-1] != "EXPIRES" {
				t.Errorf("token ls header: %q", line)
			}
		case f[0] == old.ID:
			if !strings.HasSuffix(line, old.ExpiresAt.UTC().Format(timeLayout)+" (expired)") {
				t.Errorf("token ls, the expired token: %q", line)
			}
		case f[1] == "forever":
			if f[len(f)-1] != "-" {
				t.Errorf("token ls, the token without --expires: %q", line)
			}
		case f[len(f)-1] == "(expired)" || f[len(f)-1] == "-":
			t.Errorf("token ls, a token that expires later: %q", line)
		}
	}
	toks := listTokens(t, path)
	for _, tok := range toks {
		if tok.Expired != (tok.ID == old.ID) || (tok.ExpiresAt == nil) != (tok.Name == "forever") {
			t.Errorf("token ls -o json: %+v", tok)
		}
	}

	b := serveBroker(t, brokertest.WithFile(path), brokertest.WithAPI(httpapi.Options{Auth: true}))
	if r := b.spin("queue", "ls", "--token", foreverSecret); r.code != 0 {
		t.Errorf("queue ls with a token without --expires: %s", r)
	}
	if r := b.spin("queue", "ls", "--token", oldSecret); r.code != 1 || !strings.Contains(r.stderr, "the token expired at "+old.ExpiresAt.UTC().Format(time.RFC3339)) {
		t.Errorf("queue ls with an expired token: %s", r)
	}
}

// TestTokenDelete: delete removes a revoked or expired token and refuses a
// live one, saying to revoke it first; a prefix that matches two tokens is
// a usage mistake (exit 2) for revoke and delete alike, naming both ids:
// revoke exited 1 with "matches more than one token", as if the database
// had failed, and named none.
func TestTokenDelete(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "broker.db")
	create := func(args ...string) string {
		t.Helper()
		r := spin(t, append([]string{"token", "create", "--db", path, "-o", "json"}, args...)...)
		if r.code != 0 {
			t.Fatalf("token create: %s", r)
		}
		var out createdToken
		decodeJSON(t, r.stdout, &out)
		return out.ID
	}
	live := create("--role", "admin", "--name", "live")
	r := spin(t, "token", "delete", "--db", path, live)
	if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, "token "+live+" still works: revoke it first (spinbroker token revoke "+live+"), then delete it") {
		t.Errorf("token delete of a live token: %s", r)
	}
	if r := spin(t, "token", "revoke", "--db", path, live); r.code != 0 {
		t.Fatalf("token revoke: %s", r)
	}
	if r := spin(t, "token", "delete", "--db", path, live[:8]); r.code != 0 || r.stdout != "Deleted token "+live+"\n" {
		t.Errorf("token delete of a revoked token: %s", r)
	}
	if r := spin(t, "token", "delete", "--db", path, live); r.code != 1 || !strings.Contains(r.stderr, "no token "+live+" (not_found)") {
		t.Errorf("token delete of a deleted token: %s", r)
	}

	// Two tokens whose ids share their first 8 characters (ids are
	// random: these are made so).
	a, b := create("--role", "viewer"), create("--role", "viewer")
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	shared := []string{"abcdef01-0000-4000-8000-000000000001", "abcdef01-0000-4000-8000-000000000002"}
	for i, id := range []string{a, b} {
		if _, err := raw.Exec(`UPDATE tokens SET id = ? WHERE id = ?`, shared[i], id); err != nil {
			t.Fatal(err)
		}
	}
	for _, verb := range []string{"revoke", "delete"} {
		r := spin(t, "token", verb, "--db", path, "abcdef01")
		want := "spinbroker: abcdef01 matches 2 tokens, " + shared[0] + ", " + shared[1] + "; give more of the id\nRun 'spinbroker token " + verb + " --help' for usage.\n"
		if r.code != 2 || r.stdout != "" || r.stderr != want {
			t.Errorf("token %s of a prefix of two: %s, want exit 2 and %q", verb, r, want)
		}
	}
	if r := spin(t, "token", "revoke", "--db", path, shared[1]); r.code != 0 {
		t.Fatalf("token revoke: %s", r)
	}
	var deleted spinbroker.Token
	decodeJSON(t, spin(t, "token", "delete", "--db", path, shared[1], "-o", "json").stdout, &deleted)
	if deleted.ID != shared[1] || deleted.Role != "viewer" || deleted.RevokedAt == nil {
		t.Errorf("token delete -o json: %+v", deleted)
	}
	if rows := lines(spin(t, "token", "ls", "--db", path).stdout); len(rows) != 2 || rows[1][0] != shared[0] {
		t.Errorf("token ls after the deletions: %v", rows)
	}
}

// createdToken is what 'token create -o json' prints: the token and its
// secret.
type createdToken struct {
	spinbroker.Token
	Secret string `json:"token"`
}

// listTokens is what 'token ls -o json' prints of the database at path.
func listTokens(t *testing.T, path string) []listedToken {
	t.Helper()
	var toks struct {
		Tokens []listedToken `json:"tokens"`
	}
	decodeJSON(t, spin(t, "token", "ls", "--db", path, "-o", "json").stdout, &toks)
	return toks.Tokens
}

// TestTokenLs_ClipsLongNames: a token's name may be 200 characters, and one
// such name made token ls's NAME column that wide on every row, pushing
// ROLE and the rest off the terminal. The table clips a name past 40
// characters with "…"; -o json keeps it whole.
func TestTokenLs_ClipsLongNames(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "b.db")
	long := strings.Repeat("я", 200)
	for _, name := range []string{"ops", long, strings.Repeat("n", 40)} {
		if r := spin(t, "token", "create", "--db", path, "--role", "viewer", "--name", name); r.code != 0 {
			t.Fatalf("token create --name %q: %s", name, r)
		}
	}
	r := spin(t, "token", "ls", "--db", path)
	if r.code != 0 {
		t.Fatalf("token ls: %s", r)
	}
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	header := lines[0]
	i := strings.Index(header, "ROLE")
	if role := utf8.RuneCountInString(header[:i]); role > 36+2+40+2 {
		t.Errorf("ROLE starts at column %d, want at most %d (the id, a name of 40, the gaps):\n%s", role, 36+2+40+2, r.stdout)
	}
	if !strings.Contains(r.stdout, " "+strings.Repeat("я", 39)+"… ") || strings.Contains(r.stdout, strings.Repeat("я", 40)) {
		t.Errorf("the 200-character name is not clipped to 39 characters and …:\n%s", r.stdout)
	}
	if !strings.Contains(r.stdout, " "+strings.Repeat("n", 40)+" ") {
		t.Errorf("a name of exactly 40 characters was clipped:\n%s", r.stdout)
	}
	if r := spin(t, "token", "ls", "--db", path, "-o", "json"); r.code != 0 || !strings.Contains(r.stdout, long) {
		t.Errorf("token ls -o json does not keep the whole name: %s", r)
	}
}

// TestTokenHelp_ShowsOutput: every token command prints a table or JSON
// (create's JSON is how a script takes the secret), yet only 'token ls
// --help' listed -o; the others' help hid it as a client's flag. --url and
// --token, which they refuse, stay hidden.
func TestTokenHelp_ShowsOutput(t *testing.T) {
	t.Parallel()
	for _, sub := range []string{"create", "ls", "revoke", "delete"} {
		r := spin(t, "token", sub, "--help")
		if r.code != 0 {
			t.Fatalf("token %s --help: %s", sub, r)
		}
		if !strings.Contains(r.stdout, "-o, --output string") {
			t.Errorf("token %s --help does not list -o, which it takes:\n%s", sub, r.stdout)
		}
		if strings.Contains(r.stdout, "--url") || strings.Contains(r.stdout, "--token string") {
			t.Errorf("token %s --help lists --url or --token, which it refuses:\n%s", sub, r.stdout)
		}
	}
}

// TestToken_GivenWithScheme: a token given as "Bearer …" (copied from a
// curl line) is a mistake in the command line, said as such, where every
// call answered 401 without a word on why.
func TestToken_GivenWithScheme(t *testing.T) {
	r := spinEnv(t, []string{"SPINBROKER_TOKEN=Bearer sbt_x"}, "ping", "--url", "http://127.0.0.1:1")
	if r.code != 2 || !strings.Contains(r.stderr, `the token in SPINBROKER_TOKEN starts with "Bearer ": give the token alone`) {
		t.Errorf("ping with SPINBROKER_TOKEN=\"Bearer …\": %s", r)
	}
}
