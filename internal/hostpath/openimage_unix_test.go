//go:build unix

package hostpath

import (
	"fmt"
	"iter"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// within runs fn in a goroutine and fails the test unless it returns
// within 10s: an action that opened a FIFO for reading would wait for a
// writer for ever, and with it the agent's one command slot.
func within(t *testing.T, what string, fn func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("%s has not returned after 10s: it hangs on the FIFO", what)
		return nil
	}
}

// loop is a goroutine running a step over and over, as inLoop starts it.
type loop struct {
	quit, done chan struct{}
	once       sync.Once
}

// inLoop runs step in a goroutine for the turns 0, 1, 2..., until step
// returns false or stop is called: the swaps of a race test, made as a
// local user could.
func inLoop(step func(turn int) bool) *loop {
	l := &loop{quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for i := 0; ; i++ {
			select {
			case <-l.quit:
				return
			default:
			}
			if !step(i) {
				return
			}
		}
	}()
	return l
}

// stop ends the loop and waits for it; it may be called more than once.
func (l *loop) stop() { l.once.Do(func() { close(l.quit); <-l.done }) }

// ended reports whether the loop has ended by itself: a step failed.
func (l *loop) ended() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// forAWhile yields the turns 0, 1, 2... of an action tried again and
// again for d, until the harm of a race shows; the race is not
// deterministic, and the turns make it likely.
func forAWhile(d time.Duration) iter.Seq[int] {
	return func(yield func(int) bool) {
		deadline := time.Now().Add(d)
		for i := 0; time.Now().Before(deadline); i++ {
			if !yield(i) {
				return
			}
		}
	}
}

// mkfifo makes a FIFO at path, and once the test ends opens it for
// writing, so that an action stuck in opening it (the defect) lets go.
func mkfifo(t *testing.T, path string) {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unblock(path) })
}

// unblock opens the FIFO path for reading and writing, which never waits,
// and so wakes whoever waits in opening it for reading (a writer came).
func unblock(path string) {
	if f, err := os.OpenFile(path, os.O_RDWR|syscall.O_NONBLOCK, 0); err == nil {
		f.Close()
	}
}

// TestImages_FIFOAndHardLink: a FIFO or a hard link under an image's name
// (there before the action) is refused promptly by every action that
// opens the image, with the reasons of old.
func TestImages_FIFOAndHardLink(t *testing.T) {
	s := open(t)
	m := must{t}
	for _, v := range []string{"v", "w"} {
		m.out(s.AddVolume(ctx, AddVolume{Path: v}))
	}
	m.out(s.CreateImage(ctx, CreateImage{VolumePath: "w", ImageName: "fifo.raw", ImageSize: 1}))
	m.out(s.CreateImage(ctx, CreateImage{VolumePath: "w", ImageName: "link.raw", ImageSize: 1}))
	mkfifo(t, filepath.Join(s.Dir(), "v", "fifo.raw"))
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(secret, filepath.Join(s.Dir(), "v", "link.raw")); err != nil {
		t.Fatal(err)
	}
	const notImage, hardLinks = "is not an image file", "has 2 hard links"
	for _, c := range []struct {
		name, want string
		fn         func() (any, error)
	}{
		{"resize a FIFO", notImage, func() (any, error) {
			return s.ResizeImage(ctx, ResizeImage{VolumePath: "v", ImageName: "fifo.raw", ImageSize: 2})
		}},
		{"copy a FIFO", notImage, func() (any, error) {
			return s.CopyImage(ctx, CopyImage{ImageName: "fifo.raw", Volume: "v", TargetVolume: "w"})
		}},
		{"copy onto a FIFO", notImage, func() (any, error) {
			return s.CopyImage(ctx, CopyImage{ImageName: "fifo.raw", Volume: "w", TargetVolume: "v"})
		}},
		{"move a FIFO", notImage, func() (any, error) {
			return s.MoveImage(ctx, MoveImage{ImageName: "fifo.raw", Volume: "v", TargetVolume: "w"})
		}},
		{"create over a FIFO", notImage, func() (any, error) {
			return s.CreateImage(ctx, CreateImage{VolumePath: "v", ImageName: "fifo.raw", ImageSize: 1})
		}},
		{"delete a FIFO", notImage, func() (any, error) {
			return s.DeleteImage(ctx, DeleteImage{ImagePath: "v/fifo.raw"})
		}},
		{"resize a hard link", hardLinks, func() (any, error) {
			return s.ResizeImage(ctx, ResizeImage{VolumePath: "v", ImageName: "link.raw", ImageSize: 2})
		}},
		{"copy a hard link", hardLinks, func() (any, error) {
			return s.CopyImage(ctx, CopyImage{ImageName: "link.raw", Volume: "v", TargetVolume: "w"})
		}},
		{"copy onto a hard link", hardLinks, func() (any, error) {
			return s.CopyImage(ctx, CopyImage{ImageName: "link.raw", Volume: "w", TargetVolume: "v"})
		}},
		{"move a hard link", hardLinks, func() (any, error) {
			return s.MoveImage(ctx, MoveImage{ImageName: "link.raw", Volume: "v", TargetVolume: "w"})
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := within(t, c.name, func() error { _, err := c.fn(); return err })
			wantErr(t, err, c.want)
		})
	}
	if b, err := os.ReadFile(secret); err != nil || string(b) != "x" {
		t.Errorf("the file the hard link names changed: %q, %v", b, err)
	}
}

// TestOpenImage_JudgesTheOpenedFile: a FIFO or a hard link is refused by
// openImage, the one way an existing image is opened, for reading or
// writing, and promptly. Present before the call, they are seen by its
// check of the name already; the judgement of the file it opened is what
// the swap tests below reach, where the race is not deterministic.
func TestOpenImage_JudgesTheOpenedFile(t *testing.T) {
	s := open(t)
	m := must{t}
	m.out(s.AddVolume(ctx, AddVolume{Path: "v"}))
	m.out(s.CreateImage(ctx, CreateImage{VolumePath: "v", ImageName: "a.raw", ImageSize: 1}))
	mkfifo(t, filepath.Join(s.Dir(), "v", "fifo.raw"))
	if err := os.Link(filepath.Join(s.Dir(), "v", "a.raw"), filepath.Join(s.Dir(), "v", "b.raw")); err != nil {
		t.Fatal(err)
	}
	for _, flag := range []int{os.O_RDONLY, os.O_RDWR} {
		for rel, want := range map[string]string{"v/fifo.raw": "is not an image file", "v/a.raw": "has 2 hard links"} {
			err := within(t, "openImage", func() error {
				f, _, err := s.openImage(rel, flag)
				if err == nil {
					f.Close()
				}
				return err
			})
			wantErr(t, err, want)
		}
	}
}

// swapper puts, over and over until stop, a regular file and then other
// (made by mk at a temporary path) in place of the image at path, each
// renamed there in one step as a local user could.
func swapper(t *testing.T, path string, mk func(tmp string) error) (stop func()) {
	t.Helper()
	var errs []error
	swaps := inLoop(func(i int) bool {
		reg, other := fmt.Sprintf("%s.reg%d", path, i), fmt.Sprintf("%s.other%d", path, i)
		if err := os.WriteFile(reg, []byte("mine"), 0o644); err != nil {
			errs = append(errs, err)
			return false
		}
		if err := mk(other); err != nil {
			errs = append(errs, err)
			return false
		}
		for _, p := range []string{reg, other} {
			if err := os.Rename(p, path); err != nil {
				errs = append(errs, err)
				return false
			}
		}
		return true
	})
	return func() {
		swaps.stop()
		for _, err := range errs {
			t.Error(err)
		}
	}
}

// TestResizeImage_SwappedForAFIFO: an image swapped for a FIFO between the
// agent's check and its open (a local user with write access in the
// root) does not block the action: the file opened is judged, not the one
// checked. The race is not deterministic; the loop makes it likely.
func TestResizeImage_SwappedForAFIFO(t *testing.T) {
	s := open(t)
	m := must{t}
	m.out(s.AddVolume(ctx, AddVolume{Path: "v"}))
	image := filepath.Join(s.Dir(), "v", "a.raw")
	fifos := filepath.Join(t.TempDir(), "fifos")
	if err := os.Mkdir(fifos, 0o755); err != nil {
		t.Fatal(err)
	}
	var made []string
	t.Cleanup(func() {
		for _, p := range made {
			unblock(p)
		}
	})
	// Each FIFO keeps a name outside the root, by which the cleanup wakes
	// an action stuck in opening it.
	stop := swapper(t, image, func(tmp string) error {
		keep := filepath.Join(fifos, filepath.Base(tmp))
		if err := syscall.Mkfifo(keep, 0o644); err != nil {
			return err
		}
		made = append(made, keep)
		return os.Link(keep, tmp)
	})
	defer stop()
	err := within(t, "resize_image of an image swapped for a FIFO", func() error {
		for range forAWhile(2 * time.Second) {
			// Errors are expected (a FIFO, or no image for a moment): the
			// action must only return.
			_, _ = s.ResizeImage(ctx, ResizeImage{VolumePath: "v", ImageName: "a.raw", ImageSize: 1})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	stop()
}

// TestResizeImage_SwappedForAHardLink: an image swapped for a hard link to
// a file outside the root between the agent's check and its open is not
// resized: the hard-link refusal is made on the file opened.
func TestResizeImage_SwappedForAHardLink(t *testing.T) {
	s := open(t)
	m := must{t}
	m.out(s.AddVolume(ctx, AddVolume{Path: "v"}))
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	stop := swapper(t, filepath.Join(s.Dir(), "v", "a.raw"), func(tmp string) error { return os.Link(secret, tmp) })
	defer stop()
	for range forAWhile(2 * time.Second) {
		_, _ = s.ResizeImage(ctx, ResizeImage{VolumePath: "v", ImageName: "a.raw", ImageSize: 1})
		if fi, err := os.Stat(secret); err != nil || fi.Size() != 1 {
			stop()
			t.Fatalf("the file outside the root, hard-linked in place of the image, was resized: %v, %v", fi.Size(), err)
		}
	}
	stop()
}

// TestResizeImage_SwappedBetweenItsOpens: an image swapped, between the
// agent's reading of its size and its resizing, for another image of the
// root (one name each, so each open alone passes) is not resized on the
// other's judgement: a larger one is not shrunk without shrink. The race
// is not deterministic; the loop makes it likely.
func TestResizeImage_SwappedBetweenItsOpens(t *testing.T) {
	s := open(t)
	m := must{t}
	m.out(s.AddVolume(ctx, AddVolume{Path: "v"}))
	m.out(s.CreateImage(ctx, CreateImage{VolumePath: "v", ImageName: "small.raw", ImageSize: 1}))
	m.out(s.CreateImage(ctx, CreateImage{VolumePath: "v", ImageName: "large.raw", ImageSize: 3}))
	small, large := filepath.Join(s.Dir(), "v", "small.raw"), filepath.Join(s.Dir(), "v", "large.raw")
	// Held open, the two are found wherever the swaps leave them.
	sf, err := os.OpenFile(small, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	lf, err := os.Open(large)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	stop := alternate(t, filepath.Join(s.Dir(), "v", "a.raw"), small, large)
	for range forAWhile(2 * time.Second) {
		// Errors are expected (shrinking the large one, or no image
		// for a moment); growing the small one is right.
		_, _ = s.ResizeImage(ctx, ResizeImage{VolumePath: "v", ImageName: "a.raw", ImageSize: 2})
		if fi, err := lf.Stat(); err != nil {
			t.Fatal(err)
		} else if fi.Size() != 3<<30 {
			stop()
			t.Fatalf("the 3 GiB image swapped in was resized to %d bytes without shrink", fi.Size())
		}
		if err := sf.Truncate(1 << 30); err != nil {
			t.Fatal(err)
		}
	}
	stop()
}

// TestDeleteImage_SwappedForAFolder: an image swapped for an empty folder
// between delete_image's judgement of it and its removal (by whoever may
// write in the root) leaves the folder there: the agent removes only a
// name that still names the file it judged, and never a folder. The race
// is not deterministic; the loop makes it likely.
func TestDeleteImage_SwappedForAFolder(t *testing.T) {
	s := open(t)
	m := must{t}
	m.out(s.AddVolume(ctx, AddVolume{Path: "v"}))
	path := filepath.Join(s.Dir(), "v", "a.raw")
	aside := t.TempDir()
	folder := filepath.Join(aside, "folder")
	if err := os.Mkdir(folder, 0o755); err != nil {
		t.Fatal(err)
	}
	var swapErr error
	swaps := inLoop(func(i int) bool {
		// A new image each turn: the agent deletes some of them, as it
		// should.
		reg := filepath.Join(aside, fmt.Sprintf("reg%d", i))
		if err := os.WriteFile(reg, []byte("mine"), 0o644); err != nil {
			swapErr = err
			return false
		}
		if err := os.Rename(reg, path); err != nil {
			swapErr = err
			return false
		}
		_ = os.Rename(path, reg) // gone if the agent deleted it
		if err := os.Rename(folder, path); err != nil {
			swapErr = err
			return false
		}
		if err := os.Rename(path, folder); err != nil {
			swapErr = fmt.Errorf("the folder swapped in for the image is gone: %w", err)
			return false
		}
		return true
	})
	for range forAWhile(2 * time.Second) {
		// Errors are expected (a folder is no image).
		_, _ = s.DeleteImage(ctx, DeleteImage{ImagePath: "v/a.raw"})
		if swaps.ended() { // the swaps failed
			break
		}
	}
	swaps.stop()
	if swapErr != nil {
		t.Fatal(swapErr)
	}
}
