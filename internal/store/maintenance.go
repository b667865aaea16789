package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spin-broker/spinbroker/internal/flock"
	"github.com/spin-broker/spinbroker/internal/nlink"
)

// Backup writes a consistent copy of the live database to dest (which must
// not exist), without stopping writers: VACUUM INTO reads one snapshot, and
// the copy is compact and needs no WAL. Restore by stopping the broker and
// putting the copy in place of the database file (and removing its -wal and
// -shm files).
func (db *DB) Backup(ctx context.Context, dest string) error {
	// Through the name db has open: its -wal is the one beside it.
	return backup(ctx, db.path, dest)
}

// Backup copies the database at path to dest, whether or not a broker has
// it open. It is for a process that has not opened the database itself
// (the CLI): an open DB backs itself up with DB.Backup.
func Backup(ctx context.Context, path, dest string) error {
	if err := noAccess(path, false); err != nil {
		return err
	}
	if err := backupThrough(path); err != nil {
		return err
	}
	return backup(ctx, path, dest)
}

// backupThrough refuses a backup through one name of a database file that
// has others (hard links) while a broker serves another: SQLite reads the
// -wal beside the name it is given, so the copy would lack the commits
// still in the broker's -wal (a database just created, all of it), with no
// error. See throughServedName.
func backupThrough(path string) error {
	return throughServedName(path, "backup", "a copy through this name would miss the commits still in the -wal beside that one")
}

// BesideBroker refuses to open the database at path beside a running
// broker (the token commands) through another name of its file than the
// one the broker serves: what is written through it goes to the -wal beside
// this name, which the broker never reads, and an open through this name
// once the broker has moved on would copy that -wal's stale pages over the
// broker's. See throughServedName.
func BesideBroker(path string) error {
	return throughServedName(path, "", "what is written through this name would go to a -wal beside it that the broker never reads, and what is read would miss the broker's last commits")
}

// throughServedName refuses a database file with other names (hard links)
// that another process has open, unless that process is a broker serving
// this very name (it holds the lock beside it, so its -wal is the one
// SQLite will read here). It looks before SQLite opens anything, so a
// refusal leaves no -wal or -shm beside the name. With no one holding the
// file, any name reads all of it (after a clean stop; a broker killed
// through another name left its last commits in the -wal there, which no
// name here can see). what prefixes the message; lost says what would go
// wrong.
func throughServedName(path, what, lost string) error {
	real := resolved(path)
	fi, err := os.Stat(real)
	if err != nil {
		return nil
	}
	n := nlink.Of(fi)
	if n <= 1 || lockHeld(real+".lock") || !openElsewhere(real) {
		return nil
	}
	if what != "" {
		what += ": "
	}
	return fmt.Errorf("store: %sthe database %s has %d hard links (names of the same file) and another process has it open, a broker serving another name: %s; use the name the broker serves, and remove the other names (find MOUNTPOINT -xdev -samefile %s lists them)", what, path, n, lost, real)
}

// lockHeld says whether a process holds the lock file at path (that of a
// broker serving the database beside it, or of a migration). Asking takes
// the lock for a moment when no one holds it; here only for a database
// with other names, which serve and migrate refuse anyway.
func lockHeld(path string) bool {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	got, err := flock.TryLock(f)
	return err == nil && !got
}

func backup(ctx context.Context, path, dest string) error {
	if _, err := os.Stat(dest); err == nil {
		return destExists(dest)
	}
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("store: backup: %w", err)
	}
	conn, err := sql.Open("sqlite", dsn(path, ""))
	if err != nil {
		return err
	}
	defer conn.Close()
	// The source is read first, so that a failure names the file it is
	// about: "database or disk is full" of the copy must not read as the
	// live database's. The errors are the driver's own, not the 503 the
	// API would answer: a person at a terminal reads them.
	if err := spinBrokerTables(ctx, conn, path, "backup", "backup: read "+path); err != nil {
		return err
	}
	// The copy is written beside dest under a name no one takes for a
	// backup, and gets dest's name only once complete and on disk: a
	// backup killed half way (a cron job's timeout, the OOM killer) left
	// at dest a file with a hot journal, which SQLite rolls back to an
	// empty database when it is opened, and a restore of it served an
	// empty broker without a word.
	tmp, err := os.CreateTemp(filepath.Dir(dest), filepath.Base(dest)+".partial-*")
	if err != nil {
		return fmt.Errorf("store: backup: %w", cannotCreate(dest, err))
	}
	// The copy is as private as a database spin-broker creates (CreateTemp
	// makes it 0600): VACUUM INTO fills an empty file, keeping its mode.
	tmpPath := tmp.Name()
	tmp.Close()
	defer func() {
		// Whatever went wrong leaves nothing to mistake for a backup, nor
		// the journal SQLite kept for the copy.
		os.Remove(tmpPath)
		os.Remove(tmpPath + "-journal")
	}()
	if _, err := conn.ExecContext(ctx, `VACUUM INTO ?`, tmpPath); err != nil {
		// A page of the source that does not read is the live database's
		// damage, to be restored, not the copy's: the copy is a new file.
		if nerr := unreadable(path, err); nerr != nil {
			return nerr
		}
		return fmt.Errorf("store: backup: write %s: %w", dest, err)
	}
	if err := syncFile(tmpPath); err != nil {
		return fmt.Errorf("store: backup: write %s: %w", dest, err)
	}
	// A link, not a rename: a file that appeared at dest meanwhile is
	// not replaced. A file system without hard links (vfat, exFAT, many
	// network and FUSE mounts) gets a rename once dest is seen free.
	if err := link(tmpPath, dest); errors.Is(err, fs.ErrExist) {
		return destExists(dest)
	} else if err != nil {
		if _, serr := os.Lstat(dest); serr == nil {
			return destExists(dest)
		}
		if err := os.Rename(tmpPath, dest); err != nil {
			return fmt.Errorf("store: backup: %w", err)
		}
	}
	if err := syncFile(filepath.Dir(dest)); err != nil {
		// The name might not survive a power loss: a failed backup leaves
		// nothing, rather than a file it called a failure.
		os.Remove(dest)
		return fmt.Errorf("store: backup: write %s: %w", dest, err)
	}
	return nil
}

// spinBrokerTables refuses a database at path (read through conn) that is
// not spin-broker's: one without its packages, commands and migrations
// tables, or not SQLite at all, or damaged (unreadable says which). op
// names the command in the errors, and read begins the error of a failure
// to read ("backup: read x.db").
func spinBrokerTables(ctx context.Context, conn *sql.DB, path, op, read string) error {
	var tables int
	if err := conn.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master
		WHERE type = 'table' AND name IN ('goose_db_version', 'packages', 'commands')`).Scan(&tables); err != nil {
		if nerr := unreadable(path, err); nerr != nil {
			return nerr
		}
		return fmt.Errorf("store: %s: %w", read, err)
	} else if tables != 3 {
		return fmt.Errorf("store: %s: %s is not a spin-broker database (no packages, commands and migrations tables)", op, path)
	}
	return nil
}

// destExists is Backup's error for a dest that exists: it says that a
// backup never replaces a file, and what to do instead, so that no one
// looks for a flag that would overwrite it.
func destExists(dest string) error {
	return fmt.Errorf("store: backup: %s already exists, and a backup never replaces a file: give --to a new name, or move that file away first", dest)
}

// cannotCreate says why no file could be made beside dest (err is that of
// the attempt) in terms of dest and its folder: the file tried first is a
// temporary one ("dest.partial-123456"), which the operator never named.
func cannotCreate(dest string, err error) error {
	dir := filepath.Dir(dest)
	fi, serr := os.Stat(dir)
	switch {
	case errors.Is(serr, fs.ErrNotExist):
		return fmt.Errorf("cannot write %s: its folder %s does not exist", dest, dir)
	case serr == nil && !fi.IsDir():
		return fmt.Errorf("cannot write %s: %s is not a folder", dest, dir)
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err // permission denied, read-only file system, ...
	}
	return fmt.Errorf("cannot write %s: %w", dest, err)
}

// link is os.Link; a test stands in a file system without hard links.
var link = os.Link

// syncFile flushes a file (or a folder's entries) to the disk.
func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// FreeBytes is the space inside the database file that deleted rows left
// free: SQLite reuses it for new rows but never gives it back to the file
// system; Compact does.
func (db *DB) FreeBytes(ctx context.Context) (int64, error) {
	var n int64
	err := db.rdb.QueryRowContext(ctx, `SELECT f.freelist_count * p.page_size FROM pragma_freelist_count() f, pragma_page_size() p`).Scan(&n)
	return n, interpretError(err)
}

// Compact rewrites the database at path without its free pages (SQLite's
// VACUUM), giving their space back to the file system, and empties its
// WAL. It holds the database exclusively, as a broker does, so it refuses
// to run beside one (ErrInUse): a VACUUM would stall every write for as
// long as it takes. It needs free disk space about twice the size of the
// database while it runs (a temporary copy, and the WAL); an interrupted
// one leaves the database as it was.
// before and after are the sizes on disk of the database and its WAL.
// started, if not nil, is called once the database is held and known to be
// spin-broker's, just before the rewrite begins: the moment to say so.
func Compact(ctx context.Context, path string, started func()) (before, after int64, err error) {
	// Sizes before the lock, which would create a file beside a missing
	// one; the WAL is beside the file a link points to.
	if err := noAccess(path, true); err != nil {
		return 0, 0, err
	}
	real := resolved(path)
	if before, err = fileSizes(real); err != nil {
		return 0, 0, fmt.Errorf("store: compact: %w", err)
	}
	lock, err := lockExclusive(path)
	if err != nil {
		return 0, 0, err
	}
	defer lock.Close()
	conn, err := sql.Open("sqlite", dsn(path, ""))
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	conn.SetMaxOpenConns(1)
	// Only a spin-broker database: VACUUM would rewrite any SQLite file,
	// and an empty one would become a database.
	if err := spinBrokerTables(ctx, conn, path, "compact", "compact "+path); err != nil {
		return before, 0, err
	}
	if started != nil {
		started()
	}
	for _, q := range []string{`VACUUM`, `PRAGMA wal_checkpoint(TRUNCATE)`} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			if diskFull(err) {
				return before, 0, compactFull(path, before, err)
			}
			return before, 0, fmt.Errorf("store: compact %s: %w", path, err)
		}
	}
	after, err = fileSizes(real)
	return before, after, err
}

// compactFull says which file system a compact found full (err): VACUUM
// writes its copy of the database (about size bytes) where SQLite keeps
// temporary files, often a small tmpfs apart from the database's disk, and
// then the new pages into the WAL beside the database. "database or disk
// is full" alone sent the operator to the database's disk, which had room.
func compactFull(path string, size int64, err error) error {
	need := uint64(size)
	if tmp := sqliteTempDir(); tmp != "" {
		abs, aerr := filepath.Abs(tmp)
		if aerr != nil {
			abs = tmp
		}
		if free, ok := freeBytes(filepath.Join(abs, "x")); ok && free < need {
			return fmt.Errorf("store: compact %s: the file system of %s is full (%d bytes free): compact writes a temporary copy of the database there, about %d bytes; set TMPDIR (or SQLITE_TMPDIR) to a folder with room, then compact again: %w", path, abs, free, need, err)
		}
	}
	dir := filepath.Dir(resolved(path))
	if free, ok := freeBytes(filepath.Join(dir, "x")); ok && free < need {
		return fmt.Errorf("store: compact %s: the file system of %s is full (%d bytes free): compact writes the new pages, about %d bytes, beside the database before it gives space back; free some first: %w", path, dir, free, need, err)
	}
	return fmt.Errorf("store: compact %s: %w", path, err)
}

// fileSizes is the size on disk of the database at path and its WAL.
func fileSizes(path string) (int64, error) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	wal, err := walSize(path)
	if err != nil {
		return 0, err
	}
	return st.Size() + wal, nil
}

// walSize is the size of the WAL beside the database at path: 0 when there
// is none (between connections, or truncated after the last write).
func walSize(path string) (int64, error) {
	st, err := os.Stat(path + "-wal")
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	} else if err != nil {
		return 0, err
	}
	return st.Size(), nil
}
