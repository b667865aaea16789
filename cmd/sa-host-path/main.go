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
	"flag"
	"io"
	"os/exec"
	"path/filepath"

	"github.com/spin-broker/spinbroker/agent"
	"github.com/spin-broker/spinbroker/cmd/internal/agentcmd"
	"github.com/spin-broker/spinbroker/internal/hostpath"
)

const about = `sa-host-path is spin-broker's storage agent: it takes the commands of the
"storage" queue, one at a time, and keeps volumes (folders) and disk images
under one root folder, never touching anything outside it.

Actions: add_volume{path}, remove_volume{path, force?},
create_image{volume_path, image_name, image_size (GiB), format? (raw|qcow2)},
delete_image{image_path}, resize_image{volume_path, image_name, image_size,
shrink?}, move_image{image_name, volume, target_volume},
copy_image{image_name, volume, target_volume}.`

func main() {
	agentcmd.Main("sa-host-path", run)
}

func run(ctx context.Context, args []string, stderr io.Writer) (err error) {
	fs := flag.NewFlagSet("sa-host-path", flag.ContinueOnError)
	fs.SetOutput(stderr)
	common := agentcmd.Register(fs, "sa-host-path", about)
	root := fs.String("root", defaultRoot(), "the folder that holds the volumes")
	qemuImg := fs.String("qemu-img", "", "the qemu-img program for qcow2 images (default: found on $PATH)")
	if err := common.Parse(fs, args, stderr); err != nil {
		return err
	}
	defer func() { err = common.Fatal(err) }()
	if *qemuImg != "" {
		if _, err := exec.LookPath(*qemuImg); err != nil {
			return agentcmd.Usagef("-qemu-img: %w", err)
		}
	}
	if _, err := agentcmd.Folder("root", *root); err != nil {
		return err
	}
	log, c := common.Logger(), common.Client()
	st, err := hostpath.Open(*root, hostpath.Options{QemuImg: *qemuImg, Logger: log})
	if err != nil {
		return err
	}
	defer st.Close()
	log.Info("serving storage", "url", common.LogURL(), "root", st.Dir())
	return agentcmd.Logged(agent.Run(ctx, c, hostpath.Resource, st.Handlers(), common.Options(log)))
}

// defaultRoot is $XDG_DATA_HOME/spin/images, with XDG's default for
// XDG_DATA_HOME (~/.local/share).
func defaultRoot() string {
	return agentcmd.XDGDir("XDG_DATA_HOME", filepath.Join(".local", "share"), filepath.Join("spin", "images"))
}
