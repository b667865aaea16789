package hostpath

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
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
	done, quit := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-quit:
				return
			default:
			}
			if err := unix.Renameat2(unix.AT_FDCWD, aside, unix.AT_FDCWD, path, unix.RENAME_NOREPLACE); err != nil {
				continue // something is there (the agent's image), or not the folder
			}
			if err := os.Rename(path, aside); err != nil {
				return
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(quit); <-done }) }
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
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
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
	done, quit := make(chan struct{}), make(chan struct{})
	var swapErr error
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-quit:
				return
			default:
			}
			// A new source each turn: the agent removes some of them,
			// as it should.
			reg := filepath.Join(aside, "reg")
			if err := os.WriteFile(reg, []byte("image"), 0o644); err != nil {
				swapErr = err
				return
			}
			if err := os.Rename(reg, src); err != nil {
				swapErr = err
				return
			}
			_ = os.Rename(src, reg) // gone if the agent moved it
			if err := os.Rename(folder, src); err != nil {
				swapErr = err
				return
			}
			if err := os.Rename(src, folder); err != nil {
				swapErr = errors.New("the folder swapped in for the source is gone: " + err.Error())
				return
			}
		}
	}()
	deadline := time.Now().Add(3 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		// Errors are expected (a folder is no image). The copy made in
		// the target is left there every other turn, for the retried
		// move (finishMove), and removed on the others, for a move.
		_, _ = s.MoveImage(ctx, MoveImage{ImageName: "a.raw", Volume: "v", TargetVolume: "other-fs"})
		if i%2 == 0 {
			_ = os.Remove(filepath.Join(other, "a.raw"))
		}
		select {
		case <-done: // the swaps failed
			deadline = time.Now()
		default:
		}
	}
	close(quit)
	<-done
	if swapErr != nil {
		t.Fatal(swapErr)
	}
}
