//go:build unix && !linux && !darwin

package hostpath

import "golang.org/x/sys/unix"

// renameNoReplace has no system call here that refuses to replace (ENOSYS):
// renameNoReplaceAt looks at the target first.
func renameNoReplace(int, string, int, string) error { return unix.ENOSYS }
