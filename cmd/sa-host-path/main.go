// Command sa-host-path is spin-broker's storage agent: it serves the
// "storage" queue, keeping volumes (folders) and disk images (raw sparse
// files, or qcow2 through qemu-img) under one root directory.
//
//	sa-host-path --url URL [--root DIR] [--token T] [--grace 30s]
//
// --url and --token default to $SPINBROKER_URL and $SPINBROKER_TOKEN; the
// root to $XDG_DATA_HOME/spin/images. SIGINT or SIGTERM stops it gracefully:
// no new command is taken, the running one has --grace to finish; a second
// signal ends it at once.
package main

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

	"github.com/spin-broker/spinbroker/agent"
	"github.com/spin-broker/spinbroker/client"
	"github.com/spin-broker/spinbroker/internal/hostpath"
)

func main() {
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
		fmt.Fprintln(os.Stderr, "sa-host-path:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("sa-host-path", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", os.Getenv("SPINBROKER_URL"), "the broker's URL, http:// or https:// (env SPINBROKER_URL)")
	token := fs.String("token", "", "a bearer token for the broker (default $SPINBROKER_TOKEN, kept out of this help)")
	root := fs.String("root", defaultRoot(), "the folder that holds the volumes")
	qemuImg := fs.String("qemu-img", "", "the qemu-img program for qcow2 images (default: found on $PATH)")
	grace := fs.Duration("grace", agent.DefaultGrace, "how long the running command may go on after SIGINT or SIGTERM")
	lease := fs.Duration("lease", 0, "the lease to ask for each command (default: the command's own, else 60s)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *token == "" {
		*token = os.Getenv("SPINBROKER_TOKEN")
	}
	if *url == "" {
		return errors.New("--url (or SPINBROKER_URL) is required")
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))

	c, err := client.New(*url, client.WithToken(*token), client.WithUserAgent("sa-host-path/1"))
	if err != nil {
		return err
	}
	st, err := hostpath.Open(*root, hostpath.Options{QemuImg: *qemuImg, Logger: log})
	if err != nil {
		return err
	}
	defer st.Close()
	log.Info("serving storage", "url", c.URL(), "root", st.Dir())
	return agent.Run(ctx, c, hostpath.Resource, st.Handlers(), agent.Options{
		Logger: log,
		Grace:  *grace,
		Lease:  *lease,
	})
}

// defaultRoot is $XDG_DATA_HOME/spin/images, with XDG's default for
// XDG_DATA_HOME (~/.local/share).
func defaultRoot() string {
	data := os.Getenv("XDG_DATA_HOME")
	if data == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			home = "."
		}
		data = filepath.Join(home, ".local", "share")
	}
	return filepath.Join(data, "spin", "images")
}
