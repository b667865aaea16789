package emulation

import (
	"net"
	"syscall"
)

// peerPID is the process id of the other end of a unix socket connection
// (SO_PEERCRED: the process that listened, for a connection made to a
// listening socket), 0 when not known.
func peerPID(c *net.UnixConn) int {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0
	}
	pid := 0
	_ = raw.Control(func(fd uintptr) {
		if cred, err := syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED); err == nil {
			pid = int(cred.Pid)
		}
	})
	return pid
}
