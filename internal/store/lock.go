package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spin-broker/spinbroker/internal/flock"
	"github.com/spin-broker/spinbroker/internal/nlink"
)

// ErrInUse is the error (matched with errors.Is) of an exclusive Open of a
// database that another process holds exclusively.
var ErrInUse = errors.New("in use")

// InUseError says which process holds a database exclusively.
type InUseError struct {
	Path string
	PID  int // 0 when the holder has not written it yet
}

func (e *InUseError) Error() string {
	by := "another process"
	if e.PID > 0 {
		by = fmt.Sprintf("another process (pid %d)", e.PID)
	}
	return fmt.Sprintf("the database %s is in use by %s, a broker serving it or a migration", e.Path, by)
}

func (e *InUseError) Is(target error) bool { return target == ErrInUse }

// A database is held exclusively through an advisory lock on a file beside
// it, path + ".lock", which also holds the holder's pid for the message of
// the next one to try. The lock goes with the process: a broker killed by
// SIGKILL leaves the file, but not the lock. The file is never removed:
// removing it would let a third process lock a new file of the same name
// while a second holds the old one.
//
// SQLite's own locks are POSIX record locks on the database file, which a
// process loses when it closes any descriptor of that file; a lock on a
// file of its own keeps clear of them.

// lockExclusive takes the lock of the database at path, or fails with an
// *InUseError when another process holds it. The lock file is beside the
// file path resolves to, so that a broker given a symlink (or a path
// through a symlinked directory) and one given the real path take the same
// lock. A database file with more than one hard link is refused (see
// oneName).
func lockExclusive(path string) (*os.File, error) {
	real := resolved(path)
	f, err := os.OpenFile(real+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: lock %s: %w", path, err)
	}
	held, err := flock.TryLock(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("store: lock %s: %w", path, err)
	}
	if !held {
		pid := readPID(f)
		f.Close()
		return nil, &InUseError{Path: path, PID: pid}
	}
	if err := oneName(path, real); err != nil {
		f.Close()
		return nil, err
	}
	err = f.Truncate(0)
	if err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("store: lock %s: %w", path, err)
	}
	return f, nil
}

// oneName refuses a database file (real, path resolved) that has another
// name, a hard link: a broker started through it would take the lock of
// that name, and SQLite the -wal and -shm beside it, and two brokers would
// write one file without seeing each other's locks, corrupting it (SQLite's
// "How To Corrupt" names hard links). The lock keyed to the name cannot see
// the other name, and a lock on the database file itself is not one to
// take: flock(2) is fcntl's byte-range locks on NFS and the BSDs, where it
// would lock SQLite out, and closing a descriptor of the file drops
// SQLite's own locks in this process. The link count is the file's,
// whichever name is given, so both names are refused, with or without a
// broker running; one that runs already is not touched. A file not made
// yet has no other name.
func oneName(path, real string) error {
	fi, err := os.Stat(real)
	if err != nil {
		return nil // opening it reports what is wrong
	}
	if n := nlink.Of(fi); n > 1 {
		return fmt.Errorf("store: the database %s has %d hard links (names of the same file), and a broker started through another name would take a lock of its own and corrupt the file beside this one: remove the other names (find MOUNTPOINT -xdev -samefile %s lists them), or serve a copy made by 'spinbroker backup'", path, n, real)
	}
	return nil
}

// resolved is path with its symlinks followed, those of the file (even
// when it does not exist yet: SQLite will create it where the link points)
// and those of its directories, each link's target read against the real
// directory it is in, so that "../x.db" in a link reached through a
// symlinked directory lands where the kernel would take it. What cannot be
// resolved (a missing directory, which opening will report) stays as it is.
func resolved(path string) string {
	p := path
	for range 40 { // as many links as Linux follows
		dir, name := filepath.Split(p)
		if dir == "" {
			dir = "."
		}
		d, err := filepath.EvalSymlinks(dir)
		if err != nil {
			return p
		}
		p = filepath.Join(d, name)
		fi, err := os.Lstat(p)
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			return p
		}
		target, err := os.Readlink(p)
		if err != nil {
			return p
		}
		if !filepath.IsAbs(target) {
			// Not filepath.Join, which would clean "x/../y" as text where
			// x may itself be a link: the next round's EvalSymlinks walks
			// it as the kernel does.
			target = d + string(filepath.Separator) + target
		}
		p = target
	}
	return p
}

// readPID reads the pid a lock file's holder wrote, or 0.
func readPID(f *os.File) int {
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b[:n])))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}
