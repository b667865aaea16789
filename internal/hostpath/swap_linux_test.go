package hostpath

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// gone reports whether the file f holds open has no name left: removed,
// or replaced by a rename over it.
func gone(t *testing.T, f *os.File) bool {
	t.Helper()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Nlink == 0
}

// putAndTake puts the file at aside in place of path, never over what is
// there (RENAME_NOREPLACE), and takes it back, over and over until stop,
// as a local user who may write there could. A turn whose file cannot be
// taken back (the agent renamed something over it) stops it.
func putAndTake(t *testing.T, path, aside string) (stop func()) {
	t.Helper()
	return inLoop(func(int) bool {
		if err := unix.Renameat2(unix.AT_FDCWD, aside, unix.AT_FDCWD, path, unix.RENAME_NOREPLACE); err != nil {
			return true // something is there (the agent's image), or not the folder
		}
		return os.Rename(path, aside) == nil
	}).stop
}

// TestMoveImage_TargetPutThereMeanwhile: an image put in the target
// volume under the moved image's name between move_image's look at the
// target and its rename (by whoever may write there) is not replaced, and
// so lost: the rename never replaces. The race is not deterministic; the
// loop makes it likely.
func TestMoveImage_TargetPutThereMeanwhile(t *testing.T) {
	s := open(t)
	m := must{t}
	m.out(s.AddVolume(ctx, AddVolume{Path: "v"}))
	m.out(s.AddVolume(ctx, AddVolume{Path: "w"}))
	mine := filepath.Join(t.TempDir(), "mine")
	if err := os.WriteFile(mine, []byte("not the image"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(mine)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	target := filepath.Join(s.Dir(), "w", "a.raw")
	stop := putAndTake(t, target, mine)
	defer stop()
	for range forAWhile(2 * time.Second) {
		m.out(s.CreateImage(ctx, CreateImage{VolumePath: "v", ImageName: "a.raw", ImageSize: 1}))
		// Refused when the file is there: it is no copy of the image.
		o, err := s.MoveImage(ctx, MoveImage{ImageName: "a.raw", Volume: "v", TargetVolume: "w"})
		if gone(t, f) {
			stop()
			t.Fatalf("the file put in the target was replaced by the move (%v), and lost", err)
		}
		if err == nil && o.(*Output).Changed {
			// The image moved; the file is not put over it (no replace),
			// so only this test renames it, back.
			if err := os.Rename(target, filepath.Join(s.Dir(), "v", "a.raw")); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestMoveImage_SourceSwappedForAFolder: a move to another file system
// copies the image and then removes the source, and a retried one whose
// copy is whole removes the source only; a source swapped for an empty
// folder before that removal (by whoever may write in the root) is left
// there: the agent removes only the file it judged, never a folder. The
// race is not deterministic; the loop makes it likely.
func TestMoveImage_SourceSwappedForAFolder(t *testing.T) {
	s := open(t)
	m := must{t}
	m.out(s.AddVolume(ctx, AddVolume{Path: "v"}))
	other := m.out(s.AddVolume(ctx, AddVolume{Path: "other-fs"})).HostPath
	tmpfs(t, other, "16m")
	src := filepath.Join(s.Dir(), "v", "a.raw")
	aside := t.TempDir()
	folder := filepath.Join(aside, "folder")
	if err := os.Mkdir(folder, 0o755); err != nil {
		t.Fatal(err)
	}
	var swapErr error
	swaps := inLoop(func(int) bool {
		// A new source each turn: the agent removes some of them, as it
		// should.
		reg := filepath.Join(aside, "reg")
		if err := os.WriteFile(reg, []byte("image"), 0o644); err != nil {
			swapErr = err
			return false
		}
		if err := os.Rename(reg, src); err != nil {
			swapErr = err
			return false
		}
		_ = os.Rename(src, reg) // gone if the agent moved it
		if err := os.Rename(folder, src); err != nil {
			swapErr = err
			return false
		}
		if err := os.Rename(src, folder); err != nil {
			swapErr = errors.New("the folder swapped in for the source is gone: " + err.Error())
			return false
		}
		return true
	})
	for i := range forAWhile(3 * time.Second) {
		// Errors are expected (a folder is no image). The copy made in
		// the target is left there every other turn, for the retried
		// move (finishMove), and removed on the others, for a move.
		_, _ = s.MoveImage(ctx, MoveImage{ImageName: "a.raw", Volume: "v", TargetVolume: "other-fs"})
		if i%2 == 0 {
			_ = os.Remove(filepath.Join(other, "a.raw"))
		}
		if swaps.ended() { // the swaps failed
			break
		}
	}
	swaps.stop()
	if swapErr != nil {
		t.Fatal(swapErr)
	}
}

// TestRemoveVolume_ImageMovedInMeanwhile: remove_volume with force looks
// for images in use in the volume, then removes it; an image a VM uses,
// moved into the volume between the two (by whoever may write in both
// folders), is not removed with it: every file is judged as it is
// removed. The race is not deterministic; the loop makes it likely.
func TestRemoveVolume_ImageMovedInMeanwhile(t *testing.T) {
	s := open(t)
	m := must{t}
	m.out(s.AddVolume(ctx, AddVolume{Path: "w"}))
	busy := m.out(s.CreateImage(ctx, CreateImage{VolumePath: "w", ImageName: "disk.raw", ImageSize: 1})).HostPath
	vm := qemuLocks(t, busy, false)
	defer vm.Close()
	vol := filepath.Join(s.Dir(), "v")
	in := filepath.Join(vol, "disk.raw")
	swaps := inLoop(func(int) bool {
		_ = os.Mkdir(vol, 0o755) // again, once the agent removed it
		if err := os.Rename(busy, in); err != nil {
			return true // the volume removed meanwhile
		}
		// Not renamed back when removed with the volume: the defect.
		return os.Rename(in, busy) == nil
	})
	for range forAWhile(2 * time.Second) {
		if gone(t, vm) {
			break
		}
		// Errors are expected (the image in use, found in the volume).
		_, _ = s.RemoveVolume(ctx, RemoveVolume{Path: "v", Force: true})
	}
	swaps.stop()
	if gone(t, vm) {
		t.Fatal("the image a VM uses, moved into the volume, was removed with it")
	}
}

// TestRemoveVolume_SwappedForAnImage: an empty volume's folder swapped for
// an image (by whoever may write in the folder holding it) between
// remove_volume's look at it and its removal is not removed: only an
// empty folder is. The race is not deterministic; the loop makes it
// likely.
func TestRemoveVolume_SwappedForAnImage(t *testing.T) {
	s := open(t)
	m := must{t}
	m.out(s.AddVolume(ctx, AddVolume{Path: "w"}))
	image := m.out(s.CreateImage(ctx, CreateImage{VolumePath: "w", ImageName: "disk.raw", ImageSize: 1})).HostPath
	f, err := os.Open(image)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	folder := filepath.Join(t.TempDir(), "folder")
	vol := filepath.Join(s.Dir(), "v")
	swaps := inLoop(func(int) bool {
		_ = os.Mkdir(folder, 0o755) // again, once the agent removed it
		if err := os.Rename(folder, vol); err != nil {
			return false
		}
		_ = os.Rename(vol, folder) // gone if the agent removed it
		if err := os.Rename(image, vol); err != nil {
			return false
		}
		// Not renamed back when removed as the volume: the defect.
		return os.Rename(vol, image) == nil
	})
	for range forAWhile(2 * time.Second) {
		if gone(t, f) {
			break
		}
		// Errors are expected (an image is no volume).
		_, _ = s.RemoveVolume(ctx, RemoveVolume{Path: "v"})
		_, _ = s.RemoveVolume(ctx, RemoveVolume{Path: "v", Force: true})
	}
	swaps.stop()
	if gone(t, f) {
		t.Fatal("the image swapped in for the volume was removed as the volume")
	}
}

// TestOpen_RootSwappedForAFIFO: the root swapped for a FIFO as the agent
// starts (by whoever may write in the folder holding it) does not hold
// the start: the root is opened as folders are, and a FIFO refused. The
// two are exchanged in one step (RENAME_EXCHANGE), so the root is never
// missing, and never made anew. The race is not deterministic; the loop
// makes it likely.
func TestOpen_RootSwappedForAFIFO(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "images")
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := Open(dir, Options{Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	fifo := filepath.Join(t.TempDir(), "fifo")
	mkfifo(t, fifo)
	t.Cleanup(func() { unblock(dir) })
	var swapErr error
	swaps := inLoop(func(int) bool {
		swapErr = unix.Renameat2(unix.AT_FDCWD, fifo, unix.AT_FDCWD, dir, unix.RENAME_EXCHANGE)
		return swapErr == nil
	})
	err = within(t, "Open with the root swapped for a FIFO", func() error {
		for range forAWhile(2 * time.Second) {
			// Errors are expected (a FIFO): Open must only return.
			if s, err := Open(dir, Options{Logger: logger}); err == nil {
				s.Close()
			}
		}
		return nil
	})
	swaps.stop()
	if err != nil {
		t.Fatal(err)
	}
	if swapErr != nil {
		t.Fatal(swapErr)
	}
}
