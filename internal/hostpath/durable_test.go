package hostpath

import (
	"slices"
	"testing"
)

// TestActions_SyncBeforeSuccess: every action that changes the root makes
// its change survive a power cut before it reports success: the file's
// data (fsync) and the name in its folder (fsync of the folder). create
// and copy did; add_volume, remove_volume, delete_image and resize_image
// reported a change that a power cut right after could undo, and the next
// command, delivered on the strength of that success, would find the
// volume or the image as it was (a remove_volume after delete_image
// refused as not empty, say).
func TestActions_SyncBeforeSuccess(t *testing.T) {
	s := open(t)
	m := must{t}
	var synced []string
	s.synced = func(rel string) { synced = append(synced, rel) }
	step := func(what string, want []string, run func()) {
		t.Helper()
		synced = nil
		run()
		for _, w := range want {
			if !slices.Contains(synced, w) {
				t.Errorf("%s synced %q, not %q", what, synced, w)
			}
		}
	}
	step("add_volume a/b", []string{".", "a"}, func() { m.out(s.AddVolume(ctx, AddVolume{Path: "a/b"})) })
	step("create_image", []string{"a/b/d.raw", "a/b"}, func() {
		m.out(s.CreateImage(ctx, CreateImage{VolumePath: "a/b", ImageName: "d.raw", ImageSize: 1}))
	})
	step("resize_image", []string{"a/b/d.raw"}, func() {
		m.out(s.ResizeImage(ctx, ResizeImage{VolumePath: "a/b", ImageName: "d.raw", ImageSize: 2}))
	})
	step("delete_image", []string{"a/b"}, func() { m.out(s.DeleteImage(ctx, DeleteImage{ImagePath: "a/b/d.raw"})) })
	step("remove_volume", []string{"a"}, func() { m.out(s.RemoveVolume(ctx, RemoveVolume{Path: "a/b"})) })
}
