package agentcmd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/brokertest"
	"github.com/spin-broker/spinbroker/internal/hostpath"
	"github.com/spin-broker/spinbroker/internal/syncbuf"
)

// TestLogFormatJSON_Agent: sa-host-path with -log-format json, serving a
// real broker a command that succeeds and one that fails, then stopped by
// SIGTERM, writes nothing on stderr but JSON objects with time, level and
// msg, the broker's shape: durations as "1.5s", never bare nanoseconds.
// The agents had only a text handler, which a log pipeline cannot parse.
func TestLogFormatJSON_Agent(t *testing.T) {
	bin := buildAgent(t, "sa-host-path")
	b := brokertest.Start(t)
	c := b.Client

	cmd := exec.Command(bin, "-url", b.URL, "-root", filepath.Join(t.TempDir(), "root"), "-log-format", "json", "-log-level", "debug")
	cmd.Env = append(os.Environ(), "SPINBROKER_LOG_FORMAT=", "SPINBROKER_LOG_LEVEL=")
	var stderr syncbuf.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})

	one := 1
	ctx := context.Background()
	p, err := c.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{
		{Key: "ok", Resource: "storage", Action: "add_volume", Parameters: json.RawMessage(`{"path":"v1"}`)},
		{Key: "bad", Resource: "storage", Action: "add_volume", Parameters: json.RawMessage(`{"path":"../outside"}`), MaxAttempts: &one, Dependencies: []string{"ok"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); !p.State.Terminal(); {
		if time.Now().After(deadline) {
			t.Fatalf("package still %s after 30s; stderr:\n%s", p.State, stderr.String())
		}
		select {
		case err := <-done:
			done <- err // for the clean-up
			t.Fatalf("the agent exited (%v); stderr:\n%s", err, stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
		if p, err = c.Package(ctx, p.ID); err != nil {
			t.Fatal(err)
		}
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		done <- err // for the clean-up
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v; stderr:\n%s", err, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("still running 15s after SIGTERM; stderr:\n%s", stderr.String())
	}

	finished := map[any]int{}
	for _, l := range strings.Split(strings.TrimRight(stderr.String(), "\n"), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Errorf("a line that is not a JSON object: %s", l)
			continue
		}
		for _, k := range []string{"time", "level", "msg"} {
			if s, ok := rec[k].(string); !ok || s == "" {
				t.Errorf("%s: %#v, want a string: %s", k, rec[k], l)
			}
		}
		for _, k := range []string{"grace", "duration", "retry_in", "lease_expires_in", "delivering_for"} {
			if v, ok := rec[k]; ok {
				if s, ok := v.(string); !ok {
					t.Errorf("%s: %#v, want a duration as a string: %s", k, v, l)
				} else if _, err := time.ParseDuration(s); err != nil {
					t.Errorf("%s: %q is not a Go duration: %s", k, s, l)
				}
			}
		}
		if rec["msg"] == "command finished" {
			finished[rec["level"]]++
			if _, ok := rec["duration"]; !ok {
				t.Errorf("command finished without its duration: %s", l)
			}
		}
	}
	if finished["INFO"] != 1 || finished["WARN"] != 1 {
		t.Errorf("lines 'command finished' by level %v, want one INFO, one WARN:\n%s", finished, stderr.String())
	}
}

// TestLogFormat_Refused: a -log-format or -log-level the agent cannot use
// stops it before it starts, exit 2, the flag named as -log-level's always
// was, and where a variable set it, which one.
func TestLogFormat_Refused(t *testing.T) {
	bin := buildAgent(t, "sa-host-path")
	for _, c := range []struct {
		args []string
		env  string
		want string
	}{
		{[]string{"-log-format", "yaml"}, "", `sa-host-path: -log-format must be text or json, not "yaml"` + "\nRun 'sa-host-path -help' for its flags.\n"},
		{[]string{"-log-format", "JSON"}, "", `-log-format must be text or json, not "JSON"`},
		{nil, "SPINBROKER_LOG_FORMAT=yaml", `-log-format must be text or json, not "yaml" (-log-format comes from SPINBROKER_LOG_FORMAT)`},
		{[]string{"-log-level", "loud"}, "", `-log-level must be debug, info, warn or error, not "loud"`},
		{nil, "SPINBROKER_LOG_LEVEL=loud", `-log-level must be debug, info, warn or error, not "loud" (-log-level comes from SPINBROKER_LOG_LEVEL)`},
		// Given as a flag, the variable is not the culprit.
		{[]string{"-log-level", "loud"}, "SPINBROKER_LOG_LEVEL=loud", `not "loud"` + "\n"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, bin, append([]string{"-url", "http://localhost:1", "-root", filepath.Join(t.TempDir(), "root")}, c.args...)...)
		cmd.Env = append(os.Environ(), "SPINBROKER_LOG_FORMAT=", "SPINBROKER_LOG_LEVEL=", c.env)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		cancel()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("%v %s: %v, want exit 2; stderr:\n%s", c.args, c.env, err, stderr.String())
			continue
		}
		if !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%v %s: stderr does not say %q:\n%s", c.args, c.env, c.want, stderr.String())
		}
	}
}

// TestLogFormat_Environment: SPINBROKER_LOG_FORMAT and SPINBROKER_LOG_LEVEL
// are the defaults of -log-format and -log-level, as of serve's flags, a
// flag wins over its variable, and -help says so.
func TestLogFormat_Environment(t *testing.T) {
	t.Setenv("SPINBROKER_LOG_FORMAT", "json")
	t.Setenv("SPINBROKER_LOG_LEVEL", "debug")
	for _, c := range []struct {
		args      []string
		json      bool
		wantDebug bool
	}{
		{nil, true, true},
		{[]string{"-log-format", "text", "-log-level", "info"}, false, false},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		f := Register(fs, "t", "test")
		var logs bytes.Buffer
		if err := f.Parse(fs, append([]string{"-url", "http://localhost:1"}, c.args...), &logs); err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		f.Logger().Debug("quiet", "took", 1500*time.Millisecond)
		f.Logger().Info("hello", "took", 1500*time.Millisecond)
		out := logs.String()
		if got := strings.Contains(out, "quiet"); got != c.wantDebug {
			t.Errorf("%v: debug line written %v, want %v:\n%s", c.args, got, c.wantDebug, out)
		}
		if got := strings.Contains(out, `{"time":`) && strings.Contains(out, `"took":"1.5s"`); got != c.json {
			t.Errorf("%v: JSON %v, want %v:\n%s", c.args, got, c.json, out)
		}
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	Register(fs, "t", "test")
	var help strings.Builder
	fs.SetOutput(&help)
	fs.PrintDefaults()
	for _, want := range []string{"(env SPINBROKER_LOG_FORMAT)", "(env SPINBROKER_LOG_LEVEL)", "json: one object per line"} {
		if !strings.Contains(help.String(), want) {
			t.Errorf("-help does not say %q:\n%s", want, help.String())
		}
	}
}

// agents are the two shipped agents, built once for the package's tests.
var agents struct {
	once sync.Once
	dir  string
	err  error
}

// buildAgent returns the path of the shipped agent name (sa-host-path or
// sa-emulation), both built on the first call.
func buildAgent(t *testing.T, name string) string {
	t.Helper()
	agents.once.Do(func() {
		if agents.dir, agents.err = os.MkdirTemp("", "spin-agentcmd-"); agents.err != nil {
			return
		}
		build := exec.Command("go", "build", "-o", agents.dir+"/",
			"github.com/spin-broker/spinbroker/cmd/sa-host-path", "github.com/spin-broker/spinbroker/cmd/sa-emulation")
		if out, err := build.CombinedOutput(); err != nil {
			agents.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if agents.err != nil {
		t.Fatal(agents.err)
	}
	return filepath.Join(agents.dir, name)
}

func TestMain(m *testing.M) {
	code := m.Run()
	if agents.dir != "" {
		os.RemoveAll(agents.dir)
	}
	os.Exit(code)
}

// TestLogFormatJSON_Fatal: with -log-format json, what stops an agent after
// its log flags were read (a -lease out of bounds, a -root that is a file,
// a root another agent holds) is one JSON record at error with the sentence the text format
// prints and its exit_code, and the exit code is the same, as spinbroker
// serve does: it was the one plain line that a log pipeline could not
// parse. The text format prints it as before.
func TestLogFormatJSON_Fatal(t *testing.T) {
	bin := buildAgent(t, "sa-host-path")
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	held := filepath.Join(dir, "held")
	st, err := hostpath.Open(held, hostpath.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, c := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"lease", []string{"-root", held, "-lease", "48h"}, 2, "-lease must be between 1s"},
		{"root a file", []string{"-root", file}, 2, "-root: " + file + " is not a folder"},
		{"root held", []string{"-root", held}, 1, "one agent per root"},
	} {
		for _, format := range []string{"text", "json"} {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			cmd := exec.CommandContext(ctx, bin, append([]string{"-url", "http://localhost:1", "-log-format", format}, c.args...)...)
			cmd.Env = append(os.Environ(), "SPINBROKER_LOG_FORMAT=", "SPINBROKER_LOG_LEVEL=")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			cancel()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != c.code {
				t.Errorf("%s, %s: %v, want exit %d; stderr:\n%s", c.name, format, err, c.code, stderr.String())
				continue
			}
			out := strings.TrimSpace(stderr.String())
			if format == "text" {
				if !strings.HasPrefix(out, "sa-host-path: ") || !strings.Contains(out, c.want) {
					t.Errorf("%s, text: want a line sa-host-path: …%s…, got:\n%s", c.name, c.want, out)
				}
				continue
			}
			lines := strings.Split(out, "\n")
			if len(lines) != 1 {
				t.Errorf("%s, json: %d lines, want the one record:\n%s", c.name, len(lines), out)
			}
			var rec map[string]any
			if err := json.Unmarshal([]byte(lines[len(lines)-1]), &rec); err != nil {
				t.Errorf("%s, json: the last line is not JSON:\n%s", c.name, out)
				continue
			}
			if msg, _ := rec["msg"].(string); rec["level"] != "ERROR" || !strings.Contains(msg, c.want) || rec["exit_code"] != float64(c.code) {
				t.Errorf("%s, json: want a record at ERROR whose msg says %q, exit_code %d, got:\n%s", c.name, c.want, c.code, out)
			}
		}
	}
}
