//go:build linux

package main

import (
	"os/exec"
	"syscall"
)

// ownGroup starts the broker that bench runs in a process group of its
// own: a Ctrl-C at the terminal goes to bench alone, which stops the
// broker cleanly (its database closed), where the broker also took the
// terminal's SIGINT and then bench's SIGTERM as a second signal, which
// ends it at once. Out of bench's group, it would outlive a bench killed
// with the group (timeout -s KILL, Ctrl-\, a CI job's end): the kernel
// sends it SIGTERM when bench dies.
func ownGroup(c *exec.Cmd) {
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
