package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/client"
)

func (a *app) packageCommand() *cobra.Command {
	return a.group("package",
		"List, show, cancel and delete packages",
		`package looks at the broker's packages and acts on one: list them, show one
with its commands, cancel one that has not finished, or delete one.`,
		a.packageListCommand(),
		a.packageShowCommand(),
		a.packageCancelCommand(),
		a.packageRemoveCommand(),
	)
}

func packageStateNames() []string {
	names := make([]string, len(spinbroker.PackageStates))
	for i, s := range spinbroker.PackageStates {
		names[i] = string(s)
	}
	return names
}

func (a *app) packageListCommand() *cobra.Command {
	var (
		state  string
		limit  int
		cursor string
		all    bool
	)
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List packages, newest first",
		Long: `ls lists packages, newest first, without their commands: one page of --limit
packages (default 50), or every page with --all. --state keeps those in one
state. When more are left, table output says so on stderr; -o json gives the
page's next_cursor, which --cursor takes to read the next page.`,
		Example: `  spinbroker package ls
  spinbroker package ls --state failed --all
  spinbroker package ls --limit 10 -o json`,
		Args: args(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			st := spinbroker.PackageState(state)
			if state != "" && !st.Valid() {
				return usagef(cmd, "--state must be one of %s, not %q", strings.Join(packageStateNames(), ", "), clip(state))
			}
			if cmd.Flags().Changed("limit") && (limit < 1 || limit > spinbroker.MaxListLimit) {
				return usagef(cmd, "--limit must be between 1 and %d", spinbroker.MaxListLimit)
			}
			if all && cursor != "" {
				return usagef(cmd, "--all reads every page; it does not take --cursor")
			}
			cl, err := a.dial(cmd)
			if err != nil {
				return err
			}
			opts := client.ListOptions{State: st, Limit: limit, Cursor: cursor}
			list, err := cl.Packages(cmd.Context(), opts)
			if err != nil {
				return err
			}
			for all && list.NextCursor != nil {
				opts.Cursor = *list.NextCursor
				page, err := cl.Packages(cmd.Context(), opts)
				if err != nil {
					return err
				}
				list.Packages = append(list.Packages, page.Packages...)
				list.NextCursor = page.NextCursor
			}
			if a.jsonOutput() {
				return a.printJSON(list)
			}
			if err := printPackageList(a.stdout, list.Packages); err != nil {
				return err
			}
			if state != "" {
				a.noneNote(len(list.Packages), "packages in state "+state)
			} else {
				a.noneNote(len(list.Packages), "packages")
			}
			if list.NextCursor != nil {
				fmt.Fprintf(a.stderr, "More packages: use --all, or --cursor %s for the next page.\n", *list.NextCursor)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&state, "state", "", "only packages in this state: "+strings.Join(packageStateNames(), ", "))
	f.IntVar(&limit, "limit", spinbroker.DefaultListLimit, "packages per page (at most 1000)")
	f.StringVar(&cursor, "cursor", "", "start at this page (a next_cursor from -o json)")
	f.BoolVar(&all, "all", false, "read every page")
	_ = cmd.RegisterFlagCompletionFunc("state", cobra.FixedCompletions(packageStateNames(), cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func (a *app) packageShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:               "show ID",
		ValidArgsFunction: a.completePackage,
		Short:             "Show a package and its commands",
		Long: `show prints a package: its state, its counts of commands per state, its
times, the command that made it fail and why, then its commands in the order
they were added.`,
		Example: `  spinbroker package show "$PKG"
  spinbroker package show "$PKG" -o json | jq '.commands[].state'`,
		Args: args(1, "ID"),
		RunE: onID(a, "package", "ID", (*client.Client).Package, printPackage),
	}
}

func (a *app) packageCancelCommand() *cobra.Command {
	return &cobra.Command{
		Use:               "cancel ID",
		ValidArgsFunction: a.completePackage,
		Short:             "Cancel a package that has not finished",
		Long: `cancel stops a package: its commands that have not started are cancelled,
those an agent holds run to the end and their results are recorded, and none
is delivered or retried again. Cancelling a finished package changes nothing.`,
		Example: `  spinbroker package cancel "$PKG"`,
		Args:    args(1, "ID"),
		RunE:    onID(a, "package", "ID", (*client.Client).CancelPackage, printPackageLine),
	}
}

func (a *app) packageRemoveCommand() *cobra.Command {
	return &cobra.Command{
		Use:               "rm ID",
		ValidArgsFunction: a.completePackage,
		Aliases:           []string{"delete"},
		Short:             "Delete a package in staging or one that has finished",
		Long: `rm deletes a package and its commands: one still in staging, or one whose
commands have all finished. Commands of other packages that depend on its
commands are cancelled. With -o json it prints nothing, as the API answers
nothing.`,
		Example: `  spinbroker package rm "$PKG"`,
		Args:    args(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkID(cmd, "ID", args[0]); err != nil {
				return err
			}
			cl, err := a.dial(cmd)
			if err != nil {
				return err
			}
			if err := cl.DeletePackage(cmd.Context(), args[0]); err != nil {
				return whatIsIt(cmd.Context(), cl, "package", args[0], err)
			}
			if a.jsonOutput() {
				return nil
			}
			_, err = fmt.Fprintf(a.stdout, "package %s: deleted\n", strings.ToLower(args[0]))
			return err
		},
	}
}
