//go:build unix

package hostpath

import (
	"os"
	"syscall"
)

// openFlags are added to every open of an existing image. O_NONBLOCK: a
// FIFO put in the image's place would otherwise hold the open (and the
// agent, which takes one command at a time) until a writer came, for ever.
// O_NOFOLLOW: the kernel follows no symlink there (os.Root adds it too,
// and follows one that stays in the root itself; openImage refuses that
// by comparing the file opened with the one checked).
const openFlags = syscall.O_NONBLOCK | syscall.O_NOFOLLOW

// folderFlags are added to every open of a folder: openFlags, and
// O_DIRECTORY, with which a FIFO (or any file) put in a folder's place is
// refused by the open itself (ENOTDIR) rather than opened.
const folderFlags = openFlags | syscall.O_DIRECTORY

// setBlocking clears O_NONBLOCK on f, opened with openFlags, once it is
// known to be an image: a regular file ignores it, but qemu-img is
// handed the same open file and should not find it there.
func setBlocking(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = syscall.SetNonblock(int(fd), false) }); err != nil {
		return err
	}
	return serr
}
