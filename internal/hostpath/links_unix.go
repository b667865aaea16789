//go:build unix

package hostpath

import (
	"io/fs"
	"syscall"
)

// Links is how many hard links a file has: more than one means the same
// data has another name, which may be outside any root.
func Links(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Nlink)
	}
	return 1
}
