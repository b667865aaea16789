//go:build !unix

package hostpath

import (
	"errors"
	"io/fs"
)

// removeImage removes the image rel for delete_image, and reports false
// when it was gone already. Where the system has no calls relative to an
// open folder, it is judged by its name, and then removed by it.
func (s *Storage) removeImage(rel string) (bool, error) {
	fi, err := s.root.Lstat(rel)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, describe(rel, err)
	}
	if err := imageKind(rel, fi.IsDir(), fi.Mode().IsRegular()); err != nil {
		return false, err
	}
	if err := s.notInUse(rel, false); err != nil {
		return false, err
	}
	if err := s.root.Remove(rel); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, describe(rel, err)
	}
	return true, nil
}
