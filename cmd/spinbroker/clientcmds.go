package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/client"
)

// clientCommands returns the subcommands that talk to a broker over HTTP
// (ping only checks that they can), and token, which works on the database file.
func (a *app) clientCommands() []*cobra.Command {
	return []*cobra.Command{
		a.messageCommand(),
		a.packageCommand(),
		a.commandCommand(),
		a.queueCommand(),
		a.eventsCommand(),
		a.pingCommand(),
		a.tokenCommand(),
	}
}

// group returns a command that only holds subcommands. Run bare or with an
// unknown subcommand it is a usage error, as with 'go mod': cobra would
// otherwise print the help and exit 0, which hides a typo in a script.
func (a *app) group(use, short, long string, subs ...*cobra.Command) *cobra.Command {
	g := &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long,
		// -o is checked once here for every client command, before any
		// request is made.
		PersistentPreRunE: func(c *cobra.Command, _ []string) error {
			if err := a.checkOutput(); err != nil {
				return usagef(c, "%v", err)
			}
			return nil
		},
	}
	refuseBare(g, "command")
	g.AddCommand(subs...)
	return g
}

// refuseBare makes g, a command that only holds subcommands (each a kind,
// such as a command or a shell), refuse to run bare or with an unknown
// subcommand, as a usage error.
func refuseBare(g *cobra.Command, kind string) {
	g.Args = func(c *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usagef(c, "unknown %s %q for %q; want one of: %s", kind, args[0], c.CommandPath(), subNames(c))
		}
		return nil
	}
	g.RunE = func(c *cobra.Command, _ []string) error {
		return usagef(c, "want a %s: %s", kind, subNames(c))
	}
	// Being runnable only to refuse, a group should not show a usage line of
	// its own; its subcommands inherit the template and still show theirs.
	g.SetUsageTemplate(strings.Replace(g.UsageTemplate(),
		"Usage:{{if .Runnable}}", "Usage:{{if and .Runnable (not .HasAvailableSubCommands)}}", 1))
}

// strictBuiltins makes cobra's own 'completion' and 'help' commands refuse,
// as usage errors, a shell or a topic they do not know, and a shell's
// stray argument: they printed a help and exited 0 (or, for the argument,
// exited 1), so 'completion tcsh > file' wrote a help text as the script.
// It is called once the root's streams are set, which the completion
// scripts are written to.
func strictBuiltins(root *cobra.Command) {
	root.InitDefaultCompletionCmd()
	root.InitDefaultHelpCmd()
	for _, c := range root.Commands() {
		switch c.Name() {
		case "completion":
			refuseBare(c, "shell")
			for _, sh := range c.Commands() {
				// cobra's own check (NoArgs) is a plain error: exit 1.
				sh.Args = args(0, "no arguments")
			}
		case "help":
			show := c.Run
			c.Run = nil
			c.RunE = func(c *cobra.Command, args []string) error {
				if len(args) > 0 {
					if found, rest, err := c.Root().Find(args); err != nil || found == nil || len(rest) > 0 {
						return usagef(c.Root(), "no help topic %q", strings.Join(args, " "))
					}
				}
				show(c, args)
				return nil
			}
		}
	}
}

func subNames(c *cobra.Command) string {
	var names []string
	for _, s := range c.Commands() {
		if s.IsAvailableCommand() {
			names = append(names, s.Name())
		}
	}
	return strings.Join(names, ", ")
}

// usagef returns a usage error of command c: run prints it with a pointer
// to c's --help and exits 2.
func usagef(c *cobra.Command, format string, args ...any) error {
	return &usageError{cmd: c.CommandPath(), err: fmt.Errorf(format, args...)}
}

// argsBetween is args (main.go) for a command that takes from min to max
// positional arguments (max < 0: no upper bound).
func argsBetween(min, max int, names string) cobra.PositionalArgs {
	return func(c *cobra.Command, a []string) error {
		if len(a) < min || max >= 0 && len(a) > max {
			return usagef(c, "want %s, got %d argument(s)", names, len(a))
		}
		return nil
	}
}

// checkID refuses, as a usage error, an argument that cannot be an id: every
// id the broker makes or accepts is a UUID, so asking it would only answer
// not_found.
func checkID(c *cobra.Command, what, s string) error {
	if !spinbroker.LooksLikeID(s) {
		return usagef(c, "%s must be an id (a UUID such as 0190c3e4-7a6b-7c1d-9e2f-3a4b5c6d7e8f), not %q", what, clip(s))
	}
	return nil
}

// completeFirst completes a command's first argument with the names list
// asks the broker for, keeping those that start with toComplete. Completion
// must never hang a shell: a broker that does not answer at once offers
// nothing.
func (a *app) completeFirst(cmd *cobra.Command, args []string, toComplete string, list func(ctx context.Context, cl *client.Client) ([]cobra.Completion, error)) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	cl, err := a.client()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Second)
	defer cancel()
	all, err := list(ctx, cl)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []cobra.Completion
	for _, c := range all {
		if strings.HasPrefix(c, toComplete) {
			out = append(out, c)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// completePackage completes a first argument that is a package id with the
// broker's newest packages, their state as the description.
func (a *app) completePackage(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	return a.completeFirst(cmd, args, toComplete, func(ctx context.Context, cl *client.Client) ([]cobra.Completion, error) {
		list, err := cl.Packages(ctx, client.ListOptions{Limit: 100})
		if err != nil {
			return nil, err
		}
		out := make([]cobra.Completion, len(list.Packages))
		for i, p := range list.Packages {
			out[i] = cobra.CompletionWithDesc(p.ID, string(p.State))
		}
		return out, nil
	})
}

// completeQueue completes a first argument that is a resource with the
// broker's queues.
func (a *app) completeQueue(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	return a.completeFirst(cmd, args, toComplete, func(ctx context.Context, cl *client.Client) ([]cobra.Completion, error) {
		qs, err := cl.Queues(ctx)
		if err != nil {
			return nil, err
		}
		out := make([]cobra.Completion, len(qs))
		for i, q := range qs {
			out[i] = q.Resource
		}
		return out, nil
	})
}

// onID is the RunE of a command whose one argument (named name in errors)
// is the id of a package or a command (kind): it checks the id, makes one
// call with it, and prints the answer as JSON with -o json, else with show.
func onID[T any](a *app, kind, name string, call func(c *client.Client, ctx context.Context, id string) (T, error), show func(w io.Writer, v T) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if err := checkID(cmd, name, args[0]); err != nil {
			return err
		}
		cl, err := a.dial(cmd)
		if err != nil {
			return err
		}
		v, err := call(cl, cmd.Context(), args[0])
		var tl *client.AnswerTooLargeError
		if errors.As(err, &tl) && tl.Done {
			return doneUnread(err, kind, args[0])
		}
		if err != nil {
			return whatIsIt(cmd.Context(), cl, kind, args[0], err)
		}
		if a.jsonOutput() {
			return a.printJSON(v)
		}
		return show(a.stdout, v)
	}
}

// whatIsIt adds to err, when it is a not_found of id wanted as the id of a
// package or a command (kind), what id is when it names the other kind: a
// 'message status' of the id that 'message add' printed was only "package
// ... not found", which sent the operator looking for a lost package.
func whatIsIt(ctx context.Context, cl *client.Client, kind, id string, err error) error {
	if spinbroker.ErrorCode(err) != spinbroker.ENOTFOUND || ctx.Err() != nil {
		return err
	}
	switch kind {
	case "package":
		if c, cerr := cl.Command(ctx, id); cerr == nil {
			return &exitError{code: 1, msg: fmt.Sprintf("%s; %s is a command's id (of package %s): spinbroker command show %s", describe(err), c.ID, c.PackageID, c.ID)}
		}
	case "command":
		if p, perr := cl.Package(ctx, id); perr == nil {
			return &exitError{code: 1, msg: fmt.Sprintf("%s; %s is a package's id: spinbroker package show %s", describe(err), p.ID, p.ID)}
		}
	}
	return err
}

// printPackageLine prints the one line that answers a change to a package.
func printPackageLine(w io.Writer, p *spinbroker.Package) error {
	_, err := fmt.Fprintf(w, "package %s: %s, %s\n", p.ID, p.State, progress(p))
	return err
}
