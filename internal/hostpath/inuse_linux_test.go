package hostpath

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// qemuLocks takes the locks QEMU takes on an image it has open: a shared
// lock on byte 100 (read), and on byte 101 (write) unless readOnly. They
// last until the returned file is closed.
func qemuLocks(t *testing.T, path string, readOnly bool) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	const fOFDSetLK = 37
	bytes := []int64{100}
	if !readOnly {
		bytes = append(bytes, qemuLockWrite)
	}
	for _, b := range bytes {
		lk := syscall.Flock_t{Type: syscall.F_RDLCK, Start: b, Len: 1}
		if err := syscall.FcntlFlock(f.Fd(), fOFDSetLK, &lk); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// TestImages_InUseByAVM: an image a running VM holds is not deleted,
// moved, resized, or removed with its volume; one that VMs only read may
// be copied. Once the VM lets go, all of it works.
func TestImages_InUseByAVM(t *testing.T) {
	s := open(t)
	m := must{t}
	m.out(s.AddVolume(ctx, AddVolume{Path: "a"}))
	m.out(s.AddVolume(ctx, AddVolume{Path: "b"}))
	m.out(s.CreateImage(ctx, CreateImage{VolumePath: "a", ImageName: "disk.raw", ImageSize: 1}))
	m.out(s.CreateImage(ctx, CreateImage{VolumePath: "a", ImageName: "cd.raw", ImageSize: 1}))
	disk := qemuLocks(t, filepath.Join(s.Dir(), "a", "disk.raw"), false)
	cd := qemuLocks(t, filepath.Join(s.Dir(), "a", "cd.raw"), true)

	_, err := s.DeleteImage(ctx, DeleteImage{ImagePath: "a/disk.raw"})
	wantErr(t, err, "in use by a running VM")
	_, err = s.DeleteImage(ctx, DeleteImage{ImagePath: "a/cd.raw"})
	wantErr(t, err, "in use by a running VM")
	_, err = s.MoveImage(ctx, MoveImage{ImageName: "disk.raw", Volume: "a", TargetVolume: "b"})
	wantErr(t, err, "in use by a running VM")
	_, err = s.ResizeImage(ctx, ResizeImage{VolumePath: "a", ImageName: "disk.raw", ImageSize: 2})
	wantErr(t, err, "in use by a running VM")
	_, err = s.CopyImage(ctx, CopyImage{ImageName: "disk.raw", Volume: "a", TargetVolume: "b"})
	wantErr(t, err, "in use by a running VM")
	_, err = s.RemoveVolume(ctx, RemoveVolume{Path: "a", Force: true})
	wantErr(t, err, "in use by a running VM")
	if o := m.out(s.CopyImage(ctx, CopyImage{ImageName: "cd.raw", Volume: "a", TargetVolume: "b"})); !o.Changed {
		t.Error("copying an image that VMs only read did nothing")
	}
	for _, name := range []string{"disk.raw", "cd.raw"} {
		if _, err := os.Stat(filepath.Join(s.Dir(), "a", name)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}

	disk.Close()
	cd.Close()
	m.out(s.ResizeImage(ctx, ResizeImage{VolumePath: "a", ImageName: "disk.raw", ImageSize: 2}))
	m.out(s.DeleteImage(ctx, DeleteImage{ImagePath: "a/cd.raw"}))
	m.out(s.RemoveVolume(ctx, RemoveVolume{Path: "a", Force: true}))
}

// TestRemoveVolume_InUseInANestedVolume: remove_volume with force looks
// for images in use in the volumes inside the volume too, since it
// removes them with it.
func TestRemoveVolume_InUseInANestedVolume(t *testing.T) {
	s := open(t)
	m := must{t}
	m.out(s.AddVolume(ctx, AddVolume{Path: "pool/vm1/disks"}))
	m.out(s.CreateImage(ctx, CreateImage{VolumePath: "pool/vm1/disks", ImageName: "disk.raw", ImageSize: 1}))
	disk := filepath.Join(s.Dir(), "pool", "vm1", "disks", "disk.raw")
	vm := qemuLocks(t, disk, false)
	for _, vol := range []string{"pool", "pool/vm1"} {
		_, err := s.RemoveVolume(ctx, RemoveVolume{Path: vol, Force: true})
		wantErr(t, err, "in use by a running VM")
	}
	if _, err := os.Stat(disk); err != nil {
		t.Fatalf("the image a VM uses was removed: %v", err)
	}
	vm.Close()
	m.out(s.RemoveVolume(ctx, RemoveVolume{Path: "pool", Force: true}))
}

// TestRemoveVolume_InUseWalkFollowsNoLink: remove_volume with force looks
// for images in use in the folders it would remove, and RemoveAll follows
// no symbolic link: neither does the look, when a folder in the volume is
// swapped for a link to another volume, whose image a VM uses, between its
// listing and its opening. The race is not deterministic; the loop makes
// it likely.
func TestRemoveVolume_InUseWalkFollowsNoLink(t *testing.T) {
	s := open(t)
	m := must{t}
	m.out(s.AddVolume(ctx, AddVolume{Path: "v/sub"}))
	m.out(s.AddVolume(ctx, AddVolume{Path: "w"}))
	m.out(s.CreateImage(ctx, CreateImage{VolumePath: "w", ImageName: "disk.raw", ImageSize: 1}))
	defer qemuLocks(t, filepath.Join(s.Dir(), "w", "disk.raw"), false).Close()
	aside := t.TempDir()
	link := filepath.Join(aside, "link")
	if err := os.Symlink("../w", link); err != nil {
		t.Fatal(err)
	}
	folder := filepath.Join(aside, "folder")
	if err := os.Rename(filepath.Join(s.Dir(), "v", "sub"), folder); err != nil {
		t.Fatal(err)
	}
	stop := alternate(t, filepath.Join(s.Dir(), "v", "sub"), folder, link)
	for range forAWhile(2 * time.Second) {
		// Other errors are expected (a folder gone for a moment).
		if err := s.imagesNotInUse("v"); err != nil && strings.Contains(err.Error(), "in use") {
			stop()
			t.Fatalf("the walk followed the link to another volume: %v", err)
		}
	}
	stop()
}

// TestRemoveVolume_StopsAtAMountPoint: remove_volume with force removes
// what the volume holds on its own file system, not what another file
// system mounted in it holds (an operator's data, or a disk's): as
// RemoveAll did, it went in and deleted all of it before the folder's
// removal failed (EBUSY). A folder on another file system is refused,
// and nothing on it is touched; so is a volume that is a mount point.
func TestRemoveVolume_StopsAtAMountPoint(t *testing.T) {
	s := open(t)
	m := must{t}
	mounted := m.out(s.AddVolume(ctx, AddVolume{Path: "v/data"})).HostPath
	tmpfs(t, mounted, "1m")
	keep := filepath.Join(mounted, "keep.txt")
	if err := os.WriteFile(keep, []byte("not the agent's"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, vol := range []string{"v", "v/data"} {
		_, err := s.RemoveVolume(ctx, RemoveVolume{Path: vol, Force: true})
		wantErr(t, err, "another file system")
		if _, err := os.Stat(keep); err != nil {
			t.Fatalf("remove_volume %s went into the file system mounted in it: %v", vol, err)
		}
	}
}
