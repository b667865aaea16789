//go:build linux || darwin || freebsd || dragonfly

package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// freeBytes is the space left for this process on the file system of the
// file at path.
func freeBytes(path string) (uint64, bool) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(filepath.Dir(path), &st); err != nil {
		return 0, false
	}
	return uint64(st.Bavail) * uint64(st.Bsize), true
}

// sqliteTempDir is the folder SQLite's unix VFS puts its temporary files in
// (VACUUM's copy of the database): the first of SQLITE_TMPDIR, TMPDIR,
// /var/tmp, /usr/tmp, /tmp and "." that is a folder this process may write.
func sqliteTempDir() string {
	for _, dir := range []string{os.Getenv("SQLITE_TMPDIR"), os.Getenv("TMPDIR"), "/var/tmp", "/usr/tmp", "/tmp", "."} {
		if dir == "" {
			continue
		}
		if fi, err := os.Stat(dir); err == nil && fi.IsDir() && unix.Access(dir, unix.W_OK|unix.X_OK) == nil {
			return dir
		}
	}
	return ""
}

// noAccess says, before SQLite tries, that this user may not read (or, with
// write, read and write) the database file at path: SQLite says only
// "unable to open database file (14)", which names no cause. The common
// one is a file copied in as root (a restore) into the folder of a broker
// that runs as a user of its own. It asks the kernel (access(2)) rather
// than open the file: closing a descriptor of a database SQLite has open
// in this process would drop SQLite's locks on it. nil when the file may
// be opened, or is not there.
func noAccess(path string, write bool) error {
	mode, what := uint32(unix.R_OK), "read"
	if write {
		mode, what = mode|unix.W_OK, "read and written"
	}
	if err := unix.Access(path, mode); !errors.Is(err, unix.EACCES) {
		return nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil // the folder is not ours to look in: SQLite says so
	}
	owner := ""
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		owner = fmt.Sprintf("owned by uid %d gid %d, ", st.Uid, st.Gid)
	}
	return fmt.Errorf("store: %s cannot be %s by this user (uid %d): permission denied (the file is %smode %s); a file copied in as another user, such as a backup restored as root, keeps that user: chown it to the user the broker runs as", path, what, os.Geteuid(), owner, fi.Mode().Perm())
}
