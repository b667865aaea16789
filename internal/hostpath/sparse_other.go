//go:build !linux

package hostpath

import "os"

// dataExtents calls fn once for the whole file: without SEEK_DATA, only
// chunks of zeros are left as holes.
func dataExtents(f *os.File, size int64, fn func(start, end int64) error) error {
	if size == 0 {
		return nil
	}
	return fn(0, size)
}

// nextData is off: without SEEK_DATA, any byte may hold data.
func nextData(f *os.File, off, size int64) (int64, error) { return off, nil }
