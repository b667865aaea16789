//go:build unix

package hostpath

import (
	"io/fs"
	"syscall"
)

// oneFileSystem reports whether the files a and b describe are on the same
// file system (device).
func oneFileSystem(a, b fs.FileInfo) bool {
	sa, okA := a.Sys().(*syscall.Stat_t)
	sb, okB := b.Sys().(*syscall.Stat_t)
	return !okA || !okB || sa.Dev == sb.Dev
}
