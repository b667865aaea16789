//go:build unix

package hostpath

import (
	"fmt"
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

// openRoot opens the root folder dir as folders are opened (folderFlags):
// a FIFO put in its place (by whoever may write in the folder holding it)
// is refused, where os.OpenRoot would wait on it, and the agent's start
// with it, for ever. The os.Root is then opened through the open folder
// itself (/proc/self/fd, or /dev/fd), so it is that folder; where neither
// is there, by name once more, and refused unless it is the same folder.
func openRoot(dir string) (*os.Root, error) {
	f, err := os.OpenFile(dir, os.O_RDONLY|folderFlags, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	opened, err := f.Stat()
	if err != nil {
		return nil, err
	}
	var root *os.Root
	for _, p := range []string{"/proc/self/fd/%d", "/dev/fd/%d"} {
		if root, err = os.OpenRoot(fmt.Sprintf(p, f.Fd())); err == nil {
			break
		}
	}
	if err != nil {
		if root, err = os.OpenRoot(dir); err != nil {
			return nil, err
		}
	}
	fi, err := root.Stat(".")
	if err == nil && !os.SameFile(fi, opened) {
		err = fmt.Errorf("open %s: replaced by another folder while the agent opened it", dir)
	}
	if err != nil {
		root.Close()
		return nil, err
	}
	return root, nil
}
