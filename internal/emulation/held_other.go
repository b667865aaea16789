//go:build unix && !linux

package emulation

import "os"

// heldPath is "" where an open file has no path of its own that another
// process may open: QEMU is given the image's path.
func heldPath(*os.File) string { return "" }

// openedPath is not known without /proc.
func openedPath(*os.File) (string, bool) { return "", false }
