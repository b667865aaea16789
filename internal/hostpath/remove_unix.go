//go:build unix

package hostpath

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// removeImage removes the image rel for delete_image, and reports false
// when it was gone already. It is judged as tightly as the system allows:
// the image's folder is opened (openFolder), and the rest is done relative
// to that open folder, not by a path that could lead elsewhere by the next
// step. The name is looked at without following a link (fstatat with
// AT_SYMLINK_NOFOLLOW); the file opened (O_NOFOLLOW|O_NONBLOCK) must be
// that one, and is asked for QEMU's lock; the name is removed (unlinkat,
// which never removes a folder) only while it still names the file
// judged, as a second fstatat tells.
//
// What remains is the moment between that fstatat and the unlinkat, which
// no system call closes (none removes a name only if it names a given
// file): a file renamed in exactly then loses this name. It can only be a
// file, never a folder, put in that folder by whoever may write there,
// who could remove the name themself; its data stays under any other
// name it has.
func (s *Storage) removeImage(rel string) (bool, error) {
	dir, name := filepath.Dir(rel), filepath.Base(rel)
	d, err := s.openFolder(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, describe(dir, err)
	}
	defer d.Close()
	rc, err := d.SyscallConn()
	if err != nil {
		return false, err
	}
	var removed bool
	var rerr error
	if err := rc.Control(func(fd uintptr) { removed, rerr = removeAt(int(fd), name, rel) }); err != nil {
		return false, err
	}
	return removed, rerr
}

// removeAt is removeImage's work in the open folder dirfd, on its file
// name (rel in the root).
func removeAt(dirfd int, name, rel string) (bool, error) {
	var named unix.Stat_t
	err := unix.Fstatat(dirfd, name, &named, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case errors.Is(err, unix.ENOENT):
		return false, nil
	case err != nil:
		return false, describe(rel, &fs.PathError{Op: "fstatat", Path: rel, Err: err})
	}
	if err := imageKind(rel, named.Mode&unix.S_IFMT == unix.S_IFDIR, named.Mode&unix.S_IFMT == unix.S_IFREG); err != nil {
		return false, err
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		return false, nil
	case errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM):
		return false, cannotOpen(rel, err)
	case errors.Is(err, unix.ELOOP):
		return false, fmt.Errorf("%q is not an image file", rel) // a link swapped in
	case err != nil:
		return false, describe(rel, &fs.PathError{Op: "openat", Path: rel, Err: err})
	}
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	var opened unix.Stat_t
	if err := unix.Fstat(fd, &opened); err != nil {
		return false, describe(rel, &fs.PathError{Op: "fstat", Path: rel, Err: err})
	}
	if opened.Dev != named.Dev || opened.Ino != named.Ino {
		return false, fmt.Errorf("%q was replaced by another file while the agent opened it", rel)
	}
	if err := notInUseFile(f, rel, false); err != nil {
		return false, err
	}
	var again unix.Stat_t
	err = unix.Fstatat(dirfd, name, &again, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case errors.Is(err, unix.ENOENT):
		return true, nil // removed meanwhile, by someone else
	case err != nil:
		return false, describe(rel, &fs.PathError{Op: "fstatat", Path: rel, Err: err})
	case again.Dev != named.Dev || again.Ino != named.Ino:
		return false, fmt.Errorf("%q was replaced by another file while the agent deleted it, and is left there", rel)
	}
	// Flags 0: a folder renamed in since fails (EISDIR), never removed.
	switch err := unix.Unlinkat(dirfd, name, 0); {
	case err == nil || errors.Is(err, unix.ENOENT):
		return true, nil
	case errors.Is(err, unix.EISDIR):
		return false, fmt.Errorf("%q was replaced by a folder while the agent deleted it, and is left there", rel)
	default:
		return false, describe(rel, &fs.PathError{Op: "unlinkat", Path: rel, Err: err})
	}
}
