package hostpath

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// crashRoot names, to the child process of the tests below, the root it
// opens; the child then copies root's image a/d.raw to volume b until it
// is killed.
const crashRoot = "SPIN_HOSTPATH_CRASH_ROOT"

// TestCrashChild is the agent that gets killed: it copies a/d.raw to b.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashRoot)
	if dir == "" {
		t.Skip("the child of the crash tests")
	}
	s, err := Open(dir, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.CopyImage(ctx, CopyImage{ImageName: "d.raw", Volume: "a", TargetVolume: "b"})
	t.Fatalf("the copy ended before it was killed: %v", err)
}

// temps lists the write temporaries in dir.
func temps(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			names = append(names, e.Name())
		}
	}
	return names
}

// TestCopyImage_AgentKilledMidway: an agent SIGKILLed in the middle of a
// copy leaves its temporary file and no image under the final name; the
// agent started again removes the temporary (a failed command may never
// be retried, and the file can hold as much as the image), and the copy
// retried then makes a whole image.
func TestCopyImage_AgentKilledMidway(t *testing.T) {
	if os.Getenv(crashRoot) != "" {
		t.Skip("this is the parent test")
	}
	dir := filepath.Join(t.TempDir(), "images")
	s, err := Open(dir, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	m := must{t}
	m.out(s.AddVolume(ctx, AddVolume{Path: "a"}))
	m.out(s.AddVolume(ctx, AddVolume{Path: "b"}))
	m.out(s.AddVolume(ctx, AddVolume{Path: "c"}))
	o := m.out(s.CreateImage(ctx, CreateImage{VolumePath: "a", ImageName: "d.raw", ImageSize: 1}))
	// Data that takes a moment to copy: 256 MiB, none of it zeros.
	f, err := os.OpenFile(o.HostPath, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("spin"), 1<<20)
	for off := int64(0); off < 256<<20; off += int64(len(data)) {
		if _, err := f.WriteAt(data, 512<<20+off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	// A temporary of another agent's write, killed too, in another volume,
	// and a dot file that is not one.
	other := filepath.Join(dir, "c", ".e.qcow2.tmp-0123456789ab")
	keep := filepath.Join(dir, "c", ".keep")
	for _, p := range []string{other, keep} {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s.Close() // the child serves the root now

	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$")
	cmd.Env = append(os.Environ(), crashRoot+"="+dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(temps(t, filepath.Join(dir, "b"))) == 0 {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("the child never started its copy")
		}
		time.Sleep(time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if _, err := os.Stat(filepath.Join(dir, "b", "d.raw")); !os.IsNotExist(err) {
		t.Fatalf("the killed copy left an image under the final name: %v", err)
	}
	if len(temps(t, filepath.Join(dir, "b"))) != 1 {
		t.Fatalf("the killed copy left %q, want its temporary file", temps(t, filepath.Join(dir, "b")))
	}

	s, err = Open(dir, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, v := range []string{"b", "c"} {
		if left := temps(t, filepath.Join(dir, v)); len(left) != 0 {
			t.Errorf("volume %s still holds %q after the agent started again", v, left)
		}
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("a dot file that is no temporary of the agent's was removed: %v", err)
	}
	// The volume c holds no image any more: it can go without force.
	if err := os.Remove(keep); err != nil {
		t.Fatal(err)
	}
	m.out(s.RemoveVolume(ctx, RemoveVolume{Path: "c"}))

	o = m.out(s.CopyImage(ctx, CopyImage{ImageName: "d.raw", Volume: "a", TargetVolume: "b"}))
	if !o.Changed {
		t.Errorf("the retried copy = %+v", o)
	}
	if same, err := s.sameContent(ctx, "a/d.raw", "b/d.raw"); err != nil || !same {
		t.Errorf("the retried copy differs from its source: %v", err)
	}
}

// tmpfs mounts a small tmpfs on dir for the test, or skips it where the
// test may not mount (not root).
func tmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
}

// TestMoveImage_AcrossFileSystemsInterrupted: a move to a volume on
// another file system copies, then removes the source; an agent killed
// between the two leaves the whole image in both volumes. The retried
// move finishes it rather than fail because the target "has an image
// already", while a target that is another image is still refused.
func TestMoveImage_AcrossFileSystemsInterrupted(t *testing.T) {
	s := open(t)
	m := must{t}
	m.out(s.AddVolume(ctx, AddVolume{Path: "a"}))
	o := m.out(s.AddVolume(ctx, AddVolume{Path: "other-fs"}))
	tmpfs(t, o.HostPath, "16m")
	o = m.out(s.CreateImage(ctx, CreateImage{VolumePath: "a", ImageName: "d.raw", ImageSize: 1}))
	if err := os.WriteFile(o.HostPath, append(make([]byte, 1<<20), "data"...), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(o.HostPath, 1<<30); err != nil {
		t.Fatal(err)
	}
	// What move_image does up to the kill: the copy, renamed into place.
	// (b keeps a copy of the source, to compare with in the end.)
	m.out(s.AddVolume(ctx, AddVolume{Path: "b"}))
	for _, to := range []string{"b/d.raw", "other-fs/d.raw"} {
		if err := s.copyFile(ctx, "a/d.raw", to); err != nil {
			t.Fatal(err)
		}
	}
	o = m.out(s.MoveImage(ctx, MoveImage{ImageName: "d.raw", Volume: "a", TargetVolume: "other-fs"}))
	if !o.Changed || o.Path != "other-fs/d.raw" || o.Size != 1<<30 {
		t.Errorf("the retried move_image = %+v", o)
	}
	if _, err := os.Stat(filepath.Join(s.Dir(), "a", "d.raw")); !os.IsNotExist(err) {
		t.Errorf("the source is still there: %v", err)
	}
	if same, err := s.sameContent(ctx, "b/d.raw", "other-fs/d.raw"); err != nil || !same {
		t.Errorf("the moved image is not what the source was: %v", err)
	}
	if o := m.out(s.MoveImage(ctx, MoveImage{ImageName: "d.raw", Volume: "a", TargetVolume: "other-fs"})); o.Changed {
		t.Errorf("move_image once more = %+v", o)
	}

	// Another image of that name in the target is no half-done move.
	m.out(s.CreateImage(ctx, CreateImage{VolumePath: "a", ImageName: "d.raw", ImageSize: 1}))
	_, err := s.MoveImage(ctx, MoveImage{ImageName: "d.raw", Volume: "a", TargetVolume: "other-fs"})
	wantErr(t, err, `volume "other-fs" has an image "d.raw" already`)
	if _, err := os.Stat(filepath.Join(s.Dir(), "a", "d.raw")); err != nil {
		t.Errorf("the source of a refused move is gone: %v", err)
	}
}

// TestImages_DiskFull: on a full file system, a qcow2 image or a copy of
// an image with data cannot be made; the reason says so and names the
// image by its path in the root (not qemu-img's /dev/fd/3), and neither a
// partial image nor a temporary file is left. A raw image is sparse and
// may still be made.
func TestImages_DiskFull(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img is not installed")
	}
	s := open(t)
	m := must{t}
	m.out(s.AddVolume(ctx, AddVolume{Path: "a"}))
	full := m.out(s.AddVolume(ctx, AddVolume{Path: "full"})).HostPath
	tmpfs(t, full, "4m")
	m.out(s.CreateImage(ctx, CreateImage{VolumePath: "full", ImageName: "grow.qcow2", ImageSize: 1}))
	o := m.out(s.CreateImage(ctx, CreateImage{VolumePath: "a", ImageName: "d.raw", ImageSize: 1}))
	f, err := os.OpenFile(o.HostPath, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{1}, 8<<20), 100<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	filler, err := os.Create(filepath.Join(full, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = filler.Write(make([]byte, 4<<20))
	filler.Close()
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("filling the tmpfs: %v", err)
	}

	m.out(s.CreateImage(ctx, CreateImage{VolumePath: "full", ImageName: "r.raw", ImageSize: 1}))
	_, err = s.CreateImage(ctx, CreateImage{VolumePath: "full", ImageName: "q.qcow2", ImageSize: 1})
	wantErr(t, err, `"full/q.qcow2"`)
	wantErr(t, err, "o space left on device")
	_, err2 := s.CopyImage(ctx, CopyImage{ImageName: "d.raw", Volume: "a", TargetVolume: "full"})
	wantErr(t, err2, `write "full/d.raw": no space left on device`)
	_, err3 := s.ResizeImage(ctx, ResizeImage{VolumePath: "full", ImageName: "grow.qcow2", ImageSize: MaxImageGiB})
	wantErr(t, err3, `"full/grow.qcow2"`)
	for _, e := range []error{err, err2, err3} {
		if e != nil && (strings.Contains(e.Error(), "/dev/fd") || strings.Contains(e.Error(), s.Dir())) {
			t.Errorf("the reason names a file the operator does not know: %v", e)
		}
	}
	ents, err := os.ReadDir(full)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "filler grow.qcow2 r.raw" {
		t.Errorf("the full volume holds %q, want the filler and the images made alone", names)
	}
	if info, err := s.stat("full/grow.qcow2"); err != nil || info.size != 1<<30 {
		t.Errorf("the image that could not grow: %+v, %v", info, err)
	}
}

// TestCopyImage_Cancelled: a copy whose context ends (the agent stopping,
// its grace over, or the command's lease lost) stops between two chunks
// rather than run to the end of a large image, and removes its temporary
// file; no image is left under the final name. A move across file systems
// copies too, and keeps its source.
func TestCopyImage_Cancelled(t *testing.T) {
	s := open(t)
	m := must{t}
	m.out(s.AddVolume(ctx, AddVolume{Path: "a"}))
	b := m.out(s.AddVolume(ctx, AddVolume{Path: "b"})).HostPath
	o := m.out(s.CreateImage(ctx, CreateImage{VolumePath: "a", ImageName: "d.raw", ImageSize: 1}))
	if err := os.WriteFile(o.HostPath, bytes.Repeat([]byte("spin"), 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, err := s.CopyImage(cancelled, CopyImage{ImageName: "d.raw", Volume: "a", TargetVolume: "b"})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("copy_image with its context cancelled = %v, want context.Canceled", err)
	}
	if ents, _ := os.ReadDir(b); len(ents) != 0 {
		t.Errorf("the cancelled copy left %d files in the target volume", len(ents))
	}
	other := m.out(s.AddVolume(ctx, AddVolume{Path: "other-fs"})).HostPath
	tmpfs(t, other, "16m")
	_, err = s.MoveImage(cancelled, MoveImage{ImageName: "d.raw", Volume: "a", TargetVolume: "other-fs"})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("move_image across file systems with its context cancelled = %v, want context.Canceled", err)
	}
	if ents, _ := os.ReadDir(other); len(ents) != 0 {
		t.Errorf("the cancelled move left %d files in the target volume", len(ents))
	}
	if _, err := os.Stat(o.HostPath); err != nil {
		t.Errorf("the source of the cancelled move: %v", err)
	}
}

// TestMoveImage_AcrossFileSystemsFromReadOnly: a move to another file
// system copies, then removes the source. A source that cannot be removed
// (its file system read-only) failed the move only once the copy was made,
// and left it: the image in both volumes, a failed command, and space
// taken that nobody asked for. The move is refused before it copies, and
// the target is left as it was.
func TestMoveImage_AcrossFileSystemsFromReadOnly(t *testing.T) {
	s := open(t)
	m := must{t}
	m.out(s.AddVolume(ctx, AddVolume{Path: "a"}))
	o := m.out(s.AddVolume(ctx, AddVolume{Path: "ro"}))
	tmpfs(t, o.HostPath, "16m")
	m.out(s.CreateImage(ctx, CreateImage{VolumePath: "ro", ImageName: "d.raw", ImageSize: 1}))
	if out, err := exec.Command("mount", "-o", "remount,ro", o.HostPath).CombinedOutput(); err != nil {
		t.Skipf("cannot remount the tmpfs read-only: %v: %s", err, out)
	}
	_, err := s.MoveImage(ctx, MoveImage{ImageName: "d.raw", Volume: "ro", TargetVolume: "a"})
	wantErr(t, err, "read-only file system")
	if _, err := os.Lstat(filepath.Join(s.Dir(), "a", "d.raw")); !os.IsNotExist(err) {
		t.Errorf("a failed move left a copy in the target: %v", err)
	}
	if _, err := os.Stat(filepath.Join(o.HostPath, "d.raw")); err != nil {
		t.Errorf("the source of a failed move: %v", err)
	}
}
