package agentcmd

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// scrubEnviron blanks the variable name in the environment block the
// kernel gave the process at exec: what /proc/PID/environ shows, `ps e`
// prints, and any process of the same user may read (QEMU, run by
// sa-emulation, included). The Go runtime has copied that block at start;
// os.Unsetenv removes the variable from the copy, and so from what
// children inherit, but leaves the block as it was. Its bytes are
// overwritten with NULs (its length cannot change), through /proc/self/mem,
// which a process may always write.
func scrubEnviron(name string) error {
	stat, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return err
	}
	// The fields after the command's name, which may hold spaces, in
	// parentheses: the first is field 3 (state); env_start and env_end are
	// fields 50 and 51 (proc(5)).
	fields := bytes.Fields(stat[bytes.LastIndexByte(stat, ')')+1:])
	if len(fields) < 49 {
		return fmt.Errorf("/proc/self/stat has %d fields, not the 51 of Linux 3.5 and later", len(fields)+2)
	}
	start, err1 := strconv.ParseInt(string(fields[47]), 10, 64)
	end, err2 := strconv.ParseInt(string(fields[48]), 10, 64)
	if err1 != nil || err2 != nil || end <= start {
		return fmt.Errorf("/proc/self/stat: no environment block in %q and %q", fields[47], fields[48])
	}
	mem, err := os.OpenFile("/proc/self/mem", os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer mem.Close()
	block := make([]byte, end-start)
	if _, err := mem.ReadAt(block, start); err != nil {
		return err
	}
	prefix := []byte(name + "=")
	for off := 0; off < len(block); {
		n := bytes.IndexByte(block[off:], 0)
		if n < 0 {
			n = len(block) - off
		}
		if bytes.HasPrefix(block[off:off+n], prefix) {
			if _, err := mem.WriteAt(make([]byte, n), start+int64(off)); err != nil {
				return err
			}
		}
		off += n + 1
	}
	return nil
}
