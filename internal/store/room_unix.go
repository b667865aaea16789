//go:build linux || darwin || freebsd || dragonfly

package store

import (
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
