package hostpath

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/spin-broker/spinbroker/agent"
)

func open(t testing.TB) *Storage {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "images"), Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

var ctx = context.Background()

// must fails the test on an action's error and returns its output.
type must struct{ t *testing.T }

func (m must) out(v any, err error) *Output {
	m.t.Helper()
	if err != nil {
		m.t.Fatal(err)
	}
	return v.(*Output)
}

func wantErr(t *testing.T, err error, substr string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), substr) {
		t.Errorf("error = %v, want one containing %q", err, substr)
	}
}

func TestVolumes(t *testing.T) {
	s := open(t)
	m := must{t}
	o := m.out(s.AddVolume(ctx, AddVolume{Path: "pool/vol1"}))
	if !o.Changed || o.Path != "pool/vol1" || o.HostPath != filepath.Join(s.Dir(), "pool", "vol1") {
		t.Errorf("add_volume = %+v", o)
	}
	if fi, err := os.Stat(o.HostPath); err != nil || !fi.IsDir() {
		t.Fatalf("volume not made: %v", err)
	}
	if o := m.out(s.AddVolume(ctx, AddVolume{Path: "pool/./vol1/"})); o.Changed {
		t.Error("adding an existing volume again changed something")
	}
	m.out(s.CreateImage(ctx, CreateImage{VolumePath: "pool/vol1", ImageName: "a.img", ImageSize: 1}))
	_, err := s.RemoveVolume(ctx, RemoveVolume{Path: "pool/vol1"})
	wantErr(t, err, "is not empty")
	_, err = s.RemoveVolume(ctx, RemoveVolume{Path: "pool/vol1/a.img"})
	wantErr(t, err, "is an image")
	if o := m.out(s.RemoveVolume(ctx, RemoveVolume{Path: "pool/vol1", Force: true})); !o.Changed {
		t.Error("remove_volume with force removed nothing")
	}
	if o := m.out(s.RemoveVolume(ctx, RemoveVolume{Path: "pool/vol1"})); o.Changed {
		t.Error("removing a missing volume changed something")
	}
	_, err = s.AddVolume(ctx, AddVolume{Path: "."})
	wantErr(t, err, "storage root itself")
	_, err = s.RemoveVolume(ctx, RemoveVolume{Path: "pool/.."})
	wantErr(t, err, "storage root itself")
}

func blocks(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Blocks * 512
}

func TestCreateImage_Raw(t *testing.T) {
	s := open(t)
	m := must{t}
	_, err := s.CreateImage(ctx, CreateImage{VolumePath: "v", ImageName: "a.img", ImageSize: 2})
	wantErr(t, err, `volume "v" does not exist`)
	m.out(s.AddVolume(ctx, AddVolume{Path: "v"}))
	o := m.out(s.CreateImage(ctx, CreateImage{VolumePath: "v", ImageName: "a.img", ImageSize: 2}))
	if !o.Changed || o.Size != 2<<30 || o.SizeGiB != 2 || o.Format != "raw" || o.Path != "v/a.img" {
		t.Errorf("create_image = %+v", o)
	}
	fi, err := os.Stat(o.HostPath)
	if err != nil || fi.Size() != 2<<30 {
		t.Fatalf("image: %v, %v", fi, err)
	}
	if b := blocks(t, o.HostPath); b > 1<<20 {
		t.Errorf("the raw image uses %d bytes on disk; want a sparse file", b)
	}
	if o := m.out(s.CreateImage(ctx, CreateImage{VolumePath: "v", ImageName: "a.img", ImageSize: 2})); o.Changed {
		t.Error("creating the same image again changed something")
	}
	_, err = s.CreateImage(ctx, CreateImage{VolumePath: "v", ImageName: "a.img", ImageSize: 3})
	wantErr(t, err, "exists already as raw of 2147483648 bytes")
	if ents, _ := os.ReadDir(filepath.Join(s.Dir(), "v")); len(ents) != 1 {
		t.Errorf("the volume holds %d files, want the image alone (no temporary file left)", len(ents))
	}
}

func TestCreateImage_Qcow2(t *testing.T) {
	s := open(t)
	m := must{t}
	m.out(s.AddVolume(ctx, AddVolume{Path: "v"}))
	s.qemuImg = filepath.Join(t.TempDir(), "no-qemu-img")
	_, err := s.CreateImage(ctx, CreateImage{VolumePath: "v", ImageName: "q.qcow2", ImageSize: 1, Format: "qcow2"})
	wantErr(t, err, "qcow2 images need qemu-img, which is not installed")
	s.qemuImg = ""
	if _, err := exec.LookPath("qemu-img"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("qemu-img is missing in CI (install qemu-utils)")
		}
		t.Skip("qemu-img is not installed")
	}
	o := m.out(s.CreateImage(ctx, CreateImage{VolumePath: "v", ImageName: "q.qcow2", ImageSize: 1, Format: "qcow2"}))
	if o.Format != "qcow2" || o.Size != 1<<30 {
		t.Errorf("create_image = %+v", o)
	}
	info, err := exec.Command("qemu-img", "info", "--output=json", o.HostPath).Output()
	if err != nil || !bytes.Contains(info, []byte(`"format": "qcow2"`)) || !bytes.Contains(info, []byte(`"virtual-size": 1073741824`)) {
		t.Errorf("qemu-img info: %s, %v", info, err)
	}
	if o := m.out(s.CreateImage(ctx, CreateImage{VolumePath: "v", ImageName: "q.qcow2", ImageSize: 1, Format: "qcow2"})); o.Changed {
		t.Error("creating the same qcow2 image again changed something")
	}
	// Left out, the format is the name's.
	if o := m.out(s.CreateImage(ctx, CreateImage{VolumePath: "v", ImageName: "q.qcow2", ImageSize: 1})); o.Changed || o.Format != "qcow2" {
		t.Errorf("create_image q.qcow2 without a format = %+v", o)
	}
	o = m.out(s.ResizeImage(ctx, ResizeImage{VolumePath: "v", ImageName: "q.qcow2", ImageSize: 3}))
	if o.Size != 3<<30 || o.PreviousSize != 1<<30 || !o.Changed {
		t.Errorf("resize_image = %+v", o)
	}
	o = m.out(s.ResizeImage(ctx, ResizeImage{VolumePath: "v", ImageName: "q.qcow2", ImageSize: 2, Shrink: true}))
	if o.Size != 2<<30 || o.PreviousSize != 3<<30 {
		t.Errorf("resize_image with shrink = %+v", o)
	}
	if info, err := s.stat("v/q.qcow2"); err != nil || info.size != 2<<30 {
		t.Errorf("after shrink: %+v, %v", info, err)
	}
}

func TestResizeImage_Raw(t *testing.T) {
	s := open(t)
	m := must{t}
	m.out(s.AddVolume(ctx, AddVolume{Path: "v"}))
	m.out(s.CreateImage(ctx, CreateImage{VolumePath: "v", ImageName: "a", ImageSize: 2}))
	o := m.out(s.ResizeImage(ctx, ResizeImage{VolumePath: "v", ImageName: "a", ImageSize: 4}))
	if o.Size != 4<<30 || o.PreviousSize != 2<<30 || !o.Changed {
		t.Errorf("grow: %+v", o)
	}
	if o := m.out(s.ResizeImage(ctx, ResizeImage{VolumePath: "v", ImageName: "a", ImageSize: 4})); o.Changed {
		t.Error("resizing to the same size changed something")
	}
	_, err := s.ResizeImage(ctx, ResizeImage{VolumePath: "v", ImageName: "a", ImageSize: 1})
	wantErr(t, err, "pass shrink: true")
	m.out(s.ResizeImage(ctx, ResizeImage{VolumePath: "v", ImageName: "a", ImageSize: 1, Shrink: true}))
	if fi, _ := os.Stat(filepath.Join(s.Dir(), "v", "a")); fi.Size() != 1<<30 {
		t.Errorf("size after shrink: %d", fi.Size())
	}
	_, err = s.ResizeImage(ctx, ResizeImage{VolumePath: "v", ImageName: "b", ImageSize: 1})
	wantErr(t, err, "does not exist")
}

func TestDeleteImage(t *testing.T) {
	s := open(t)
	m := must{t}
	m.out(s.AddVolume(ctx, AddVolume{Path: "v"}))
	m.out(s.CreateImage(ctx, CreateImage{VolumePath: "v", ImageName: "a", ImageSize: 1}))
	if o := m.out(s.DeleteImage(ctx, DeleteImage{ImagePath: "v/a"})); !o.Changed {
		t.Error("delete_image deleted nothing")
	}
	if _, err := os.Stat(filepath.Join(s.Dir(), "v", "a")); !os.IsNotExist(err) {
		t.Errorf("image still there: %v", err)
	}
	if o := m.out(s.DeleteImage(ctx, DeleteImage{ImagePath: "v/a"})); o.Changed {
		t.Error("deleting a missing image changed something")
	}
	_, err := s.DeleteImage(ctx, DeleteImage{ImagePath: "v"})
	wantErr(t, err, "is a volume")
}

func TestMoveAndCopyImage(t *testing.T) {
	s := open(t)
	m := must{t}
	for _, v := range []string{"a", "b", "c"} {
		m.out(s.AddVolume(ctx, AddVolume{Path: v}))
	}
	o := m.out(s.CreateImage(ctx, CreateImage{VolumePath: "a", ImageName: "disk", ImageSize: 1}))
	// Some data in the middle of the image, the rest holes.
	f, err := os.OpenFile(o.HostPath, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("spin"), 1000)
	if _, err := f.WriteAt(data, 300<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()

	o = m.out(s.CopyImage(ctx, CopyImage{ImageName: "disk", Volume: "a", TargetVolume: "b"}))
	if !o.Changed || o.Path != "b/disk" || o.Size != 1<<30 {
		t.Errorf("copy_image = %+v", o)
	}
	got := make([]byte, len(data))
	cf, err := os.Open(o.HostPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cf.ReadAt(got, 300<<20); err != nil || !bytes.Equal(got, data) {
		t.Errorf("the copy lost the data: %v", err)
	}
	cf.Close()
	if b := blocks(t, o.HostPath); b > 4<<20 {
		t.Errorf("the copy uses %d bytes on disk; want it sparse", b)
	}
	if o := m.out(s.CopyImage(ctx, CopyImage{ImageName: "disk", Volume: "a", TargetVolume: "b"})); o.Changed {
		t.Error("copying again changed something")
	}
	_, err = s.CopyImage(ctx, CopyImage{ImageName: "disk", Volume: "a", TargetVolume: "a"})
	wantErr(t, err, "same volume")

	o = m.out(s.MoveImage(ctx, MoveImage{ImageName: "disk", Volume: "a", TargetVolume: "c"}))
	if !o.Changed || o.Path != "c/disk" {
		t.Errorf("move_image = %+v", o)
	}
	if o := m.out(s.MoveImage(ctx, MoveImage{ImageName: "disk", Volume: "a", TargetVolume: "c"})); o.Changed {
		t.Error("moving again (a repeated delivery) changed something")
	}
	_, err = s.MoveImage(ctx, MoveImage{ImageName: "disk", Volume: "b", TargetVolume: "c"})
	wantErr(t, err, "has an image \"disk\" already")
	_, err = s.MoveImage(ctx, MoveImage{ImageName: "nope", Volume: "b", TargetVolume: "c"})
	wantErr(t, err, "does not exist")
	_, err = s.MoveImage(ctx, MoveImage{ImageName: "disk", Volume: "b", TargetVolume: "missing"})
	wantErr(t, err, `volume "missing" does not exist`)
}

// hostile sets up a root whose volume "v" holds symlinks that lead out of
// it, and returns the storage and the outside folder, which must stay empty.
func hostile(t testing.TB) (*Storage, string) {
	s := open(t)
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(s.Dir(), "v"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{
		"v/out":     outside,
		"v/secret":  filepath.Join(outside, "secret"),
		"v/rel":     "../../" + filepath.Base(filepath.Dir(outside)),
		"v/dangle":  filepath.Join(outside, "new"),
		"escape":    outside,
		"v/up":      "..",
		"v/selfout": "../../..",
	} {
		if err := os.Symlink(target, filepath.Join(s.Dir(), name)); err != nil {
			t.Fatal(err)
		}
	}
	return s, outside
}

func outsideUnchanged(t testing.TB, outside string) {
	t.Helper()
	ents, err := os.ReadDir(outside)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "secret" {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Fatalf("something was made outside the root: %v", names)
	}
	if b, err := os.ReadFile(filepath.Join(outside, "secret")); err != nil || string(b) != "x" {
		t.Fatalf("the file outside the root changed: %q, %v", b, err)
	}
}

func TestConfinement(t *testing.T) {
	s, outside := hostile(t)
	m := must{t}
	type call struct {
		action string
		params string
	}
	cases := []call{
		{"add_volume", `{"path":"../x"}`},
		{"add_volume", `{"path":"/tmp/x"}`},
		{"add_volume", `{"path":"v/../../x"}`},
		{"add_volume", `{"path":"escape/x"}`},
		{"add_volume", `{"path":"v/out/x"}`},
		{"add_volume", `{"path":"v/selfout/x"}`},
		{"remove_volume", `{"path":"escape","force":true}`},
		{"remove_volume", `{"path":"v/out/","force":true}`},
		{"remove_volume", `{"path":"../` + filepath.Base(outside) + `","force":true}`},
		{"create_image", `{"volume_path":"escape","image_name":"i","image_size":1}`},
		{"create_image", `{"volume_path":"v/out","image_name":"i","image_size":1}`},
		{"create_image", `{"volume_path":"v","image_name":"dangle","image_size":1}`},
		{"create_image", `{"volume_path":"v","image_name":"../i","image_size":1}`},
		{"create_image", `{"volume_path":"` + outside + `","image_name":"i","image_size":1}`},
		{"delete_image", `{"image_path":"v/out/secret"}`},
		{"delete_image", `{"image_path":"escape/secret"}`},
		{"delete_image", `{"image_path":"` + filepath.Join(outside, "secret") + `"}`},
		{"resize_image", `{"volume_path":"v/out","image_name":"secret","image_size":1}`},
		{"resize_image", `{"volume_path":"v","image_name":"secret","image_size":1}`},
		{"move_image", `{"image_name":"secret","volume":"v/out","target_volume":"v"}`},
		{"move_image", `{"image_name":"secret","volume":"escape","target_volume":"v"}`},
		{"copy_image", `{"image_name":"secret","volume":"v/out","target_volume":"v"}`},
		{"copy_image", `{"image_name":"secret","volume":"v","target_volume":"v/up"}`},
	}
	m.out(s.CreateImage(ctx, CreateImage{VolumePath: "v", ImageName: "mine", ImageSize: 1}))
	cases = append(cases,
		call{"move_image", `{"image_name":"mine","volume":"v","target_volume":"escape"}`},
		call{"copy_image", `{"image_name":"mine","volume":"v","target_volume":"v/out"}`},
	)
	handlers := map[string]agent.Handler{}
	for _, h := range s.Handlers() {
		handlers[h.Action()] = h
	}
	for _, c := range cases {
		t.Run(c.action+c.params, func(t *testing.T) {
			_, err := run(handlers[c.action], c.params)
			if err == nil {
				t.Errorf("%s %s succeeded", c.action, c.params)
			}
			t.Logf("reason: %v", err)
			outsideUnchanged(t, outside)
		})
	}
}

func run(h agent.Handler, params string) (any, error) {
	return h.Call(ctx, json.RawMessage(params))
}

func TestCheckImageName(t *testing.T) {
	for _, name := range []string{"a.img", "disk 1.qcow2", "δίσκος.img"} {
		if err := CheckImageName(name); err != nil {
			t.Errorf("CheckImageName(%q): %v", name, err)
		}
	}
	for name, want := range map[string]string{
		"":                "not a file name",
		"..":              "not a file name",
		"a/b":             "path separator",
		"a\x00":           "path separator",
		"a\nb.img":        "control character",
		"a\tb.img":        "control character",
		"a\x9bb.img":      "not valid UTF-8",
		".z.raw.tmp-mine": "starts with a dot",
		".hidden.img":     "starts with a dot",
	} {
		wantErr(t, CheckImageName(name), want)
	}
}

func TestCleanPath(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{in: "a", want: "a"},
		{in: "a/b/../c/", want: "a/c"},
		{in: "./a", want: "a"},
		{in: ".", want: "."},
		{in: "", err: "empty"},
		{in: "/a", err: "absolute"},
		{in: "..", err: "leaves the storage root"},
		{in: "a/../..", err: "leaves the storage root"},
		{in: "a\x00b", err: "NUL"},
		{in: "a\nb", err: "control character"},
		{in: "v/\x1b[2Jx", err: "control character"},
		{in: "vol\u0085", err: "control character"},
		{in: "vol\x85", err: "not valid UTF-8"},
	} {
		got, err := CleanPath("path", tc.in)
		if tc.err != "" {
			wantErr(t, err, tc.err)
		} else if err != nil || got != tc.want {
			t.Errorf("CleanPath(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// FuzzConfinement: whatever the paths, no action touches anything outside
// the root, through "..", absolute paths or the symlinks planted inside.
func FuzzConfinement(f *testing.F) {
	for _, p := range []string{"v", "../x", "v/out/x", "escape", "v/up/../..", "/etc", "v/rel/x", "v/dangle", "a/b/c", "v/selfout"} {
		f.Add(p, "img")
		f.Add("v", p)
	}
	f.Fuzz(func(t *testing.T, volume, name string) {
		s, outside := hostile(t)
		_, _ = s.AddVolume(ctx, AddVolume{Path: volume})
		_, _ = s.CreateImage(ctx, CreateImage{VolumePath: volume, ImageName: name, ImageSize: 1})
		_, _ = s.CopyImage(ctx, CopyImage{ImageName: name, Volume: volume, TargetVolume: "v"})
		_, _ = s.CopyImage(ctx, CopyImage{ImageName: "secret", Volume: "v", TargetVolume: volume})
		_, _ = s.ResizeImage(ctx, ResizeImage{VolumePath: volume, ImageName: name, ImageSize: 2, Shrink: true})
		_, _ = s.MoveImage(ctx, MoveImage{ImageName: name, Volume: volume, TargetVolume: "v"})
		_, _ = s.DeleteImage(ctx, DeleteImage{ImagePath: filepath.Join(volume, name)})
		_, _ = s.RemoveVolume(ctx, RemoveVolume{Path: volume, Force: true})
		outsideUnchanged(t, outside)
		if got, err := CleanPath("p", volume); err == nil && !filepath.IsLocal(got) && got != "." {
			t.Errorf("CleanPath(%q) = %q, which is not local", volume, got)
		}
	})
}

// TestImageFormat_ByNameOnly: an image is qcow2 when its name says so and
// never because of what it holds. A guest writes what it likes into a raw
// disk, a qcow2 header naming a backing file on the host included; read as
// qcow2, qemu-img (and QEMU) would open that file.
func TestImageFormat_ByNameOnly(t *testing.T) {
	s := open(t)
	m := must{t}
	m.out(s.AddVolume(ctx, AddVolume{Path: "v"}))
	_, err := s.CreateImage(ctx, CreateImage{VolumePath: "v", ImageName: "disk.raw", ImageSize: 1, Format: "qcow2"})
	wantErr(t, err, "would be raw by its name, not qcow2")
	_, err = s.CreateImage(ctx, CreateImage{VolumePath: "v", ImageName: "disk.qcow2", ImageSize: 1, Format: "raw"})
	wantErr(t, err, "would be qcow2 by its name, not raw")

	m.out(s.CreateImage(ctx, CreateImage{VolumePath: "v", ImageName: "disk.raw", ImageSize: 1}))
	// The guest's write: a qcow2 header (its virtual size 8 GiB) at the
	// start of its raw disk.
	path := filepath.Join(s.Dir(), "v", "disk.raw")
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	hdr := make([]byte, 32)
	copy(hdr, "QFI\xfb")
	binary.BigEndian.PutUint64(hdr[24:], 8<<30)
	if _, err := f.WriteAt(hdr, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	info, err := s.stat("v/disk.raw")
	if err != nil || info.format != "raw" || info.size != 1<<30 {
		t.Fatalf("a raw image holding a qcow2 header reads as %+v, %v", info, err)
	}
	// Resized as the raw file it is, by truncation, never by qemu-img.
	s.qemuImg = filepath.Join(t.TempDir(), "no-qemu-img")
	if o := m.out(s.ResizeImage(ctx, ResizeImage{VolumePath: "v", ImageName: "disk.raw", ImageSize: 2})); o.Format != "raw" || o.Size != 2<<30 {
		t.Errorf("resize_image = %+v", o)
	}
	// And a file named .qcow2 that is not one is refused, not read as raw.
	if err := os.WriteFile(filepath.Join(s.Dir(), "v", "fake.qcow2"), []byte("plain bytes"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = s.ResizeImage(ctx, ResizeImage{VolumePath: "v", ImageName: "fake.qcow2", ImageSize: 2})
	wantErr(t, err, "named .qcow2 but is not a qcow2 image")
}

// TestCopyImage_TargetChangedSinceIsNotACopy: a copy delivered again finds
// its earlier result and succeeds; a target of the same size whose bytes
// differ (a VM wrote to it since) is another image, and is left alone.
func TestCopyImage_TargetChangedSinceIsNotACopy(t *testing.T) {
	s := open(t)
	m := must{t}
	m.out(s.AddVolume(ctx, AddVolume{Path: "a"}))
	m.out(s.AddVolume(ctx, AddVolume{Path: "b"}))
	m.out(s.CreateImage(ctx, CreateImage{VolumePath: "a", ImageName: "d.raw", ImageSize: 1}))
	if o := m.out(s.CopyImage(ctx, CopyImage{ImageName: "d.raw", Volume: "a", TargetVolume: "b"})); !o.Changed {
		t.Fatalf("copy_image = %+v", o)
	}
	if o := m.out(s.CopyImage(ctx, CopyImage{ImageName: "d.raw", Volume: "a", TargetVolume: "b"})); o.Changed {
		t.Fatalf("copy_image again = %+v", o)
	}
	target := filepath.Join(s.Dir(), "b", "d.raw")
	f, err := os.OpenFile(target, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("written by a guest"), 512<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	_, err = s.CopyImage(ctx, CopyImage{ImageName: "d.raw", Volume: "a", TargetVolume: "b"})
	wantErr(t, err, `has another image "d.raw" already`)

	// A copy killed half way left its temporary file; the next write of
	// that image removes it, and the volume can go once the image has.
	stale := filepath.Join(s.Dir(), "a", ".e.raw.tmp-0123456789ab")
	if err := os.WriteFile(stale, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	m.out(s.CreateImage(ctx, CreateImage{VolumePath: "a", ImageName: "e.raw", ImageSize: 1}))
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatalf("the stale temporary file is still there: %v", err)
	}
}

// TestOpen_OneAgentPerRoot: a second Storage on a root that one holds is
// refused (two would overwrite each other's images); once the first closes,
// the root is free.
func TestOpen_OneAgentPerRoot(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "images")
	opts := Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	first, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, opts); !errors.Is(err, ErrInUse) {
		t.Fatalf("a second Open of a held root: %v, want ErrInUse", err)
	}
	// Through a symlink it is the same root.
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(link, opts); !errors.Is(err, ErrInUse) {
		t.Fatalf("Open through a symlink: %v, want ErrInUse", err)
	}
	first.Close()
	again, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open after the first closed: %v", err)
	}
	again.Close()
}

// qcow2Header is a qcow2 header of the given version and virtual size,
// naming a backing file at backing (0: none), with the incompatible
// feature bits incompat (version 3).
func qcow2Header(version uint32, size, backing, incompat uint64) []byte {
	h := make([]byte, 104)
	copy(h, qcow2Magic)
	binary.BigEndian.PutUint32(h[4:], version)
	binary.BigEndian.PutUint64(h[8:], backing)
	binary.BigEndian.PutUint64(h[24:], size)
	binary.BigEndian.PutUint64(h[72:], incompat)
	return h
}

// TestImages_OtherFilesRefused: an image that would have qemu-img, or the
// agent itself, read or write a file by another name (a qcow2 backing file,
// an external data file, a hard link from outside the root) is refused by
// every action that opens images, and the file outside stays as it was.
func TestImages_OtherFilesRefused(t *testing.T) {
	s := open(t)
	m := must{t}
	m.out(s.AddVolume(ctx, AddVolume{Path: "v"}))
	m.out(s.AddVolume(ctx, AddVolume{Path: "w"}))
	outside := filepath.Join(t.TempDir(), "host.raw")
	if err := os.WriteFile(outside, []byte("host data"), 0o644); err != nil {
		t.Fatal(err)
	}
	plant := func(name string, data []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(s.Dir(), "v", name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	plant("backed.qcow2", qcow2Header(3, 1<<30, 0x200, 0))
	plant("backed2.qcow2", qcow2Header(2, 1<<30, 0x200, 0))
	plant("external.qcow2", qcow2Header(3, 1<<30, 0, 1<<2))
	plant("fine.qcow2", qcow2Header(3, 1<<30, 0, 1<<0)) // only the dirty bit
	if err := os.Link(outside, filepath.Join(s.Dir(), "v", "linked.raw")); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"backed.qcow2": "backing file", "backed2.qcow2": "backing file",
		"external.qcow2": "external data file", "linked.raw": "hard links",
	} {
		_, err := s.ResizeImage(ctx, ResizeImage{VolumePath: "v", ImageName: name, ImageSize: 2})
		wantErr(t, err, want)
		_, err = s.CopyImage(ctx, CopyImage{ImageName: name, Volume: "v", TargetVolume: "w"})
		wantErr(t, err, want)
		_, err = s.MoveImage(ctx, MoveImage{ImageName: name, Volume: "v", TargetVolume: "w"})
		wantErr(t, err, want)
		_, err = s.CreateImage(ctx, CreateImage{VolumePath: "v", ImageName: name, ImageSize: 1})
		wantErr(t, err, want)
	}
	if b, err := os.ReadFile(outside); err != nil || string(b) != "host data" {
		t.Fatalf("the file outside the root changed: %q %v", b, err)
	}
	if ents, _ := os.ReadDir(filepath.Join(s.Dir(), "w")); len(ents) != 0 {
		t.Fatalf("something reached the target volume: %v", ents)
	}
	// A standalone qcow2 image with only the dirty bit set is fine.
	if o := m.out(s.CopyImage(ctx, CopyImage{ImageName: "fine.qcow2", Volume: "v", TargetVolume: "w"})); o.Size != 1<<30 {
		t.Errorf("copy of a standalone qcow2: %+v", o)
	}
}

// TestDeleteImage_OnlyFiles: delete_image removes image files, not the
// FIFOs, sockets or symlinks that the other actions say are not images,
// and works on no volume "." (the root).
func TestDeleteImage_OnlyFiles(t *testing.T) {
	s := open(t)
	m := must{t}
	m.out(s.AddVolume(ctx, AddVolume{Path: "v"}))
	if err := syscall.Mkfifo(filepath.Join(s.Dir(), "v", "pipe"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("pipe", filepath.Join(s.Dir(), "v", "link.raw")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"v/pipe", "v/link.raw"} {
		_, err := s.DeleteImage(ctx, DeleteImage{ImagePath: p})
		wantErr(t, err, "is not an image file")
		if _, err := os.Lstat(filepath.Join(s.Dir(), p)); err != nil {
			t.Errorf("%s was removed: %v", p, err)
		}
	}
	_, err := s.CreateImage(ctx, CreateImage{VolumePath: ".", ImageName: "top.raw", ImageSize: 1})
	wantErr(t, err, "the storage root itself")
}

// FuzzQcow2Size: whatever a file named .qcow2 holds, its header is
// refused or read as a standalone image of a size that QEMU could have
// (not negative), and never with a backing or external data file.
func FuzzQcow2Size(f *testing.F) {
	hdr := func(version uint32, backing, size, incompat uint64) []byte {
		b := make([]byte, 104)
		copy(b, "QFI\xfb")
		binary.BigEndian.PutUint32(b[4:], version)
		binary.BigEndian.PutUint64(b[8:], backing)
		binary.BigEndian.PutUint64(b[24:], size)
		binary.BigEndian.PutUint64(b[72:], incompat)
		return b
	}
	f.Add(hdr(3, 0, 1<<30, 0))
	f.Add(hdr(2, 0, 1<<30, 0)[:72])
	f.Add(hdr(3, 0, 1<<30, 0)[:76])
	f.Add(hdr(3, 0x100, 1<<30, 0))
	f.Add(hdr(3, 0, 1<<30, 4))
	f.Add(hdr(3, 0, 1<<63, 0))
	f.Add([]byte("QFI"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		size, err := Qcow2Size(bytes.NewReader(b))
		if err != nil {
			return
		}
		if size < 0 {
			t.Fatalf("Qcow2Size = %d", size)
		}
		if len(b) < 72 || string(b[:4]) != "QFI\xfb" || binary.BigEndian.Uint64(b[8:16]) != 0 {
			t.Fatalf("Qcow2Size accepted %x", b)
		}
		if v := binary.BigEndian.Uint32(b[4:8]); v >= 3 && (len(b) < 80 || binary.BigEndian.Uint64(b[72:80])&4 != 0) {
			t.Fatalf("Qcow2Size accepted an external data file: %x", b)
		}
	})
}

// TestDeleteImage_NotTheAgentsOwnFiles: delete_image takes any path, but
// the root's lock file and the temporary files of a write are the agent's,
// not images: deleting the lock would let a second agent serve the root.
func TestDeleteImage_NotTheAgentsOwnFiles(t *testing.T) {
	s := open(t)
	m := must{t}
	m.out(s.AddVolume(ctx, AddVolume{Path: "v"}))
	tmp := filepath.Join(s.Dir(), "v", ".d.raw.tmp-0123456789ab")
	if err := os.WriteFile(tmp, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{LockName, "./" + LockName, "v/../" + LockName, "v/.d.raw.tmp-0123456789ab"} {
		_, err := s.DeleteImage(ctx, DeleteImage{ImagePath: p})
		wantErr(t, err, "starts with a dot")
	}
	for _, p := range []string{filepath.Join(s.Dir(), LockName), tmp} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s was deleted: %v", p, err)
		}
	}
	if s2, err := Open(s.Dir(), Options{}); !errors.Is(err, ErrInUse) {
		t.Errorf("a second Storage on the root: %v, want ErrInUse", err)
		if err == nil {
			s2.Close()
		}
	}
}

// TestCopyImage_AgainOnAHugeSparseImage: copy_image delivered again
// compares the copy with its source without reading terabytes of holes
// (which took hours, the agent taking no other command meanwhile), and
// still finds a byte that differs anywhere in them.
func TestCopyImage_AgainOnAHugeSparseImage(t *testing.T) {
	s := open(t)
	m := must{t}
	m.out(s.AddVolume(ctx, AddVolume{Path: "a"}))
	m.out(s.AddVolume(ctx, AddVolume{Path: "b"}))
	const gib = 4 << 10 // 4 TiB
	if _, err := s.CreateImage(ctx, CreateImage{VolumePath: "a", ImageName: "d.raw", ImageSize: gib}); err != nil {
		t.Skipf("this file system has no 4 TiB sparse files: %v", err)
	}
	m.out(s.CopyImage(ctx, CopyImage{ImageName: "d.raw", Volume: "a", TargetVolume: "b"}))
	again := func() (any, error) {
		t.Helper()
		type result struct {
			v   any
			err error
		}
		done := make(chan result, 1)
		go func() {
			v, err := s.CopyImage(ctx, CopyImage{ImageName: "d.raw", Volume: "a", TargetVolume: "b"})
			done <- result{v, err}
		}()
		select {
		case r := <-done:
			return r.v, r.err
		case <-time.After(time.Minute):
			t.Fatal("copy_image of a copy already made takes over a minute on a sparse image")
			return nil, nil
		}
	}
	if o := m.out(again()); o.Changed {
		t.Fatalf("copy_image again = %+v", o)
	}
	for _, w := range []struct {
		file string
		off  int64
	}{{"b/d.raw", 3 << 40}, {"a/d.raw", 2 << 40}} {
		f, err := os.OpenFile(filepath.Join(s.Dir(), w.file), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte{1}, w.off); err != nil {
			t.Fatal(err)
		}
		f.Close()
		_, err = again()
		wantErr(t, err, `has another image "d.raw" already`)
		// Undo it: the other write is then the only difference.
		f, _ = os.OpenFile(filepath.Join(s.Dir(), w.file), os.O_WRONLY, 0)
		f.WriteAt([]byte{0}, w.off)
		f.Close()
	}
}

// TestErrors_PathsRelativeToTheRoot: a file system's error on an image
// names it by its path in the root, as every other reason does, not by
// the host path of the agent's temporary file.
func TestErrors_PathsRelativeToTheRoot(t *testing.T) {
	s := open(t)
	m := must{t}
	m.out(s.AddVolume(ctx, AddVolume{Path: "v"}))
	m.out(s.CreateImage(ctx, CreateImage{VolumePath: "v", ImageName: "small.raw", ImageSize: 1}))
	_, err := s.CreateImage(ctx, CreateImage{VolumePath: "v", ImageName: "big.raw", ImageSize: MaxImageGiB})
	if err == nil {
		t.Skip("this file system takes a file of MaxImageGiB")
	}
	wantErr(t, err, `truncate "v/big.raw"`)
	_, err2 := s.ResizeImage(ctx, ResizeImage{VolumePath: "v", ImageName: "small.raw", ImageSize: MaxImageGiB})
	wantErr(t, err2, `truncate "v/small.raw"`)
	for _, e := range []error{err, err2} {
		if e != nil && strings.Contains(e.Error(), s.Dir()) {
			t.Errorf("the reason names a host path: %v", e)
		}
	}
}

// TestCopyImage_OntoTheSameVolumeByAnotherName: a target volume that is
// the source volume under another name (a symlink in the root) holds no
// second copy, only the image itself: copy_image is refused, as onto its
// own volume by name, rather than report a copy that a delete_image of
// the source would take away with it. move_image there finds the image
// where it was asked to be.
func TestCopyImage_OntoTheSameVolumeByAnotherName(t *testing.T) {
	s := open(t)
	m := must{t}
	m.out(s.AddVolume(ctx, AddVolume{Path: "a"}))
	m.out(s.AddVolume(ctx, AddVolume{Path: "b"}))
	if err := os.Symlink("a", filepath.Join(s.Dir(), "alias")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../a", filepath.Join(s.Dir(), "b", "alias")); err != nil {
		t.Fatal(err)
	}
	m.out(s.CreateImage(ctx, CreateImage{VolumePath: "a", ImageName: "d.raw", ImageSize: 1}))
	for _, target := range []string{"alias", "b/alias", "b/../a/."} {
		_, err := s.CopyImage(ctx, CopyImage{ImageName: "d.raw", Volume: "a", TargetVolume: target})
		wantErr(t, err, "same volume")
		_, err = s.CopyImage(ctx, CopyImage{ImageName: "d.raw", Volume: target, TargetVolume: "a"})
		wantErr(t, err, "same volume")
		if o := m.out(s.MoveImage(ctx, MoveImage{ImageName: "d.raw", Volume: "a", TargetVolume: target})); o.Changed {
			t.Errorf("move_image to %q, the image's own volume, = %+v", target, o)
		}
	}
	if _, err := os.Stat(filepath.Join(s.Dir(), "a", "d.raw")); err != nil {
		t.Fatalf("the image: %v", err)
	}
}

// TestImages_LongestNames: an image name as long as CheckImageName takes
// (255 bytes, a file system's most) is made and copied, though the
// temporary file each writes beside it has a longer name than the image's
// own; a name cut short inside a character keeps
// the temporary file's name valid UTF-8.
func TestImages_LongestNames(t *testing.T) {
	s := open(t)
	m := must{t}
	m.out(s.AddVolume(ctx, AddVolume{Path: "a"}))
	m.out(s.AddVolume(ctx, AddVolume{Path: "b"}))
	for _, name := range []string{
		strings.Repeat("a", 251) + ".raw",
		strings.Repeat("δ", 118) + ".qcow2", // 236+6 bytes
		strings.Repeat("x", 235) + strings.Repeat("δ", 10),
	} {
		if err := CheckImageName(name); err != nil {
			t.Fatal(err)
		}
		if FormatOf(name) == "qcow2" {
			if _, err := exec.LookPath("qemu-img"); err != nil {
				continue
			}
		}
		m.out(s.CreateImage(ctx, CreateImage{VolumePath: "a", ImageName: name, ImageSize: 1}))
		m.out(s.CopyImage(ctx, CopyImage{ImageName: name, Volume: "a", TargetVolume: "b"}))
	}
	if got := append(temps(t, filepath.Join(s.Dir(), "a")), temps(t, filepath.Join(s.Dir(), "b"))...); len(got) != 0 {
		t.Errorf("temporary files left: %q", got)
	}
	// A temporary file an interrupted write of such a name left is
	// found and removed by the next write of it.
	long := strings.Repeat("a", 251) + ".raw"
	stale := filepath.Join(s.Dir(), tempPrefix(filepath.Join("a", long))+"0123456789ab")
	if err := os.WriteFile(stale, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	m.out(s.DeleteImage(ctx, DeleteImage{ImagePath: "a/" + long}))
	m.out(s.CreateImage(ctx, CreateImage{VolumePath: "a", ImageName: long, ImageSize: 1}))
	if _, err := os.Stat(stale); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the stale temporary file of %q: %v", long, err)
	}
	tmp := filepath.Base(tempPrefix(filepath.Join("a", strings.Repeat("x", 235)+strings.Repeat("δ", 10)))) + "0123456789ab"
	if len(tmp) > 255 || !utf8.ValidString(tmp) || !isTemp(tmp) {
		t.Errorf("temporary file name %q (%d bytes)", tmp, len(tmp))
	}
}

// TestRoot_MovedWhileServing: a root folder renamed, or its parent, while
// the agent serves it (another folder put in its place, say) is no longer
// the root its host_path outputs name: the agent would go on writing the
// folder it opened, now elsewhere, and report files under the root's path
// that are not those it made. Every action refuses, naming the cause, and
// neither folder is touched.
func TestRoot_MovedWhileServing(t *testing.T) {
	for _, moved := range []string{"root", "parent"} {
		t.Run(moved, func(t *testing.T) {
			parent := filepath.Join(t.TempDir(), "srv")
			dir := filepath.Join(parent, "images")
			s, err := Open(dir, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			m := must{t}
			m.out(s.AddVolume(ctx, AddVolume{Path: "v"}))
			m.out(s.CreateImage(ctx, CreateImage{VolumePath: "v", ImageName: "d.raw", ImageSize: 1}))
			from := map[string]string{"root": dir, "parent": parent}[moved]
			if err := os.Rename(from, from+".old"); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Join(dir, "v"), 0o755); err != nil {
				t.Fatal(err)
			}
			handlers := map[string]agent.Handler{}
			for _, h := range s.Handlers() {
				handlers[h.Action()] = h
			}
			for _, c := range [][2]string{
				{"add_volume", `{"path":"w"}`},
				{"remove_volume", `{"path":"v","force":true}`},
				{"create_image", `{"volume_path":"v","image_name":"e.raw","image_size":1}`},
				{"delete_image", `{"image_path":"v/d.raw"}`},
				{"resize_image", `{"volume_path":"v","image_name":"d.raw","image_size":2}`},
				{"move_image", `{"image_name":"d.raw","volume":"v","target_volume":"v"}`},
				{"copy_image", `{"image_name":"d.raw","volume":"v","target_volume":"w"}`},
			} {
				out, err := run(handlers[c[0]], c[1])
				if err == nil {
					t.Errorf("%s %s in a root moved away = %s", c[0], c[1], out)
				}
				wantErr(t, err, "moved or replaced")
			}
			old := filepath.Join(from+".old", strings.TrimPrefix(dir, from))
			if fi, err := os.Stat(filepath.Join(old, "v", "d.raw")); err != nil || fi.Size() != 1<<30 {
				t.Errorf("the image in the root moved away: %v", err)
			}
			for _, d := range []string{old, dir} {
				if _, err := os.Stat(filepath.Join(d, "w")); err == nil {
					t.Errorf("a volume was made in %s", d)
				}
				if _, err := os.Stat(filepath.Join(d, "v", "e.raw")); err == nil {
					t.Errorf("an image was made in %s", d)
				}
			}
		})
	}
}

// TestPaths_TooLongForTheHost: a volume or image whose host path would be
// longer than a path may be (PATH_MAX, 4096 bytes with its NUL) is not
// made: the agent reaches it a folder at a time, but the host_path it
// reports could be opened by nothing else (QEMU, sa-emulation, a shell).
func TestPaths_TooLongForTheHost(t *testing.T) {
	s := open(t)
	m := must{t}
	deep := strings.Repeat("d/", 2100) + "x"
	_, err := s.AddVolume(ctx, AddVolume{Path: deep})
	wantErr(t, err, "too long")
	if len(err.Error()) > 400 {
		t.Errorf("the reason quotes the whole path (%d bytes): %.200s…", len(err.Error()), err)
	}
	if _, err := os.Stat(filepath.Join(s.Dir(), "d")); err == nil {
		t.Error("add_volume of a path too long made folders")
	}
	// A volume that fits, whose image would not.
	room := 4095 - len(s.Dir()) - 1 - 100
	vol := strings.Repeat(strings.Repeat("v", 99)+"/", room/100)
	vol = vol[:len(vol)-1]
	o := m.out(s.AddVolume(ctx, AddVolume{Path: vol}))
	if len(o.HostPath) > 4095 {
		t.Fatalf("host path of %d bytes", len(o.HostPath))
	}
	m.out(s.AddVolume(ctx, AddVolume{Path: "short"}))
	m.out(s.CreateImage(ctx, CreateImage{VolumePath: "short", ImageName: strings.Repeat("i", 250), ImageSize: 1}))
	long := strings.Repeat("i", 250)
	_, err = s.CreateImage(ctx, CreateImage{VolumePath: vol, ImageName: long, ImageSize: 1})
	wantErr(t, err, "too long")
	_, err = s.CopyImage(ctx, CopyImage{ImageName: long, Volume: "short", TargetVolume: vol})
	wantErr(t, err, "too long")
	_, err = s.MoveImage(ctx, MoveImage{ImageName: long, Volume: "short", TargetVolume: vol})
	wantErr(t, err, "too long")
	if _, err := os.Stat(filepath.Join(s.Dir(), "short", long)); err != nil {
		t.Errorf("the source of the refused move: %v", err)
	}
	if ents, err := fs.ReadDir(s.root.FS(), vol); err != nil || len(ents) != 0 {
		t.Errorf("the volume holds %v, %v; want nothing", ents, err)
	}
}

// TestPaths_HostPathLimitExactly: a host path of 4,095 bytes (PATH_MAX
// with its NUL) is made, one of 4,096 is refused: the limit is not off by
// one either way.
func TestPaths_HostPathLimitExactly(t *testing.T) {
	s := open(t)
	m := must{t}
	// rel of n bytes: folders of 200 bytes, the last one shorter.
	rel := func(first byte, n int) string {
		var b strings.Builder
		for b.Len() < n {
			if b.Len() > 0 {
				b.WriteByte('/')
			}
			b.WriteString(strings.Repeat(string(first), min(200, n-b.Len())))
		}
		return b.String()
	}
	room := 4095 - len(s.Dir()) - 1
	fits := rel('a', room)
	o := m.out(s.AddVolume(ctx, AddVolume{Path: fits}))
	if len(o.HostPath) != 4095 {
		t.Fatalf("host path of %d bytes, want 4095", len(o.HostPath))
	}
	_, err := s.AddVolume(ctx, AddVolume{Path: rel('b', room+1)})
	wantErr(t, err, "too long")
	// An image as well: in a volume, its name taking the last bytes.
	m.out(s.AddVolume(ctx, AddVolume{Path: "c"}))
	vol := "c/" + rel('c', room-2-1-100)
	m.out(s.AddVolume(ctx, AddVolume{Path: vol}))
	m.out(s.CreateImage(ctx, CreateImage{VolumePath: vol, ImageName: strings.Repeat("i", 100), ImageSize: 1}))
	_, err = s.CreateImage(ctx, CreateImage{VolumePath: vol, ImageName: strings.Repeat("j", 101), ImageSize: 1})
	wantErr(t, err, "too long")
}
