//go:build unix

package main

import (
	"context"
	"errors"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// readerGone returns a channel that is closed once w, when it is a pipe or
// a socket, has no reader any more (the other end closed: 'events | head
// -1' once head has its line). A process learns that only when it writes,
// and a follower of a quiet stream may never write again: it would hold
// the shell's pipeline for ever. The channel is never closed for anything
// else (a terminal, a file), nor after ctx ends.
func readerGone(ctx context.Context, w io.Writer) <-chan struct{} {
	gone := make(chan struct{})
	f, ok := w.(*os.File)
	if !ok {
		return gone
	}
	fi, err := f.Stat()
	if err != nil || fi.Mode()&(os.ModeNamedPipe|os.ModeSocket) == 0 {
		return gone
	}
	fd := int32(f.Fd())
	go func() {
		for ctx.Err() == nil {
			// No events asked for: poll says only POLLERR (a pipe whose
			// readers are all gone) and POLLHUP (a socket shut down), which
			// it always reports. A timeout, so that the goroutine ends
			// with ctx.
			fds := []unix.PollFd{{Fd: fd}}
			n, err := unix.Poll(fds, 250)
			if err != nil && !errors.Is(err, unix.EINTR) {
				return
			}
			if n > 0 && fds[0].Revents&(unix.POLLERR|unix.POLLHUP) != 0 {
				close(gone)
				return
			}
			if n > 0 && fds[0].Revents&unix.POLLNVAL != 0 {
				return
			}
			if n > 0 {
				time.Sleep(250 * time.Millisecond) // something else said: ask again later
			}
		}
	}()
	return gone
}
