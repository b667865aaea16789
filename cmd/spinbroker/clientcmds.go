package main

import "github.com/spf13/cobra"

// clientCommands returns the subcommands that talk to a broker over HTTP.
func (a *app) clientCommands() []*cobra.Command {
	return nil
}
