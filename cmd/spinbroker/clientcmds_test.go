package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/cobra"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/client"
	"github.com/spin-broker/spinbroker/internal/brokertest"
	"github.com/spin-broker/spinbroker/internal/store"
	"github.com/spin-broker/spinbroker/internal/store/storetest"
	"github.com/spin-broker/spinbroker/internal/tlsalert"
)

// The end-to-end tests run the real spinbroker binary, built once by
// TestMain, as a separate process against a real broker: the HTTP API on a
// SQLite file in a temporary directory, served by httptest.

// binary is the spinbroker binary under test.
var binary string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	flag.Parse()
	if f := flag.Lookup("test.fuzzworker"); f != nil && f.Value.String() == "true" {
		// A fuzzing worker runs only a fuzz target, which needs no binary:
		// building one in every worker slowed their start.
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "spinbroker-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "spinbroker")
	build := []string{"build", "-o", binary}
	if raceEnabled() {
		build = append(build, "-race") // the binary's goroutines are checked too
	}
	out, err := exec.Command("go", append(build, ".")...).CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// raceEnabled reports whether the tests were built with -race.
func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// broker is a real broker for one test.
type broker struct {
	t     *testing.T
	url   string
	db    *store.DB
	clock *storetest.Clock
	cl    *client.Client // for what the test does behind the CLI's back
}

// newBroker serves a broker whose clock moves only when the test moves it.
func newBroker(t *testing.T) *broker {
	t.Helper()
	return serveBroker(t, brokertest.WithClock())
}

// serveBroker serves a broker as opts say (on the wall clock unless
// brokertest.WithClock) until the test ends.
func serveBroker(t *testing.T, opts ...brokertest.Option) *broker {
	t.Helper()
	b := brokertest.Start(t, opts...)
	return &broker{t: t, url: b.URL, db: b.DB, clock: b.Clock, cl: b.Client}
}

// result is what one run of the binary did.
type result struct {
	stdout string
	stderr string
	code   int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// spin runs the binary with args against this broker.
func (b *broker) spin(args ...string) result {
	b.t.Helper()
	return spin(b.t, append(args, "--url", b.url)...)
}

// spin runs the binary with args, with none of the caller's SPINBROKER_
// variables, and waits for it (30s at most).
func spin(t *testing.T, args ...string) result {
	t.Helper()
	return spinEnv(t, nil, args...)
}

// spinEnv is spin with environment variables (NAME=value) added.
func spinEnv(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := command(ctx, env, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("spinbroker %s: %v", strings.Join(args, " "), err)
	}
	if ctx.Err() != nil {
		t.Fatalf("spinbroker %s: did not finish in time", strings.Join(args, " "))
	}
	return r
}

// command returns the binary with args, ready to start, with none of the
// caller's SPINBROKER_ variables but those in env.
func command(ctx context.Context, env []string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, binary, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SPINBROKER_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	// A binary built with -race sleeps a second before it exits, unless
	// told not to; a race it finds still makes it exit 66.
	cmd.Env = append(cmd.Env, "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	// Never a database in the working directory (the source tree); a
	// later entry of env overrides this one.
	cmd.Env = append(cmd.Env, "SPINBROKER_DB="+filepath.Join(os.TempDir(), "spinbroker-test-no-such-dir", "x.db"))
	cmd.Env = append(cmd.Env, env...)
	return cmd
}

// ok runs the binary and fails the test unless it exits 0.
func (b *broker) ok(args ...string) string {
	b.t.Helper()
	r := b.spin(args...)
	if r.code != 0 {
		b.t.Fatalf("spinbroker %s: %s", strings.Join(args, " "), r)
	}
	return r.stdout
}

// id runs a command that prints only an id, and returns it.
func (b *broker) id(args ...string) string {
	b.t.Helper()
	out := b.ok(args...)
	id, ok := spinbroker.ParseID(strings.TrimSuffix(out, "\n"))
	if !ok || out != id+"\n" {
		b.t.Fatalf("spinbroker %s printed %q, want only an id", strings.Join(args, " "), out)
	}
	return id
}

// decodeJSON decodes a command's -o json output, failing the test unless it
// is exactly one JSON document.
func decodeJSON(t *testing.T, out string, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode %q: %v", out, err)
	}
	if dec.More() {
		t.Fatalf("more than one JSON document in %q", out)
	}
}

func wantContains(t *testing.T, what, got string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(got, w) {
			t.Errorf("%s does not contain %q:\n%s", what, w, got)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	pkg := b.id("message", "new")
	const someID = "0190c3e4-7a6b-7c1d-9e2f-3a4b5c6d7e8f"
	tests := []struct {
		name string
		args []string
		want string // in stderr, before the pointer to --help
		help string // the command whose --help is suggested
	}{
		{"GroupAlone", []string{"message"}, "want a command", "spinbroker message"},
		{"UnknownSubcommand", []string{"package", "frobnicate"}, `unknown command "frobnicate"`, "spinbroker package"},
		{"UnknownFlag", []string{"message", "new", "--frob"}, "unknown flag: --frob", "spinbroker message new"},
		{"BadOutput", []string{"queue", "ls", "-o", "yaml"}, "--output must be table or json", "spinbroker queue ls"},
		{"NewWithArgument", []string{"message", "new", "x"}, "want no arguments", "spinbroker message new"},
		{"AddTooFewArguments", []string{"message", "add", pkg, "storage"}, "want PKG RESOURCE ACTION", "spinbroker message add"},
		{"AddBadPackageID", []string{"message", "add", "nope", "storage", "x"}, "PKG must be an id", "spinbroker message add"},
		{"AddBadResource", []string{"message", "add", pkg, "Storage", "x"}, `RESOURCE "Storage" is not a valid name`, "spinbroker message add"},
		{"AddBadAction", []string{"message", "add", pkg, "storage", "Start"}, `ACTION "Start" is not a valid name`, "spinbroker message add"},
		{"AddNotKeyValue", []string{"message", "add", pkg, "storage", "x", "size"}, `"size" is not of the form key=value`, "spinbroker message add"},
		{"AddWholeJSONObject", []string{"message", "add", pkg, "storage", "x", `{"url":"http://h/?a=b"}`}, "is JSON, not key=value: give each parameter as key=value", "spinbroker message add"},
		{"AddRepeatedKey", []string{"message", "add", pkg, "storage", "x", "a=1", "a=2"}, `"a" is given more than once`, "spinbroker message add"},
		{"AddKeyShapedLikeID", []string{"message", "add", pkg, "storage", "x", "--key", someID}, "shape of a UUID", "spinbroker message add"},
		{"AddBadMaxAttempts", []string{"message", "add", pkg, "storage", "x", "--max-attempts", "0"}, "--max-attempts must be between", "spinbroker message add"},
		{"AddBadLease", []string{"message", "add", pkg, "storage", "x", "--lease-duration", "soon"}, "invalid argument", "spinbroker message add"},
		{"AddBadNotBefore", []string{"message", "add", pkg, "storage", "x", "--not-before", "tomorrow"}, "not an RFC 3339 time", "spinbroker message add"},
		// A time the broker cannot keep is a mistake in the flag, as a
		// --max-attempts out of range is, not the broker's refusal (exit 1).
		{"AddNotBeforeOutOfRange", []string{"message", "add", pkg, "storage", "x", "--not-before", "0001-01-01T00:00:00Z"}, "--not-before must be from 1678-01-01 to before 2262-01-01", "spinbroker message add"},
		{"CompleteNotBool", []string{"message", "complete", someID, "maybe"}, "want true or false", "spinbroker message complete"},
		// Text that is not UTF-8 would reach the broker as U+FFFD, altered
		// without a word, as parameters and --key are not.
		{"CompleteReasonNotUTF8", []string{"message", "complete", someID, "false", "disk \xff full"}, `reason "disk \xff full" is not valid UTF-8`, "spinbroker message complete"},
		{"AddDepNotUTF8", []string{"message", "add", pkg, "storage", "x", "--dep", "vol\xff"}, `--dep "vol\xff" is not valid UTF-8`, "spinbroker message add"},
		{"CompleteTooMany", []string{"message", "complete", someID, "false", "a", "b"}, "want CMD true|false [reason]", "spinbroker message complete"},
		{"StatusNoPackage", []string{"message", "status"}, "want PKG", "spinbroker message status"},
		// Without --wait, status answers at once: a --timeout there would
		// be ignored, and 'status --timeout 10m' exit 3 at once.
		{"StatusTimeoutWithoutWait", []string{"message", "status", someID, "--timeout", "10m"}, "--timeout bounds --wait", "spinbroker message status"},
		{"StatusNegativeTimeout", []string{"message", "status", someID, "--wait", "--timeout", "-1s"}, "--timeout must not be negative", "spinbroker message status"},
		{"ListBadState", []string{"package", "ls", "--state", "done"}, "--state must be one of staging, queued", "spinbroker package ls"},
		{"ListBadLimit", []string{"package", "ls", "--limit", "0"}, "--limit must be between 1 and 1000", "spinbroker package ls"},
		{"ListAllWithCursor", []string{"package", "ls", "--all", "--cursor", "x"}, "does not take --cursor", "spinbroker package ls"},
		{"ShowBadID", []string{"command", "show", "12"}, "ID must be an id", "spinbroker command show"},
		{"QueueBadResource", []string{"queue", "show", "A B"}, "not a valid name", "spinbroker queue show"},
		{"QueueSetNothing", []string{"queue", "set", "storage"}, "nothing to set", "spinbroker queue set"},
		{"QueueSetBadConcurrency", []string{"queue", "set", "storage", "--concurrency", "0"}, "--concurrency must be between", "spinbroker queue set"},
		{"QueueSetBadPaused", []string{"queue", "set", "storage", "--paused=maybe"}, "invalid argument", "spinbroker queue set"},
		{"QueueSetPausedSpaceFalse", []string{"queue", "set", "storage", "--paused", "false"}, "--paused takes its value after an equals sign: --paused=false", "spinbroker queue set"},
		{"EventsWithArgument", []string{"events", "storage"}, "want no arguments, got 1", "spinbroker events"},
		{"EventsBadKind", []string{"events", "--kind", "commands"}, `--kind must be one of command, package, queue, not "commands"`, "spinbroker events"},
		{"EventsBadKindInList", []string{"events", "--kind", "command,resync"}, `not "resync"`, "spinbroker events"},
		{"EventsBadResource", []string{"events", "--resource", "Storage"}, `--resource "Storage" is not a valid name`, "spinbroker events"},
		{"EventsEmptyPackage", []string{"events", "--package", ""}, "--package must not be empty", "spinbroker events"},
		{"EventsQueuesOfAPackage", []string{"events", "--package", someID, "--kind", "queue"}, "a package's stream has no queue events", "spinbroker events"},
		{"EventsBadOutput", []string{"events", "-o", "yaml"}, "--output must be table or json", "spinbroker events"},
		{"EventsNegativeReconnect", []string{"events", "--reconnect-for", "-1s"}, "--reconnect-for must not be negative", "spinbroker events"},
		{"BadURL", []string{"queue", "ls", "--url", "localhost:8080"}, "is not a broker URL", "spinbroker queue ls"},
		// A port no host has was "cannot reach the broker ... invalid port",
		// exit 1: an outage, not a mistake in the command line.
		{"BadURLPort", []string{"queue", "ls", "--url", "http://localhost:99999"}, `--url "http://localhost:99999" is not a broker URL`, "spinbroker queue ls"},
		{"BadURLPortZero", []string{"message", "new", "--url", "http://127.0.0.1:0"}, `--url "http://127.0.0.1:0" is not a broker URL`, "spinbroker message new"},
		{"TokenNoRole", []string{"token", "create"}, "give --role", "spinbroker token create"},
		{"TokenBadRole", []string{"token", "create", "--role", "root"}, "--role must be one of admin, client, agent, viewer", "spinbroker token create"},
		{"TokenAgentWithoutResource", []string{"token", "create", "--role", "agent"}, "needs --resource", "spinbroker token create"},
		{"TokenResourceWithoutAgent", []string{"token", "create", "--role", "admin", "--resource", "storage"}, "only an agent token", "spinbroker token create"},
		// The name is checked before the database is opened, as the role is.
		{"TokenNameWithTab", []string{"token", "create", "--role", "admin", "--name", "ops\tteam"}, `--name must be at most 200 characters of UTF-8 text, without control characters (a tab, a line break), not "ops\tteam"`, "spinbroker token create"},
		{"TokenNameTooLong", []string{"token", "create", "--role", "admin", "--name", strings.Repeat("n", 201)}, "--name must be at most 200 characters", "spinbroker token create"},
		{"TokenRevokeShortPrefix", []string{"token", "revoke", "0190"}, "at least its first 8 characters", "spinbroker token revoke"},
		{"TokenDeleteShortPrefix", []string{"token", "delete", "0190"}, "at least its first 8 characters", "spinbroker token delete"},
		{"TokenExpiresWithoutUnit", []string{"token", "create", "--role", "admin", "--expires", "90"}, `--expires must be a number of days (90d), a Go duration (720h, 30m) or both (1d12h), not "90"`, "spinbroker token create"},
		{"TokenBadOutput", []string{"token", "ls", "-o", "yaml"}, "--output must be table or json", "spinbroker token ls"},
		// The commands on a database file refuse the flags of those that talk
		// to a broker, rather than ignore them.
		{"TokenWithURL", []string{"token", "ls", "--url", b.url}, "--url is for the commands that talk to a broker", "spinbroker token ls"},
		{"MigrateWithOutput", []string{"migrate", "status", "-o", "json"}, "--output is for the commands that talk to a broker", "spinbroker migrate"},
		{"ServeWithURL", []string{"serve", "--url", b.url}, "--url is for the commands that talk to a broker", "spinbroker serve"},
		{"BackupWithToken", []string{"backup", "--to", "x.db", "--token", "t"}, "--token is for the commands that talk to a broker", "spinbroker backup"},
		{"CompactWithOutput", []string{"compact", "-o", "table"}, "--output is for the commands that talk to a broker", "spinbroker compact"},
		// A stray argument is a usage error, not an "unknown command".
		{"ServeWithArgument", []string{"serve", "bogus"}, "want no arguments, got 1", "spinbroker serve"},
		{"BackupWithArgument", []string{"backup", "extra", "--to", "x.db"}, "want no arguments, got 1", "spinbroker backup"},
		{"CompactWithArgument", []string{"compact", "extra"}, "want no arguments, got 1", "spinbroker compact"},
		{"BenchWithArgument", []string{"bench", "extra"}, "want no arguments, got 1", "spinbroker bench"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := tt.args
			if !slices.Contains(args, "--url") && !slices.Contains([]string{"token", "migrate", "serve", "backup", "compact", "bench"}, args[0]) {
				args = append(args, "--url", b.url)
			}
			r := spin(t, args...)
			if r.code != 2 {
				t.Fatalf("exit %d, want 2\n%s", r.code, r)
			}
			if r.stdout != "" {
				t.Errorf("stdout = %q, want nothing", r.stdout)
			}
			wantContains(t, "stderr", r.stderr, tt.want, fmt.Sprintf("Run '%s --help' for usage.", tt.help))
		})
	}
}

func TestUnreachableBroker(t *testing.T) {
	t.Parallel()
	// A port that was just free: nothing listens there.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + l.Addr().String()
	l.Close()
	for _, args := range [][]string{
		{"message", "new"},
		{"message", "status", "0190c3e4-7a6b-7c1d-9e2f-3a4b5c6d7e8f", "--wait"},
		{"queue", "ls", "-o", "json"},
	} {
		r := spin(t, append(args, "--url", url)...)
		if r.code != exitTryAgain {
			t.Fatalf("%v: exit %d, want %d (try again)\n%s", args, r.code, exitTryAgain, r)
		}
		wantContains(t, "stderr", r.stderr, "cannot reach the broker", url, "--url or SPINBROKER_URL names it")
		if r.stdout != "" {
			t.Errorf("%v: stdout = %q, want nothing", args, r.stdout)
		}
	}
}

func TestBrokerErrors(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	const someID = "0190c3e4-7a6b-7c1d-9e2f-3a4b5c6d7e8f"
	r := b.spin("package", "show", someID)
	if r.code != 1 || !strings.Contains(r.stderr, "(not_found)") {
		t.Errorf("show of a missing package: %s", r)
	}
	pkg := b.id("message", "new")
	r = b.spin("message", "enqueue", pkg)
	if r.code != 1 || !strings.Contains(r.stderr, "(empty_package)") {
		t.Errorf("enqueue of an empty package: %s", r)
	}
	r = b.spin("message", "add", pkg, "storage", "x", "--dep", "nokey")
	if r.code != 1 || !strings.Contains(r.stderr, "(unknown_dependency)") {
		t.Errorf("add with an unknown dependency: %s", r)
	}
}

func TestCompletion(t *testing.T) {
	t.Parallel()
	r := spin(t, "completion", "bash")
	if r.code != 0 || !strings.Contains(r.stdout, "__start_spinbroker") {
		t.Fatalf("completion bash: %s", r)
	}
	for _, sh := range []string{"zsh", "fish", "powershell"} {
		if r := spin(t, "completion", sh); r.code != 0 || r.stdout == "" {
			t.Errorf("completion %s: %s", sh, r)
		}
	}
	// What the script asks the binary for when a user presses tab.
	r = spin(t, "__complete", "package", "ls", "--state", "")
	wantContains(t, "completions of --state", r.stdout, "staging\n", "failed\n", ":4\n")
	r = spin(t, "__complete", "token", "create", "--role", "")
	wantContains(t, "completions of --role", r.stdout, "admin\n", "agent\n")
	r = spin(t, "__complete", "queue", "")
	wantContains(t, "completions of queue", r.stdout, "ls\t", "pause\t", "resume\t", "set\t", "show\t")

	// Ids and resources come from the broker.
	b := newBroker(t)
	pkg := b.id("message", "new")
	b.id("message", "add", pkg, "storage", "add_volume")
	r = spin(t, "__complete", "package", "show", "--url", b.url, "")
	wantContains(t, "completions of package show", r.stdout, pkg+"\tstaging\n", ":4\n")
	r = spin(t, "__complete", "message", "status", "--url", b.url, pkg[:4])
	wantContains(t, "completions of message status", r.stdout, pkg+"\tstaging\n")
	b.ok("message", "enqueue", pkg)
	r = spin(t, "__complete", "queue", "pause", "--url", b.url, "st")
	wantContains(t, "completions of queue pause", r.stdout, "storage\n")
	// No broker: nothing to offer, and no file names either.
	r = spin(t, "__complete", "package", "show", "--url", "http://127.0.0.1:1", "")
	if r.code != 0 || strings.TrimSpace(r.stdout) != ":4" {
		t.Errorf("completion without a broker: %s", r)
	}
}

// TestHelp checks that every client command explains itself with an
// example, without running anything.
func TestHelp(t *testing.T) {
	t.Parallel()
	a := &app{stdout: io.Discard, stderr: io.Discard}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			walk(sub)
		}
		if c.Short == "" || c.Long == "" {
			t.Errorf("%s: no Short or Long help", c.CommandPath())
		}
		if !c.HasSubCommands() && c.Example == "" {
			t.Errorf("%s: no Example", c.CommandPath())
		}
		if !c.HasSubCommands() && c.Args == nil {
			t.Errorf("%s: its arguments are not checked", c.CommandPath())
		}
	}
	for _, c := range a.clientCommands() {
		walk(c)
	}
	// A script needs the exit codes, and finds them where it finds the
	// commands: they were only in the README and in a few commands' help.
	r := spin(t, "--help")
	wantContains(t, "spinbroker --help", r.stdout, "Exit status:", "0 ", "1 ", "2 ", "130", "143",
		"could not be reached", "'message status', 'check' and 'bench'")
	r = spin(t, "message", "add", "--help")
	if r.code != 0 {
		t.Fatalf("message add --help: %s", r)
	}
	wantContains(t, "message add --help", r.stdout, "Usage:\n  spinbroker message add PKG RESOURCE ACTION", "Examples:", "--dep")
	r = spin(t, "message", "--help")
	if r.code != 0 || strings.Contains(r.stdout, "spinbroker message [flags]") {
		t.Errorf("message --help shows a usage line of its own: %s", r)
	}
}

// TestTLSMistakes: a broker reached over TLS whose certificate this host
// does not trust is not "cannot reach the broker": the message says what
// is not trusted and names SSL_CERT_FILE; one trusted but reached by a
// name it is not for says so, not to set SSL_CERT_FILE (which is); an
// https:// URL for a broker that speaks plain HTTP says to use http://, and
// an http:// URL for a TLS server, https://.
func TestTLSMistakes(t *testing.T) {
	t.Parallel()
	tlsSrv := httptest.NewTLSServer(http.NotFoundHandler())
	defer tlsSrv.Close()
	plain := httptest.NewServer(http.NotFoundHandler())
	defer plain.Close()
	alert := tlsalert.Listen(t)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsSrv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	// httptest's certificate is for example.com, 127.0.0.1 and ::1, not
	// localhost.
	wrongName := strings.Replace(tlsSrv.URL, "127.0.0.1", "localhost", 1)
	r := spinEnv(t, []string{"SSL_CERT_FILE=" + ca}, "queue", "ls", "--url", wrongName)
	wantContains(t, "stderr", r.stderr, "not for the name in --url", "use one of its names")
	if strings.Contains(r.stderr, "SSL_CERT_FILE") || r.code != 1 {
		t.Errorf("a certificate for other names: exit %d, %q", r.code, r.stderr)
	}
	for _, c := range []struct {
		url  string
		want []string
	}{
		{tlsSrv.URL, []string{"TLS certificate is not trusted here", "SSL_CERT_FILE"}},
		{strings.Replace(plain.URL, "http://", "https://", 1), []string{"speaks plain HTTP", "http:// URL", "SPINBROKER_URL): " + plain.URL + "\n"}},
		// Go's server answers plain HTTP on a TLS port with a 400 of its
		// own, which read as a mistake in the request.
		{strings.Replace(tlsSrv.URL, "https://", "http://", 1), []string{"speaks HTTPS, not plain HTTP", "https:// URL", "SPINBROKER_URL): " + tlsSrv.URL + "\n"}},
		// Others (OpenSSL's) with an alert record, which read as "cannot
		// reach the broker", exit 4.
		{"http://" + alert, []string{"speaks HTTPS, not plain HTTP", "https:// URL", "SPINBROKER_URL): https://" + alert + "\n"}},
	} {
		r := spin(t, "queue", "ls", "--url", c.url)
		if r.code != 1 {
			t.Errorf("%s: exit %d, want 1\n%s", c.url, r.code, r)
		}
		wantContains(t, "stderr", r.stderr, c.want...)
		if strings.Contains(r.stderr, "cannot reach the broker") {
			t.Errorf("%s: %q blames the network", c.url, r.stderr)
		}
	}
}

// TestBadToken: a token no HTTP header can carry (two lines of a file, a
// tab pasted in) is refused as what it is, whether from --token or from
// SPINBROKER_TOKEN; blaming the --url, which is right, sent the operator to
// look for a mistake that was not there.
func TestBadToken(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	for _, tt := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"Flag", nil, []string{"--token", "sbt_A\nsbt_B"}, "--token"},
		{"Env", []string{"SPINBROKER_TOKEN=sbt_A\tB"}, nil, "SPINBROKER_TOKEN"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := spinEnv(t, tt.env, append([]string{"queue", "ls", "--url", b.url}, tt.args...)...)
			if r.code != 2 {
				t.Fatalf("exit %d, want 2\n%s", r.code, r)
			}
			wantContains(t, "stderr", r.stderr, tt.want, "control character")
			if strings.Contains(r.stderr, "not a broker URL") {
				t.Errorf("stderr blames the URL:\n%s", r.stderr)
			}
			if r.stdout != "" {
				t.Errorf("stdout = %q, want nothing", r.stdout)
			}
		})
	}
}

// TestInterrupted: Ctrl-C (or SIGTERM) on any client command waiting for a
// broker that does not answer ends it with the shell's 130 (143) and says
// so, as 'message status --wait' does; not with exit 1 and "cannot reach the
// broker: ...: SIGINT", which reads as an outage and, in a script, as a
// failure of the command.
func TestInterrupted(t *testing.T) {
	t.Parallel()
	arrived := make(chan struct{}, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-r.Context().Done() // a broker that does not answer
	}))
	t.Cleanup(srv.Close)
	for _, sig := range []struct {
		name string
		sig  os.Signal
		code int
	}{{"interrupted", os.Interrupt, 130}, {"terminated", syscall.SIGTERM, 143}} {
		t.Run(sig.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := command(ctx, nil, "queue", "ls", "--url", srv.URL)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			select {
			case <-arrived:
			case <-ctx.Done():
				t.Fatal("the request never arrived")
			}
			if err := cmd.Process.Signal(sig.sig); err != nil {
				t.Fatal(err)
			}
			err := cmd.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != sig.code {
				t.Fatalf("%v, want exit %d\nstderr:\n%s", err, sig.code, stderr.String())
			}
			if got, want := stderr.String(), "spinbroker: "+sig.name+"\n"; got != want {
				t.Errorf("stderr = %q, want %q", got, want)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout = %q, want nothing", stdout.String())
			}
		})
	}
}

// TestBadURLFromEnv: a SPINBROKER_URL the client cannot use is named as
// such; "--url ... is not a broker URL" sent the operator looking for a
// flag they never typed.
func TestBadURLFromEnv(t *testing.T) {
	t.Parallel()
	r := spinEnv(t, []string{"SPINBROKER_URL=localhost:8080"}, "queue", "ls")
	if r.code != 2 {
		t.Fatalf("exit %d, want 2\n%s", r.code, r)
	}
	wantContains(t, "stderr", r.stderr, `SPINBROKER_URL "localhost:8080" is not a broker URL`)
	r = spinEnv(t, []string{"SPINBROKER_URL=http://localhost:99999"}, "queue", "ls")
	if r.code != 2 {
		t.Fatalf("exit %d, want 2\n%s", r.code, r)
	}
	wantContains(t, "stderr", r.stderr, `SPINBROKER_URL "http://localhost:99999" is not a broker URL`)
	if strings.Contains(r.stderr, "--url \"") {
		t.Errorf("stderr blames --url, which was not given:\n%s", r.stderr)
	}
	// The flag, when given, is what is named, whatever the variable says.
	r = spinEnv(t, []string{"SPINBROKER_URL=http://localhost:8080"}, "queue", "ls", "--url", "localhost:8080")
	if r.code != 2 {
		t.Fatalf("exit %d, want 2\n%s", r.code, r)
	}
	wantContains(t, "stderr", r.stderr, `--url "localhost:8080" is not a broker URL`)
}

// TestBrokerDoesNotAnswer: a broker that takes the connection and never
// answers (stopped with SIGSTOP, a disk that hangs, a proxy with no
// upstream) ends a client command after answerTimeout with a sentence
// that says so, rather than hang a terminal or a cron job for ever. Not
// parallel: it shortens answerTimeout, which the parallel tests, run after
// it, never see changed.
func TestBrokerDoesNotAnswer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // else the server never sees the client go
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	defer func(d time.Duration) { answerTimeout = d }(answerTimeout)
	answerTimeout = 300 * time.Millisecond
	for _, args := range [][]string{{"queue", "ls"}, {"message", "new"}, {"message", "new", "--idempotency-key", "k"}} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		var stdout, stderr bytes.Buffer
		code := run(ctx, append(args, "--url", srv.URL), nil, &stdout, &stderr)
		if ctx.Err() != nil {
			t.Fatalf("%v: still waiting after 20s", args)
		}
		cancel()
		if code != exitTryAgain {
			t.Errorf("%v: exit %d, want %d (try again)\nstderr:\n%s", args, code, exitTryAgain, stderr.String())
		}
		wantContains(t, "stderr", stderr.String(), "the broker did not answer within 300ms")
		if write := args[0] == "message"; strings.Contains(stderr.String(), "may have been made") != write {
			t.Errorf("%v: stderr says whether a change may have been made only of a write:\n%s", args, stderr.String())
		}
		// A write sent with a key is safe to repeat, and the message says so.
		if keyed := len(args) > 2; strings.Contains(stderr.String(), "with the same --idempotency-key") != keyed ||
			strings.Contains(stderr.String(), "look before you repeat it") == keyed && args[0] == "message" {
			t.Errorf("%v: stderr says to repeat with the key only when one was sent:\n%s", args, stderr.String())
		}
		if stdout.Len() != 0 {
			t.Errorf("%v: stdout = %q, want nothing", args, stdout.String())
		}
	}
}

// TestFlagValueErrors: a flag value of the wrong kind is refused in one
// sentence that says what the flag takes, not with the Go parser's error
// ("strconv.ParseInt: parsing \"abc\": invalid syntax", "time: missing
// unit in duration \"5\"").
func TestFlagValueErrors(t *testing.T) {
	t.Parallel()
	const someID = "0190c3e4-7a6b-7c1d-9e2f-3a4b5c6d7e8f"
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"message", "add", someID, "storage", "x", "--max-attempts", "abc"}, `invalid argument "abc" for --max-attempts: want a whole number`},
		{[]string{"message", "add", someID, "storage", "x", "--max-attempts", "99999999999999999999"}, `invalid argument "99999999999999999999" for --max-attempts: want a whole number`},
		{[]string{"message", "add", someID, "storage", "x", "--lease-duration", "5"}, `invalid argument "5" for --lease-duration: want a duration such as 90s, 5m or 1h30m`},
		{[]string{"message", "status", someID, "--wait", "--timeout", "10 minutes"}, `invalid argument "10 minutes" for --timeout: want a duration`},
		{[]string{"queue", "set", "storage", "--paused=maybe"}, `invalid argument "maybe" for --paused: want true or false`},
		{[]string{"serve", "--sweep-interval", "5"}, `invalid argument "5" for --sweep-interval: want a duration`},
	} {
		r := spin(t, append(tt.args, "--url", "http://127.0.0.1:1")...)
		if tt.args[0] == "serve" {
			r = spin(t, tt.args...)
		}
		if r.code != 2 {
			t.Errorf("%v: exit %d, want 2\n%s", tt.args, r.code, r)
			continue
		}
		wantContains(t, "stderr", r.stderr, tt.want)
		for _, chain := range []string{"strconv.", "time: ", `flag: `} {
			if strings.Contains(r.stderr, chain) {
				t.Errorf("%v: stderr has Go's parser error (%q) in it:\n%s", tt.args, chain, r.stderr)
			}
		}
	}
}

// TestHelpAndCompletionTypos: cobra's own 'help' and 'completion' printed
// a help and exited 0 for a topic or a shell they do not know, so that
// 'spinbroker completion tcsh > file' wrote a help text as the script and
// a script's typo went unseen; they are usage errors now, as an unknown
// command of any group is (see group). What they know still works.
func TestHelpAndCompletionTypos(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args []string
		want string
		help string
	}{
		{[]string{"completion", "tcsh"}, `unknown shell "tcsh" for "spinbroker completion"; want one of: bash, fish, powershell, zsh`, "spinbroker completion"},
		{[]string{"completion"}, "want a shell: bash, fish, powershell, zsh", "spinbroker completion"},
		// cobra's own check of a shell's arguments exited 1, not 2.
		{[]string{"completion", "bash", "extra"}, "want no arguments, got 1", "spinbroker completion bash"},
		{[]string{"completion", "zsh", "a", "b"}, "want no arguments, got 2", "spinbroker completion zsh"},
		{[]string{"help", "nosuch"}, `no help topic "nosuch"`, "spinbroker"},
		{[]string{"help", "package", "lss"}, `no help topic "package lss"`, "spinbroker"},
	} {
		r := spin(t, tt.args...)
		if r.code != 2 {
			t.Errorf("%v: exit %d, want 2\n%s", tt.args, r.code, r)
			continue
		}
		if r.stdout != "" {
			t.Errorf("%v: stdout = %q, want nothing", tt.args, r.stdout)
		}
		wantContains(t, "stderr", r.stderr, tt.want, fmt.Sprintf("Run '%s --help' for usage.", tt.help))
	}
	for _, args := range [][]string{{"completion", "bash"}, {"completion", "zsh"}, {"help"}, {"help", "package", "ls"}, {"completion", "--help"}} {
		r := spin(t, args...)
		if r.code != 0 || r.stdout == "" || r.stderr != "" {
			t.Errorf("%v: %s", args, r)
		}
	}
	if r := spin(t, "help", "package", "ls"); !strings.Contains(r.stdout, "spinbroker package ls [flags]") {
		t.Errorf("help package ls is not ls's help:\n%s", r.stdout)
	}
}

// TestWrongKindOfID: a command's id where a package's is wanted (the
// README's tour keeps both in variables, and 'message add' prints command
// ids), or the other way round, is not only "not found": the error says
// what the id is, and the command that takes it.
func TestWrongKindOfID(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	pkg := b.id("message", "new")
	cmd := b.id("message", "add", pkg, "storage", "x")
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"package", "show", cmd}, cmd + " is a command's id (of package " + pkg + "): spinbroker command show " + cmd},
		{[]string{"message", "status", cmd, "--wait"}, cmd + " is a command's id (of package " + pkg + ")"},
		{[]string{"message", "enqueue", cmd}, cmd + " is a command's id (of package " + pkg + ")"},
		{[]string{"message", "add", cmd, "storage", "y"}, cmd + " is a command's id (of package " + pkg + ")"},
		{[]string{"command", "show", pkg}, pkg + " is a package's id: spinbroker package show " + pkg},
		{[]string{"message", "complete", pkg, "true"}, pkg + " is a package's id: spinbroker package show " + pkg},
	} {
		r := b.spin(tt.args...)
		if r.code != 1 {
			t.Errorf("%v: exit %d, want 1\n%s", tt.args, r.code, r)
			continue
		}
		wantContains(t, "stderr", r.stderr, "not found", tt.want)
	}
	// An id of nothing is only not found.
	const someID = "0190c3e4-7a6b-7c1d-9e2f-3a4b5c6d7e8f"
	if r := b.spin("package", "show", someID); r.code != 1 || strings.Contains(r.stderr, "'s id") {
		t.Errorf("show of a missing package: %s", r)
	}
}

// TestHelpShowsNoSecret: --help, often pasted into an issue or shown on a
// shared screen, never shows the token of SPINBROKER_TOKEN or a password in
// SPINBROKER_URL as a flag's default, as the agents' -help does not.
func TestHelpShowsNoSecret(t *testing.T) {
	t.Parallel()
	const token, password = "sbt_HELPSHOWSNOSECRETHELPSHOWSNOSE", "hunter2pw"
	env := []string{"SPINBROKER_TOKEN=" + token, "SPINBROKER_URL=http://ops:" + password + "@localhost:1"}
	for _, args := range [][]string{{"--help"}, {"package", "ls", "--help"}, {"message", "add", "--help"}} {
		r := spinEnv(t, env, args...)
		if r.code != 0 {
			t.Fatalf("%v: %s", args, r)
		}
		if strings.Contains(r.stdout+r.stderr, token) || strings.Contains(r.stdout+r.stderr, password) {
			t.Errorf("spinbroker %s shows a secret:\n%s", strings.Join(args, " "), r)
		}
		if args[0] != "--help" {
			wantContains(t, strings.Join(args, " "), r.stdout, "SPINBROKER_TOKEN", "--url")
		}
	}
}

// TestBadURLMasksPassword: a broker URL that is refused is named with the
// password of its user info (a proxy's basic auth) masked, as --help and
// the connection errors mask it: stderr ends up in terminals' scrollback,
// CI logs and issues.
func TestBadURLMasksPassword(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"ftp://ops:hunter2@localhost:8080", "http://ops:hunter2@localhost:8080:99"} {
		r := spinEnv(t, []string{"SPINBROKER_URL=" + u}, "queue", "ls")
		if r.code != 2 {
			t.Fatalf("SPINBROKER_URL=%s: exit %d, want 2\n%s", u, r.code, r)
		}
		wantContains(t, "stderr", r.stderr, "is not a broker URL")
		wantContains(t, "stderr", r.stderr, "ops:xxxxx@localhost")
		if strings.Contains(r.stderr, "hunter2") {
			t.Errorf("SPINBROKER_URL=%s: stderr shows the password:\n%s", u, r.stderr)
		}
	}
}

// TestNotTheBroker: a --url that reaches another web server (a wrong
// port, a proxy's own page) is said to be that, on one line: the server's
// HTML page was printed as the error, over many lines and with whatever
// terminal controls it held, under the code of its status ("(not_found)",
// which read as a package that does not exist), and a page answered 200
// was Go's "invalid character '<' looking for beginning of value" (and
// for events, five minutes of reconnecting).
func TestNotTheBroker(t *testing.T) {
	t.Parallel()
	const someID = "0190c3e4-7a6b-7c1d-9e2f-3a4b5c6d7e8f"
	for _, tt := range []struct {
		name   string
		status int
		ctype  string
		body   string
	}{
		{"Page404", http.StatusNotFound, "text/html", "<!DOCTYPE HTML>\n<html>\n  <body>\x1b[31mNot Found\x1b[0m</body>\n</html>\n"},
		{"Page200", http.StatusOK, "text/html", "<html>\n<body>It works!</body>\n</html>\n"},
		{"OtherJSON", http.StatusOK, "application/json", `[{"name":"not a queue"}]`},
		{"ProxyDown", http.StatusBadGateway, "text/html", "<html><head><title>502 Bad Gateway</title></head>\n<body>nginx</body></html>\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tt.ctype)
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			}))
			t.Cleanup(srv.Close)
			for _, args := range [][]string{
				{"queue", "ls", "-o", "json"},
				{"package", "show", someID},
				{"message", "new"},
				// A page answered 200 is no event stream: it was followed
				// as one that ended, again and again for --reconnect-for.
				{"events"},
			} {
				r := spin(t, append(args, "--url", srv.URL)...)
				// A proxy whose broker is down: the same command may
				// succeed later. Another server: it will not.
				want := 1
				if tt.status == http.StatusBadGateway {
					want = exitTryAgain
				}
				if r.code != want || r.stdout != "" {
					t.Errorf("%v: want exit %d and nothing on stdout\n%s", args, want, r)
				}
				wantContains(t, "stderr", r.stderr, "not spin-broker", "--url or SPINBROKER_URL")
				if n := strings.Count(r.stderr, "\n"); n != 1 {
					t.Errorf("%v: stderr has %d lines, want 1:\n%s", args, n, r.stderr)
				}
				for _, bad := range []string{"\x1b", "(not_found)", "invalid character", "cannot unmarshal", "client: decode"} {
					if strings.Contains(r.stderr, bad) {
						t.Errorf("%v: stderr holds %q:\n%s", args, bad, r.stderr)
					}
				}
			}
		})
	}
}

// TestRedirectLoop: a --url that redirects in a loop is a wrong address,
// exit 1, said as one, for a read, a write and events (which give up at
// once): it was "cannot reach the broker: ... stopped after 10 redirects",
// exit 4, ask again later.
func TestRedirectLoop(t *testing.T) {
	t.Parallel()
	loop := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, r.URL.RequestURI(), http.StatusTemporaryRedirect)
	}))
	t.Cleanup(loop.Close)
	for _, args := range [][]string{{"queue", "ls"}, {"message", "new"}, {"events"}} {
		r := spin(t, append(args, "--url", loop.URL)...)
		if r.code != 1 {
			t.Errorf("%s at a URL that loops: exit %d, want 1\n%s", args, r.code, r)
		}
		wantContains(t, "stderr", r.stderr, "redirects", "again and again", loop.URL, "--url or SPINBROKER_URL")
		if strings.Contains(r.stderr, "cannot reach the broker") || strings.Contains(r.stderr, "give New") {
			t.Errorf("%s: stderr blames the network or speaks of the Go client:\n%s", args, r.stderr)
		}
	}
}

// TestRedirectedWrite: a --url that redirects (a proxy sending http to
// https, an old address) is followed for reads, but a write, which Go's
// client sends again as a GET without its body, is refused in the CLI's
// words: the client's error told the user to "give New the broker's URL",
// the name of a Go function.
func TestRedirectedWrite(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, b.url+r.URL.RequestURI(), http.StatusMovedPermanently)
	}))
	t.Cleanup(redirect.Close)
	if r := spin(t, "queue", "ls", "-o", "json", "--url", redirect.URL); r.code != 0 {
		t.Errorf("a read through a redirect: %s", r)
	}
	r := spin(t, "message", "new", "--url", redirect.URL)
	if r.code != 1 || r.stdout != "" {
		t.Fatalf("a write through a redirect: want exit 1 and nothing on stdout\n%s", r)
	}
	wantContains(t, "stderr", r.stderr, "redirect", b.url+"/packages", "--url or SPINBROKER_URL", "("+b.url+")")
	if strings.Contains(r.stderr, "give New") || strings.Contains(r.stderr, "client:") {
		t.Errorf("stderr speaks of the Go client:\n%s", r.stderr)
	}
	list, err := b.cl.Packages(context.Background(), client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Packages) != 0 {
		t.Errorf("the broker has %d package(s), want none", len(list.Packages))
	}
}

// TestExitTryAgain: a script tells "the broker said no" (exit 1) from "ask
// again later" (exit 4). A broker whose store has closed under it (the
// last moment of a stop) answers 503: the same command may succeed once
// it is back. (Unreachable and silent brokers:
// TestUnreachableBroker, TestBrokerDoesNotAnswer.)
func TestExitTryAgain(t *testing.T) {
	t.Parallel()
	const someID = "0190c3e4-7a6b-7c1d-9e2f-3a4b5c6d7e8f"
	b := newBroker(t)
	if r := spin(t, "package", "show", someID, "--url", b.url); r.code != 1 {
		t.Fatalf("a package the broker does not have: want exit 1\n%s", r)
	}
	if err := b.db.Close(); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"package", "show", someID},
		{"message", "new"},
		{"message", "status", someID},
	} {
		r := spin(t, append(args, "--url", b.url)...)
		if r.code != exitTryAgain || r.stdout != "" {
			t.Errorf("%v against a broker without its database: want exit %d and nothing on stdout\n%s", args, exitTryAgain, r)
		}
	}
}

// TestInterruptedWrite: Ctrl-C while the broker holds a write's request
// says that the change may have been made, as a timeout does; a read cut
// short says no such thing.
func TestInterruptedWrite(t *testing.T) {
	t.Parallel()
	arrived := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		arrived <- struct{}{}
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	for _, args := range [][]string{{"message", "new"}, {"queue", "ls"}} {
		ctx, cancel := context.WithCancelCause(context.Background())
		go func() {
			select {
			case <-arrived:
				cancel(errInterrupted)
			case <-time.After(20 * time.Second):
				cancel(errors.New("the request never arrived"))
			}
		}()
		var stdout, stderr bytes.Buffer
		code := run(ctx, append(args, "--url", srv.URL), nil, &stdout, &stderr)
		if code != exitInterrupted {
			t.Errorf("%v: exit %d, want %d\nstderr:\n%s", args, code, exitInterrupted, stderr.String())
		}
		wantContains(t, "stderr", stderr.String(), "interrupted")
		if write := args[0] == "message"; strings.Contains(stderr.String(), "may have been made") != write {
			t.Errorf("%v: stderr says whether a change may have been made only of a write:\n%s", args, stderr.String())
		}
		if stdout.Len() != 0 {
			t.Errorf("%v: stdout = %q, want nothing", args, stdout.String())
		}
	}
}
