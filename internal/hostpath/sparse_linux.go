package hostpath

import (
	"errors"
	"os"
	"syscall"
)

// lseek's whence values for the next data and the next hole (Linux).
const (
	seekData = 3
	seekHole = 4
)

// dataExtents calls fn for each range of f that holds data, as the file
// system reports them; the whole file when it cannot tell.
func dataExtents(f *os.File, size int64, fn func(start, end int64) error) error {
	for off := int64(0); off < size; {
		start, err := f.Seek(off, seekData)
		switch {
		case errors.Is(err, syscall.ENXIO):
			return nil // only a hole after off
		case errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.EOPNOTSUPP):
			return fn(off, size)
		case err != nil:
			return err
		}
		end, err := f.Seek(start, seekHole)
		if err != nil {
			return err
		}
		end = min(end, size)
		if err := fn(start, end); err != nil {
			return err
		}
		off = end
	}
	return nil
}

// nextData is the offset of the first byte at or after off that may hold
// data: size when only a hole follows, off itself when the file system
// cannot tell.
func nextData(f *os.File, off, size int64) (int64, error) {
	start, err := f.Seek(off, seekData)
	switch {
	case errors.Is(err, syscall.ENXIO):
		return size, nil
	case errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.EOPNOTSUPP):
		return off, nil
	case err != nil:
		return 0, err
	}
	return min(start, size), nil
}
