package hostpath

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// nobodyRoot and nobodyAction name, to TestNobodyChild, the root it opens
// and what it does there.
const (
	nobodyRoot   = "SPIN_HOSTPATH_NOBODY_ROOT"
	nobodyAction = "SPIN_HOSTPATH_NOBODY_ACTION"
)

// TestNobodyChild is the agent of the tests below that runs as the user
// nobody: it opens the root, logging to stderr, and runs the action.
func TestNobodyChild(t *testing.T) {
	dir := os.Getenv(nobodyRoot)
	if dir == "" {
		t.Skip("the child of the tests run as nobody")
	}
	s, err := Open(dir, Options{Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	switch a := os.Getenv(nobodyAction); a {
	case "open":
	case "delete_image":
		_, err = s.DeleteImage(ctx, DeleteImage{ImagePath: "a/x.raw"})
		fmt.Printf("delete_image: %v\n", err)
	default:
		t.Fatalf("unknown action %q", a)
	}
}

// nobody is the uid and gid of the user nobody, and a folder that user
// can reach, for a root; the test is skipped where it cannot run as
// nobody (not root, no setpriv, no such user).
func nobody(t *testing.T) (uid, gid int, dir string) {
	t.Helper()
	if os.Getenv(nobodyRoot) != "" {
		t.Skip("this is the parent test")
	}
	if os.Geteuid() != 0 {
		t.Skip("running the agent as nobody needs root")
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("running the agent as nobody needs setpriv")
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	// t.TempDir's folders are root's alone (0700).
	dir, err = os.MkdirTemp("", "hostpath-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return uid, gid, dir
}

// asNobody runs TestNobodyChild as nobody on root, doing action, from a
// copy of the test binary that nobody can run; it returns what the child
// printed and logged.
func asNobody(t *testing.T, dir, root, action string) string {
	t.Helper()
	bin := filepath.Join(dir, "hostpath.test")
	src, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(bin, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
		bin, "-test.run=^TestNobodyChild$", "-test.v")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), nobodyRoot+"="+root, nobodyAction+"="+action)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the agent run as nobody: %v\n%s", err, out)
	}
	return string(out)
}

// nobodysRoot makes a root, with a volume a, that nobody owns.
func nobodysRoot(t *testing.T, uid, gid int, dir string) string {
	t.Helper()
	root := filepath.Join(dir, "images")
	for _, d := range []string{root, filepath.Join(root, "a")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// TestDeleteImage_Unreadable: an image the agent's user cannot open is not
// deleted, since the agent cannot see whether a running VM holds it (a
// QEMU of another user may, or one that opened it before it was made
// unreadable), and the reason says so and what to do, not only
// "permission denied".
func TestDeleteImage_Unreadable(t *testing.T) {
	uid, gid, dir := nobody(t)
	root := nobodysRoot(t, uid, gid, dir)
	image := filepath.Join(root, "a", "x.raw")
	if err := os.WriteFile(image, []byte("root's"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := asNobody(t, dir, root, "delete_image")
	for _, want := range []string{`delete_image: image "a/x.raw":`, "cannot open it", "permission denied", "running VM", "readable by the agent's user"} {
		if !strings.Contains(out, want) {
			t.Errorf("delete_image of an image nobody cannot read, as nobody, does not say %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(image); err != nil {
		t.Errorf("the image was deleted: %v", err)
	}
}

// TestOpen_TempItCannotRemove: a write's temporary file that the agent
// finds at start and cannot remove (a volume its user may not write) is
// named in a warning, not passed over in silence: it can be as large as an
// image, and keeps its volume from being removed.
func TestOpen_TempItCannotRemove(t *testing.T) {
	uid, gid, dir := nobody(t)
	root := nobodysRoot(t, uid, gid, dir)
	vol := filepath.Join(root, "b") // root's, which nobody cannot write
	if err := os.Mkdir(vol, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(vol, ".x.raw.tmp-0123456789ab")
	if err := os.WriteFile(tmp, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	out := asNobody(t, dir, root, "open")
	for _, want := range []string{"level=WARN", "path=b/.x.raw.tmp-0123456789ab", "permission denied"} {
		if !strings.Contains(out, want) {
			t.Errorf("the agent's start, as nobody, does not say %q of the temporary file it cannot remove:\n%s", want, out)
		}
	}
	if _, err := os.Stat(tmp); err != nil {
		t.Fatalf("the temporary file was removed after all: %v", err)
	}
}
