package hostpath

import (
	"bytes"
	"context"
	"io"
	"os"
)

// chunk is the unit of copying; a chunk of zeros is skipped, left a hole.
const chunk = 1 << 20

// copySparse copies the size bytes of src into dst, an empty file, leaving
// holes where src has holes (found with SEEK_DATA/SEEK_HOLE where the file
// system answers them) and where a whole chunk is zeros. It stops between
// two chunks once ctx ends.
func copySparse(ctx context.Context, dst, src *os.File, size int64) error {
	if err := dst.Truncate(size); err != nil {
		return err
	}
	buf := make([]byte, chunk)
	return dataExtents(src, size, func(start, end int64) error {
		for off := start; off < end; {
			if err := ctx.Err(); err != nil {
				return err
			}
			n := int(min(int64(len(buf)), end-off))
			if _, err := src.ReadAt(buf[:n], off); err != nil && err != io.EOF {
				return err
			}
			if !allZero(buf[:n]) {
				if _, err := dst.WriteAt(buf[:n], off); err != nil {
					return err
				}
			}
			off += int64(n)
		}
		return nil
	})
}

var zeros = make([]byte, chunk)

func allZero(b []byte) bool { return bytes.Equal(b, zeros[:len(b)]) }
