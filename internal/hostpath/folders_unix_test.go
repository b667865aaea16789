//go:build unix

package hostpath

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// alternate puts, over and over until stop, each of asides in turn in the
// place of path and back, each renamed in one step as a local user with
// write access in the root could.
func alternate(t *testing.T, path string, asides ...string) (stop func()) {
	t.Helper()
	var errs []error
	swaps := inLoop(func(i int) bool {
		aside := asides[i%len(asides)]
		if err := os.Rename(aside, path); err != nil {
			errs = append(errs, err)
			return false
		}
		if err := os.Rename(path, aside); err != nil {
			errs = append(errs, err)
			return false
		}
		return true
	})
	stop = func() {
		swaps.stop()
		for _, err := range errs {
			t.Error(err)
		}
	}
	t.Cleanup(stop)
	return stop
}

// folderOrFIFO sets path (a folder of the root) to alternate between a
// folder, holding what fill makes in it, and a FIFO, both kept beside the
// root between turns. Once the test ends, the FIFO is woken wherever it
// is, so that an action stuck in opening it (the defect) lets go.
func folderOrFIFO(t *testing.T, path string, fill func(dir string)) (stop func()) {
	t.Helper()
	aside := t.TempDir()
	dir, fifo := filepath.Join(aside, "folder"), filepath.Join(aside, "fifo")
	if err := os.Rename(path, dir); err != nil {
		t.Fatal(err)
	}
	fill(dir)
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, p := range []string{path, fifo} {
			unblock(p)
		}
	})
	return alternate(t, path, dir, fifo)
}

// TestFolders_FIFOInAFoldersPlace: a FIFO where a volume's folder was,
// put there before the action, does not hold the agent when it syncs the
// folder's names or looks in it for an earlier write's temporary files.
func TestFolders_FIFOInAFoldersPlace(t *testing.T) {
	s := open(t)
	mkfifo(t, filepath.Join(s.Dir(), "v"))
	err := within(t, "syncDir", func() error { return s.syncDir("v") })
	wantErr(t, err, "not a directory")
	within(t, "removeStaleTemps", func() error { s.removeStaleTemps("v/a.raw"); return nil })
}

// TestOpen_FolderSwappedForAFIFO: a folder swapped for a FIFO while the
// agent, starting, looks through the root for the temporary files of an
// interrupted write does not hold the start. The race is not
// deterministic; the loop makes it likely.
func TestOpen_FolderSwappedForAFIFO(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "images")
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := Open(dir, Options{Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	must{t}.out(s.AddVolume(ctx, AddVolume{Path: "v/w"}))
	s.Close()
	stop := folderOrFIFO(t, filepath.Join(dir, "v"), func(string) {})
	err = within(t, "Open with a folder swapped for a FIFO", func() error {
		for range forAWhile(2 * time.Second) {
			s, err := Open(dir, Options{Logger: logger})
			if err != nil {
				return err
			}
			s.Close()
		}
		return nil
	})
	stop()
	if err != nil {
		t.Fatal(err)
	}
}

// TestRemoveVolume_NestedFolderSwappedForAFIFO: a folder inside a volume
// swapped for a FIFO while remove_volume with force looks through the
// volume for images in use does not hold the action.
func TestRemoveVolume_NestedFolderSwappedForAFIFO(t *testing.T) {
	s := open(t)
	must{t}.out(s.AddVolume(ctx, AddVolume{Path: "v/sub"}))
	stop := folderOrFIFO(t, filepath.Join(s.Dir(), "v", "sub"), func(string) {})
	err := within(t, "the in-use walk of a volume with a folder swapped for a FIFO", func() error {
		for range forAWhile(2 * time.Second) {
			// Errors are expected (a folder gone for a moment): the walk
			// must only return.
			_ = s.imagesNotInUse("v")
		}
		return nil
	})
	stop()
	if err != nil {
		t.Fatal(err)
	}
}

// TestOpen_LockFileNotARegularFile: a lock file that is a symbolic link
// (to an image of the root, or to nothing yet) or a FIFO, put there by
// whoever may write in the root, stops the agent at start with a reason:
// it is neither followed, taking the lock on an image or making a file
// elsewhere in the root, nor waited on.
func TestOpen_LockFileNotARegularFile(t *testing.T) {
	for _, c := range []struct {
		name string
		make func(t *testing.T, dir, lock string)
	}{
		{"a link to an image", func(t *testing.T, dir, lock string) {
			if err := os.Symlink(filepath.Join("v", "a.raw"), lock); err != nil {
				t.Fatal(err)
			}
		}},
		{"a link to nothing", func(t *testing.T, dir, lock string) {
			if err := os.Symlink(filepath.Join("v", "new"), lock); err != nil {
				t.Fatal(err)
			}
		}},
		{"a FIFO", func(t *testing.T, dir, lock string) { mkfifo(t, lock) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "images")
			opts := Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
			s, err := Open(dir, opts)
			if err != nil {
				t.Fatal(err)
			}
			must{t}.out(s.AddVolume(ctx, AddVolume{Path: "v"}))
			must{t}.out(s.CreateImage(ctx, CreateImage{VolumePath: "v", ImageName: "a.raw", ImageSize: 1}))
			s.Close()
			lock := filepath.Join(dir, LockName)
			if err := os.Remove(lock); err != nil {
				t.Fatal(err)
			}
			c.make(t, dir, lock)
			err = within(t, "Open", func() error {
				s, err := Open(dir, opts)
				if err == nil {
					s.Close()
				}
				return err
			})
			wantErr(t, err, "is not a regular file")
			if _, err := os.Lstat(filepath.Join(dir, "v", "new")); !os.IsNotExist(err) {
				t.Errorf("the lock file was made through the link: %v", err)
			}
		})
	}
}
