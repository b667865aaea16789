// Package hostpath is the storage of sa-host-path: volumes are folders under
// one root directory and images are files in them, raw and sparse, or qcow2
// made with qemu-img.
//
// Every path is resolved through an os.Root: a parameter that is absolute,
// climbs out with "..", or meets a symlink that leads outside the root is
// refused, and nothing outside the root is touched, not even by qemu-img
// (which is handed an already opened file). Actions are idempotent where the
// result is the same, because the broker delivers at least once: adding a
// volume that exists, or deleting an image that is gone, succeeds.
package hostpath

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"unicode"
	"unicode/utf8"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/agent"
	"github.com/spin-broker/spinbroker/internal/flock"
	"github.com/spin-broker/spinbroker/internal/nlink"
)

// Resource is the queue sa-host-path serves.
const Resource = "storage"

// MaxImageGiB is the largest image size accepted, in GiB (64 TiB).
const MaxImageGiB = 64 << 10

// Options configure a Storage.
type Options struct {
	// QemuImg is the qemu-img program for qcow2 images; found on $PATH
	// when empty.
	QemuImg string
	// Logger receives the storage's own log lines; slog.Default when nil.
	Logger *slog.Logger
}

// Storage is a root directory of volumes and images.
type Storage struct {
	dir     string // absolute, symlinks resolved
	root    *os.Root
	lock    *os.File // LockName, held while the storage is open
	qemuImg string
	log     *slog.Logger
	// synced, set by tests, is told of each file and folder (by its path
	// in the root) the storage syncs before it reports a change.
	synced func(rel string)
}

// LockName is the file in the root that an open Storage holds locked: one
// agent per root, since two would write the same images at once (each
// takes its own commands one at a time, and puts what it makes in place
// by renaming, over whatever the other just made).
const LockName = ".sa-host-path.lock"

// ErrInUse is the error (matched with errors.Is) of Open on a root that
// another open Storage holds.
var ErrInUse = errors.New("another sa-host-path serves this root")

// Open opens (creating it if needed) the root directory dir, and holds it
// against any other Storage until Close.
func Open(dir string, opts Options) (*Storage, error) {
	if dir == "" {
		return nil, errors.New("hostpath: no root directory")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("hostpath: create the root: %w", err)
	}
	abs, err := filepath.Abs(dir)
	if err == nil {
		abs, err = filepath.EvalSymlinks(abs)
	}
	if err != nil {
		return nil, fmt.Errorf("hostpath: root %q: %w", dir, err)
	}
	root, err := openRoot(abs)
	if err != nil {
		return nil, fmt.Errorf("hostpath: open the root: %w", err)
	}
	lock, err := openLock(root)
	if err != nil {
		root.Close()
		return nil, fmt.Errorf("hostpath: the root's lock file %s: %w", filepath.Join(abs, LockName), err)
	}
	if held, err := flock.TryLock(lock); err != nil || !held {
		lock.Close()
		root.Close()
		if err != nil {
			return nil, fmt.Errorf("hostpath: lock the root: %w", err)
		}
		return nil, fmt.Errorf("hostpath: %s: %w; one agent per root, or two would overwrite each other's images", abs, ErrInUse)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Storage{dir: abs, root: root, lock: lock, qemuImg: opts.QemuImg, log: opts.Logger}
	s.removeAllStaleTemps()
	return s, nil
}

// openLock opens the root's lock file, making it if it is not there. One
// that is not a regular file, put there by whoever may write in the root,
// is refused: a symbolic link is not followed (the root would follow one
// inside it, and lock an image, or make a file where it leads), nor a
// FIFO waited on. The file opened is judged, as openImage judges an image.
func openLock(root *os.Root) (*os.File, error) {
	notRegular := errors.New("it is not a regular file (a symbolic link, a FIFO or another special file was put there): remove it, and the agent makes its own")
	named, err := root.Lstat(LockName)
	var f *os.File
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// O_EXCL: made here, never through a link.
		f, err = root.OpenFile(LockName, os.O_RDWR|os.O_CREATE|os.O_EXCL|openFlags, 0o644)
		if err == nil {
			named, err = f.Stat()
		}
	case err == nil && named.Mode().IsRegular():
		f, err = root.OpenFile(LockName, os.O_RDWR|openFlags, 0)
	case err == nil:
		return nil, notRegular
	}
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil && (!fi.Mode().IsRegular() || !os.SameFile(named, fi)) {
		err = notRegular // a link or a special file swapped in
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// Close lets go of the root.
func (s *Storage) Close() error {
	s.lock.Close()
	return s.root.Close()
}

// Dir is the root directory's absolute path.
func (s *Storage) Dir() string { return s.dir }

// Handlers are the storage actions, for agent.Run. Each first checks that
// the root is still where it was opened (see checkRoot).
func (s *Storage) Handlers() []agent.Handler {
	return []agent.Handler{
		agent.Handle("add_volume", inRoot(s, s.AddVolume)),
		agent.Handle("remove_volume", inRoot(s, s.RemoveVolume)),
		agent.Handle("create_image", inRoot(s, s.CreateImage)),
		agent.Handle("delete_image", inRoot(s, s.DeleteImage)),
		agent.Handle("resize_image", inRoot(s, s.ResizeImage)),
		agent.Handle("move_image", inRoot(s, s.MoveImage)),
		agent.Handle("copy_image", inRoot(s, s.CopyImage)),
	}
}

// inRoot is the action fn, run only while checkRoot passes.
func inRoot[P any](s *Storage, fn func(context.Context, P) (any, error)) func(context.Context, P) (any, error) {
	return func(ctx context.Context, p P) (any, error) {
		if err := s.checkRoot(); err != nil {
			return nil, err
		}
		return fn(ctx, p)
	}
}

// checkRoot refuses to act once the folder at the root's path is not the
// one the agent opened: the root, or a folder above it, was renamed (and
// another perhaps put in its place) while the agent ran. Every access goes
// through the folder opened, wherever it now is, so the agent would go on
// making and removing files outside the root's path, and report host paths
// under it that name other files, or none.
func (s *Storage) checkRoot() error {
	here, err := os.Stat(s.dir)
	if err == nil {
		var opened fs.FileInfo
		if opened, err = s.root.Stat("."); err == nil && os.SameFile(here, opened) {
			return nil
		}
	}
	return fmt.Errorf("the storage root %s was moved or replaced since the agent opened it, and the folder it opened is no longer there: restart the agent on the root", s.dir)
}

// Output reports what an action made, changed or found.
type Output struct {
	// Path is relative to the root; HostPath is the same file or folder on
	// the host, for the agents that use it (sa-emulation).
	Path     string `json:"path"`
	HostPath string `json:"host_path"`
	// Size is an image's virtual size in bytes, SizeGiB the same in GiB.
	Size    int64  `json:"size,omitempty"`
	SizeGiB int64  `json:"size_gib,omitempty"`
	Format  string `json:"format,omitempty"`
	// Changed is false when the action found its result already there.
	Changed bool `json:"changed"`
	// PreviousSize is an image's size before a resize.
	PreviousSize int64 `json:"previous_size,omitempty"`
}

func (s *Storage) output(rel string, changed bool) *Output {
	return &Output{Path: filepath.ToSlash(rel), HostPath: filepath.Join(s.dir, rel), Changed: changed}
}

func (o *Output) withImage(info imageInfo) *Output {
	o.Size, o.SizeGiB, o.Format = info.size, info.size>>30, info.format
	return o
}

// CleanPath checks a path parameter and returns its clean form: relative,
// without a ".." that climbs out, without NUL, and plain text (see
// checkText). Symlinks are judged later, by the os.Root every access goes
// through.
func CleanPath(what, p string) (string, error) {
	switch {
	case p == "":
		return "", fmt.Errorf("%s is empty", what)
	case strings.ContainsRune(p, 0):
		return "", fmt.Errorf("%s contains a NUL byte", what)
	}
	if err := checkText(what, p); err != nil {
		return "", err
	}
	switch {
	case filepath.IsAbs(p) || strings.HasPrefix(p, "/") || strings.HasPrefix(p, `\`):
		return "", fmt.Errorf("%s %q is absolute: paths are relative to the storage root", what, p)
	case !filepath.IsLocal(p):
		return "", fmt.Errorf("%s %q leaves the storage root", what, p)
	}
	return filepath.Clean(p), nil
}

// volumePath is CleanPath for a volume, which is never the root itself.
func volumePath(what, p string) (string, error) {
	c, err := CleanPath(what, p)
	if err == nil && c == "." {
		err = fmt.Errorf("%s %q is the storage root itself, not a volume", what, p)
	}
	return c, err
}

// CheckImageName checks an image's file name: one path element, plain text
// (see checkText).
func CheckImageName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return fmt.Errorf("image_name %q is not a file name", name)
	case strings.HasPrefix(name, "."):
		// The agent's temporary files are ".<name>.tmp-…", and a write
		// removes those an interrupted one left.
		return fmt.Errorf("image_name %q starts with a dot, which the agent keeps for its temporary files", name)
	case strings.ContainsAny(name, "/\\\x00"):
		return fmt.Errorf("image_name %q must be a file name, without a path separator", name)
	}
	if err := checkText("image_name", name); err != nil {
		return err
	}
	if len(name) > maxName {
		return fmt.Errorf("image_name is longer than %d bytes", maxName)
	}
	return nil
}

// checkText refuses a name with a control character (a newline in a file
// name forges log lines and trips every tool) or that is not UTF-8 (a lone
// C1 byte, which unicode.IsControl never sees).
func checkText(what, s string) error {
	switch {
	case strings.ContainsFunc(s, unicode.IsControl):
		return fmt.Errorf("%s %q contains a control character", what, s)
	case !utf8.ValidString(s):
		return fmt.Errorf("%s %q is not valid UTF-8", what, s)
	}
	return nil
}

func checkSize(gib int64) error {
	if gib < 1 || gib > MaxImageGiB {
		return fmt.Errorf("image_size must be between 1 and %d (GiB), not %d", MaxImageGiB, gib)
	}
	return nil
}

// describe makes the errors of the file system readable as a command's
// reason, and says plainly when a path was refused for leaving the root.
func describe(rel string, err error) error {
	if err == nil {
		return nil
	}
	if strings.Contains(err.Error(), "path escapes from parent") {
		return fmt.Errorf("refused: %q leads outside the storage root", rel)
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s %q: %w", pe.Op, rel, pe.Err)
	}
	return err
}

// describeFile is describe for an error of an operation on f, an open file
// of the root named rel: such an error names f by its host path, which
// becomes rel. Any other error is left as it is.
func describeFile(f *os.File, rel string, err error) error {
	if pe := (*fs.PathError)(nil); errors.As(err, &pe) && pe.Path == f.Name() {
		return describe(rel, err)
	}
	return err
}

// AddVolume is the parameters of add_volume.
type AddVolume struct {
	Path string `json:"path" spin:"required"`
}

// AddVolume makes the folder p.Path (and its parents); a volume that
// exists already is success.
func (s *Storage) AddVolume(ctx context.Context, p AddVolume) (any, error) {
	rel, err := volumePath("path", p.Path)
	if err == nil {
		err = s.fitsHost("path", rel)
	}
	if err != nil {
		return nil, err
	}
	fi, err := s.root.Stat(rel)
	switch {
	case err == nil && fi.IsDir():
		return s.output(rel, false), nil
	case err == nil:
		return nil, fmt.Errorf("volume %q exists and is not a folder", rel)
	case !errors.Is(err, fs.ErrNotExist):
		return nil, describe(rel, err)
	}
	if err := s.root.MkdirAll(rel, 0o755); err != nil {
		return nil, describe(rel, err)
	}
	// Each folder made has its name in the one above it.
	for dir := filepath.Dir(rel); ; dir = filepath.Dir(dir) {
		if err := s.syncDir(dir); err != nil {
			return nil, err
		}
		if dir == "." {
			break
		}
	}
	return s.output(rel, true), nil
}

// RemoveVolume is the parameters of remove_volume. Force removes a volume
// with its images; without it only an empty volume is removed.
type RemoveVolume struct {
	Path  string `json:"path" spin:"required"`
	Force bool   `json:"force"`
}

// RemoveVolume removes the folder p.Path; a volume that is gone is success.
func (s *Storage) RemoveVolume(ctx context.Context, p RemoveVolume) (any, error) {
	rel, err := volumePath("path", p.Path)
	if err != nil {
		return nil, err
	}
	fi, err := s.root.Lstat(rel)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return s.output(rel, false), nil
	case err != nil:
		return nil, describe(rel, err)
	case fi.Mode().IsRegular():
		return nil, fmt.Errorf("%q is an image, not a volume (use delete_image)", rel)
	case !fi.IsDir():
		return nil, fmt.Errorf("refused: %q is a symbolic link or a special file, not a volume", rel)
	}
	if p.Force {
		if err := s.imagesNotInUse(rel); err != nil {
			return nil, err
		}
		if err := s.removeTree(rel); err != nil {
			return nil, fmt.Errorf("volume %q is not wholly removed: %w", rel, err)
		}
	} else {
		err = s.removeFolder(rel)
	}
	if errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EEXIST) {
		return nil, fmt.Errorf("volume %q is not empty: delete its images first, or pass force: true", rel)
	}
	if err != nil {
		return nil, describe(rel, err)
	}
	if err := s.syncDir(filepath.Dir(rel)); err != nil {
		return nil, err
	}
	return s.output(rel, true), nil
}

// imagesNotInUse refuses a volume holding an image a running VM uses, in
// it or in a volume inside it (RemoveAll takes those too). Symlinks are
// not followed, as RemoveAll does not follow them (see walk).
func (s *Storage) imagesNotInUse(vol string) error {
	return s.walk(vol, func(rel string) error { return s.notInUse(rel, false) }, describe)
}

// CreateImage is the parameters of create_image. ImageSize is in GiB;
// Format is "raw" (a sparse file) or "qcow2", and must agree with the
// name: an image is qcow2 exactly when its name ends in ".qcow2" (see
// FormatOf); left out, the name says which.
type CreateImage struct {
	VolumePath string `json:"volume_path" spin:"required"`
	ImageName  string `json:"image_name" spin:"required"`
	ImageSize  int64  `json:"image_size" spin:"required"`
	Format     string `json:"format"`
}

// Validate checks the name, size and format.
func (p CreateImage) Validate() error {
	if err := CheckImageName(p.ImageName); err != nil {
		return err
	}
	if err := checkSize(p.ImageSize); err != nil {
		return err
	}
	switch p.Format {
	case "":
		return nil
	case "raw", "qcow2":
		if named := FormatOf(p.ImageName); named != p.Format {
			return fmt.Errorf("image %q would be %s by its name, not %s: a qcow2 image's name ends in .qcow2, and only its name says how it is read", p.ImageName, named, p.Format)
		}
		return nil
	}
	return fmt.Errorf("format %q is not raw or qcow2", p.Format)
}

// FormatOf is an image's format by its name: qcow2 when it ends in ".qcow2"
// (in any case), else raw. The format is never read from the image's
// contents: a guest writes what it likes into a raw disk, a qcow2 header
// naming a backing file on the host included, and an image probed as qcow2
// would then have QEMU or qemu-img open that file. sa-emulation names its
// drives' formats with it too.
func FormatOf(name string) string {
	if strings.HasSuffix(strings.ToLower(name), ".qcow2") {
		return "qcow2"
	}
	return "raw"
}

// CreateImage makes an image of p.ImageSize GiB in a volume. An image that
// exists with the same format and size is success; with another, an error.
func (s *Storage) CreateImage(ctx context.Context, p CreateImage) (any, error) {
	vol, err := s.volume("volume_path", p.VolumePath)
	if err != nil {
		return nil, err
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	format := FormatOf(p.ImageName)
	rel := filepath.Join(vol, p.ImageName)
	if err := s.fitsHost("image", rel); err != nil {
		return nil, err
	}
	size := p.ImageSize << 30
	if info, err := s.stat(rel); err == nil {
		if info.format == format && info.size == size {
			return s.output(rel, false).withImage(info), nil
		}
		return nil, fmt.Errorf("image %q exists already as %s of %d bytes; delete or resize it", rel, info.format, info.size)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	err = s.writeAtomically(rel, func(f *os.File) error {
		if format == "qcow2" {
			return s.qemuImgRun(ctx, f, rel, "create", "-q", "-f", "qcow2", "/dev/fd/3", fmt.Sprint(size))
		}
		return f.Truncate(size)
	})
	if err != nil {
		return nil, err
	}
	agent.LoggerOr(ctx, s.log).Info("image created", "path", rel, "format", format, "size", size)
	return s.output(rel, true).withImage(imageInfo{format: format, size: size}), nil
}

// pathMax is the longest path, in bytes with its terminating NUL, that
// the host's programs open (Linux's PATH_MAX).
const pathMax = 4096

// fitsHost refuses a volume or image rel (what) to be made whose host path
// is longer than a path may be: the agent reaches it a folder at a time,
// but the host_path it reports could be opened by nothing else (QEMU,
// sa-emulation, a shell).
func (s *Storage) fitsHost(what, rel string) error {
	if n := len(filepath.Join(s.dir, rel)); n >= pathMax {
		// Its start only: the whole of it is over 4 KB, in a reason read
		// on one line.
		return fmt.Errorf("%s %q is too long: its host path would have %d bytes, more than the %d a path may have, and no other program could open it", what, spinbroker.Truncate(rel, 120), n, pathMax-1)
	}
	return nil
}

// volume checks a volume parameter and that the volume exists.
func (s *Storage) volume(what, p string) (string, error) {
	vol, _, err := s.volumeInfo(what, p)
	return vol, err
}

// volumeInfo is volume, with the volume's folder as found.
func (s *Storage) volumeInfo(what, p string) (string, fs.FileInfo, error) {
	vol, err := volumePath(what, p)
	if err != nil {
		return "", nil, err
	}
	fi, err := s.root.Stat(vol)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", nil, fmt.Errorf("volume %q does not exist (add_volume first)", vol)
	case err != nil:
		return "", nil, describe(vol, err)
	case !fi.IsDir():
		return "", nil, fmt.Errorf("volume %q is not a folder", vol)
	}
	return vol, fi, nil
}

// writeAtomically makes the file rel by filling a temporary file beside it
// and renaming it into place, so a crash never leaves a half-made image
// under the final name (a retried command would take it for done).
func (s *Storage) writeAtomically(rel string, fill func(f *os.File) error) error {
	s.removeStaleTemps(rel)
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	tmp := fmt.Sprintf("%s%x", tempPrefix(rel), rnd)
	f, err := s.root.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return describe(rel, err)
	}
	err = fill(f)
	if err == nil {
		err = s.syncFile(f, rel)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	err = describeFile(f, rel, err) // the temporary file's host path is no part of the reason
	if err == nil {
		err = s.renameNew(tmp, rel)
	}
	if err != nil {
		_ = s.root.Remove(tmp)
		return err
	}
	return s.syncDir(filepath.Dir(rel))
}

// syncFile makes what was written to f, the file rel (or the temporary
// file that becomes it), survive a power cut, before the change is
// reported: a success is what the next command of a package is delivered
// on.
func (s *Storage) syncFile(f *os.File, rel string) error {
	if s.synced != nil {
		s.synced(rel)
	}
	return f.Sync()
}

// syncDir makes the names just written in dir, or removed from it,
// survive a power cut: the file's own Sync keeps its data, not its name.
// Without it, a move across file systems (a copy, then the source
// removed) could lose the image both ways at once, and a delete_image
// reported done could be undone, its volume then refused by a
// remove_volume as not empty. A file system that cannot sync a folder
// (EINVAL) is taken at its word.
func (s *Storage) syncDir(dir string) error {
	if s.synced != nil {
		s.synced(dir)
	}
	d, err := s.openFolder(dir)
	if err != nil {
		return describe(dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return describeFile(d, dir, err)
	}
	return nil
}

// openFolder opens the folder rel to list or sync it. Opened with
// folderFlags, a FIFO put in its place (by whoever may write in the root)
// is refused at once, rather than hold the open, and the agent, which
// takes one command at a time, until a writer comes. A symbolic link on
// the way is followed inside the root only, as in every path (a volume
// may be named by a link to another in the root); walk enters none.
func (s *Storage) openFolder(rel string) (*os.File, error) {
	return s.root.OpenFile(rel, os.O_RDONLY|folderFlags, 0)
}

// openFolderNoLink is openFolder for a folder that must be no symbolic
// link, as a walk's: the folder opened is judged, as openImage judges an
// image, and refused unless it is the folder that the name was (not a
// link, which the root would follow, put in its place since).
func (s *Storage) openFolderNoLink(rel string) (*os.File, error) {
	named, err := s.root.Lstat(rel)
	if err != nil {
		return nil, err
	}
	if !named.IsDir() {
		return nil, fmt.Errorf("%q is not a folder (a symbolic link or a file put in its place), and is not looked into", rel)
	}
	d, err := s.openFolder(rel)
	if err != nil {
		return nil, err
	}
	fi, err := d.Stat()
	if err == nil && !os.SameFile(named, fi) {
		err = fmt.Errorf("%q was replaced by another file while the agent opened it, and is not looked into", rel)
	}
	if err != nil {
		d.Close()
		return nil, describeFile(d, rel, err)
	}
	return d, nil
}

// walk calls file with each regular file in the folder dir and in the
// folders under it, and fail with each error met (a folder that cannot be
// read, or that is no longer one); the first error either returns ends
// the walk. Symbolic links are not followed: a folder is entered only
// through openFolderNoLink.
func (s *Storage) walk(dir string, file func(rel string) error, fail func(rel string, err error) error) error {
	d, err := s.openFolderNoLink(dir)
	if err != nil {
		return fail(dir, err)
	}
	entries, err := d.ReadDir(-1)
	d.Close()
	if err != nil {
		// What was read before the error is still walked.
		if err := fail(dir, describeFile(d, dir, err)); err != nil {
			return err
		}
	}
	for _, e := range entries {
		rel := filepath.Join(dir, e.Name())
		switch {
		case e.IsDir():
			err = s.walk(rel, file, fail)
		case e.Type().IsRegular():
			err = file(rel)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// removeStaleTemps removes the temporary files an earlier write of rel left
// when the agent was killed in the middle of it (a copy of a large image
// can take minutes): the write about to start replaces them, and a volume
// holding one could not be removed.
func (s *Storage) removeStaleTemps(rel string) {
	dir, prefix := filepath.Dir(rel), filepath.Base(tempPrefix(rel))
	d, err := s.openFolder(dir)
	if err != nil {
		return
	}
	entries, _ := d.ReadDir(-1)
	d.Close()
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) && isTemp(e.Name()) && e.Type().IsRegular() {
			s.removeStaleTemp(filepath.Join(dir, e.Name()))
		}
	}
}

// removeAllStaleTemps removes, when the agent starts, the temporary files
// anywhere in the root that an agent killed in the middle of a write left:
// with the root locked, no write is under way. A command that failed is
// not always retried, and such a file can be as large as the image, and
// keeps its volume from being removed without force while no image shows
// in it. Symlinks are not followed (see walk).
func (s *Storage) removeAllStaleTemps() {
	_ = s.walk(".", func(rel string) error {
		if isTemp(filepath.Base(rel)) {
			s.removeStaleTemp(rel)
		}
		return nil
	}, func(rel string, err error) error {
		s.log.Warn("cannot look for temporary files left by an interrupted write", "path", filepath.ToSlash(rel), "err", describe(rel, err))
		return nil
	})
}

// removeStaleTemp removes the temporary file rel; one it cannot remove is
// named in a warning, as it may hold as much as an image and keeps its
// volume from being removed without force.
func (s *Storage) removeStaleTemp(rel string) {
	switch err := s.root.Remove(rel); {
	case err == nil:
		s.log.Info("removed a temporary file left by an interrupted write", "path", rel)
	case !errors.Is(err, fs.ErrNotExist):
		s.log.Warn("cannot remove a temporary file left by an interrupted write; remove it by hand", "path", rel, "err", describe(rel, err))
	}
}

// tempMark is between the image's name and a random suffix in the name of
// a write's temporary file: ".<name>.tmp-<12 hex digits>".
const tempMark = ".tmp-"

// maxName is the longest file name, in bytes, of the file systems the
// root may be on (NAME_MAX).
const maxName = 255

// tempPrefix is the path of rel's temporary files but for their random
// suffix: ".<name>.tmp-" beside it. A name too long to leave room for the
// dot, tempMark and the suffix (an image name may take all of maxName) is
// cut short, at the start of a character.
func tempPrefix(rel string) string {
	name := filepath.Base(rel)
	if n := maxName - len(".") - len(tempMark) - 12; len(name) > n {
		for n > 0 && !utf8.RuneStart(name[n]) {
			n--
		}
		name = name[:n]
	}
	return filepath.Join(filepath.Dir(rel), "."+name+tempMark)
}

// isTemp reports whether name is that of a write's temporary file.
func isTemp(name string) bool {
	i := strings.LastIndex(name, tempMark)
	if i < 2 || name[0] != '.' {
		return false
	}
	rnd := name[i+len(tempMark):]
	return len(rnd) == 12 && strings.Trim(rnd, "0123456789abcdef") == ""
}

// qemuImgRun runs qemu-img with f, the image rel, as its fd 3 (/dev/fd/3),
// so that it writes the file the root opened and never resolves a path
// itself. Its reason names the image by rel, not /dev/fd/3.
func (s *Storage) qemuImgRun(ctx context.Context, f *os.File, rel string, args ...string) error {
	prog := s.qemuImg
	if prog == "" {
		prog = "qemu-img"
	}
	prog, err := exec.LookPath(prog)
	if err != nil {
		return fmt.Errorf("qcow2 images need qemu-img, which is not installed on this host (install qemu-utils, or use format raw): %w", err)
	}
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.ExtraFiles = []*os.File{f}
	out, err := cmd.CombinedOutput()
	if err != nil {
		var lines []string
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if strings.HasPrefix(l, "qemu-img: Error when deleting file /dev/fd/3") {
				// qemu-img create removing what it failed to make,
				// which it cannot by that name: the agent does.
				continue
			}
			l = strings.TrimPrefix(l, "qemu-img: ")
			lines = append(lines, strings.ReplaceAll(l, "/dev/fd/3", fmt.Sprintf("%q", rel)))
		}
		msg := strings.Join(lines, "; ")
		if len(msg) > 500 {
			msg = msg[:500] + "…"
		}
		return fmt.Errorf("qemu-img %s %q: %v: %s", args[0], rel, err, msg)
	}
	return nil
}

// imageInfo is an image's format and virtual size in bytes.
type imageInfo struct {
	format string
	size   int64
}

// qcow2Magic starts every qcow2 image; its virtual size is the big-endian
// 64-bit number at offset 24.
var qcow2Magic = []byte{'Q', 'F', 'I', 0xfb}

// stat reads an image's size: a raw image's is its file's, a qcow2 image's
// is read from its header, without qemu-img. The format is the name's.
func (s *Storage) stat(rel string) (imageInfo, error) {
	f, fi, err := s.openImage(rel, os.O_RDONLY)
	if err != nil {
		return imageInfo{}, err
	}
	defer f.Close()
	info, err := readInfo(f, FormatOf(rel), fi.Size())
	if err != nil {
		return imageInfo{}, fmt.Errorf("image %q: %w", rel, err)
	}
	return info, nil
}

// openImage opens the image rel with flag (os.O_RDONLY or os.O_RDWR), the
// one way an existing image is opened. What it opened is judged, not only
// what the name was when checked: a local user with write access in the
// root could put another file in its place between the two. Opened with
// openFlags, a FIFO there does not hold the open (and the agent) for ever
// but is refused as no image, as is a hard link (a file with another
// name, perhaps outside the root) or, through a symlink, another file.
func (s *Storage) openImage(rel string, flag int) (*os.File, fs.FileInfo, error) {
	named, err := s.root.Lstat(rel)
	if err == nil {
		err = imageFile(rel, named)
	}
	if err != nil {
		return nil, nil, describe(rel, err)
	}
	f, err := s.root.OpenFile(rel, flag|openFlags, 0)
	if err != nil {
		return nil, nil, describe(rel, err)
	}
	fi, err := f.Stat()
	if err == nil {
		err = imageFile(rel, fi)
	}
	if err == nil && !os.SameFile(named, fi) {
		err = fmt.Errorf("%q was replaced by another file while the agent opened it", rel)
	}
	if err == nil {
		err = setBlocking(f)
	}
	if err != nil {
		f.Close()
		return nil, nil, describeFile(f, rel, err)
	}
	return f, fi, nil
}

// imageFile refuses, as an image rel, a file fi that is not a regular file
// or that has another name.
func imageFile(rel string, fi fs.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%q is not an image file", rel)
	}
	if n := nlink.Of(fi); n > 1 {
		return fmt.Errorf("%q has %d hard links: the same file has another name, perhaps outside the storage root, and is not taken as an image", rel, n)
	}
	return nil
}

// notInUse refuses an image that a running VM holds open: QEMU locks the
// images it uses, and deleting, moving or resizing one under it would lose
// the VM's writes or break its disk. With writing, only a VM that may
// write to it counts (copying an image that VMs only read is fine).
//
// An image the agent cannot open is refused: its lock cannot be asked
// for, and not being able to open it now is no sign that no QEMU has it
// open (one of another user, say libvirt's, which makes an image its own
// while its VM runs, or one that opened it before it was made unreadable).
func (s *Storage) notInUse(rel string, writing bool) error {
	// Without waiting: a FIFO put in the image's place is no image, and
	// its open would wait for a writer.
	f, err := s.root.OpenFile(rel, os.O_RDONLY|openFlags, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case errors.Is(err, fs.ErrPermission):
		return cannotOpen(rel, err)
	case err != nil:
		return describe(rel, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return describeFile(f, rel, err)
	} else if !fi.Mode().IsRegular() {
		return fmt.Errorf("%q is not an image file", rel)
	}
	return notInUseFile(f, rel, writing)
}

// cannotOpen is notInUse's refusal of an image rel it cannot open (err).
func cannotOpen(rel string, err error) error {
	cause := err // the host path is no part of the reason
	if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
		cause = pe.Err
	}
	return fmt.Errorf("image %q: the agent cannot open it (%w) to see whether a running VM holds it (QEMU's lock), and one that does would lose its writes: make it readable by the agent's user, or remove it by hand once no VM uses it", rel, cause)
}

// notInUseFile is notInUse for f, the image rel already opened and judged.
func notInUseFile(f *os.File, rel string, writing bool) error {
	used, err := inUse(f, writing)
	if err != nil {
		return fmt.Errorf("image %q: look for a VM using it: %w", rel, err)
	}
	if used {
		return fmt.Errorf("image %q is in use by a running VM (QEMU holds a lock on it): stop the VM first", rel)
	}
	return nil
}

func readInfo(f io.ReaderAt, format string, fileSize int64) (imageInfo, error) {
	if format == "raw" {
		return imageInfo{format: "raw", size: fileSize}, nil
	}
	size, err := Qcow2Size(f)
	if err != nil {
		return imageInfo{}, err
	}
	return imageInfo{format: "qcow2", size: size}, nil
}

// Qcow2Size reads a qcow2 image's header and answers its virtual size. It
// refuses an image whose data lives partly in another file, which qemu-img
// and QEMU would then open by the name the header gives, wherever it is: a
// backing file, or (qcow2 version 3) an external data file.
func Qcow2Size(f io.ReaderAt) (int64, error) {
	// The header: magic, version (4), backing_file_offset (8), size (24)
	// and, from version 3, incompatible_features (72), whose bit 2 says
	// the data is in an external file.
	var hdr [80]byte
	n, err := f.ReadAt(hdr[:], 0)
	if n < 72 || string(hdr[:4]) != string(qcow2Magic) {
		if err != nil && err != io.EOF {
			return 0, err
		}
		return 0, errors.New("it is named .qcow2 but is not a qcow2 image")
	}
	if binary.BigEndian.Uint64(hdr[8:16]) != 0 {
		return 0, errors.New("it names a backing file, which would be opened wherever it is: only standalone qcow2 images are taken")
	}
	if version := binary.BigEndian.Uint32(hdr[4:8]); version >= 3 && (n < 80 || binary.BigEndian.Uint64(hdr[72:80])&(1<<2) != 0) {
		return 0, errors.New("its data is in an external data file, which would be opened wherever it is: only standalone qcow2 images are taken")
	}
	size := binary.BigEndian.Uint64(hdr[24:32])
	if size > math.MaxInt64 {
		// QEMU refuses it too ("Image size too large"); as an int64 it
		// would be a negative size.
		return 0, fmt.Errorf("its header gives a virtual size of %d bytes, which no image has", size)
	}
	return int64(size), nil
}

// DeleteImage is the parameters of delete_image: ImagePath is relative to
// the root ("volume/disk.img").
type DeleteImage struct {
	ImagePath string `json:"image_path" spin:"required"`
}

// DeleteImage removes an image; one that is gone is success.
func (s *Storage) DeleteImage(ctx context.Context, p DeleteImage) (any, error) {
	rel, err := volumePath("image_path", p.ImagePath)
	if err != nil {
		return nil, err
	}
	if strings.HasPrefix(filepath.Base(rel), ".") {
		// The root's lock file (deleted, a second agent could lock a
		// new one and serve the root too) and a write's temporary
		// files are the agent's; no image is named so (CheckImageName).
		return nil, fmt.Errorf("%q starts with a dot: it is one of the agent's own files, not an image", rel)
	}
	removed, err := s.removeImage(rel)
	if err != nil || !removed {
		return s.output(rel, false), err
	}
	if err := s.syncDir(filepath.Dir(rel)); err != nil {
		return nil, err
	}
	agent.LoggerOr(ctx, s.log).Info("image deleted", "path", rel)
	return s.output(rel, true), nil
}

// imageKind refuses, as an image rel for delete_image, a folder (dir) or
// anything but a regular file.
func imageKind(rel string, dir, regular bool) error {
	switch {
	case dir:
		return fmt.Errorf("%q is a volume, not an image (use remove_volume)", rel)
	case !regular:
		return fmt.Errorf("%q is not an image file", rel)
	}
	return nil
}

// ResizeImage is the parameters of resize_image. An image only grows unless
// Shrink is true.
type ResizeImage struct {
	VolumePath string `json:"volume_path" spin:"required"`
	ImageName  string `json:"image_name" spin:"required"`
	ImageSize  int64  `json:"image_size" spin:"required"`
	Shrink     bool   `json:"shrink"`
}

// Validate checks the name and size.
func (p ResizeImage) Validate() error {
	if err := CheckImageName(p.ImageName); err != nil {
		return err
	}
	return checkSize(p.ImageSize)
}

// ResizeImage sets an image's virtual size to p.ImageSize GiB; an image of
// that size already is success.
//
// The image is opened once, and that open file is the one whose size is
// read, whose lock is asked for and which is resized: opened by name at
// each step, another image swapped in between (by whoever may write in the
// root) would be resized on the judgement of the first, shrunk without
// shrink, say, or under a running VM.
func (s *Storage) ResizeImage(ctx context.Context, p ResizeImage) (any, error) {
	vol, err := s.volume("volume_path", p.VolumePath)
	if err != nil {
		return nil, err
	}
	rel := filepath.Join(vol, p.ImageName)
	size := p.ImageSize << 30
	f, fi, err := s.openImage(rel, os.O_RDWR)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("image %q does not exist", rel)
	case errors.Is(err, fs.ErrPermission):
		// One the agent may read but not write is at its size already
		// (a delivery again), or cannot be resized by the agent.
		if info, serr := s.stat(rel); serr == nil && info.size == size {
			out := s.output(rel, false).withImage(info)
			out.PreviousSize = info.size
			return out, nil
		}
		return nil, err
	case err != nil:
		return nil, err
	}
	defer f.Close()
	info, err := readInfo(f, FormatOf(rel), fi.Size())
	if err != nil {
		return nil, fmt.Errorf("image %q: %w", rel, err)
	}
	out := s.output(rel, size != info.size)
	out.PreviousSize = info.size
	switch {
	case size == info.size:
		return out.withImage(info), nil
	case size < info.size && !p.Shrink:
		return nil, fmt.Errorf("image %q has %d bytes; shrinking it to %d GiB may lose data: pass shrink: true", rel, info.size, p.ImageSize)
	}
	if err := notInUseFile(f, rel, false); err != nil {
		return nil, err
	}
	if info.format == "qcow2" {
		args := []string{"resize", "-q", "-f", "qcow2", "/dev/fd/3", fmt.Sprint(size)}
		if size < info.size {
			args = append(args[:1], append([]string{"--shrink"}, args[1:]...)...)
		}
		err = s.qemuImgRun(ctx, f, rel, args...)
	} else {
		err = describe(rel, f.Truncate(size))
	}
	if err == nil {
		// qemu-img wrote through a file of its own, the same one.
		err = describe(rel, s.syncFile(f, rel))
	}
	if err != nil {
		return nil, err
	}
	agent.LoggerOr(ctx, s.log).Info("image resized", "path", rel, "size", size, "previous_size", info.size)
	return out.withImage(imageInfo{format: info.format, size: size}), nil
}

// MoveImage is the parameters of move_image: the image ImageName moves from
// the volume Volume to TargetVolume.
type MoveImage struct {
	ImageName    string `json:"image_name" spin:"required"`
	Volume       string `json:"volume" spin:"required"`
	TargetVolume string `json:"target_volume" spin:"required"`
}

// Validate checks the name.
func (p MoveImage) Validate() error { return CheckImageName(p.ImageName) }

// CopyImage is the parameters of copy_image, as MoveImage's.
type CopyImage MoveImage

// Validate checks the name.
func (p CopyImage) Validate() error { return CheckImageName(p.ImageName) }

// endpoints checks both volumes and returns the image's source and target,
// and whether the two volumes are one folder: by name, or under another
// name (a symlink in the root), where the target's image is the source's.
func (s *Storage) endpoints(name, volume, target string) (src, dst string, same bool, err error) {
	from, fromInfo, err := s.volumeInfo("volume", volume)
	if err != nil {
		return "", "", false, err
	}
	to, toInfo, err := s.volumeInfo("target_volume", target)
	if err != nil {
		return "", "", false, err
	}
	return filepath.Join(from, name), filepath.Join(to, name), os.SameFile(fromInfo, toInfo), nil
}

// MoveImage moves an image to another volume. When the image is already
// in the target and gone from the source (a repeated delivery), it is
// success; an image of that name in the target otherwise is an error.
func (s *Storage) MoveImage(ctx context.Context, p MoveImage) (any, error) {
	src, dst, same, err := s.endpoints(p.ImageName, p.Volume, p.TargetVolume)
	if err == nil {
		err = s.fitsHost("image", dst)
	}
	if err != nil {
		return nil, err
	}
	srcInfo, srcErr := s.stat(src)
	dstInfo, dstErr := s.stat(dst)
	switch {
	case same && srcErr == nil:
		return s.output(dst, false).withImage(srcInfo), nil
	case errors.Is(srcErr, fs.ErrNotExist) && dstErr == nil:
		return s.output(dst, false).withImage(dstInfo), nil
	case srcErr != nil:
		if errors.Is(srcErr, fs.ErrNotExist) {
			return nil, fmt.Errorf("image %q does not exist", src)
		}
		return nil, srcErr
	case dstErr == nil:
		return s.finishMove(ctx, src, dst, srcInfo, dstInfo)
	case !errors.Is(dstErr, fs.ErrNotExist):
		return nil, dstErr
	}
	if err := s.moveFile(ctx, src, dst, srcInfo); err != nil {
		return nil, err
	}
	agent.LoggerOr(ctx, s.log).Info("image moved", "path", src, "target", dst)
	return s.output(dst, true).withImage(srcInfo), nil
}

// finishMove is a move whose target volume holds an image of its name
// already. Across file systems a move is a copy and then the removal of
// the source, and an agent killed between the two leaves the same image in
// both volumes: the retried move finishes it, removing the source. Any
// other image there is refused. (On one file system a move is a rename,
// which leaves no such halfway state.)
func (s *Storage) finishMove(ctx context.Context, src, dst string, srcInfo, dstInfo imageInfo) (any, error) {
	refused := fmt.Errorf("volume %q has an image %q already", filepath.Dir(dst), filepath.Base(dst))
	if srcInfo != dstInfo {
		return nil, refused
	}
	from, err := s.root.Stat(filepath.Dir(src))
	if err != nil {
		return nil, describe(filepath.Dir(src), err)
	}
	to, err := s.root.Stat(filepath.Dir(dst))
	if err != nil {
		return nil, describe(filepath.Dir(dst), err)
	}
	if oneFileSystem(from, to) {
		return nil, refused
	}
	if same, err := s.removeCopied(ctx, src, dst); err != nil {
		return nil, err
	} else if !same {
		return nil, refused
	}
	agent.LoggerOr(ctx, s.log).Info("image moved: an interrupted move finished, its copy found whole in the target", "path", src, "target", dst)
	return s.output(dst, true).withImage(dstInfo), nil
}

// CopyImage copies an image to another volume, keeping it sparse. A copy
// of the same size in the target already is success.
func (s *Storage) CopyImage(ctx context.Context, p CopyImage) (any, error) {
	src, dst, same, err := s.endpoints(p.ImageName, p.Volume, p.TargetVolume)
	if err == nil {
		err = s.fitsHost("image", dst)
	}
	if err != nil {
		return nil, err
	}
	if same {
		if from, to := filepath.Dir(src), filepath.Dir(dst); from != to {
			return nil, fmt.Errorf("volume %q and target_volume %q are the same volume (one is a symbolic link to the other): a copy there would be the image itself", from, to)
		}
		return nil, fmt.Errorf("volume and target_volume are the same volume %q", filepath.Dir(src))
	}
	srcInfo, err := s.stat(src)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("image %q does not exist", src)
	} else if err != nil {
		return nil, err
	}
	if dstInfo, err := s.stat(dst); err == nil {
		// A copy made before (the command delivered again) is success;
		// anything else of that name is not this image, even of its size.
		same := dstInfo == srcInfo
		if same {
			if same, err = s.sameContent(ctx, src, dst); err != nil {
				return nil, err
			}
		}
		if same {
			return s.output(dst, false).withImage(dstInfo), nil
		}
		return nil, fmt.Errorf("volume %q has another image %q already", filepath.Dir(dst), p.ImageName)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if err := s.notInUse(src, true); err != nil {
		return nil, err
	}
	if err := s.copyFile(ctx, src, dst); err != nil {
		return nil, err
	}
	agent.LoggerOr(ctx, s.log).Info("image copied", "path", src, "target", dst)
	return s.output(dst, true).withImage(srcInfo), nil
}

// sameContent reports whether two files hold the same bytes, reading both
// to the first difference. Ranges that are holes in both are skipped
// unread: a 16 TiB sparse image is compared in as little time as it was
// copied, rather than hours of reading zeros (with the agent taking no
// other command meanwhile).
func (s *Storage) sameContent(ctx context.Context, a, b string) (bool, error) {
	fa, fia, err := s.openImage(a, os.O_RDONLY)
	if err != nil {
		return false, err
	}
	defer fa.Close()
	fb, fib, err := s.openImage(b, os.O_RDONLY)
	if err != nil {
		return false, err
	}
	defer fb.Close()
	return compareFiles(ctx, fa, fb, fia.Size(), fib.Size(), a, b)
}

// compareFiles is sameContent for the open files fa and fb, of sizes sizeA
// and sizeB, the images a and b.
func compareFiles(ctx context.Context, fa, fb *os.File, sizeA, sizeB int64, a, b string) (bool, error) {
	size := sizeA
	if sizeB != size {
		return false, nil
	}
	bufA, bufB := make([]byte, chunk), make([]byte, chunk)
	for off := int64(0); off < size; {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		da, err := nextData(fa, off, size)
		if err != nil {
			return false, describe(a, err)
		}
		db, err := nextData(fb, off, size)
		if err != nil {
			return false, describe(b, err)
		}
		// Up to the first data of either, both are holes: zeros.
		off = min(da, db)
		if off >= size {
			break
		}
		n := int(min(int64(chunk), size-off))
		na, err := fa.ReadAt(bufA[:n], off)
		if err != nil && err != io.EOF {
			return false, describe(a, err)
		}
		nb, err := fb.ReadAt(bufB[:n], off)
		if err != nil && err != io.EOF {
			return false, describe(b, err)
		}
		if na != n || nb != n || !bytes.Equal(bufA[:n], bufB[:n]) {
			return false, nil // different, or one changed size since
		}
		off += int64(n)
	}
	return true, nil
}

// copyFile copies src to dst (a new file, made atomically), sparse-aware;
// once ctx ends it stops, and leaves no file.
func (s *Storage) copyFile(ctx context.Context, src, dst string) error {
	in, fi, err := s.openImage(src, os.O_RDONLY)
	if err != nil {
		return err
	}
	defer in.Close()
	return s.writeAtomically(dst, func(out *os.File) error {
		return describeFile(in, src, copySparse(ctx, out, in, fi.Size()))
	})
}
