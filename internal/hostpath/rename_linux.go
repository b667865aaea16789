package hostpath

import "golang.org/x/sys/unix"

// renameNoReplace is renameat2 with RENAME_NOREPLACE: EEXIST rather than
// replace a file at to. A file system that cannot do it answers EINVAL.
func renameNoReplace(fromfd int, from string, tofd int, to string) error {
	return unix.Renameat2(fromfd, from, tofd, to, unix.RENAME_NOREPLACE)
}
