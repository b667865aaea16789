// Command sa-emulation is spin-broker's emulation agent: it serves the
// "emulation" queue, writing VM configs and starting and stopping
// qemu-system-x86_64 VMs under a supervisor.
//
//	sa-emulation --url URL --supervisor systemd|process --state-dir DIR
//	             [--unit-dir DIR] [--qemu PATH] [--images-root DIR]
//
// --url and --token default to $SPINBROKER_URL and $SPINBROKER_TOKEN; the
// state dir to $XDG_STATE_HOME/spin/emulation. With --supervisor process
// (the default) the agent runs qemu itself and adopts the VMs still running
// when it restarts; with systemd each VM is a user unit. SIGINT or SIGTERM
// stops the agent gracefully (the VMs go on running); a second signal ends
// it at once.
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
	"github.com/spin-broker/spinbroker/internal/emulation"
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
		fmt.Fprintln(os.Stderr, "sa-emulation:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("sa-emulation", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", os.Getenv("SPINBROKER_URL"), "the broker's URL, http:// or https:// (env SPINBROKER_URL)")
	token := fs.String("token", "", "a bearer token for the broker (default $SPINBROKER_TOKEN, kept out of this help)")
	supervisor := fs.String("supervisor", "process", "how VMs run: systemd (user units) or process (children of the agent)")
	stateDir := fs.String("state-dir", defaultStateDir(), "where VM configs, QMP sockets and pid files live")
	unitDir := fs.String("unit-dir", "", "where the systemd supervisor writes units (default $XDG_CONFIG_HOME/systemd/user)")
	qemu := fs.String("qemu", "", "the qemu-system-x86_64 program (default: found on $PATH)")
	imagesRoot := fs.String("images-root", "", "confine VM images to this folder, and resolve relative image paths in it")
	accel := fs.String("accel", "auto", "auto (kvm when /dev/kvm is usable, else tcg), kvm or tcg")
	cpu := fs.String("cpu", "", "QEMU's -cpu model for the VMs, such as host or max (default: QEMU's own)")
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

	c, err := client.New(*url, client.WithToken(*token), client.WithUserAgent("sa-emulation/1"))
	if err != nil {
		return err
	}
	var sup emulation.Supervisor
	switch *supervisor {
	case "process":
		sup, err = emulation.NewProcess(filepath.Join(*stateDir, "proc"), log)
	case "systemd":
		sup, err = emulation.NewSystemd(*unitDir, log)
	default:
		err = fmt.Errorf("--supervisor %q is not systemd or process", *supervisor)
	}
	if err != nil {
		return err
	}
	em, err := emulation.New(emulation.Options{
		StateDir:   *stateDir,
		ImagesRoot: *imagesRoot,
		QEMU:       *qemu,
		Accel:      *accel,
		CPU:        *cpu,
		Supervisor: sup,
		Logger:     log,
	})
	if err != nil {
		return err
	}
	log.Info("serving emulation", "url", c.URL(), "supervisor", *supervisor, "state_dir", *stateDir, "accel", em.Accel())
	return agent.Run(ctx, c, emulation.Resource, em.Handlers(), agent.Options{
		Logger: log,
		Grace:  *grace,
		Lease:  *lease,
	})
}

// defaultStateDir is $XDG_STATE_HOME/spin/emulation, with XDG's default
// for XDG_STATE_HOME (~/.local/state).
func defaultStateDir() string {
	state := os.Getenv("XDG_STATE_HOME")
	if state == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			home = "."
		}
		state = filepath.Join(home, ".local", "state")
	}
	return filepath.Join(state, "spin", "emulation")
}
