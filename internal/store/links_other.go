//go:build !unix

package store

import "io/fs"

// links is how many hard links a file has; where the system does not say,
// one.
func links(fs.FileInfo) uint64 { return 1 }
