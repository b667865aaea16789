// Package agentcmd is what the agents' commands share: their common flags
// (the broker, the token, the grace period, the lease, the log level), the
// signal handling, and the set-up of the logger and the client.
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
	"syscall"
	"time"

	"github.com/spin-broker/spinbroker/agent"
	"github.com/spin-broker/spinbroker/client"
	"github.com/spin-broker/spinbroker/internal/version"
)

// Main runs an agent's run function with a context that SIGINT or SIGTERM
// ends (a second signal ends the process at once) and exits 1 on an error.
func Main(name string, run func(ctx context.Context, args []string, stderr io.Writer) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second signal ends the process at once
	}()
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
	case err != nil:
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}

// Flags are the flags every agent takes.
type Flags struct {
	name  string
	url   string
	token string
	grace time.Duration
	lease time.Duration
	level string
	vers  bool
}

// Register adds the common flags to fs, and a -help that starts with
// about: what the agent does and the actions it takes.
func Register(fs *flag.FlagSet, name, about string) *Flags {
	f := &Flags{name: name}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "%s\n\nUsage: %s -url URL [flags]\n\nFlags:\n", about, name)
		fs.PrintDefaults()
	}
	fs.StringVar(&f.url, "url", os.Getenv("SPINBROKER_URL"), "the broker's URL, http:// or https:// (env SPINBROKER_URL)")
	fs.StringVar(&f.token, "token", "", "a bearer token for the broker (default $SPINBROKER_TOKEN, kept out of this help)")
	fs.DurationVar(&f.grace, "grace", agent.DefaultGrace, "how long the running command may go on after SIGINT or SIGTERM")
	fs.DurationVar(&f.lease, "lease", 0, "the lease to ask for each command (default: the command's own, else 60s)")
	fs.StringVar(&f.level, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&f.vers, "version", false, "print the version and exit")
	return f
}

// Parse parses args into fs and checks the common flags.
func (f *Flags) Parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if f.vers {
		fmt.Println(f.name, "version", version.Get())
		return flag.ErrHelp // done: Main exits 0
	}
	if f.token == "" {
		f.token = os.Getenv("SPINBROKER_TOKEN")
	}
	if f.url == "" {
		return errors.New("--url (or SPINBROKER_URL) is required")
	}
	return nil
}

// Setup returns the logger and the broker's client the flags ask for.
func (f *Flags) Setup(stderr io.Writer) (*slog.Logger, *client.Client, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(f.level)); err != nil {
		return nil, nil, fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	c, err := client.New(f.url, client.WithToken(f.token), client.WithUserAgent(f.name+"/1"))
	if err != nil {
		return nil, nil, err
	}
	return log, c, nil
}

// Options are the agent SDK's options from the flags.
func (f *Flags) Options(log *slog.Logger) agent.Options {
	return agent.Options{Logger: log, Grace: f.grace, Lease: f.lease}
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
