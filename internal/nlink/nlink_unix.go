//go:build unix

// Package nlink counts a file's hard links: more than one means the same
// data has another name, which a check by path does not see.
package nlink

import (
	"io/fs"
	"syscall"
)

// Of is how many hard links (names) the file fi describes has.
func Of(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Nlink)
	}
	return 1
}
