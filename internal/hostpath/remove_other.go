//go:build !unix

package hostpath

import (
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"syscall"
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
	if err := s.removeUnused(rel); err != nil {
		return false, err
	}
	return true, nil
}

// removeUnused removes the image rel by name once it is not in use (one
// gone already is no error).
func (s *Storage) removeUnused(rel string) error {
	if err := s.notInUse(rel, false); err != nil {
		return err
	}
	if err := s.root.Remove(rel); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return describe(rel, err)
	}
	return nil
}

// renameNew renames tmp, a file the agent just wrote, to rel. Where the
// system has no rename that refuses to replace, a file put there meanwhile
// is replaced.
func (s *Storage) renameNew(tmp, rel string) error {
	return describe(rel, s.root.Rename(tmp, rel))
}

// moveFile is move_image's work once the image src (of info) and the
// target dst are judged by name: here it is judged again by name (not in
// use), and renamed by name; across file systems, copied and then removed.
func (s *Storage) moveFile(ctx context.Context, src, dst string, info imageInfo) error {
	if err := s.notInUse(src, false); err != nil {
		return err
	}
	err := s.root.Rename(src, dst)
	if errors.Is(err, syscall.EXDEV) {
		if err = s.copyFile(ctx, src, dst); err == nil {
			err = describe(src, s.root.Remove(src))
		}
		return err
	}
	if err = describe(src, err); err != nil {
		return err
	}
	return s.syncDir(filepath.Dir(dst)) // the rename, kept on disk before it is reported
}

// removeCopied is finishMove's work: the source src is removed when it
// holds what its copy dst holds and is not in use; judged by name, and
// removed by it. It reports false, removing nothing, when they differ.
func (s *Storage) removeCopied(ctx context.Context, src, dst string) (bool, error) {
	if same, err := s.sameContent(ctx, src, dst); err != nil || !same {
		return false, err
	}
	if err := s.removeUnused(src); err != nil {
		return false, err
	}
	return true, nil
}

// removeTree removes the volume rel and all it holds, for remove_volume
// with force; here by name, as os.Root's RemoveAll does (following no
// symbolic link).
func (s *Storage) removeTree(rel string) error {
	return s.root.RemoveAll(rel)
}

// removeFolder removes the empty volume rel, for remove_volume without
// force; here by name.
func (s *Storage) removeFolder(rel string) error {
	return s.root.Remove(rel)
}
