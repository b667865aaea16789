package main

import (
	"github.com/spf13/cobra"

	spinbroker "github.com/spin-broker/spinbroker"
)

func (a *app) queueCommand() *cobra.Command {
	return a.group("queue",
		"List queues, show one, change its concurrency, pause or resume it",
		`queue looks at the broker's queues, one per resource, and changes their
settings: how many commands may be leased at once (concurrency) and whether
the queue hands out commands at all (paused).`,
		a.queueListCommand(),
		a.queueShowCommand(),
		a.queueSetCommand(),
		a.queuePauseCommand(true),
		a.queuePauseCommand(false),
	)
}

// checkResource refuses, as a usage error, a name no queue can have.
func checkResource(c *cobra.Command, s string) error {
	if !spinbroker.ValidName(s) {
		return usagef(c, "RESOURCE %q is not a valid name: 1 to 64 characters of [a-z0-9_.-], starting with a letter or digit", clip(s))
	}
	return nil
}

func (a *app) queueListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the queues that have commands or settings",
		Long: `ls lists every queue that has commands or settings: its concurrency, whether
it is paused, its blocked, ready and leased commands, and how long its oldest
ready command has waited.`,
		Example: `  spinbroker queue ls
  spinbroker queue ls -o json`,
		Args: args(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := a.dial(cmd)
			if err != nil {
				return err
			}
			qs, err := cl.Queues(cmd.Context())
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return a.printJSON(spinbroker.QueueList{Queues: qs})
			}
			if err := printQueueList(a.stdout, qs); err != nil {
				return err
			}
			a.noneNote(len(qs), "queues")
			return nil
		},
	}
}

func (a *app) queueShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:               "show RESOURCE",
		ValidArgsFunction: a.completeQueue,
		Short:             "Show a queue and its first unfinished commands",
		Long: `show prints one queue's settings and counts, then its first 50 enqueued
commands that have not finished, in queue order. Every valid resource has a
queue: one never used is empty, with concurrency 1, not paused.`,
		Example: `  spinbroker queue show storage`,
		Args:    args(1, "RESOURCE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkResource(cmd, args[0]); err != nil {
				return err
			}
			cl, err := a.dial(cmd)
			if err != nil {
				return err
			}
			q, err := cl.Queue(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return a.printJSON(q)
			}
			return printQueue(a.stdout, q)
		},
	}
}

func (a *app) queueSetCommand() *cobra.Command {
	var (
		concurrency int
		paused      bool
	)
	cmd := &cobra.Command{
		Use:               "set RESOURCE [--concurrency N] [--paused=true|false]",
		ValidArgsFunction: a.completeQueue,
		Short:             "Change a queue's concurrency, or pause or resume it",
		Long: `set changes a queue's settings; what is not given stays as it is. A queue's
settings may be made before any command names it.

--concurrency is how many of its commands may be leased at once (default 1:
one after another). --paused (or --paused=true) stops the queue handing out
commands; --paused=false resumes it. 'queue pause' and 'queue resume' say
the same more briefly.`,
		Example: `  spinbroker queue set storage --concurrency 4
  spinbroker queue set emulation --paused
  spinbroker queue set emulation --paused=false --concurrency 2`,
		Args: func(cmd *cobra.Command, a []string) error {
			// A boolean flag takes its value after "=": "--paused false"
			// is the flag and a stray argument.
			if len(a) == 2 && (a[1] == "true" || a[1] == "false") && cmd.Flags().Changed("paused") {
				return usagef(cmd, "--paused takes its value after an equals sign: --paused=%s", a[1])
			}
			return args(1, "RESOURCE")(cmd, a)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkResource(cmd, args[0]); err != nil {
				return err
			}
			var s spinbroker.QueueSettings
			if cmd.Flags().Changed("concurrency") {
				if concurrency < 1 || concurrency > spinbroker.MaxConcurrency {
					return usagef(cmd, "--concurrency must be between 1 and %d", spinbroker.MaxConcurrency)
				}
				s.Concurrency = &concurrency
			}
			if cmd.Flags().Changed("paused") {
				s.Paused = &paused
			}
			if s.Concurrency == nil && s.Paused == nil {
				return usagef(cmd, "nothing to set: give --concurrency N, --paused or --paused=false")
			}
			return a.setQueue(cmd, args[0], s)
		},
	}
	cmd.Flags().IntVar(&concurrency, "concurrency", 0, "commands that may be leased at once (a new queue's is 1)")
	cmd.Flags().BoolVar(&paused, "paused", false, "stop (true) or resume (false) handing out commands")
	return cmd
}

// queuePauseCommand returns 'queue pause' (pause) or 'queue resume'.
func (a *app) queuePauseCommand(pause bool) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pause RESOURCE",
		Short: "Stop a queue handing out commands",
		Long: `pause stops a queue handing out commands; those already leased run to the
end. It is 'queue set RESOURCE --paused'.`,
		Example: `  spinbroker queue pause emulation`,
	}
	if !pause {
		cmd.Use = "resume RESOURCE"
		cmd.Short = "Let a paused queue hand out commands again"
		cmd.Long = `resume lets a paused queue hand out commands again. It is 'queue set
RESOURCE --paused=false'.`
		cmd.Example = `  spinbroker queue resume emulation`
	}
	cmd.Args = args(1, "RESOURCE")
	cmd.ValidArgsFunction = a.completeQueue
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := checkResource(cmd, args[0]); err != nil {
			return err
		}
		return a.setQueue(cmd, args[0], spinbroker.QueueSettings{Paused: &pause})
	}
	return cmd
}

func (a *app) setQueue(cmd *cobra.Command, resource string, s spinbroker.QueueSettings) error {
	cl, err := a.dial(cmd)
	if err != nil {
		return err
	}
	q, err := cl.SetQueue(cmd.Context(), resource, s)
	if err != nil {
		return err
	}
	if a.jsonOutput() {
		return a.printJSON(q)
	}
	return printQueueList(a.stdout, []spinbroker.Queue{*q})
}
