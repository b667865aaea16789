package main

import (
	"github.com/spf13/cobra"
	"github.com/spin-broker/spinbroker/client"
)

func (a *app) commandCommand() *cobra.Command {
	return a.group("command",
		"Show a command, or run a failed one again",
		`command looks at one command, or runs a failed or cancelled one again.
To settle a command by hand, see 'spinbroker message complete'.`,
		a.commandShowCommand(),
		a.commandRetryCommand(),
	)
}

func (a *app) commandShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show a command",
		Long: `show prints every field of a command: where it belongs, what it runs with
which parameters, what it waits for, its state, attempts, result and times.`,
		Example: `  spinbroker command show "$CMD"
  spinbroker command show "$CMD" -o json | jq .output`,
		Args: args(1, "ID"),
		RunE: onID(a, "command", "ID", (*client.Client).Command, printCommand),
	}
}

func (a *app) commandRetryCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "retry ID",
		Short: "Run a failed or cancelled command again",
		Long: `retry puts a failed or cancelled command back in its queue at its old
place, with its attempts reset, together with the commands its failure
cancelled. It is refused when the command's package was cancelled, or when
a command it depends on is still failed or cancelled (retry that one first).`,
		Example: `  spinbroker command retry "$CMD"`,
		Args:    args(1, "ID"),
		RunE:    onID(a, "command", "ID", (*client.Client).Retry, printCommandState),
	}
}
