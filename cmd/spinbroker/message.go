package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/client"
)

// The message commands are the seed's: the same arguments and the same
// output, so that scripts written for it keep working.

// Exit codes of 'message status'.
const (
	exitFailed     = 1 // the package failed or was cancelled
	exitNotDoneYet = 3 // the package has not finished
	// exitInterrupted and exitTerminated are the shell's codes for a
	// command ended by SIGINT (128+2) and SIGTERM (128+15); status catches
	// the signal to clear its progress line first.
	exitInterrupted = 130
	exitTerminated  = 143
)

func (a *app) messageCommand() *cobra.Command {
	return a.group("message",
		"Build a package of commands, enqueue it and follow it",
		`message builds a package step by step, as the seed's scripts do: 'new'
creates it in staging, 'add' adds one command at a time, 'enqueue' hands the
whole package to the queues at once, and 'status' tells how it went.
'complete' settles a command by hand, without an agent.`,
		a.messageNewCommand(),
		a.messageAddCommand(),
		a.messageEnqueueCommand(),
		a.messageStatusCommand(),
		a.messageCompleteCommand(),
	)
}

// dial returns a client of the broker at --url; a URL or a token it cannot
// use is a mistake in the command line.
func (a *app) dial(c *cobra.Command) (*client.Client, error) {
	if _, err := client.New(a.url); err != nil {
		return nil, usagef(c, "%s %q is not a broker URL: give http://host:port or https://host:port", flagOrEnv(c, "url", "SPINBROKER_URL"), client.MaskURL(a.url))
	}
	a.dialed = true
	cl, err := a.client()
	if errors.Is(err, client.ErrTokenScheme) {
		return nil, usagef(c, `the token in %s starts with "Bearer ": give the token alone, as 'spinbroker token create' printed it`, flagOrEnv(c, "token", "SPINBROKER_TOKEN"))
	}
	if err != nil {
		// The URL is good: what the client refused is the token, which
		// has a control character inside (client.New trims the ends). The
		// token itself is a secret, not to be printed.
		return nil, usagef(c, "the token in %s has a control character in it (a line break, a tab): no HTTP header can carry it; give it as 'spinbroker token create' printed it", flagOrEnv(c, "token", "SPINBROKER_TOKEN"))
	}
	return cl, nil
}

// flagOrEnv names where a global flag's value came from: the flag, when it
// was given, else the environment variable that is its default.
func flagOrEnv(c *cobra.Command, flag, env string) string {
	if f := c.Flags().Lookup(flag); f != nil && f.Changed {
		return "--" + flag
	}
	if os.Getenv(env) != "" {
		return env
	}
	return "--" + flag
}

func (a *app) messageNewCommand() *cobra.Command {
	var idem string
	cmd := &cobra.Command{
		Use:   "new",
		Short: "Create a package in staging and print its id",
		Long: `new creates an empty package in staging and prints only its id, so that a
script can keep it in a variable. With -o json it prints the package.

` + idempotencyHelp,
		Example: `  PKG=$(spinbroker message new)
  PKG=$(spinbroker message new --idempotency-key "build-$BUILD_ID")`,
		Args: args(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts, err := a.idempotencyKey(cmd, idem)
			if err != nil {
				return err
			}
			cl, err := a.dial(cmd)
			if err != nil {
				return err
			}
			p, err := cl.CreatePackage(cmd.Context(), spinbroker.NewPackage{}, opts...)
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return a.printJSON(p)
			}
			_, err = fmt.Fprintln(a.stdout, p.ID)
			return err
		},
	}
	idempotencyFlag(cmd, &idem)
	return cmd
}

// idempotencyHelp is the --help of --idempotency-key, for the commands that
// create.
const idempotencyHelp = `--idempotency-key makes the command safe to run again: a script that got
exit 4 (no answer: the change may have been made) runs the same command line
again, and for 24 hours the broker answers with what it made the first time
rather than make it twice. The rest of the command line (and the token) must
be the same: the same key with other arguments is refused (exit 1).`

// idempotencyFlag gives a creating command --idempotency-key.
func idempotencyFlag(cmd *cobra.Command, key *string) {
	cmd.Flags().StringVar(key, "idempotency-key", "", "send this Idempotency-Key (1 to 255 printable ASCII characters), so that running the same command again creates once")
}

// idempotencyKey checks --idempotency-key, and returns what sends it; it
// also tells the error of a request that got no answer what to do.
func (a *app) idempotencyKey(cmd *cobra.Command, key string) ([]client.CallOption, error) {
	if !cmd.Flags().Changed("idempotency-key") {
		return nil, nil
	}
	if err := spinbroker.CheckIdempotencyKey(key); err != nil {
		return nil, usagef(cmd, "--idempotency-key: %s", spinbroker.ErrorMessage(err))
	}
	a.idempotent = true
	return []client.CallOption{client.IdempotencyKey(key)}, nil
}

func (a *app) messageAddCommand() *cobra.Command {
	var (
		deps        []string
		key         string
		maxAttempts int
		lease       time.Duration
		notBefore   string
		idem        string
	)
	cmd := &cobra.Command{
		Use:               "add PKG RESOURCE ACTION [key=value ...]",
		ValidArgsFunction: a.completePackage,
		Short:             "Add a command to a package in staging and print its id",
		Long: `add adds one command to a package that is still in staging and prints only
the command's id.

RESOURCE names the queue (and the kind of agent) that runs the command and
ACTION what it does. Each key=value becomes a parameter. A value that is JSON
on its own is sent as that value: a number (size=10), true or false, null,
an object or array (vm='{"cpus":2}'), or a quoted string (name='"10"'); any
other value is sent as a string (path=/srv/images). A key may appear once.
A JSON object of parameters given whole is refused: give each as key=value.

--dep names a command that must succeed before this one runs: a command id
(of any package) or the --key of a command added earlier to this package.
Repeat it for several.

` + idempotencyHelp,
		Example: `  PKG=$(spinbroker message new)
  spinbroker message add "$PKG" storage add_volume path=vm1 --key vol
  IMG=$(spinbroker message add "$PKG" storage create_image volume_path=vm1 \
      image_name=disk.raw image_size=10 --dep vol)
  spinbroker message add "$PKG" emulation write_config id=vm1 \
      vm='{"Name":"vm1","Cpus":1,"Memory":256,"Images":[{"Path":"disk.raw","Volume":"vm1"}]}' \
      --key cfg --dep "$IMG"
  spinbroker message add "$PKG" emulation start id=vm1 --dep cfg --max-attempts 1`,
		Args: argsBetween(3, -1, "PKG RESOURCE ACTION [key=value ...]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkID(cmd, "PKG", args[0]); err != nil {
				return err
			}
			in := spinbroker.NewCommand{Key: key, Resource: args[1], Action: args[2], Dependencies: deps}
			if !spinbroker.ValidName(in.Resource) {
				return usagef(cmd, "RESOURCE %q is not a valid name: 1 to 64 characters of [a-z0-9_.-], starting with a letter or digit", clip(in.Resource))
			}
			if !spinbroker.ValidName(in.Action) {
				return usagef(cmd, "ACTION %q is not a valid name: 1 to 64 characters of [a-z0-9_.-], starting with a letter or digit", clip(in.Action))
			}
			if cmd.Flags().Changed("key") {
				if err := spinbroker.CheckKey(key); err != nil {
					return usagef(cmd, "--key: %s", spinbroker.ErrorMessage(err))
				}
			}
			for _, d := range deps {
				if d == "" {
					return usagef(cmd, "--dep must not be empty")
				}
				if !utf8.ValidString(d) {
					return usagef(cmd, "--dep %q is not valid UTF-8", clip(d))
				}
			}
			params, err := parseKV(args[3:])
			if err != nil {
				return usagef(cmd, "%v", err)
			}
			in.Parameters = params
			if cmd.Flags().Changed("max-attempts") {
				if maxAttempts < 1 || maxAttempts > spinbroker.MaxMaxAttempts {
					return usagef(cmd, "--max-attempts must be between 1 and %d", spinbroker.MaxMaxAttempts)
				}
				in.MaxAttempts = &maxAttempts
			}
			if cmd.Flags().Changed("lease-duration") {
				if err := spinbroker.CheckLease("--lease-duration", lease); err != nil {
					return usagef(cmd, "%s", spinbroker.ErrorMessage(err))
				}
				d := spinbroker.Duration(lease)
				in.LeaseDuration = &d
			}
			if notBefore != "" {
				t, err := parseNotBefore(notBefore)
				if err != nil {
					return usagef(cmd, "%v", err)
				}
				in.NotBefore = &t
			}
			opts, err := a.idempotencyKey(cmd, idem)
			if err != nil {
				return err
			}
			cl, err := a.dial(cmd)
			if err != nil {
				return err
			}
			c, err := cl.AddCommand(cmd.Context(), args[0], in, opts...)
			if err != nil {
				if err := depIsAPackage(cmd.Context(), cl, deps, err); err != nil {
					return err
				}
				return whatIsIt(cmd.Context(), cl, "package", args[0], err)
			}
			if a.jsonOutput() {
				return a.printJSON(c)
			}
			_, err = fmt.Fprintln(a.stdout, c.ID)
			return err
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&deps, "dep", nil, "a command that must succeed first: its id or its --key in this package (repeatable)")
	f.StringVar(&key, "key", "", "a name for the command, unique in its package, for --dep of later commands")
	f.IntVar(&maxAttempts, "max-attempts", spinbroker.DefaultMaxAttempts, "times the command may be delivered")
	f.DurationVar(&lease, "lease-duration", 0, "how long an agent holds the command between heartbeats, 1s to 24h (default: the broker's 60s)")
	f.StringVar(&notBefore, "not-before", "", "do not deliver the command before this RFC 3339 time")
	idempotencyFlag(cmd, &idem)
	return cmd
}

// depIsAPackage adds to err, an unknown_dependency of 'message add', which
// of deps is a package's id, when one is: the broker says only that it
// names no existing command, and a script holds a package's id beside its
// commands' ones. It returns nil when err is another error or no dependency
// is a package's.
func depIsAPackage(ctx context.Context, cl *client.Client, deps []string, err error) error {
	if spinbroker.ErrorCode(err) != spinbroker.EUNKNOWNDEP || ctx.Err() != nil {
		return nil
	}
	for _, d := range deps {
		if !spinbroker.LooksLikeID(d) {
			continue
		}
		if p, perr := cl.Package(ctx, d); perr == nil {
			return &exitError{code: 1, msg: fmt.Sprintf("%s; %s is a package's id, not a command's: --dep takes a command's id or the --key of one added earlier to this package (spinbroker package show %s lists its commands)",
				describe(err), p.ID, p.ID)}
		}
	}
	return nil
}

func (a *app) messageEnqueueCommand() *cobra.Command {
	return &cobra.Command{
		Use:               "enqueue PKG",
		ValidArgsFunction: a.completePackage,
		Short:             "Hand a package to the queues, all of its commands at once",
		Long: `enqueue moves a package out of staging: all of its commands reach their
queues in one transaction, in the order they were added. Enqueuing a package
again changes nothing.`,
		Example: `  spinbroker message enqueue "$PKG"`,
		Args:    args(1, "PKG"),
		RunE:    onID(a, "package", "PKG", (*client.Client).Enqueue, printPackageLine),
	}
}

func (a *app) messageStatusCommand() *cobra.Command {
	var (
		wait    bool
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:               "status PKG",
		ValidArgsFunction: a.completePackage,
		Short:             "Tell how a package is doing; the exit code says it too",
		Long: `status prints a package's state and how many of its commands are done, and
for a failed package the reason and the id of the command that caused it.

Exit codes: 0 the package succeeded; 1 it failed or was cancelled, or the
broker refused to say (no such package, a token it refuses); 3 it has not
finished yet; 4 the broker could not be asked (unreachable, no answer,
busy): ask again later; 130 interrupted (SIGINT), 143 terminated (SIGTERM).

--wait waits until the package has finished, showing its progress on one
line when the output is a terminal, then exits as above. It waits for a
package still in staging too (another process may enqueue it), saying so
once on stderr. When nothing has moved for 5s while work is ready, it looks
at the queues and says on stderr what holds them: a paused queue, or free
slots that no agent takes. --timeout bounds the wait: when it runs out,
status reports the package as it is (exit 3), and says so on stderr; when
the broker is away then, the package's state is not known: exit 4, and
stderr says what was last read. A package deleted while waited for (by a
client, or by the sweep of packages left in staging) ends the wait with
exit 1, stderr saying so and what was last read.`,
		Example: `  spinbroker message status "$PKG"
  spinbroker message status "$PKG" --wait && echo done
  spinbroker message status "$PKG" --wait --timeout 10m -o json`,
		Args: args(1, "PKG"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if err := checkID(cmd, "PKG", id); err != nil {
				return err
			}
			if timeout < 0 {
				return usagef(cmd, "--timeout must not be negative")
			}
			if !wait && cmd.Flags().Changed("timeout") {
				// Without --wait status answers at once: the timeout would
				// be ignored, and the wait it was meant for never happen.
				return usagef(cmd, "--timeout bounds --wait: give --wait --timeout %s", timeout)
			}
			cl, err := a.dial(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var p *spinbroker.Package
			if wait {
				p, err = a.waitPackage(ctx, cl, id, timeout)
			} else {
				p, err = cl.Package(ctx, id)
			}
			if err != nil && ctx.Err() != nil {
				// SIGINT or SIGTERM: neither failed (1) nor unfinished (3).
				return interrupted(ctx)
			}
			if err != nil {
				return whatIsIt(ctx, cl, "package", id, err)
			}
			if a.jsonOutput() {
				if err := a.printJSON(p); err != nil {
					return err
				}
			} else if err := printStatus(a.stdout, p); err != nil {
				return err
			}
			if wait && !p.State.Terminal() {
				fmt.Fprintf(a.stderr, "spinbroker: package %s is still %s (%s) after %s\n", p.ID, p.State, progress(p), timeout)
			}
			return statusExit(p)
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the package has finished")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "with --wait, stop waiting after this long (0: no limit)")
	return cmd
}

// printStatus prints the seed's status: the state and "n/m done" on the
// first line, then the causer and the reason when there is one.
func printStatus(w io.Writer, p *spinbroker.Package) error {
	if _, err := fmt.Fprintf(w, "%s: %s\n", p.State, progress(p)); err != nil {
		return err
	}
	if p.Causer != nil {
		fmt.Fprintf(w, "causer: %s\n", *p.Causer)
	}
	if p.Reason != nil {
		fmt.Fprintf(w, "reason: %s\n", oneLine(*p.Reason))
	}
	return nil
}

// statusExit is the exit status of 'message status' for p.
func statusExit(p *spinbroker.Package) error {
	switch p.State {
	case spinbroker.PackageSucceeded:
		return nil
	case spinbroker.PackageFailed, spinbroker.PackageCancelled:
		return &exitError{code: exitFailed}
	default:
		return &exitError{code: exitNotDoneYet}
	}
}

// waitPackage reads package id until it has finished and returns it. When
// timeout (if not 0) runs out first it returns the package as last read.
// Progress goes to stdout on one updating line when stdout is a terminal
// (and the output is a table), and nowhere otherwise, so that what a script
// reads is the same as without --wait.
func (a *app) waitPackage(ctx context.Context, cl *client.Client, id string, timeout time.Duration) (*spinbroker.Package, error) {
	w := &waiter{
		cl:    cl,
		id:    id,
		poll:  time.Second,
		stall: stallHint,
		show:  func(*spinbroker.Package) {},
		note:  func(msg string) { fmt.Fprintln(a.stderr, "spinbroker:", msg) },
	}
	if !a.jsonOutput() && isTerminal(a.stdout) {
		const clearLine = "\r\033[K"
		w.show = func(p *spinbroker.Package) { fmt.Fprintf(a.stdout, "%s%s: %s", clearLine, p.State, progress(p)) }
		w.note = func(msg string) {
			fmt.Fprint(a.stdout, clearLine)
			fmt.Fprintln(a.stderr, "spinbroker:", msg)
		}
		// The final status takes the progress line's place.
		defer fmt.Fprint(a.stdout, clearLine)
	}
	wctx := ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	p, err := w.wait(wctx)
	if err != nil && p != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		if w.away {
			// The package as last read is from before the broker went:
			// not its state now, and "not finished" (3) is not what the
			// broker said. As for a broker that cannot be asked: exit 4.
			return nil, &exitError{code: exitTryAgain, msg: fmt.Sprintf("--timeout %s ran out while the broker is away, so package %s's state is not known: it was %s (%s) when last read",
				timeout, p.ID, p.State, progress(p))}
		}
		return p, nil // --timeout ran out: report the package as it is
	}
	if p != nil && spinbroker.ErrorCode(err) == spinbroker.ENOTFOUND {
		// WaitPackage read it before: the id was right, and the package
		// went meanwhile (a client deleted it, or the sweep of packages
		// left in staging did). A bare "not found" reads as a wrong id.
		return nil, &exitError{code: exitFailed, msg: fmt.Sprintf("package %s was deleted while waited for: it was %s (%s) when last read",
			p.ID, p.State, progress(p))}
	}
	return p, err
}

// isTerminal reports whether w is a terminal, where a line can be redrawn.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// waiter tells a person at a terminal how the wait for one package goes,
// while client.WaitPackage does the waiting: every state read, a word when
// the package sits in staging or the broker goes away and comes back, and
// what holds the package when nothing has moved for a while.
type waiter struct {
	cl    *client.Client
	id    string                    // the package
	poll  time.Duration             // between reads when there are no events
	stall time.Duration             // unchanged this long, the waiter looks for why
	show  func(*spinbroker.Package) // every state read
	note  func(string)              // news for the person waiting

	// away: the broker stopped answering and has not answered since.
	// Written under wait's lock; read by wait's caller once it returned.
	away bool
}

// stallHint is how long a package may sit unchanged, with work ready,
// before status --wait looks at its queues and says what holds it: no agent
// taking the work, or a paused queue. A newcomer who has not started the
// agents would otherwise watch "0/3 done" for minutes.
const stallHint = 5 * time.Second

// wait returns the package once it has finished; when ctx ends first it
// returns the package as last read with ctx's error.
func (w *waiter) wait(ctx context.Context) (*spinbroker.Package, error) {
	// WaitPackage reads only when there is news, so a timer of its own
	// looks into a stall; mu keeps its notes and the reads' in order.
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu      sync.Mutex
		last    *spinbroker.Package
		staged  bool // the package was seen in staging; said once
		looked  bool // a stall was looked into; once
		done    bool // the wait is over: no more notes
		seen    string
		changed time.Time // when the package was last seen to change
	)
	// lookIfStalled runs with mu held.
	lookIfStalled := func() {
		if !done && !looked && !w.away && last != nil && last.State != spinbroker.PackageStaging && time.Since(changed) >= w.stall {
			looked = true
			w.whyStalled(lctx, last)
		}
	}
	var stalled *time.Timer // runs lookIfStalled a stall's time after a change
	defer func() {
		cancel() // a look into a stall in progress gives up
		mu.Lock()
		defer mu.Unlock()
		done = true
		if stalled != nil {
			stalled.Stop()
		}
	}()

	return w.cl.WaitPackage(ctx, w.id,
		client.PollEvery(w.poll),
		client.OnRead(func(p *spinbroker.Package) {
			mu.Lock()
			defer mu.Unlock()
			last = p
			w.show(p)
			if p.State.Terminal() {
				return
			}
			if now := fmt.Sprint(p.State, p.Counts); now != seen {
				seen, changed = now, time.Now()
				if stalled == nil {
					stalled = time.AfterFunc(w.stall, func() {
						mu.Lock()
						defer mu.Unlock()
						lookIfStalled()
					})
				} else {
					stalled.Reset(w.stall)
				}
			}
			lookIfStalled()
			if p.State == spinbroker.PackageStaging && !staged {
				// Someone else may enqueue it; but a forgotten enqueue
				// would otherwise look like a hang.
				w.note(fmt.Sprintf("package %s is in staging: none of its commands runs until it is enqueued (spinbroker message enqueue %s); waiting", p.ID, p.ID))
				staged = true
			}
		}),
		client.OnBrokerAway(func(err error) {
			mu.Lock()
			defer mu.Unlock()
			w.note(awayNote(err))
			w.away = true
		}),
		client.OnBrokerBack(func() {
			mu.Lock()
			defer mu.Unlock()
			w.note("the broker is back")
			w.away = false
		}),
	)
}

// awayNote is the word for a broker that answered earlier in the wait and
// has stopped answering: most often a restart, which the wait sits out.
// describe's "is it running, and is that its address?" fits a broker never
// reached, not one that was answering at that address a moment ago.
func awayNote(err error) string {
	reason := describe(err)
	if errors.Is(err, syscall.ECONNREFUSED) {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the dial, without the request's path
		}
		reason = err.Error()
	}
	return fmt.Sprintf("the broker went away (%s); waiting for it to come back", reason)
}

// whyStalled looks at the queues of the package's ready commands and says
// what holds them: a paused queue, or free slots that no agent fills.
func (w *waiter) whyStalled(ctx context.Context, p *spinbroker.Package) {
	var resources []string
	for _, c := range p.Commands {
		if c.State == spinbroker.Ready && !slices.Contains(resources, c.Resource) {
			resources = append(resources, c.Resource)
		}
	}
	for _, r := range resources[:min(len(resources), 3)] {
		q, err := w.cl.Queue(ctx, r)
		switch {
		case err != nil:
		case q.Paused:
			w.note(fmt.Sprintf("queue %s is paused: nothing in it runs until it is resumed (spinbroker queue resume %s)", r, r))
		case q.Counts.Ready > 0 && q.Counts.Leased < q.Concurrency:
			w.note(fmt.Sprintf("queue %s has %d ready, the oldest for %s, and %d of %d slots free, yet none has been taken: is an agent for %s running?",
				r, q.Counts.Ready, (time.Duration(q.OldestReadyAgeSeconds) * time.Second).String(), q.Concurrency-q.Counts.Leased, q.Concurrency, r))
		}
	}
}

func (a *app) messageCompleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "complete CMD true|false [reason]",
		Short: "Settle a command by hand: succeeded (true) or failed (false)",
		Long: `complete records a command's result without an agent, as a person at the
terminal: true for success, false for failure, with an optional reason. It
settles a ready command, or a leased one in place of its agent (whose own
result is then refused). Completing a finished command again with the same
result changes nothing; with the other result it is a conflict.`,
		Example: `  spinbroker message complete "$CMD" true
  spinbroker message complete "$CMD" false "disk full"`,
		Args: argsBetween(2, 3, "CMD true|false [reason]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkID(cmd, "CMD", args[0]); err != nil {
				return err
			}
			status, err := strconv.ParseBool(args[1])
			if err != nil {
				return usagef(cmd, "want true or false, not %q", clip(args[1]))
			}
			res := spinbroker.Result{Status: &status}
			if len(args) == 3 {
				// JSON would carry bytes that are not UTF-8 as U+FFFD: the
				// reason kept would not be the one given.
				if !utf8.ValidString(args[2]) {
					return usagef(cmd, "reason %q is not valid UTF-8", clip(args[2]))
				}
				res.Reason = &args[2]
			}
			cl, err := a.dial(cmd)
			if err != nil {
				return err
			}
			c, err := cl.Complete(cmd.Context(), args[0], res)
			var tl *client.AnswerTooLargeError
			if errors.As(err, &tl) && tl.Done {
				return doneUnread(err, "command", args[0])
			}
			if err != nil {
				return whatIsIt(cmd.Context(), cl, "command", args[0], err)
			}
			if a.jsonOutput() {
				return a.printJSON(c)
			}
			return printCommandState(a.stdout, c)
		},
	}
}

// printCommandState prints the one line that says where a command stands
// after a change.
func printCommandState(w io.Writer, c *spinbroker.Command) error {
	var err error
	if c.Reason != nil && *c.Reason != "" {
		_, err = fmt.Fprintf(w, "command %s: %s (%s)\n", c.ID, c.State, oneLine(*c.Reason))
	} else {
		_, err = fmt.Fprintf(w, "command %s: %s\n", c.ID, c.State)
	}
	return err
}

// parseNotBefore reads --not-before: an RFC 3339 time the broker keeps.
func parseNotBefore(s string) (time.Time, error) {
	// RFC 3339 allows a lower-case t and z, which Go's parser (and the
	// broker) refuse: here they are read as meant.
	t, err := time.Parse(time.RFC3339, strings.ToUpper(s))
	if err != nil {
		return time.Time{}, fmt.Errorf("--not-before %q is not an RFC 3339 time such as 2026-01-02T15:04:05Z", clip(s))
	}
	if _, err := spinbroker.CheckNotBefore(t); err != nil {
		// The broker's sentence names its field, not the flag.
		msg, _ := strings.CutPrefix(spinbroker.ErrorMessage(err), "not_before ")
		return time.Time{}, fmt.Errorf("--not-before %s", msg)
	}
	return t, nil
}
