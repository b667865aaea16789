//go:build unix

package hostpath

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// The actions that remove or rename a file of the root (delete_image,
// move_image, remove_volume with force) are judged as tightly as the
// system allows: the file's folder is opened (openFolder), and the rest is
// done relative to that open folder, not by a path that could lead
// elsewhere by the next step. The name is looked at without following a
// link (fstatat with AT_SYMLINK_NOFOLLOW); the file opened
// (O_NOFOLLOW|O_NONBLOCK) must be that one, and is asked for QEMU's lock;
// the name is removed (unlinkat, which never removes a folder) or renamed
// only while it still names the file judged, as a second fstatat tells.
//
// What remains is the moment between that fstatat and the unlinkat or
// renameat, which no system call closes (none removes or renames a name
// only if it names a given file): a file renamed in exactly then loses
// this name, or is moved. It can only be put in that folder by whoever
// may write there, who could remove or move it themself; its data stays
// under any other name it has, and a moved one is moved back.

// removeImage removes the image rel for delete_image, and reports false
// when it was gone already.
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
	return removeAt(int(d.Fd()), name, rel)
}

// removeAt is removeImage's work in the open folder dirfd, on its file
// name (rel in the root).
func removeAt(dirfd int, name, rel string) (bool, error) {
	f, named, err := openAt(dirfd, name, rel, func(st *unix.Stat_t) error {
		return imageKind(rel, isDir(st), isRegular(st))
	})
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, err
	}
	defer f.Close()
	if err := notInUseFile(f, rel, false); err != nil {
		return false, err
	}
	return unlinkJudged(dirfd, name, rel, &named, 0)
}

func isDir(st *unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFDIR }

func isRegular(st *unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFREG }

// sameFile reports whether a and b describe one file.
func sameFile(a, b *unix.Stat_t) bool { return a.Dev == b.Dev && a.Ino == b.Ino }

// openAt opens, read-only, the file name of the open folder dirfd (rel in
// the root) once kind accepts what the name is (fstatat, not following a
// link), and only if the file opened is that one. It answers what the
// name was. A name that is gone answers an error matching
// fs.ErrNotExist.
func openAt(dirfd int, name, rel string, kind func(*unix.Stat_t) error) (*os.File, unix.Stat_t, error) {
	var named unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &named, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, named, describe(rel, &fs.PathError{Op: "fstatat", Path: rel, Err: err})
	}
	if err := kind(&named); err != nil {
		return nil, named, err
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM):
		return nil, named, cannotOpen(rel, err)
	case errors.Is(err, unix.ELOOP):
		return nil, named, fmt.Errorf("%q is not an image file", rel) // a link swapped in
	case err != nil:
		return nil, named, describe(rel, &fs.PathError{Op: "openat", Path: rel, Err: err})
	}
	f := os.NewFile(uintptr(fd), rel)
	var opened unix.Stat_t
	if err := unix.Fstat(fd, &opened); err != nil {
		f.Close()
		return nil, named, describe(rel, &fs.PathError{Op: "fstat", Path: rel, Err: err})
	}
	if !sameFile(&opened, &named) {
		f.Close()
		return nil, named, fmt.Errorf("%q was replaced by another file while the agent opened it", rel)
	}
	return f, named, nil
}

// unlinkJudged removes the name name of the open folder dirfd (rel in the
// root) with unlinkat's flags, only while it still names the file judged
// (named), and reports false when it was gone already. With flags 0, a
// folder renamed in since fails (EISDIR), never removed; with
// AT_REMOVEDIR, only an empty folder is removed.
func unlinkJudged(dirfd int, name, rel string, judged *unix.Stat_t, flags int) (bool, error) {
	var again unix.Stat_t
	err := unix.Fstatat(dirfd, name, &again, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case errors.Is(err, unix.ENOENT):
		return true, nil // removed meanwhile, by someone else
	case err != nil:
		return false, describe(rel, &fs.PathError{Op: "fstatat", Path: rel, Err: err})
	case !sameFile(&again, judged):
		return false, fmt.Errorf("%q was replaced by another file while the agent removed it, and is left there", rel)
	}
	switch err := unix.Unlinkat(dirfd, name, flags); {
	case err == nil || errors.Is(err, unix.ENOENT):
		return true, nil
	case errors.Is(err, unix.EISDIR):
		return false, fmt.Errorf("%q was replaced by a folder while the agent removed it, and is left there", rel)
	case errors.Is(err, unix.ENOTDIR):
		return false, fmt.Errorf("%q was replaced by a file while the agent removed it, and is left there", rel)
	default:
		return false, describe(rel, &fs.PathError{Op: "unlinkat", Path: rel, Err: err})
	}
}

// judged is an image opened in its opened folder, and what its name was.
type judged struct {
	dir   *os.File // the image's folder
	name  string   // in dir
	rel   string   // in the root
	f     *os.File // the image, read-only
	named unix.Stat_t
}

func (j *judged) dirfd() int { return int(j.dir.Fd()) }

func (j *judged) Close() {
	j.f.Close()
	j.dir.Close()
}

// judgeImage opens the image rel to move it: a regular file with no other
// name (see imageFile), judged as openAt judges it.
func (s *Storage) judgeImage(rel string) (*judged, error) {
	dir, name := filepath.Dir(rel), filepath.Base(rel)
	d, err := s.openFolder(dir)
	if err != nil {
		return nil, describe(dir, err)
	}
	f, named, err := openAt(int(d.Fd()), name, rel, func(st *unix.Stat_t) error {
		switch {
		case !isRegular(st):
			return fmt.Errorf("%q is not an image file", rel)
		case st.Nlink > 1:
			return fmt.Errorf("%q has %d hard links: the same file has another name, perhaps outside the storage root, and is not taken as an image", rel, st.Nlink)
		}
		return nil
	})
	if err != nil {
		d.Close()
		return nil, err
	}
	return &judged{dir: d, name: name, rel: rel, f: f, named: named}, nil
}

// remove removes the judged image's name while it names it.
func (j *judged) remove() error {
	_, err := unlinkJudged(j.dirfd(), j.name, j.rel, &j.named, 0)
	return err
}

// renameNoReplaceAt renames from in the open folder fromfd to to in tofd,
// never over a file there (EEXIST). Where the system or the file system
// cannot refuse to replace, the target is looked at first, and a file put
// there in the moment between is replaced.
func renameNoReplaceAt(fromfd int, from string, tofd int, to string) error {
	err := renameNoReplace(fromfd, from, tofd, to)
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.ENOTSUP) {
		return err
	}
	var st unix.Stat_t
	switch err := unix.Fstatat(tofd, to, &st, unix.AT_SYMLINK_NOFOLLOW); {
	case err == nil:
		return unix.EEXIST
	case !errors.Is(err, unix.ENOENT):
		return err
	}
	return unix.Renameat(fromfd, from, tofd, to)
}

// renameNew renames tmp, a file the agent just wrote, to rel in the same
// folder, never over a file put there meanwhile (an image made or copied
// by someone else, which the rename would destroy).
func (s *Storage) renameNew(tmp, rel string) error {
	dir := filepath.Dir(rel)
	d, err := s.openFolder(dir)
	if err != nil {
		return describe(dir, err)
	}
	defer d.Close()
	fd := int(d.Fd())
	switch err := renameNoReplaceAt(fd, filepath.Base(tmp), fd, filepath.Base(rel)); {
	case errors.Is(err, unix.EEXIST):
		return fmt.Errorf("%q was put there by someone else while the agent wrote it, and is left as it is", rel)
	case err != nil:
		return describe(rel, &fs.PathError{Op: "renameat", Path: rel, Err: err})
	}
	return nil
}

// moveFile is move_image's work once the image src (of info) and the
// target dst are judged by name: the image is opened and judged as
// judgeImage does, must still be of info and not in use, and its name is
// renamed to dst, never over a file there. Across file systems it is
// copied from the file opened, and then its name removed while it names
// that file.
func (s *Storage) moveFile(ctx context.Context, src, dst string, info imageInfo) error {
	j, err := s.judgeImage(src)
	if err != nil {
		return err
	}
	defer j.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(j.f.Fd()), &st); err != nil {
		return describe(src, &fs.PathError{Op: "fstat", Path: src, Err: err})
	}
	now, err := readInfo(j.f, FormatOf(src), st.Size)
	if err != nil {
		return fmt.Errorf("image %q: %w", src, err)
	}
	if now != info {
		return fmt.Errorf("%q was replaced by another image while the agent moved it", src)
	}
	if err := notInUseFile(j.f, src, false); err != nil {
		return err
	}
	dir, name := filepath.Dir(dst), filepath.Base(dst)
	to, err := s.openFolder(dir)
	if err != nil {
		return describe(dir, err)
	}
	defer to.Close()
	refused := fmt.Errorf("volume %q has an image %q already (put there while the agent moved it), and it is left as it is", dir, name)
	var again unix.Stat_t
	err = unix.Fstatat(j.dirfd(), j.name, &again, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case err != nil:
		return describe(src, &fs.PathError{Op: "fstatat", Path: src, Err: err})
	case !sameFile(&again, &j.named):
		return fmt.Errorf("%q was replaced by another file while the agent moved it, and is left there", src)
	}
	err = renameNoReplaceAt(j.dirfd(), j.name, int(to.Fd()), name)
	switch {
	case errors.Is(err, unix.EXDEV):
		// The volumes are different file systems: copy, then remove. A
		// source whose name cannot be removed (a read-only file system,
		// a folder the agent may not write) is refused before the copy,
		// which would be left in the target, the image in both volumes
		// and the move failed; one that fails all the same takes its
		// copy back.
		if err := unix.Faccessat(j.dirfd(), ".", unix.W_OK, 0); err != nil {
			return fmt.Errorf("image %q cannot be moved to another file system: it cannot be removed from volume %q (%w), and would be left in both", src, filepath.Dir(src), err)
		}
		err = s.writeAtomically(dst, func(out *os.File) error {
			return describeFile(j.f, src, copySparse(ctx, out, j.f, st.Size))
		})
		if err != nil {
			return err
		}
		if err := j.remove(); err != nil {
			if _, rerr := s.removeImage(dst); rerr != nil {
				return fmt.Errorf("%w; its copy %q is left: the move, run again once the source can be removed, finishes", err, dst)
			}
			return fmt.Errorf("%w; the image stays where it was, its copy in %q removed again", err, filepath.Dir(dst))
		}
		return nil
	case errors.Is(err, unix.EEXIST):
		return refused
	case err != nil:
		return describe(src, &fs.PathError{Op: "renameat", Path: src, Err: err})
	}
	// Another file renamed in at src in the moment since the last look
	// was moved instead: it goes back, and the move is refused.
	var moved unix.Stat_t
	if err := unix.Fstatat(int(to.Fd()), name, &moved, unix.AT_SYMLINK_NOFOLLOW); err == nil && !sameFile(&moved, &j.named) {
		if err := renameNoReplaceAt(int(to.Fd()), name, j.dirfd(), j.name); err != nil {
			return fmt.Errorf("%q was replaced by another file while the agent moved it, which was moved to %q and is left there", src, dst)
		}
		return fmt.Errorf("%q was replaced by another file while the agent moved it, and is left there", src)
	}
	return s.syncDir(dir) // the rename, kept on disk before it is reported
}

// removeCopied is finishMove's work: the source src is removed when it
// holds what its copy dst holds, as files opened (src judged as
// judgeImage does, and not in use), and only while its name names the
// file compared. It reports false, removing nothing, when they differ.
func (s *Storage) removeCopied(ctx context.Context, src, dst string) (bool, error) {
	j, err := s.judgeImage(src)
	if err != nil {
		return false, err
	}
	defer j.Close()
	fi, err := j.f.Stat()
	if err != nil {
		return false, describeFile(j.f, src, err)
	}
	fb, fib, err := s.openImage(dst, os.O_RDONLY)
	if err != nil {
		return false, err
	}
	defer fb.Close()
	if same, err := compareFiles(ctx, j.f, fb, fi.Size(), fib.Size(), src, dst); err != nil || !same {
		return false, err
	}
	if err := notInUseFile(j.f, src, false); err != nil {
		return false, err
	}
	return true, j.remove()
}

// maxPasses bounds the times a folder being removed is listed again
// because files were put in it meanwhile (by whoever may write there).
const maxPasses = 100

// removeFolder removes the empty volume rel (a folder, as judged by name),
// for remove_volume without force: relative to its opened parent, only
// while the name names the folder looked at, and never a file
// (AT_REMOVEDIR), which Root.Remove would unlink in its stead.
func (s *Storage) removeFolder(rel string) error {
	return s.atVolume(rel, func(parent int, name string, named *unix.Stat_t) error {
		_, err := unlinkJudged(parent, name, rel, named, unix.AT_REMOVEDIR)
		return err
	})
}

// removeTree removes the volume rel (a folder, as judged by name) and all
// it holds, for remove_volume with force, relative to the folders opened
// on the way: no symbolic link is followed, each folder entered must be
// the one its name was, and each image must not be in use as it is
// removed (a check made before the removal does not see one moved in
// since), and each name is removed only while it names the file judged.
func (s *Storage) removeTree(rel string) error {
	return s.atVolume(rel, func(parent int, name string, named *unix.Stat_t) error {
		return removeTreeAt(parent, name, rel, named)
	})
}

// atVolume runs remove on the volume rel, as the folder name of its opened
// parent (parent) that fstatat, not following a link, found to be named.
// A volume that is gone is nil; a file or a symbolic link in its place,
// an error.
func (s *Storage) atVolume(rel string, remove func(parent int, name string, named *unix.Stat_t) error) error {
	dir, name := filepath.Dir(rel), filepath.Base(rel)
	d, err := s.openFolder(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return describe(dir, err)
	}
	defer d.Close()
	var named unix.Stat_t
	err = unix.Fstatat(int(d.Fd()), name, &named, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil
	case err != nil:
		return describe(rel, &fs.PathError{Op: "fstatat", Path: rel, Err: err})
	case !isDir(&named):
		return fmt.Errorf("volume %q was replaced by a file or a symbolic link while the agent removed it, and is left there", rel)
	}
	return remove(int(d.Fd()), name, &named)
}

// removeTreeAt is removeTree's work on the folder name of the open folder
// parent (rel in the root), which fstatat found to be named.
func removeTreeAt(parent int, name, rel string, named *unix.Stat_t) error {
	// A folder on another file system is a mount point: what is mounted
	// there (an operator's data, a disk) is not the volume's to remove, and
	// its folder could not be removed anyway (EBUSY) once it was emptied.
	var above unix.Stat_t
	if err := unix.Fstat(parent, &above); err != nil {
		return describe(filepath.Dir(rel), &fs.PathError{Op: "fstat", Path: filepath.Dir(rel), Err: err})
	}
	if above.Dev != named.Dev {
		return fmt.Errorf("folder %q is on another file system mounted there, and the agent removes nothing on it: unmount it first", rel)
	}
	fd, err := unix.Openat(parent, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil
	case errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR):
		return fmt.Errorf("%q was replaced by a file or a symbolic link while the agent removed it, and is left there", rel)
	case err != nil:
		return describe(rel, &fs.PathError{Op: "openat", Path: rel, Err: err})
	}
	d := os.NewFile(uintptr(fd), rel)
	defer d.Close()
	var opened unix.Stat_t
	if err := unix.Fstat(fd, &opened); err != nil {
		return describe(rel, &fs.PathError{Op: "fstat", Path: rel, Err: err})
	}
	if !sameFile(&opened, named) {
		return fmt.Errorf("%q was replaced by another folder while the agent removed it, and is left there", rel)
	}
	for pass := 0; ; pass++ {
		entries, err := d.ReadDir(-1)
		if err != nil {
			return describeFile(d, rel, err)
		}
		for _, e := range entries {
			if err := removeEntryAt(fd, e.Name(), filepath.Join(rel, e.Name())); err != nil {
				return err
			}
		}
		_, err = unlinkJudged(parent, name, rel, named, unix.AT_REMOVEDIR)
		if !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, unix.EEXIST) {
			return err
		}
		// Files put in it meanwhile: look again.
		if pass == maxPasses {
			return fmt.Errorf("folder %q cannot be removed: files keep being put in it", rel)
		}
		if _, err := d.Seek(0, io.SeekStart); err != nil {
			return describeFile(d, rel, err)
		}
	}
}

// removeEntryAt removes name from the open folder dirfd (rel in the root):
// a folder with all it holds, an image once it is not in use, anything
// else (a symbolic link, not followed, or a special file) as it is, each
// only while the name names what was judged.
func removeEntryAt(dirfd int, name, rel string) error {
	var named unix.Stat_t
	err := unix.Fstatat(dirfd, name, &named, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil
	case err != nil:
		return describe(rel, &fs.PathError{Op: "fstatat", Path: rel, Err: err})
	}
	switch named.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return removeTreeAt(dirfd, name, rel, &named)
	case unix.S_IFREG:
		f, judged, err := openAt(dirfd, name, rel, func(*unix.Stat_t) error { return nil })
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil
		case err != nil:
			return err
		}
		defer f.Close()
		if err := notInUseFile(f, rel, false); err != nil {
			return err
		}
		named = judged
	}
	_, err = unlinkJudged(dirfd, name, rel, &named, 0)
	return err
}
