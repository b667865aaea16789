package hostpath

import (
	"errors"
	"os"
	"syscall"
)

// fOFDGetLK is Linux's F_OFD_GETLK: F_GETLK for open file description
// locks, the kind QEMU takes on its images (the syscall package does not
// name it).
const fOFDGetLK = 36

// QEMU's image locks (block/file-posix.c): while it has an image open it
// holds shared locks on byte 100+i for each permission bit i it uses and
// on byte 200+i for each it does not let others use. Bit 1 is write.
const qemuLockWrite = 101

// inUse reports whether a QEMU (or anyone) holds a lock on f: with
// writing, only one that may write to it (a VM's disk, not a read-only
// CD-ROM); else any lock at all. It only asks: nothing is locked here.
func inUse(f *os.File, writing bool) (bool, error) {
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: 0, Start: 0, Len: 0}
	if writing {
		lk.Start, lk.Len = qemuLockWrite, 1
	}
	for {
		err := syscall.FcntlFlock(f.Fd(), fOFDGetLK, &lk)
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EINVAL):
			return false, nil // a kernel before 3.15, without OFD locks
		case err != nil:
			return false, err
		}
		return lk.Type != syscall.F_UNLCK, nil
	}
}
