//go:build unix

package emulation

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"unicode"
	"unicode/utf8"

	"github.com/spin-broker/spinbroker/internal/hostpath"
	"github.com/spin-broker/spinbroker/internal/nlink"
)

// Limits of a VM's config.
const (
	MinMemoryMiB = 16
	MaxMemoryMiB = 16 << 20 // 16 TiB
	MaxCpus      = 255
	MaxImages    = 16
	// MaxCdroms is how many CD-ROMs QEMU's q35 machine takes: they are
	// IDE drives on its AHCI controller, which has six ports.
	MaxCdroms  = 6
	MaxNameLen = 128
)

// VM is a virtual machine's config as the seed writes it, with capitalised
// JSON names. Memory is in MiB.
type VM struct {
	Name   string  `json:"Name" spin:"required"`
	Cpus   int     `json:"Cpus" spin:"required"`
	Memory int64   `json:"Memory" spin:"required"`
	Images []Image `json:"Images"`
}

// Image is a disk or CD-ROM image of a VM. Path is absolute, or relative to
// the agent's images root (inside the folder Volume, when given, as
// sa-host-path lays images out: ROOT/Volume/Path).
type Image struct {
	Path   string `json:"Path" spin:"required"`
	Cdrom  bool   `json:"Cdrom"`
	Volume string `json:"Volume"`
	// held, when set, is the path QEMU opens the image by: the agent's
	// own open file of it (see holdImages), which names the file judged
	// whatever is renamed on Path since. Path still gives its format.
	held string
}

// maxIDLen is the longest VM id.
const maxIDLen = 64

// CheckID checks a VM id: it names files and units, so it is 1 to 64
// characters of [A-Za-z0-9_.-], starting with a letter or digit.
func CheckID(id string) error {
	if id == "" || len(id) > maxIDLen {
		return fmt.Errorf("id must be 1 to %d characters, not %d", maxIDLen, len(id))
	}
	for i, c := range id {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case (c == '_' || c == '.' || c == '-') && i > 0:
		default:
			return fmt.Errorf("id %q may hold only letters, digits, '_', '.' and '-', and starts with a letter or digit", id)
		}
	}
	return nil
}

// Validate checks what can be checked without the file system.
func (vm *VM) Validate() error {
	switch {
	case vm.Name == "":
		return errors.New("vm.Name is empty")
	case !utf8.ValidString(vm.Name) || utf8.RuneCountInString(vm.Name) > MaxNameLen:
		return fmt.Errorf("vm.Name must be valid UTF-8 of at most %d characters", MaxNameLen)
	case strings.IndexFunc(vm.Name, unicode.IsControl) >= 0:
		return fmt.Errorf("vm.Name %q contains a control character", vm.Name)
	case vm.Cpus < 1 || vm.Cpus > MaxCpus:
		return fmt.Errorf("vm.Cpus must be between 1 and %d, not %d", MaxCpus, vm.Cpus)
	case vm.Memory < MinMemoryMiB || vm.Memory > MaxMemoryMiB:
		return fmt.Errorf("vm.Memory is in MiB and must be between %d and %d, not %d", MinMemoryMiB, MaxMemoryMiB, vm.Memory)
	case len(vm.Images) > MaxImages:
		return fmt.Errorf("vm.Images may hold at most %d images", MaxImages)
	}
	cdroms := 0
	for i, im := range vm.Images {
		if im.Path == "" || strings.ContainsRune(im.Path, 0) {
			return fmt.Errorf("vm.Images[%d].Path is empty or holds a NUL", i)
		}
		if strings.ContainsRune(im.Volume, 0) {
			return fmt.Errorf("vm.Images[%d].Volume holds a NUL", i)
		}
		if im.Cdrom {
			cdroms++
		}
	}
	if cdroms > MaxCdroms {
		// QEMU would refuse to start it, long after the config was taken.
		return fmt.Errorf("vm.Images holds %d CD-ROMs; the machine takes at most %d", cdroms, MaxCdroms)
	}
	return nil
}

// resolveImages turns the images' paths into absolute, symlink-free host
// paths of files that exist, confined to root when root is not empty, and
// never in one of the folders private: the agent's own (its state dir, its
// pid files, its unit files), which a guest writing to its disk would
// rewrite.
func resolveImages(images []Image, root string, private ...string) ([]Image, error) {
	var rootAbs, rootReal string
	if root != "" {
		var err error
		if rootAbs, err = filepath.Abs(root); err != nil {
			return nil, err
		}
		if rootReal, err = filepath.EvalSymlinks(root); err != nil {
			return nil, fmt.Errorf("the images root %q: %w", root, err)
		}
	}
	var privReal []string
	for _, d := range private {
		if d == "" {
			continue
		}
		d, err := filepath.Abs(d)
		if err != nil {
			return nil, err
		}
		if r, err := filepath.EvalSymlinks(d); err == nil {
			d = r
		}
		privReal = append(privReal, d)
	}
	out := make([]Image, len(images))
	for i, im := range images {
		p := im.Path
		if !filepath.IsAbs(p) {
			if root == "" {
				return nil, fmt.Errorf("vm.Images[%d].Path %q is relative, and the agent has no --images-root", i, p)
			}
			rel := filepath.Join(im.Volume, p)
			if !filepath.IsLocal(rel) {
				return nil, fmt.Errorf("vm.Images[%d] %q leaves the images root", i, rel)
			}
			p = filepath.Join(rootReal, rel)
		} else if im.Volume != "" {
			return nil, fmt.Errorf("vm.Images[%d]: an absolute Path takes no Volume", i)
		} else if rootReal != "" && !within(rootAbs, p) && !within(rootReal, p) {
			// Refused unseen: looking first would answer "does not
			// exist", "permission denied" or "outside" by what the host
			// holds there, telling a token holder which files it has.
			return nil, fmt.Errorf("vm.Images[%d] %q is outside the images root", i, im.Path)
		}
		real, err := filepath.EvalSymlinks(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("vm.Images[%d] %q does not exist", i, im.Path)
		} else if err != nil {
			// Permission, a loop of links, a file where a folder should be:
			// not "does not exist", which would send a person looking.
			return nil, fmt.Errorf("vm.Images[%d] %q: %w", i, im.Path, err)
		}
		if rootReal != "" && !within(rootReal, real) {
			return nil, fmt.Errorf("vm.Images[%d] %q is outside the images root", i, im.Path)
		}
		for _, d := range privReal {
			if within(d, real) {
				return nil, fmt.Errorf("vm.Images[%d] %q is one of the agent's own files (%s), not an image", i, im.Path, d)
			}
		}
		fi, err := os.Stat(real)
		if err != nil {
			return nil, fmt.Errorf("vm.Images[%d] %q: %w", i, im.Path, err)
		}
		if !fi.Mode().IsRegular() && (fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0) {
			return nil, fmt.Errorf("vm.Images[%d] %q is not a file or a block device", i, im.Path)
		}
		if rootReal != "" && fi.Mode().IsRegular() {
			if err := confinedImage(real, fi); err != nil {
				return nil, fmt.Errorf("vm.Images[%d] %q: %w", i, im.Path, err)
			}
		}
		out[i] = Image{Path: real, Cdrom: im.Cdrom}
	}
	return out, nil
}

// oneFileOneDisk refuses resolved images that name one file twice, but for
// CD-ROMs only: QEMU locks a disk's file against every other drive that
// would write it or read it as a disk, its own VM's as well, so such a VM
// never starts, and QEMU's reason ("Failed to get \"write\" lock. Is
// another process using the image?") sends a person looking for a process
// that is not there. The same image as two read-only CD-ROMs is fine.
func oneFileOneDisk(images []Image) error {
	infos := make([]os.FileInfo, len(images))
	for i, im := range images {
		infos[i], _ = os.Stat(im.Path) // resolved just now: it is there
	}
	for i := range images {
		for j := i + 1; j < len(images); j++ {
			if images[i].Cdrom && images[j].Cdrom {
				continue
			}
			same := images[i].Path == images[j].Path || (infos[i] != nil && infos[j] != nil && os.SameFile(infos[i], infos[j]))
			if same {
				return fmt.Errorf("vm.Images[%d] and vm.Images[%d] are the same file %q: QEMU gives a disk's file to one drive only, and would not start the VM (only two CD-ROMs may share an image)", i, j, images[j].Path)
			}
		}
	}
	return nil
}

// within reports whether path p is dir or in it, by their names alone.
func within(dir, p string) bool {
	r, err := filepath.Rel(dir, p)
	return err == nil && filepath.IsLocal(r)
}

// confinedImage refuses, under --images-root, an image file through which
// QEMU would reach a file outside it: one with other hard links, or a qcow2
// image naming a backing file or an external data file.
func confinedImage(path string, fi os.FileInfo) error {
	if n := nlink.Of(fi); n > 1 {
		return fmt.Errorf("it has %d hard links: the same file has another name, perhaps outside the images root", n)
	}
	if hostpath.FormatOf(path) != "qcow2" {
		return nil
	}
	// Without waiting: a FIFO put in its place since it was looked at
	// would hold the open, and the agent, until a writer came.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return confinedFile(path, f)
}

// confinedFile is confinedImage for the open file f of the image path: a
// regular file with no other name, and, as a qcow2 image, standalone.
func confinedFile(path string, f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return errors.New("it is not a regular file")
	}
	if n := nlink.Of(fi); n > 1 {
		return fmt.Errorf("it has %d hard links: the same file has another name, perhaps outside the images root", n)
	}
	if hostpath.FormatOf(path) != "qcow2" {
		return nil
	}
	_, err = hostpath.Qcow2Size(f)
	return err
}

// holdImages opens the resolved images (see resolveImages) for QEMU, which
// is then given the agent's open files (heldPath) rather than their paths:
// QEMU opens an image by its path a moment after the agent judged it, and
// a folder on that path swapped meanwhile for a symbolic link, by whoever
// may write in the images root, would give the guest whatever file the
// link leads to, outside the root (the host's disk, /etc/shadow). Each file
// opened must be the one judged: reached through an os.Root under an images
// root (which follows no link out of it), found by the host at the path
// judged (openedPath), of a kind QEMU is given, and, under an images root,
// confined (confinedFile). The caller closes the files once QEMU has opened
// its own. Unless give says to, or where an open file has no path of its
// own (heldPath answers ""), the images are left as they are, given to
// QEMU by their paths.
func holdImages(images []Image, root string, give bool) (held []*os.File, err error) {
	defer func() {
		if err != nil {
			closeAll(held)
			held = nil
		}
	}()
	var r *os.Root
	if root != "" {
		real, err := filepath.EvalSymlinks(root)
		if err == nil {
			r, err = os.OpenRoot(real)
		}
		if err != nil {
			return nil, fmt.Errorf("the images root %q: %w", root, err)
		}
		defer r.Close()
		root = real
	}
	for i := range images {
		im := &images[i]
		var f *os.File
		if r != nil {
			rel, rerr := filepath.Rel(root, im.Path)
			if rerr != nil || !filepath.IsLocal(rel) {
				return held, fmt.Errorf("vm.Images[%d] %q is outside the images root", i, im.Path)
			}
			f, err = r.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK, 0)
		} else {
			f, err = os.OpenFile(im.Path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
		}
		if err != nil {
			if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
				err = pe.Err
			}
			return held, fmt.Errorf("vm.Images[%d] %q: %w", i, im.Path, err)
		}
		held = append(held, f)
		replaced := fmt.Errorf("vm.Images[%d] %q was replaced by another file (a folder on its path renamed, or a link put there) while the VM started: it is not started", i, im.Path)
		if p, ok := openedPath(f); ok && p != im.Path {
			return held, replaced
		}
		fi, err := f.Stat()
		if err != nil {
			return held, fmt.Errorf("vm.Images[%d] %q: %w", i, im.Path, err)
		}
		switch {
		case fi.Mode().IsRegular():
			if r != nil {
				if err := confinedFile(im.Path, f); err != nil {
					return held, fmt.Errorf("vm.Images[%d] %q: %w", i, im.Path, err)
				}
			}
		case fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0:
		default:
			return held, replaced
		}
		if give {
			im.held = heldPath(f)
		}
	}
	return held, nil
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// qemuEscape doubles commas, QEMU's way to put one inside an option value;
// otherwise a path such as "x.img,readonly=off" would add an option.
func qemuEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// The VNC consoles a VM may have (sa-emulation's --vnc). None asks for a
// password.
const (
	// VNCLoopback listens on a port of 127.0.0.1, 5900 to 5999: any user
	// of the host reaches it.
	VNCLoopback = "loopback"
	// VNCSocket listens on a unix socket in the state dir's run/, which
	// is 0700: the agent's user (and root) only.
	VNCSocket = "socket"
	// VNCOff gives the VM no VNC console.
	VNCOff = "off"
)

// Host is what a VM's command line takes from the host it runs on.
type Host struct {
	QEMU  string // the qemu-system-x86_64 program
	QMP   string // the VM's QMP unix socket
	Accel string // "kvm" or "tcg"
	// CPU is the -cpu model ("host", "max"); empty leaves QEMU's default,
	// which starts everywhere ("host" fails under some nested KVM).
	CPU string
	// VNC is the VM's console: VNCLoopback (also when empty), VNCSocket
	// on the unix socket VNCSocket, or VNCOff.
	VNC, VNCSocket string
}

// QEMUArgs is the command line of a VM, as a list (never a shell string);
// argv[0] is qemu. The images must be resolved.
func QEMUArgs(vm *VM, h Host) []string {
	args := []string{
		h.QEMU,
		"-name", "guest=" + qemuEscape(vm.Name),
		"-machine", "q35",
		"-accel", h.Accel,
		"-smp", fmt.Sprint(vm.Cpus),
		"-m", fmt.Sprintf("%dM", vm.Memory),
		"-nodefaults",
		"-no-user-config",
		"-display", "none",
	}
	switch h.VNC {
	case VNCOff:
	case VNCSocket:
		args = append(args, "-vnc", "unix:"+qemuEscape(h.VNCSocket))
	default:
		args = append(args, "-vnc", "127.0.0.1:0,to=99")
	}
	args = append(args, "-qmp", "unix:"+qemuEscape(h.QMP)+",server=on,wait=off")
	if h.CPU != "" {
		args = append(args, "-cpu", qemuEscape(h.CPU))
	}
	for i, im := range vm.Images {
		// QEMU is told the format, by the image's name (never probed:
		// see hostpath.FormatOf).
		file := im.Path
		if im.held != "" {
			file = im.held
		}
		drive := "file=" + qemuEscape(file) + ",format=" + hostpath.FormatOf(im.Path) + fmt.Sprintf(",id=drive%d", i)
		if im.Cdrom {
			drive += ",media=cdrom,readonly=on,if=ide"
		} else {
			drive += ",media=disk,if=virtio"
		}
		args = append(args, "-drive", drive)
	}
	return args
}

// Accel is "kvm" when /dev/kvm can be opened for reading and writing,
// else "tcg".
func Accel() string {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return "tcg"
	}
	f.Close()
	return "kvm"
}
