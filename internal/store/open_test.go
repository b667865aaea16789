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
	real := filepath.Join(dir, "data")
	if err := os.Mkdir(real, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(real, "x.db")
	first, err := store.Open(ctx, path, store.Options{Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if err := os.Symlink(path, filepath.Join(dir, "link.db")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, filepath.Join(dir, "linkdir")); err != nil {
		t.Fatal(err)
	}
	for _, other := range []string{filepath.Join(dir, "link.db"), filepath.Join(dir, "linkdir", "x.db"), filepath.Join(dir, ".", "data", "..", "data", "x.db")} {
		if db, err := store.Open(ctx, other, store.Options{Exclusive: true}); !errors.Is(err, store.ErrInUse) {
			if err == nil {
				db.Close()
			}
			t.Errorf("a second broker on %s: %v, want ErrInUse", other, err)
		}
	}
	// A symlink to a database that does not exist yet: SQLite creates it
	// where the link points, so that is the database the lock is for.
	target := filepath.Join(real, "later.db")
	if err := os.Symlink(filepath.Join("data", "later.db"), filepath.Join(dir, "dangling.db")); err != nil {
		t.Fatal(err)
	}
	viaLink, err := store.Open(ctx, filepath.Join(dir, "dangling.db"), store.Options{Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	defer viaLink.Close()
	if db, err := store.Open(ctx, target, store.Options{Exclusive: true}); !errors.Is(err, store.ErrInUse) {
		if err == nil {
			db.Close()
		}
		t.Errorf("a second broker on the dangling link's target: %v, want ErrInUse", err)
	}
	// A link whose relative target climbs out of a directory reached
	// through a symlink: linkdeep -> data/sub, and data/sub/deep.db ->
	// ../deep.db, which is data/deep.db, not linkdeep/../deep.db read as
	// text (dir/deep.db).
	sub := filepath.Join(real, "sub")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(sub, filepath.Join(dir, "linkdeep")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join("..", "deep.db"), filepath.Join(sub, "deep.db")); err != nil {
		t.Fatal(err)
	}
	deep, err := store.Open(ctx, filepath.Join(real, "deep.db"), store.Options{Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	defer deep.Close()
	if db, err := store.Open(ctx, filepath.Join(dir, "linkdeep", "deep.db"), store.Options{Exclusive: true}); !errors.Is(err, store.ErrInUse) {
		if err == nil {
			db.Close()
		}
		t.Errorf("a second broker through linkdeep/deep.db -> ../deep.db: %v, want ErrInUse", err)
	}
	// A link whose target goes through another link before its "..":
	// twisty.db -> hop/../t.db with hop -> data/sub is data/t.db.
	if err := os.Symlink(sub, filepath.Join(dir, "hop")); err != nil {
		t.Fatal(err)
	}
	// The target as written: filepath.Join would clean it to "t.db".
	if err := os.Symlink("hop/../t.db", filepath.Join(dir, "twisty.db")); err != nil {
		t.Fatal(err)
	}
	tdb, err := store.Open(ctx, filepath.Join(real, "t.db"), store.Options{Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	defer tdb.Close()
	if db, err := store.Open(ctx, filepath.Join(dir, "twisty.db"), store.Options{Exclusive: true}); !errors.Is(err, store.ErrInUse) {
		if err == nil {
			db.Close()
		}
		t.Errorf("a second broker through twisty.db -> hop/../t.db: %v, want ErrInUse", err)
	}
	// A database that does not exist yet, in a symlinked directory.
	fresh := filepath.Join(real, "fresh.db")
	held, err := store.Open(ctx, filepath.Join(dir, "linkdir", "fresh.db"), store.Options{Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if _, err := store.Open(ctx, fresh, store.Options{Exclusive: true}); !errors.Is(err, store.ErrInUse) {
		t.Errorf("a second broker on the new database by its real path: %v, want ErrInUse", err)
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
