// Package agentcmd is what the agents' commands share: their common flags
// (the broker, the token, the grace period, the lease, the log format and
// level), the signal handling, and the set-up of the logger and the client.
package agentcmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/agent"
	"github.com/spin-broker/spinbroker/client"
	"github.com/spin-broker/spinbroker/cmd/internal/logging"
	"github.com/spin-broker/spinbroker/internal/version"
)

// Main runs an agent's run function with a context that SIGINT or SIGTERM
// ends (a second signal ends the process at once). It exits 2 on a usage
// error (a flag that is unknown, missing or out of range), as spinbroker
// does, and 1 on any other error.
func Main(name string, run func(ctx context.Context, args []string, stderr io.Writer) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second signal ends the process at once
	}()
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	var ue *UsageError
	var le *loggedError
	switch {
	case errors.Is(err, flag.ErrHelp):
	case errors.As(err, &le): // before usage errors: Fatal logs those too
		os.Exit(le.code) // its log line said why
	case errors.As(err, &ue):
		fmt.Fprintf(os.Stderr, "%s: %v\nRun '%s -help' for its flags.\n", name, err, name)
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}

// Logged marks an error the agent has logged already, agent.Run's: Main
// exits 1 without printing it a second time. Logged(nil) is nil.
func Logged(err error) error {
	if err == nil {
		return nil
	}
	return &loggedError{err: err, code: 1}
}

// loggedError is an error logged already, and the code Main exits with.
type loggedError struct {
	err  error
	code int
}

func (e *loggedError) Error() string { return e.err.Error() }
func (e *loggedError) Unwrap() error { return e.err }

// UsageError is a command line the agent cannot run with: Main exits 2.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Usagef returns a *UsageError.
func Usagef(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// Folder checks the folder a flag names: one not there yet is no mistake
// (the agent makes it, or another agent does), but anything else of that
// name is a usage error naming the flag, as is an empty one (-root "",
// a variable that was not set), which names no folder. exists says whether
// it is there.
func Folder(flag, path string) (exists bool, err error) {
	if path == "" {
		return false, Usagef("-%s is empty: give it a folder", flag)
	}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	case err != nil:
		return false, Usagef("-%s: %w", flag, err)
	case !fi.IsDir():
		return false, Usagef("-%s: %s is not a folder", flag, path)
	}
	return true, nil
}

// Flags are the flags every agent takes.
type Flags struct {
	name   string
	about  string
	url    string
	token  string
	grace  time.Duration
	lease  time.Duration
	format string
	level  string
	vers   bool

	log    *slog.Logger
	client *client.Client
}

// Register adds the common flags to fs, and a -help that starts with
// about: what the agent does and the actions it takes.
func Register(fs *flag.FlagSet, name, about string) *Flags {
	f := &Flags{name: name, about: about}
	fs.StringVar(&f.url, "url", os.Getenv("SPINBROKER_URL"), "the broker's URL, http:// or https:// (env SPINBROKER_URL)")
	// -help shows the default, here from the environment: without a
	// password in it, as the start line shows the URL.
	fs.Lookup("url").DefValue = client.RedactURL(f.url)
	fs.StringVar(&f.token, "token", "", "a bearer token for the broker (default $SPINBROKER_TOKEN, kept out of this help)")
	fs.DurationVar(&f.grace, "grace", agent.DefaultGrace, "how long the running command may go on after SIGINT or SIGTERM; 0 for none")
	fs.DurationVar(&f.lease, "lease", 0, fmt.Sprintf("the lease to ask for each command, %s to %s (default: the command's own, else 60s)", spinbroker.MinLease, spinbroker.MaxLease))
	fs.StringVar(&f.format, "log-format", envOr("SPINBROKER_LOG_FORMAT", "text"), "text, or json: one object per line, as the broker writes them (env SPINBROKER_LOG_FORMAT)")
	fs.StringVar(&f.level, "log-level", envOr("SPINBROKER_LOG_LEVEL", "info"), "debug, info, warn or error (env SPINBROKER_LOG_LEVEL)")
	fs.BoolVar(&f.vers, "version", false, "print the version and exit")
	return f
}

// Parse parses args into fs and checks the common flags, so that a wrong
// one stops the agent before it starts rather than at its first poll. Its
// errors are (or wrap, logged by Fatal) *UsageError, but for -help and
// -version (flag.ErrHelp: Main exits 0).
func (f *Flags) Parse(fs *flag.FlagSet, args []string, stderr io.Writer) error {
	// The flag package prints its error and the whole help on a wrong
	// flag; Main prints the error and where the help is instead.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := fs.Parse(args)
	fs.SetOutput(stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		// Help that was asked for is output (-help | less), not an error.
		fmt.Fprintf(os.Stdout, "%s\n\nUsage: %s -url URL [flags]\n\nFlags:\n", f.about, f.name)
		fs.SetOutput(os.Stdout)
		fs.PrintDefaults()
		fs.SetOutput(stderr)
		return err
	case err != nil:
		return &UsageError{Err: err}
	case fs.NArg() > 0:
		return Usagef("unexpected arguments %q", fs.Args())
	}
	if f.vers {
		fmt.Println(f.name, "version", version.Get())
		return flag.ErrHelp // done: Main exits 0
	}
	if f.token == "" {
		f.token = os.Getenv("SPINBROKER_TOKEN")
	}
	// Read once, then out of the environment: every program the agent
	// runs inherits it (QEMU for each VM, for as long as the VM runs, a
	// --qemu wrapper, qemu-img, systemctl), and none of them needs the
	// broker's token.
	// Nor may they read it in /proc/PID/environ, which the kernel keeps
	// as it was at exec.
	_, inEnv := os.LookupEnv("SPINBROKER_TOKEN")
	_ = os.Unsetenv("SPINBROKER_TOKEN")
	var scrubErr error
	if inEnv {
		scrubErr = scrubEnviron("SPINBROKER_TOKEN")
	}
	// The logger first, so that with -log-format json the other flags'
	// refusals are records too (Fatal); its own are said plainly.
	log, err := logging.New(stderr, f.format, f.level)
	if err != nil { // "log-level must be …": the flag's name comes first
		name, _, _ := strings.Cut(err.Error(), " ")
		return Usagef("-%w%s", err, fromEnv(fs, name))
	}
	f.log = log
	if scrubErr != nil {
		log.Warn("SPINBROKER_TOKEN is still readable in /proc/self/environ (ps e) by processes of this user", "err", scrubErr)
	}
	return f.Fatal(f.check(fs))
}

// check checks the common flags but the log flags, and makes the client.
func (f *Flags) check(fs *flag.FlagSet) error {
	if f.url == "" {
		return Usagef("-url (or SPINBROKER_URL) is required")
	}
	if f.grace < 0 {
		return Usagef("-grace must not be negative, not %s", f.grace)
	}
	leaseSet := false
	fs.Visit(func(fl *flag.Flag) { leaseSet = leaseSet || fl.Name == "lease" })
	if leaseSet { // -lease 0s too: API.md refuses a lease of 0
		if err := spinbroker.CheckLease("-lease", f.lease); err != nil {
			return &UsageError{Err: errors.New(spinbroker.ErrorMessage(err))}
		}
	}
	if _, err := client.New(f.url); err != nil {
		return Usagef("-url: %w", err)
	}
	c, err := client.New(f.url, client.WithToken(f.token), client.WithUserAgent(f.name+"/1"))
	if err != nil { // the URL passed above: the token is what is wrong
		return Usagef("-token (or SPINBROKER_TOKEN): %w", err)
	}
	f.client = c
	return nil
}

// Fatal is what an agent returns for err, an error that stops it after a
// successful Parse (and what Parse returns for the common flags'): with -log-format json, it is logged as one record at
// error, the sentence Main would print with the exit_code (2 for a
// *UsageError, else 1), and Main exits with that code printing nothing,
// as spinbroker serve does: a plain line among the records was the one a
// log pipeline could not parse. In text, and for nil or an error logged
// already, it is err.
func (f *Flags) Fatal(err error) error {
	var le *loggedError
	if err == nil || f.format != "json" || errors.As(err, &le) {
		return err
	}
	code := 1
	var ue *UsageError
	if errors.As(err, &ue) {
		code = 2
	}
	f.log.Error(err.Error(), "exit_code", code)
	return &loggedError{err: err, code: code}
}

// envOr is the environment variable name, or def when it is not set.
func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// fromEnv names the variable that set the flag name when it was not given
// (" (-log-level comes from SPINBROKER_LOG_LEVEL)"), as spinbroker serve
// does: a wrong value would otherwise send a person looking for a flag
// they never typed. It is "" for a flag that was given.
func fromEnv(fs *flag.FlagSet, name string) string {
	given := false
	fs.Visit(func(fl *flag.Flag) { given = given || fl.Name == name })
	env := "SPINBROKER_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
	if given || os.Getenv(env) == "" {
		return ""
	}
	return fmt.Sprintf(" (-%s comes from %s)", name, env)
}

// Logger is the logger in the format and at the level the flags ask for;
// Client the broker's client. Both are set by a successful Parse.
func (f *Flags) Logger() *slog.Logger   { return f.log }
func (f *Flags) Client() *client.Client { return f.client }

// LogURL is the broker's URL fit for a log line: a password in it (a
// proxy's basic auth) is masked, as the SDK's own lines mask it.
func (f *Flags) LogURL() string { return f.client.RedactedURL() }

// Options are the agent SDK's options from the flags.
func (f *Flags) Options(log *slog.Logger) agent.Options {
	grace := f.grace
	if grace == 0 {
		// -grace 0 asks for none; the SDK's zero value means its default.
		grace = time.Nanosecond
	}
	return agent.Options{Logger: log, Grace: grace, Lease: f.lease}
}

// XDGDir returns $env/sub, with XDG's default of ~/fallback when env is
// not set.
func XDGDir(env, fallback, sub string) string {
	dir := os.Getenv(env)
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			home = "."
		}
		dir = filepath.Join(home, fallback)
	}
	return filepath.Join(dir, sub)
}
