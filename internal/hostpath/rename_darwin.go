package hostpath

import "golang.org/x/sys/unix"

// renameNoReplace is renameatx_np with RENAME_EXCL: EEXIST rather than
// replace a file at to. A file system that cannot do it answers ENOTSUP.
func renameNoReplace(fromfd int, from string, tofd int, to string) error {
	return unix.RenameatxNp(fromfd, from, tofd, to, unix.RENAME_EXCL)
}
