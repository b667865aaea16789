//go:build linux || darwin || dragonfly || freebsd || netbsd || openbsd

package store

import (
	"os"
	"syscall"
)

// openElsewhere says whether another process has the SQLite database file
// at path open: SQLite's unix VFS holds a read lock on the file's SHARED
// range (from byte 0x40000002, PENDING and RESERVED just before it) for as
// long as a connection has a WAL database open, and POSIX locks belong to
// the file, not to the name it was opened by. F_GETLK only asks; it takes
// no lock. It does not see this process's own locks, and closing the
// descriptor drops them: call it only where this process has not opened
// the database.
func openElsewhere(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: 0, Start: 0x40000000, Len: 512}
	if err := syscall.FcntlFlock(f.Fd(), syscall.F_GETLK, &lk); err != nil {
		return false
	}
	return lk.Type != syscall.F_UNLCK
}
