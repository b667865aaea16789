package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/store"
)

// The token commands work on the database file, not through the broker: a
// token is what lets one talk to the broker in the first place. SQLite's WAL
// lets them run while a broker serves the same file.

var tokenRoles = []string{spinbroker.RoleAdmin, spinbroker.RoleClient, spinbroker.RoleAgent, spinbroker.RoleViewer}

func (a *app) tokenCommand() *cobra.Command {
	var db string
	g := a.group("token",
		"Create, list, revoke and delete API tokens (on the database file)",
		`token manages the API tokens a broker with auth on accepts. It works on the
database file directly (--db, or $SPINBROKER_DB), so it needs no token
itself, and it may run while the broker serves the same file.

Roles: admin (everything), client (packages and reads), agent (the commands
of one --resource), viewer (reads and the dashboard). A token is shown once,
when it is created; the database keeps only its hash. A token works until it
is revoked, or until its end when made with --expires; delete removes the
ones that no longer work from the list.`,
		a.tokenCreateCommand(&db),
		a.tokenListCommand(&db),
		a.tokenRevokeCommand(&db),
		a.tokenDeleteCommand(&db),
	)
	g.PersistentFlags().StringVar(&db, "db", envOr("SPINBROKER_DB", "spinbroker.db"), "database file (env SPINBROKER_DB)")
	return g
}

// openDB opens the database at path. Unless create is set the file must
// exist already: listing or revoking in a database made by mistake (a typo
// in --db) would only hide the mistake. An existing database must have
// every migration this build knows: store.Open would apply the pending ones,
// and the token commands run beside a broker, which may be an older one
// serving that schema (migrate up refuses to run beside a broker).
func (a *app) openDB(ctx context.Context, path string, create bool) (*store.DB, error) {
	err := existingDB(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && create:
		if err := missingFolder(path, "give --db or set SPINBROKER_DB"); err != nil {
			return nil, err
		}
		fmt.Fprintf(a.stderr, "spinbroker: creating a new database at %s\n", path)
	case err != nil:
		return nil, err
	default:
		if err := store.BesideBroker(path); err != nil {
			return nil, err
		}
		st, err := store.Migrations(ctx, path, false)
		if err != nil {
			return nil, err
		}
		pending := 0
		for _, m := range st {
			if !m.Applied {
				pending++
			}
		}
		switch {
		case pending == len(st) && !create:
			return nil, fmt.Errorf("%s is empty, not a spin-broker database (give --db or set SPINBROKER_DB)", path)
		case pending > 0 && pending < len(st):
			return nil, fmt.Errorf("the database %s has %d schema migration(s) this spinbroker would apply first: run 'spinbroker migrate up --db %s' with its broker stopped (or start this version's broker on it), then run this command again", path, pending, path)
		}
	}
	logger := slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return store.Open(ctx, path, store.Options{Logger: logger})
}

func (a *app) tokenCreateCommand(db *string) *cobra.Command {
	var role, resource, name, expires string
	cmd := &cobra.Command{
		Use:   "create --role admin|client|agent|viewer [--resource X] [--name N] [--expires 90d]",
		Short: "Create a token and show it, once",
		Long: `create makes a token with a role and prints it once, as the last word of the
line; it cannot be shown again. An agent token is bound to one --resource.
With --expires the token stops working that long from now (a broker then
answers 401 saying it expired, and when); without it, it works until it is
revoked. A database that does not exist yet is created (and said so on
stderr).`,
		Example: `  spinbroker token create --db /var/lib/spinbroker/broker.db --role admin --name ops
  spinbroker token create --role agent --resource storage --name host-1 --expires 90d
  TOKEN=$(spinbroker token create --role client --expires 720h | awk '{print $NF}')`,
		Args: args(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var lifetime time.Duration
			if cmd.Flags().Changed("expires") {
				var err error
				if lifetime, err = parseLifetime(expires); err != nil {
					return usagef(cmd, "%v", err)
				}
			}
			switch {
			case role == "":
				return usagef(cmd, "give --role: one of %s", strings.Join(tokenRoles, ", "))
			case !isRole(role):
				return usagef(cmd, "--role must be one of %s, not %q", strings.Join(tokenRoles, ", "), clip(role))
			case role == spinbroker.RoleAgent && resource == "":
				return usagef(cmd, "an agent token needs --resource: the queue its agent serves")
			case role != spinbroker.RoleAgent && resource != "":
				return usagef(cmd, "only an agent token is bound to a --resource")
			case resource != "" && !spinbroker.ValidName(resource):
				return usagef(cmd, "--resource %q is not a valid name: 1 to 64 characters of [a-z0-9_.-], starting with a letter or digit", clip(resource))
			case store.CheckTokenName(name) != nil:
				return usagef(cmd, "--name must be at most 200 characters of UTF-8 text, without control characters (a tab, a line break), not %q", clip(name))
			}
			st, err := a.openDB(cmd.Context(), *db, true)
			if err != nil {
				return err
			}
			defer st.Close()
			tok, secret, err := st.CreateExpiringToken(cmd.Context(), role, resource, name, lifetime)
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return a.printJSON(struct {
					spinbroker.Token
					Secret string `json:"token"`
				}{*tok, secret})
			}
			var b strings.Builder
			fmt.Fprintf(&b, "Created %s token %s", tok.Role, tok.ID)
			if tok.Name != "" {
				fmt.Fprintf(&b, " named %q", tok.Name)
			}
			if tok.Resource != "" {
				fmt.Fprintf(&b, " for resource %s", tok.Resource)
			}
			if tok.ExpiresAt != nil {
				fmt.Fprintf(&b, ", expires %s", tok.ExpiresAt.UTC().Format(time.RFC3339))
			}
			fmt.Fprintf(&b, " (shown once): %s\n", secret)
			_, err = fmt.Fprint(a.stdout, b.String())
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&role, "role", "", "what the token may do: "+strings.Join(tokenRoles, ", "))
	f.StringVar(&resource, "resource", "", "the resource an agent token serves")
	f.StringVar(&name, "name", "", "a name to tell the token by (who or what uses it)")
	f.StringVar(&expires, "expires", "", "stop working this long from now: days (90d), a Go duration (720h) or both (1d12h); never when left out")
	_ = cmd.RegisterFlagCompletionFunc("role", cobra.FixedCompletions(tokenRoles, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// parseLifetime reads --expires: a number of days ("90d"), a Go duration
// ("720h", "30m"), or days and then a Go duration ("1d12h"). Operators
// think of a credential's life in days, which Go durations do not have.
func parseLifetime(s string) (time.Duration, error) {
	given := clip(s)
	syntax := fmt.Errorf("--expires must be a number of days (90d), a Go duration (720h, 30m) or both (1d12h), not %q", given)
	var days time.Duration
	if n, rest, ok := strings.Cut(s, "d"); ok { // no unit of a Go duration has a d
		v, err := strconv.ParseUint(n, 10, 64)
		if err != nil {
			return 0, syntax
		}
		days, s = time.Duration(min(v, uint64(store.MaxTokenLifetime/(24*time.Hour))+1))*24*time.Hour, rest
	}
	var d time.Duration
	if s != "" {
		v, err := spinbroker.ParseDuration(s)
		if err != nil {
			return 0, syntax
		}
		d = min(v, store.MaxTokenLifetime+1) // days + d cannot overflow
	}
	if d < 0 {
		// "1d-1h" is 23h, more than 0: "must be more than 0" named no fault.
		return 0, fmt.Errorf("--expires must have no negative part, not %q: write 1d-1h as 23h", given)
	}
	if days+d == 0 || days+d > store.MaxTokenLifetime {
		return 0, fmt.Errorf("--expires must be more than 0 and at most %dd (a century), not %q; leave it out for a token that never expires", store.MaxTokenLifetime/(24*time.Hour), given)
	}
	return days + d, nil
}

func isRole(s string) bool {
	for _, r := range tokenRoles {
		if s == r {
			return true
		}
	}
	return false
}

func (a *app) tokenListCommand(db *string) *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List tokens, revoked and expired ones included",
		Long: `ls lists every token, oldest first, revoked and expired ones included, with
when each expires ("-": never; "(expired)" after the time of one past it).
A name longer than 40 characters is clipped with "…" (-o json shows it
whole). Secrets are never shown: the database does not have them.`,
		Example: `  spinbroker token ls --db /var/lib/spinbroker/broker.db`,
		Args:    args(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := a.openDB(cmd.Context(), *db, false)
			if err != nil {
				return err
			}
			defer st.Close()
			toks, err := st.Tokens(cmd.Context())
			if err != nil {
				return err
			}
			now := time.Now()
			if a.jsonOutput() {
				out := make([]listedToken, len(toks))
				for i, t := range toks {
					out[i] = listedToken{t, t.Expired(now)}
				}
				return a.printJSON(struct {
					Tokens []listedToken `json:"tokens"`
				}{out})
			}
			tw := newTable(a.stdout)
			row(tw, "ID", "NAME", "ROLE", "RESOURCE", "CREATED", "REVOKED", "EXPIRES")
			for _, t := range toks {
				expires := fmtTimePtr(t.ExpiresAt)
				if t.Expired(now) {
					expires += " (expired)"
				}
				row(tw, t.ID, clipCell(fmtStr(&t.Name)), t.Role, fmtStr(&t.Resource), fmtTime(t.CreatedAt), fmtTimePtr(t.RevokedAt), expires)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			a.noneNote(len(toks), "tokens")
			return nil
		},
	}
}

// listedToken is a token as 'token ls -o json' shows it: expired says
// whether its expires_at has passed, so that a script need not compare
// times.
type listedToken struct {
	spinbroker.Token
	Expired bool `json:"expired"`
}

func (a *app) tokenRevokeCommand(db *string) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID-OR-PREFIX",
		Short: "Revoke a token: requests carrying it are refused from then on",
		Long: `revoke revokes a token, named by its id as 'token ls' shows it, or by enough
of its first characters to tell it from the others (at least 8; ids are
random, so 8 nearly always do, and revoke refuses a prefix that matches two,
exit 2, naming them). A running broker refuses the token within seconds (it
trusts a checked token for a few). Revoking a revoked token changes nothing;
'token delete' then removes it from the list.`,
		Example: `  spinbroker token revoke 7c78d9df-95ce-4169-9e2f-3a4b5c6d7e8f
  spinbroker token revoke 7c78d9df`,
		Args: args(1, "ID-OR-PREFIX"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args[0]) < 8 {
				return usagef(cmd, "give the token's id or at least its first 8 characters")
			}
			st, err := a.openDB(cmd.Context(), *db, false)
			if err != nil {
				return err
			}
			defer st.Close()
			tok, already, err := st.RevokeToken(cmd.Context(), args[0])
			if err != nil {
				return prefixUsage(cmd, err)
			}
			if a.jsonOutput() {
				toks, err := st.Tokens(cmd.Context())
				if err != nil {
					return err
				}
				for _, t := range toks {
					if t.ID == tok.ID {
						return a.printJSON(t)
					}
				}
				return a.printJSON(tok)
			}
			if already {
				_, err = fmt.Fprintf(a.stdout, "Token %s was revoked already, at %s\n", tok.ID, tok.RevokedAt.UTC().Format(time.RFC3339))
				return err
			}
			_, err = fmt.Fprintf(a.stdout, "Revoked token %s\n", tok.ID)
			return err
		},
	}
}

func (a *app) tokenDeleteCommand(db *string) *cobra.Command {
	return &cobra.Command{
		Use:   "delete ID-OR-PREFIX",
		Short: "Delete a revoked or expired token from the list",
		Long: `delete removes a token that no longer works, revoked or expired, named as
revoke names one, so that 'token ls' stops listing it. A token that still
works is refused: revoke it first, so that its end is on record until you
delete it.`,
		Example: `  spinbroker token revoke 7c78d9df && spinbroker token delete 7c78d9df`,
		Args:    args(1, "ID-OR-PREFIX"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args[0]) < 8 {
				return usagef(cmd, "give the token's id or at least its first 8 characters")
			}
			st, err := a.openDB(cmd.Context(), *db, false)
			if err != nil {
				return err
			}
			defer st.Close()
			tok, err := st.DeleteToken(cmd.Context(), args[0])
			if err != nil {
				return prefixUsage(cmd, err)
			}
			if a.jsonOutput() {
				return a.printJSON(tok)
			}
			_, err = fmt.Fprintf(a.stdout, "Deleted token %s\n", tok.ID)
			return err
		},
	}
}

// prefixUsage makes a store's refusal of the id or prefix given (one that
// matches several tokens, listed) the usage mistake it is, as a prefix too
// short to name one is: exit 2, not 1.
func prefixUsage(cmd *cobra.Command, err error) error {
	if spinbroker.ErrorCode(err) == spinbroker.EINVALID {
		return usagef(cmd, "%s", spinbroker.ErrorMessage(err))
	}
	return err
}

// existingDB says, in words for the command line, why path is not a
// database file to work on; its error matches fs.ErrNotExist when there is
// no file.
func existingDB(path string) error {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return noDBError(path)
	case err != nil:
		return err
	case fi.IsDir():
		return fmt.Errorf("%s is a folder, not a database file (give --db or set SPINBROKER_DB)", path)
	}
	return nil
}

// noDBError is existingDB's error for a path with no file; it matches
// fs.ErrNotExist.
type noDBError string

func (e noDBError) Error() string {
	return fmt.Sprintf("no database at %s (give --db or set SPINBROKER_DB)", string(e))
}
func (noDBError) Is(target error) bool { return target == fs.ErrNotExist }
