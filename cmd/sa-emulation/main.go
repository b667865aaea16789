//go:build unix

// Command sa-emulation is spin-broker's emulation agent: it serves the
// "emulation" queue, writing VM configs and starting and stopping
// qemu-system-x86_64 VMs under a supervisor.
//
//	sa-emulation --url URL --supervisor systemd|process --state-dir DIR
//	             [--unit-dir DIR] [--qemu PATH] [--images-root DIR]
//	             [--vnc loopback|socket|off]
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
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/spin-broker/spinbroker/agent"
	"github.com/spin-broker/spinbroker/cmd/internal/agentcmd"
	"github.com/spin-broker/spinbroker/internal/emulation"
)

const about = `sa-emulation is spin-broker's emulation agent: it takes the commands of the
"emulation" queue, one at a time, and runs QEMU virtual machines, supervised
by the agent itself (-supervisor process, the default) or by systemd user
units, controlled over QMP.

Actions: write_config{id, vm: {Name, Cpus, Memory (MiB), Images: [{Path,
Cdrom, Volume}]}}, remove_config{id}, start{id}, stop{id, timeout?} (ACPI
power-down, forced after timeout), shutdown{id, timeout?}, status{id}.

Each VM's VNC console has no password. With -vnc loopback (the default) it
listens on 127.0.0.1:5900-5999, where every user of the host can connect
and type into the guest; on a shared host use -vnc socket: a unix socket
STATE_DIR/run/ID.vnc that only the agent's user (and root) can open, reached
with "ssh -L 5901:STATE_DIR/run/ID.vnc HOST" and a viewer on localhost:5901
(start and status say "vnc": "unix:PATH"), or -vnc off. A VM keeps the
console it was started with until it is stopped and started again.`

func main() {
	agentcmd.Main("sa-emulation", run)
}

func run(ctx context.Context, args []string, stderr io.Writer) (err error) {
	fs := flag.NewFlagSet("sa-emulation", flag.ContinueOnError)
	fs.SetOutput(stderr)
	common := agentcmd.Register(fs, "sa-emulation", about)
	supervisor := fs.String("supervisor", "process", "how VMs run: systemd (user units) or process (children of the agent)")
	stateDir := fs.String("state-dir", defaultStateDir(), "where VM configs, QMP sockets and pid files live")
	unitDir := fs.String("unit-dir", "", "where the systemd supervisor writes units (default $XDG_CONFIG_HOME/systemd/user)")
	qemu := fs.String("qemu", "", "the qemu-system-x86_64 program (default: found on $PATH)")
	imagesRoot := fs.String("images-root", "", "confine VM images to this folder, and resolve relative image paths in it")
	accel := fs.String("accel", "auto", "auto (kvm when /dev/kvm is usable, else tcg), kvm or tcg")
	cpu := fs.String("cpu", "", "QEMU's -cpu model for the VMs, such as host or max (default: QEMU's own)")
	vnc := fs.String("vnc", emulation.VNCLoopback, "the VMs' VNC console, without a password: loopback (127.0.0.1:5900-5999, open to every local user), socket (STATE_DIR/run/ID.vnc, the agent's user only) or off; a running VM keeps its own until started again")
	if err := common.Parse(fs, args, stderr); err != nil {
		return err
	}
	defer func() { err = common.Fatal(err) }()
	switch *supervisor {
	case "process", "systemd":
	default:
		return agentcmd.Usagef("-supervisor must be process or systemd, not %q", *supervisor)
	}
	switch *accel {
	case "auto", "kvm", "tcg":
	default:
		return agentcmd.Usagef("-accel must be auto, kvm or tcg, not %q", *accel)
	}
	switch *vnc {
	case emulation.VNCLoopback, emulation.VNCSocket, emulation.VNCOff:
	default:
		return agentcmd.Usagef("-vnc must be loopback, socket or off, not %q", *vnc)
	}
	if *qemu != "" {
		if _, err := exec.LookPath(*qemu); err != nil {
			return agentcmd.Usagef("-qemu: %w", err)
		}
	}
	for flag, dir := range map[string]string{"state-dir": *stateDir, "unit-dir": *unitDir} {
		if dir == "" && flag == "unit-dir" {
			continue // the default: $XDG_CONFIG_HOME/systemd/user
		}
		if _, err := agentcmd.Folder(flag, dir); err != nil {
			return err
		}
	}
	log, c := common.Logger(), common.Client()
	if *imagesRoot != "" {
		// A root that is not there yet is no mistake: sa-host-path makes
		// its root when it starts, and the two may start in either order.
		exists, err := agentcmd.Folder("images-root", *imagesRoot)
		if err != nil {
			return err
		}
		if !exists {
			log.Warn("the images root does not exist yet; images are looked for in it as each command comes", "images_root", *imagesRoot)
		}
	}
	// Before the supervisor adopts the VMs of the state dir: they are
	// this agent's alone.
	lock, err := emulation.LockStateDir(*stateDir)
	if err != nil {
		return err
	}
	defer lock.Close()
	var sup emulation.Supervisor
	if *supervisor == "process" {
		if os.Getpid() == 1 {
			// A --qemu wrapper that forks QEMU and exits leaves QEMU to
			// PID 1, and this agent reaps only the processes it started.
			log.Warn("running as PID 1: processes orphaned by a --qemu wrapper stay zombies after they end; run the agent under an init (docker run --init, tini)")
		}
		sup, err = emulation.NewProcess(filepath.Join(*stateDir, "proc"), log)
	} else {
		var sd *emulation.Systemd
		sd, err = emulation.NewSystemd(*unitDir, log)
		if err == nil {
			if err := sd.Reachable(ctx); err != nil {
				// It may come up later (a user manager started after the
				// agent); until then commands fail rather than guess.
				log.Warn("systemd's user manager does not answer: VMs cannot be started or checked until it does", "err", err)
			}
		}
		sup = sd
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
		VNC:        *vnc,
		Supervisor: sup,
		Logger:     log,
	})
	if err != nil {
		return err
	}
	log.Info("serving emulation", "url", common.LogURL(), "supervisor", *supervisor, "state_dir", *stateDir, "accel", em.Accel(), "vnc", em.VNC())
	return agentcmd.Logged(agent.Run(ctx, c, emulation.Resource, em.Handlers(), common.Options(log)))
}

// defaultStateDir is $XDG_STATE_HOME/spin/emulation, with XDG's default
// for XDG_STATE_HOME (~/.local/state).
func defaultStateDir() string {
	return agentcmd.XDGDir("XDG_STATE_HOME", filepath.Join(".local", "state"), filepath.Join("spin", "emulation"))
}
