package emulation

import (
	"fmt"
	"os"
)

// heldPath is a path by which another process (QEMU, the agent's child or
// systemd's) opens the file the agent holds open as f: its /proc entry,
// which names that file, not whatever is at its path now.
func heldPath(f *os.File) string {
	return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), f.Fd())
}

// openedPath is the host's path of the open file f, as /proc tells it: ok
// false when it cannot.
func openedPath(f *os.File) (string, bool) {
	p, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
	return p, err == nil
}
