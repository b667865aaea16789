package httpapi_test

import (
	"bytes"
	"compress/gzip"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spin-broker/spinbroker/internal/httpapi"
	"github.com/spin-broker/spinbroker/internal/store"
	"github.com/spin-broker/spinbroker/internal/store/storetest"
	"github.com/spin-broker/spinbroker/migrations"
)

// upgradeSecrets is a fixture's secrets.json (testdata/upgrade/make.sh).
type upgradeSecrets struct {
	Tokens struct {
		Admin, Client, Viewer string
		AgentR3               string `json:"agent_r3"`
	}
	Lease struct {
		ID    string
		Lease struct {
			Token     string
			ExpiresAt time.Time `json:"expires_at"`
		}
	}
	Idempotent []struct {
		Path, Key, Body string
		Answer          json.RawMessage
	}
}

// TestUpgrade: a database an older spin-broker made, one per schema
// version before this build's (testdata/upgrade: staged, blocked by a
// dependency and by not_before, ready, leased, succeeded, failed, cancelled
// by a cascade and with its package, queue settings, idempotency keys,
// tokens), is migrated when this build opens it, and then answers every GET
// as the older build did (fields added since aside), keeps its counts equal
// to its rows, lets the lease held across the upgrade heartbeat and
// complete, releases dependents, replays idempotent creates, and takes the
// older build's tokens.
// A new migration needs a fixture of the schema before it
// (testdata/upgrade/README.md says how to make one).
func TestUpgrade(t *testing.T) {
	entries, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil || len(entries) == 0 {
		t.Fatalf("migrations: %v %v", entries, err)
	}
	latest, err := strconv.ParseInt(strings.SplitN(entries[len(entries)-1], "_", 2)[0], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	for v := int64(1); v < latest; v++ {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) { testUpgrade(t, fmt.Sprintf("v%d", v), v) })
	}
	// An older broker killed, its last commits in its -wal.
	t.Run("v1-killed", func(t *testing.T) { testUpgrade(t, "v1-killed", 1) })
}

func testUpgrade(t *testing.T, name string, version int64) {
	dir := filepath.Join("testdata", "upgrade", name)
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("no database of schema version %d to upgrade: make %s as testdata/upgrade/README.md says (%v)", version, dir, err)
	}
	var sec upgradeSecrets
	readJSON(t, filepath.Join(dir, "secrets.json"), &sec)
	var answers map[string]json.RawMessage
	readJSON(t, filepath.Join(dir, "answers.json"), &answers)
	path := filepath.Join(t.TempDir(), "spinbroker.db")
	gunzip(t, filepath.Join(dir, "spinbroker.db.gz"), path)
	if _, err := os.Stat(filepath.Join(dir, "spinbroker.db-wal.gz")); err == nil {
		gunzip(t, filepath.Join(dir, "spinbroker.db-wal.gz"), path+"-wal")
	}

	wantMigrations := func(applied int64) {
		t.Helper()
		st, err := store.Migrations(ctx, path, false)
		if err != nil {
			t.Fatal(err)
		}
		if len(st) < 4 {
			t.Fatalf("migrate status lists %d migrations", len(st))
		}
		for _, m := range st {
			if m.Applied != (m.Version <= applied) {
				t.Fatalf("migrate status: version %d (%s) applied=%v, want %v", m.Version, m.Name, m.Applied, m.Version <= applied)
			}
		}
	}
	wantMigrations(version)

	// The clock stands a minute after the older build stopped: its lease
	// (an hour) and idempotency keys (a day) are still live.
	clock := storetest.NewClock()
	clock.Add(sec.Lease.Lease.ExpiresAt.Add(-59 * time.Minute).Sub(clock.Now()))
	db, err := store.Open(ctx, path, store.Options{Now: clock.Now, Exclusive: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	wantMigrations(1 << 30)
	api := httpapi.New(db, slog.New(slog.NewTextHandler(io.Discard, nil)), httpapi.Options{Auth: true, Now: clock.Now})
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(func() {
		api.Shutdown()
		srv.Close()
	})
	e := &env{t: t, db: db, api: api, srv: srv, clock: clock, token: sec.Tokens.Admin}
	as := func(token string, f func()) {
		old := e.token
		e.token = token
		defer func() { e.token = old }()
		f()
	}

	// Every GET answers as the older build did.
	for p, old := range answers {
		r := e.do("GET", p, "")
		e.want(r, 200, "")
		var was, is any
		if err := json.Unmarshal(old, &was); err != nil {
			t.Fatal(err)
		}
		r.decode(t, &is)
		if diff := sameAs(was, is, p); diff != "" {
			t.Errorf("GET %s after the upgrade: %s", p, diff)
		}
	}
	wantCountsOfRows(t, path)

	// The lease held across the upgrade heartbeats and completes.
	leased := sec.Lease.ID
	as(sec.Tokens.AgentR3, func() {
		e.want(e.do("POST", "/commands/"+leased+"/heartbeat", `{"lease": "`+sec.Lease.Lease.Token+`", "extend": "10m"}`), 200, "")
		e.want(e.do("POST", "/commands/"+leased+"/heartbeat", `{"lease": "not-its-lease"}`), 409, "stale_lease")
		r := e.do("POST", "/commands/"+leased+"/complete", `{"status": true, "output": {"after": "upgrade"}, "lease": "`+sec.Lease.Lease.Token+`"}`)
		e.want(r, 200, "")
		var c struct{ State string }
		r.decode(t, &c)
		if c.State != "succeeded" {
			t.Fatalf("the command leased before the upgrade is %s after its completion", c.State)
		}
		// An agent token is still bound to its resource.
		e.want(e.do("POST", "/queues/r1/next", ""), 403, "forbidden")
	})

	// Idempotent creates replay the older build's answers; another body conflicts.
	as(sec.Tokens.Client, func() {
		for _, idem := range sec.Idempotent {
			r := e.do("POST", idem.Path, idem.Body, "Idempotency-Key", idem.Key)
			e.want(r, 201, "")
			var was, is any
			if err := json.Unmarshal(idem.Answer, &was); err != nil {
				t.Fatal(err)
			}
			r.decode(t, &is)
			if !reflect.DeepEqual(was, is) {
				t.Errorf("POST %s with key %s replayed %s, want the first answer %s", idem.Path, idem.Key, r.body, idem.Answer)
			}
			e.want(e.do("POST", idem.Path, strings.Replace(idem.Body, `:"r`, `:"other-r`, 1), "Idempotency-Key", idem.Key), 409, "conflict")
		}
	})

	// A dependency's success releases its dependent, in its old place.
	id := func(n int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012d", n) }
	for _, want := range []string{id(8), id(9)} {
		c := e.next("r1")
		if c == nil || c.ID != want {
			t.Fatalf("next on r1: %v, want %s", c, want)
		}
		e.want(e.complete(c, true), 200, "")
	}
	// The command ready before the upgrade is delivered; not_before still holds the other.
	if c := e.next("r2"); c == nil || c.ID != id(11) {
		t.Fatalf("next on r2: %v, want %s", c, id(11))
	}
	wantCmdState(e, id(10), "blocked")
	// Parameters past 2 KiB, kept in the command's row before schema 6,
	// are delivered as they were given.
	if version >= 5 {
		var was struct{ Parameters json.RawMessage } // as jq printed it
		if err := json.Unmarshal(answers["/commands/"+id(19)], &was); err != nil || len(was.Parameters) < 5000 {
			t.Fatalf("the fixture's command 19: %d bytes of parameters, %v", len(was.Parameters), err)
		}
		var want bytes.Buffer
		if err := json.Compact(&want, was.Parameters); err != nil {
			t.Fatal(err)
		}
		c := e.next("r7")
		if c == nil {
			t.Fatalf("next on r7: nothing, want %s", id(19))
		} else if c.ID != id(19) {
			t.Fatalf("next on r7: %s, want %s", c.ID, id(19))
		}
		if string(c.Parameters) != want.String() {
			t.Fatalf("next on r7: %d bytes of parameters, want the %d the older build was given", len(c.Parameters), want.Len())
		}
		e.want(e.complete(c, true), 200, "")
	}
	// A failure's cascade is undone by a retry, across packages.
	e.want(e.do("POST", "/commands/"+id(14)+"/retry", ""), 200, "")
	wantCmdState(e, id(15), "blocked")
	wantCmdState(e, id(16), "blocked")
	// A paused queue stays paused; new work runs.
	e.createPackage(`[{"resource": "r5", "action": "new"}]`, true)
	e.want(e.do("POST", "/queues/r5/next", ""), 204, "")
	e.createPackage(`[{"resource": "r6", "action": "new"}]`, true)
	if c := e.next("r6"); c == nil {
		t.Fatal("no command for r6 after the upgrade")
	} else {
		e.want(e.complete(c, true), 200, "")
	}

	// The older build's other tokens.
	as(sec.Tokens.Viewer, func() {
		e.want(e.do("GET", "/queues", ""), 200, "")
		e.want(e.do("POST", "/packages/"+id(2)+"/cancel", ""), 403, "forbidden")
	})
	as("not-a-token", func() { e.want(e.do("GET", "/queues", ""), 401, "") })

	wantCountsOfRows(t, path)
}

// sameAs says where is differs from was, the older build's answer at path;
// fields that is adds are not differences, nor the age of the oldest ready
// command, which depends on the clock.
func sameAs(was, is any, path string) string {
	switch w := was.(type) {
	case map[string]any:
		m, ok := is.(map[string]any)
		if !ok {
			return fmt.Sprintf("%s: %v, was %v", path, is, was)
		}
		for k, v := range w {
			if k == "oldest_ready_age_seconds" {
				continue
			}
			n, ok := m[k]
			if !ok {
				return fmt.Sprintf("%s.%s is gone (was %v)", path, k, v)
			}
			if d := sameAs(v, n, path+"."+k); d != "" {
				return d
			}
		}
		return ""
	case []any:
		l, ok := is.([]any)
		if !ok || len(l) != len(w) {
			return fmt.Sprintf("%s: %v, was %v", path, is, was)
		}
		for i := range w {
			if d := sameAs(w[i], l[i], fmt.Sprintf("%s[%d]", path, i)); d != "" {
				return d
			}
		}
		return ""
	}
	if !reflect.DeepEqual(was, is) {
		return fmt.Sprintf("%s: %v, was %v", path, is, was)
	}
	return ""
}

func wantCmdState(e *env, id, state string) {
	e.t.Helper()
	r := e.do("GET", "/commands/"+id, "")
	e.want(r, 200, "")
	var c struct{ State string }
	r.decode(e.t, &c)
	if c.State != state {
		e.t.Fatalf("command %s is %s, want %s", id, c.State, state)
	}
}

// wantCountsOfRows checks the counts kept on packages and queues against
// the commands they count, reading the file beside the open store.
func wantCountsOfRows(t *testing.T, path string) {
	t.Helper()
	raw, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	for _, q := range []string{
		`SELECT p.id FROM packages p WHERE (p.total, p.n_staged, p.n_blocked, p.n_ready, p.n_leased, p.n_succeeded, p.n_failed, p.n_cancelled) IS NOT
			(SELECT count(*), coalesce(sum(state = 'staged'), 0), coalesce(sum(state = 'blocked'), 0), coalesce(sum(state = 'ready'), 0), coalesce(sum(state = 'leased'), 0),
				coalesce(sum(state = 'succeeded'), 0), coalesce(sum(state = 'failed'), 0), coalesce(sum(state = 'cancelled'), 0)
			 FROM commands c WHERE c.package_id = p.id)`,
		`SELECT q.resource FROM queues q WHERE (q.n_blocked, q.n_ready, q.n_leased) IS NOT
			(SELECT coalesce(sum(state = 'blocked'), 0), coalesce(sum(state = 'ready'), 0), coalesce(sum(state = 'leased'), 0)
			 FROM commands c WHERE c.resource = q.resource)`,
	} {
		var bad []string
		rows, err := raw.QueryContext(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			bad = append(bad, s)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		rows.Close()
		if len(bad) > 0 {
			t.Fatalf("counts that disagree with the rows: %v", bad)
		}
	}
	var ok string
	if err := raw.QueryRowContext(ctx, `PRAGMA integrity_check`).Scan(&ok); err != nil || ok != "ok" {
		t.Fatalf("integrity check: %s %v", ok, err)
	}
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.NewDecoder(bytes.NewReader(b)).Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func gunzip(t *testing.T, from, to string) {
	t.Helper()
	f, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, zr); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
