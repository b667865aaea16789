//go:build unix

package emulation

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/coreos/go-systemd/v22/unit"
)

// Systemd is the Supervisor that runs each VM as a systemd user unit,
// spin-vm-ID.service in the unit dir, driven with systemctl --user.
type Systemd struct {
	unitDir   string
	systemctl string
	log       *slog.Logger
}

// NewSystemd returns a systemd supervisor writing its units to unitDir
// ($XDG_CONFIG_HOME/systemd/user when empty).
func NewSystemd(unitDir string, log *slog.Logger) (*Systemd, error) {
	if unitDir == "" {
		cfg, err := os.UserConfigDir()
		if err != nil {
			return nil, err
		}
		unitDir = filepath.Join(cfg, "systemd", "user")
	}
	// A unit others may write is a command they choose, which the
	// user manager runs as the agent's user at the VM's next start.
	if err := ownDir(unitDir, 0o755); err != nil {
		return nil, fmt.Errorf("emulation: the unit dir: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	return &Systemd{unitDir: unitDir, systemctl: "systemctl", log: log}, nil
}

// journal is the end of a unit's output in the user journal, where QEMU's
// complaint about a locked image or too much memory goes; nothing when
// journalctl cannot say.
func (s *Systemd) journal(id string) []byte {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "journalctl", "--user", "--unit", UnitName(id), "--lines", "20", "--output", "cat", "--no-pager").Output()
	if err != nil {
		return nil
	}
	return out
}

// Reachable reports whether systemctl --user answers: without a user
// manager (no session bus) no VM can be started or checked.
func (s *Systemd) Reachable(ctx context.Context) error {
	_, err := s.run(ctx, SystemctlArgs("show-environment")...)
	return err
}

// UnitName is the unit of VM id (a checked id needs no escaping).
func UnitName(id string) string { return "spin-vm-" + id + ".service" }

// SystemctlArgs is the argument list of systemctl for a verb on units,
// always on the user's manager.
func SystemctlArgs(verb string, args ...string) []string {
	return append([]string{"--user", verb}, args...)
}

// RenderUnit renders the unit of VM id, named name, running argv. Values are
// quoted and escaped by systemd's rules (specifiers %, variables $, quotes,
// backslashes, control characters), so no value can end a line, continue
// one, or add a directive.
func RenderUnit(id, name string, argv []string) ([]byte, error) {
	if err := CheckID(id); err != nil {
		return nil, err
	}
	if len(argv) == 0 || !filepath.IsAbs(argv[0]) {
		return nil, errors.New("the unit's command must start with an absolute path")
	}
	words := make([]string, len(argv))
	for i, a := range argv {
		words[i] = execQuote(a)
	}
	opts := []*unit.UnitOption{
		unit.NewUnitOption("Unit", "Description", "spin-broker VM "+specifierEscape(strconv.Quote(name))),
		unit.NewUnitOption("Service", "Type", "simple"),
		unit.NewUnitOption("Service", "ExecStart", strings.Join(words, " ")),
		// SIGTERM makes QEMU stop the VM at once and close its images;
		// SIGKILL follows if it has not within 10s.
		unit.NewUnitOption("Service", "KillMode", "mixed"),
		unit.NewUnitOption("Service", "TimeoutStopSec", "10"),
		unit.NewUnitOption("Service", "Restart", "no"),
	}
	b, err := io.ReadAll(unit.Serialize(opts))
	if err != nil {
		return nil, err
	}
	return append([]byte("# Written by sa-emulation for VM "+id+"; changes are overwritten.\n"), b...), nil
}

func specifierEscape(s string) string { return strings.ReplaceAll(s, "%", "%%") }

// execQuote quotes one word of ExecStart: in double quotes, with \ and "
// escaped, control characters and bytes that are not UTF-8 as \x or \u
// escapes (systemd unescapes them), % doubled (specifiers) and $ doubled
// (variables).
func execQuote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\\':
			b.WriteString(`\\`)
		case r == '"':
			b.WriteString(`\"`)
		case r == '%':
			b.WriteString("%%")
		case r == '$':
			b.WriteString("$$")
		case r < 0x80 && unicode.IsControl(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case unicode.IsControl(r) || r == '\u2028' || r == '\u2029':
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	b.WriteByte('"')
	return b.String()
}

func (s *Systemd) unitPath(id string) string { return filepath.Join(s.unitDir, UnitName(id)) }

func (s *Systemd) run(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, s.systemctl, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("systemctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// Start writes the unit of VM id, described with its name, and starts it.
func (s *Systemd) Start(ctx context.Context, id, name string, argv []string) error {
	b, err := RenderUnit(id, name, argv)
	if err != nil {
		return err
	}
	if err := writeFile(s.unitPath(id), b, 0o644); err != nil {
		return err
	}
	if _, err := s.run(ctx, SystemctlArgs("daemon-reload")...); err != nil {
		return err
	}
	_, err = s.run(ctx, SystemctlArgs("start", UnitName(id))...)
	return err
}

// Running asks systemd whether the unit is active, or on its way in or
// out of it: is-active answers "not running" for a unit systemd is still
// stopping, whose QEMU has had SIGTERM and may run on for up to
// TimeoutStopSec, so its state is read too. Taken for stopped, a retried
// stop would answer changed: false with QEMU still up, and a start would
// run a second QEMU on its disks.
func (s *Systemd) Running(ctx context.Context, id string) (bool, error) {
	args := SystemctlArgs("is-active", UnitName(id))
	cmd := exec.CommandContext(ctx, s.systemctl, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &ee) && ee.ExitCode() == 3:
		// LSB's "not running": inactive and failed, but also the
		// states between running and not.
		return transient(stdout.String()), nil
	case errors.As(err, &ee) && ee.ExitCode() == 4:
		// LSB's "no such unit".
		return false, nil
	case errors.As(err, &ee):
		// systemctl itself failed (no user bus, say): the VM may well be
		// running, and a stop that believed otherwise would leave it so.
		return false, fmt.Errorf("systemctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stdout.String()+stderr.String()))
	}
	return false, err
}

// transient reports whether is-active's answer is a unit's ActiveState
// between running and not, in which its process may be up.
func transient(isActive string) bool {
	switch strings.TrimSpace(isActive) {
	case "activating", "deactivating":
		return true
	}
	return false
}

// PID is the unit's main process id, 0 when not running.
func (s *Systemd) PID(ctx context.Context, id string) int {
	out, err := s.run(ctx, SystemctlArgs("show", "--property=MainPID", "--value", UnitName(id))...)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(out))
	return pid
}

// Kill stops the unit (SIGTERM, SIGKILL after 10s) and waits for it.
func (s *Systemd) Kill(ctx context.Context, id string) error {
	_, err := s.run(ctx, SystemctlArgs("stop", UnitName(id))...)
	return err
}

// Remove deletes the unit file of a stopped VM.
func (s *Systemd) Remove(ctx context.Context, id string) error {
	if running, _ := s.Running(ctx, id); running {
		return fmt.Errorf("VM %s is running", id)
	}
	err := os.Remove(s.unitPath(id))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	_, _ = s.run(ctx, SystemctlArgs("reset-failed", UnitName(id))...)
	_, err = s.run(ctx, SystemctlArgs("daemon-reload")...)
	return err
}
