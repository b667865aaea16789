package store_test

import (
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/store"
)

// TestOpen_ExclusiveThroughSymlinks: a database reached through a symlink,
// to the file or to its directory, is the same database: a second broker
// given either path is refused.
func TestOpen_ExclusiveThroughSymlinks(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"data", "data/sub"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// Each link's target as written: filepath.Join would clean "x/../y".
	for link, target := range map[string]string{
		"link.db":       filepath.Join(dir, "data", "x.db"),
		"linkdir":       filepath.Join(dir, "data"),
		"dangling.db":   "data/later.db",
		"linkdeep":      filepath.Join(dir, "data", "sub"),
		"data/sub/d.db": "../d.db",
		"hop":           filepath.Join(dir, "data", "sub"),
		"twisty.db":     "hop/../t.db",
	} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		why    string
		holder string   // the first broker's path
		others []string // paths a second broker must be refused on
	}{
		{"a link to the file, a linked directory, a path with ..", "data/x.db", []string{"link.db", "linkdir/x.db", "./data/../data/x.db"}},
		{"a link to a database not created yet: SQLite creates it where the link points", "dangling.db", []string{"data/later.db"}},
		{"a relative ../ target reached through a linked directory: data/d.db, not d.db", "data/d.db", []string{"linkdeep/d.db"}},
		{"a target through another link before its ..: data/t.db, not t.db", "data/t.db", []string{"twisty.db"}},
		{"a database not created yet, in a linked directory", "linkdir/fresh.db", []string{"data/fresh.db"}},
	} {
		first, err := store.Open(ctx, filepath.Join(dir, c.holder), store.Options{Exclusive: true})
		if err != nil {
			t.Fatalf("%s: %v", c.why, err)
		}
		defer first.Close()
		for _, other := range c.others {
			if db, err := store.Open(ctx, filepath.Join(dir, other), store.Options{Exclusive: true}); !errors.Is(err, store.ErrInUse) {
				if err == nil {
					db.Close()
				}
				t.Errorf("%s: a second broker on %s beside one on %s: %v, want ErrInUse", c.why, other, c.holder, err)
			}
		}
	}
}

// TestOpen_Exclusive: while one Open holds a database exclusively, another
// exclusive Open and a migration fail with an error naming the database
// and the holder's pid, and change nothing; an Open without Exclusive (a
// token or a backup beside a broker) still works. Close gives the database
// up.
func TestOpen_Exclusive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.db")
	first, err := store.Open(ctx, path, store.Options{Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	enqueue(t, first, cmd("r", "a"))

	_, err = store.Open(ctx, path, store.Options{Exclusive: true})
	var inUse *store.InUseError
	if !errors.Is(err, store.ErrInUse) || !errors.As(err, &inUse) {
		t.Fatalf("second exclusive open: %v, want ErrInUse", err)
	}
	if inUse.PID != os.Getpid() || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Fatalf("the error does not name the database and its holder: %v", err)
	}
	if _, err := store.Migrations(ctx, path, true); !errors.Is(err, store.ErrInUse) {
		t.Fatalf("migrate up beside the holder: %v, want ErrInUse", err)
	}
	if st, err := store.Migrations(ctx, path, false); err != nil || len(st) == 0 {
		t.Fatalf("migration status beside the holder: %v %v", st, err)
	}

	beside, err := store.Open(ctx, path, store.Options{})
	if err != nil {
		t.Fatalf("a non-exclusive open beside the holder: %v", err)
	}
	if _, _, err := beside.CreateToken(ctx, "admin", "", "ops"); err != nil {
		t.Fatalf("a token created beside the holder: %v", err)
	}
	if err := beside.Close(); err != nil {
		t.Fatal(err)
	}
	// The holder is unharmed by the refused opens.
	if q, err := first.Queue(ctx, "r"); err != nil || q.Counts.Ready != 1 {
		t.Fatalf("the holder's queue: %+v %v", q, err)
	}

	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := store.Open(ctx, path, store.Options{Exclusive: true})
	if err != nil {
		t.Fatalf("exclusive open after the holder closed: %v", err)
	}
	defer again.Close()
	if c := mustNext(t, again, "r"); c.State != spinbroker.Leased {
		t.Fatalf("the command after reopening: %+v", c)
	}
}

// TestOpen_PrivateFiles: a database spin-broker creates, its -wal and -shm,
// and its backups are readable by their owner only: they hold every
// parameter in plain text. A database that exists keeps its mode.
func TestOpen_PrivateFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "p.db")
	db, err := store.Open(ctx, path, store.Options{Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	enqueue(t, db, cmd("r", "a"))
	for _, f := range []string{path, path + "-wal", path + "-shm", path + ".lock"} {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want -rw-------", filepath.Base(f), st.Mode().Perm())
		}
	}
	backup := filepath.Join(dir, "p.bak")
	if err := db.Backup(ctx, backup); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(backup); err != nil || st.Mode().Perm() != 0o600 || st.Size() == 0 {
		t.Errorf("the backup: %v %v", st, err)
	}
	// A backup that fails leaves no empty file behind to be taken for one.
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, []byte(strings.Repeat("not a database ", 512)), 0o600); err != nil {
		t.Fatal(err)
	}
	failed := filepath.Join(dir, "failed.bak")
	if err := store.Backup(ctx, garbage, failed); err == nil {
		t.Error("a backup of a file that is no database succeeded")
	}
	if _, err := os.Stat(failed); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed backup left %s: %v", failed, err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	again, err := store.Open(ctx, path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o640 {
		t.Errorf("an existing database's mode changed: %v %v", st.Mode().Perm(), err)
	}
	if q, err := again.Queue(ctx, "r"); err != nil || q.Counts.Ready != 1 {
		t.Fatalf("the reopened database: %+v %v", q, err)
	}

	// Through a symbolic link to a file not made yet, the file made is
	// private too.
	link, target := filepath.Join(dir, "link.db"), filepath.Join(dir, "real.db")
	if err := os.Symlink("real.db", link); err != nil {
		t.Fatal(err)
	}
	linked, err := store.Open(ctx, link, store.Options{Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	enqueue(t, linked, cmd("r", "a"))
	defer linked.Close()
	for _, f := range []string{target, target + "-wal"} {
		if st, err := os.Stat(f); err != nil {
			t.Error(err)
		} else if st.Mode().Perm() != 0o600 {
			t.Errorf("%s through a link has mode %v, want -rw-------", filepath.Base(f), st.Mode().Perm())
		}
	}
}

// TestOpen_RefusesNewerSchema: a database a newer spin-broker migrated past
// this build's last migration is refused, by serve's Open and by migrate,
// rather than run on a schema this build does not know. A status of a
// database that does not exist creates nothing.
func TestOpen_RefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "n.db")
	if _, err := store.Migrations(ctx, path, false); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("status of a missing database: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a status created the database: %v", err)
	}
	st, err := store.Migrations(ctx, path, true)
	if err != nil {
		t.Fatal(err)
	}
	latest := st[len(st)-1].Version
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`INSERT INTO goose_db_version (version_id, is_applied) VALUES (?, 1)`, latest+1); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	want := fmt.Sprintf("version %d, and this build knows versions up to %d", latest+1, latest)
	for name, open := range map[string]func() error{
		"open": func() error {
			db, err := store.Open(ctx, path, store.Options{Exclusive: true})
			if err == nil {
				db.Close()
			}
			return err
		},
		"status":  func() error { _, err := store.Migrations(ctx, path, false); return err },
		"migrate": func() error { _, err := store.Migrations(ctx, path, true); return err },
	} {
		if err := open(); !errors.Is(err, store.ErrNewerSchema) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want ErrNewerSchema saying %q", name, err, want)
		}
	}
}

// TestOpen_ExclusiveThroughHardLink: a database file with a second name
// (ln x.db y.db) is refused by everything that holds a database
// exclusively, through either name: a broker started through the other
// name would take a lock of its own, and its own -wal and -shm, and both
// would write the one file. (A broker already serving it is refused in the
// same way, since the link count is the file's; the binary's tests show
// it with two processes, as SQLite within one process sees the one file.)
// The refusal says why and creates nothing; a backup still reads the
// database, and once the other name is gone it is served again.
func TestOpen_ExclusiveThroughHardLink(t *testing.T) {
	dir := t.TempDir()
	path, other := filepath.Join(dir, "x.db"), filepath.Join(dir, "y.db")
	db, err := store.Open(ctx, path, store.Options{Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	enqueue(t, db, cmd("r", "a"))
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(path, other); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{other, path} {
		check := func(what string, err error) {
			t.Helper()
			if err == nil || !strings.Contains(err.Error(), "has 2 hard links") || !strings.Contains(err.Error(), p) {
				t.Errorf("%s on %s: %v, want a refusal naming it and its hard links", what, filepath.Base(p), err)
			}
		}
		db, err := store.Open(ctx, p, store.Options{Exclusive: true})
		if err == nil {
			db.Close()
		}
		check("a broker", err)
		_, err = store.Migrations(ctx, p, true)
		check("migrate up", err)
		_, _, err = store.Compact(ctx, p, nil)
		check("compact", err)
		if _, err := os.Stat(p + "-wal"); err == nil {
			t.Errorf("a refused open made %s-wal", filepath.Base(p))
		}
	}
	if err := store.Backup(ctx, other, filepath.Join(dir, "b.db")); err != nil {
		t.Errorf("a backup through the other name: %v", err)
	}
	if err := os.Remove(other); err != nil {
		t.Fatal(err)
	}
	db, err = store.Open(ctx, path, store.Options{Exclusive: true})
	if err != nil {
		t.Fatalf("the database once its other name is gone: %v", err)
	}
	defer db.Close()
	if q, err := db.Queue(ctx, "r"); err != nil || q.Counts.Ready != 1 {
		t.Fatalf("the queue: %+v %v", q, err)
	}
}
