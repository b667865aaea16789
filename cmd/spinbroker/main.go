// Command spinbroker is spin-broker's one binary: the broker (serve), its
// database tools (migrate, backup, compact, check, token) and a client of its HTTP API
// (message, package, command, queue, events, ping).
package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/client"
	"github.com/spin-broker/spinbroker/internal/version"
)

func main() {
	ctx, stop := signalContext()
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// The causes of the context signalContext cancels, for context.Cause.
var (
	errInterrupted = errors.New("SIGINT")
	errTerminated  = errors.New("SIGTERM")
)

// signalContext is signal.NotifyContext for SIGINT and SIGTERM with a cause
// that says which came (errInterrupted, errTerminated): serve logs it, and
// status --wait exits 130 or 143 as a shell would. After the first signal
// the default action is back: a second one ends the process at once.
func signalContext() (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case sig := <-ch:
			signal.Stop(ch)
			if sig == syscall.SIGTERM {
				cancel(errTerminated)
			} else {
				cancel(errInterrupted)
			}
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(done)
		cancel(nil)
	}
}

// app holds what every subcommand shares: the global flags and the streams.
type app struct {
	url    string // --url / SPINBROKER_URL
	token  string // --token / SPINBROKER_TOKEN
	output string // -o table|json
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	dialed bool // a command set out to ask the broker (dial)
	// idempotent: the command sends an Idempotency-Key, so a write that got
	// no answer is safe to repeat as it was.
	idempotent bool
}

// exitError ends the program with a given exit code, after printing its
// message (if any) to stderr.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// run builds the command tree, runs it and turns the outcome into an exit
// code: 0 success, 2 bad usage, 130 or 143 cut short by SIGINT or SIGTERM,
// 1 any other failure (or what an exitError says).
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	strictBuiltins(root)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var tl *client.AnswerTooLargeError
	if errors.As(err, &tl) && tl.Done && ctx.Err() == nil {
		err = doneUnread(err, "", "")
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(stderr, "spinbroker:", ee.msg)
		}
		return ee.code
	}
	if ctx.Err() != nil {
		// SIGINT or SIGTERM cut the command short: whatever error that
		// left ("Get ...: SIGINT") is not the broker's nor the command's.
		ee = interrupted(ctx)
		msg := ee.msg
		if writeSent(err) {
			msg += " while the broker had the request: the change may have been made all the same; " + lookBeforeRepeat
		}
		fmt.Fprintln(stderr, "spinbroker:", a.repeatHint(msg))
		return ee.code
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "spinbroker: %v\nRun '%s --help' for usage.\n", ue.err, ue.cmd)
		return 2
	}
	fmt.Fprintln(stderr, "spinbroker:", a.repeatHint(describeWithToken(err, a.tokenFrom(root))))
	if a.dialed {
		return exitCodeOf(err)
	}
	return 1
}

// doneUnread is the outcome of a write that the broker carried out but
// whose answer was too large to read (err, a *client.AnswerTooLargeError
// whose Done is set): exit 1 read as "failed" to a script, which then made
// the change again. It exits 0, with a warning on stderr that says so and,
// when the command names what it changed (kind, "package" or "command",
// and id), how to look at it.
func doneUnread(err error, kind, id string) *exitError {
	var tl *client.AnswerTooLargeError
	if !errors.As(err, &tl) {
		return &exitError{code: 1, msg: describe(err)}
	}
	msg := fmt.Sprintf("warning: %s %s was done (%d), but the broker's answer is larger than %d MiB, more than spinbroker reads (a package's commands hold their parameters and outputs): the change was made; do not run it again",
		tl.Method, tl.Path, tl.StatusCode, tl.Limit>>20)
	switch kind {
	case "package":
		// 'package show' would read the same answer, and fail the same way;
		// 'package ls' without --all shows the newest page only, which an
		// older package is not in.
		msg += fmt.Sprintf("; 'spinbroker package ls --all' lists package %s and its state, without its commands", id)
	case "command":
		msg += fmt.Sprintf("; look at it with 'spinbroker command show %s'", id)
	}
	return &exitError{code: 0, msg: msg}
}

// lookBeforeRepeat ends the message of a write that got no answer; with an
// Idempotency-Key, repeatWithKey takes its place.
const (
	lookBeforeRepeat = "look before you repeat it"
	repeatWithKey    = "run the same command again, with the same --idempotency-key: the broker makes it once"
)

// repeatHint is msg, told that a write sent with an Idempotency-Key may
// simply be repeated.
func (a *app) repeatHint(msg string) string {
	if !a.idempotent {
		return msg
	}
	return strings.Replace(msg, lookBeforeRepeat, repeatWithKey, 1)
}

// exitTryAgain is the exit status of a client command that could not ask
// the broker (refused, reset, no answer within answerTimeout) or that the
// broker, or a proxy in front of it, answered it is away or busy (5xx,
// 429): nothing is known to be wrong with the command, and the same one
// may succeed later. A write that got no answer may have been made.
const exitTryAgain = 4

// exitCodeOf is the exit status of a client command that failed with err:
// exitTryAgain or 1. A script can then tell "the broker said no" (1) from
// "ask again later" (4).
func exitCodeOf(err error) int {
	var ce *client.Error
	if errors.As(err, &ce) {
		proxyDown := ce.RequestID == "" && (ce.StatusCode == http.StatusBadGateway ||
			ce.StatusCode == http.StatusServiceUnavailable || ce.StatusCode == http.StatusGatewayTimeout)
		if proxyDown || ce.RequestID != "" && client.Temporary(ce) {
			return exitTryAgain
		}
		return 1
	}
	// Mistakes of configuration that come wrapped as network errors (a
	// redirect, an untrusted certificate, the wrong scheme) are not
	// Temporary: asking again changes nothing (see describeWithToken).
	if client.Temporary(err) {
		return exitTryAgain
	}
	return 1
}

// tokenFrom names where the token the commands sent came from: "--token",
// "SPINBROKER_TOKEN", or "" when none was given.
func (a *app) tokenFrom(root *cobra.Command) string {
	switch {
	case strings.TrimSpace(a.token) == "":
		return ""
	case root.PersistentFlags().Lookup("token").Changed:
		return "--token"
	}
	return "SPINBROKER_TOKEN"
}

// interrupted is how a command that SIGINT or SIGTERM (the cause of ctx,
// from signalContext) ended exits: neither success nor failure, but the
// shell's 130 or 143, as for a program the signal killed.
func interrupted(ctx context.Context) *exitError {
	if errors.Is(context.Cause(ctx), errTerminated) {
		return &exitError{code: exitTerminated, msg: "terminated"}
	}
	return &exitError{code: exitInterrupted, msg: "interrupted"}
}

// usageError is a mistake in the command line.
type usageError struct {
	cmd string
	err error
}

func (e *usageError) Error() string { return e.err.Error() }

// flagWants says, by a flag's type, what a value of it looks like.
var flagWants = map[string]string{
	"int":      "a whole number",
	"duration": "a duration such as 90s, 5m or 1h30m",
	"bool":     "true or false",
}

// flagValueError rewrites pflag's error for a value a flag cannot parse,
// which ends in the Go parser's own ('invalid argument "5" for
// "--timeout" flag: time: missing unit in duration "5"'), into one
// sentence that says what the flag takes.
func flagValueError(err error) error {
	var ive *pflag.InvalidValueError
	if !errors.As(err, &ive) {
		return err
	}
	want, ok := flagWants[ive.GetFlag().Value.Type()]
	if !ok {
		return err
	}
	return fmt.Errorf("invalid argument %q for --%s: want %s", clip(ive.GetValue()), ive.GetFlag().Name, want)
}

// notBrokerJSON says that a success answer was not the broker's JSON.
const notBrokerJSON = "what answers at the broker's address is not spin-broker: its answer is not the broker's JSON; is that the broker's address? --url or SPINBROKER_URL names it"

// describe turns an error into a sentence for a person at a terminal.
func describe(err error) string { return describeWithToken(err, "") }

// describeWithToken is describe for a command that sent the token given in
// tokenFrom ("--token", "SPINBROKER_TOKEN"; "" for none): a 401 then says
// that token was refused, not to give one.
func describeWithToken(err error, tokenFrom string) string {
	var sche *client.SchemeError
	if errors.As(err, &sche) {
		// Before the *client.Error it may wrap: Go's server answers plain
		// HTTP on a TLS port with a 400, not a mistake of the request.
		if sche.Want == "https" {
			return fmt.Sprintf("the broker speaks HTTPS, not plain HTTP: give an https:// URL (--url or SPINBROKER_URL): %s", sche.Instead().Redacted())
		}
		return fmt.Sprintf("the broker speaks plain HTTP, not HTTPS: give an http:// URL (--url or SPINBROKER_URL): %s", sche.Instead().Redacted())
	}
	var ce *client.Error
	if errors.As(err, &ce) && ce.RequestID == "" {
		// Every answer of spin-broker's carries the id of its request:
		// this one came from another server at that address, or from a
		// proxy in front of the broker, and its "message" is the start
		// of that server's page, whose code only stands for the status.
		return fmt.Sprintf("what answers at the broker's address is not spin-broker, or not it alone: it answered %d %s, with no error of the broker's but \"%s\": another server is at that address, or a proxy in front of the broker answered in its place (its broker down, a limit of its own); --url or SPINBROKER_URL names the address",
			ce.StatusCode, http.StatusText(ce.StatusCode), clip(oneLine(strings.Join(strings.Fields(ce.Err.Message), " "))))
	}
	var ne *client.NotStreamError
	if errors.As(err, &ne) {
		// A page answered 200 where the event stream should be: not the
		// broker's, and asking again gets the same page.
		ct := "no Content-Type"
		if ne.ContentType != "" {
			ct = clip(oneLine(ne.ContentType))
		}
		return fmt.Sprintf("what answers at the broker's address is not spin-broker, or not it alone: GET /events at %s answered %d %s with %s, not an event stream: another server is at that address, or a proxy in front of the broker answered in its place (a login page, say); --url or SPINBROKER_URL names the address",
			oneLine(ne.Host), ne.StatusCode, http.StatusText(ne.StatusCode), ct)
	}
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	if errors.As(err, &se) || errors.As(err, &te) {
		// The client could not read a success answer as the broker's JSON.
		return notBrokerJSON
	}
	if errors.As(err, &ce) {
		if ce.StatusCode >= 500 && ce.RequestID != "" {
			// The broker's side of it is in its log, under this id.
			return fmt.Sprintf("%s (%s, request %s)", ce.Err.Message, ce.Err.Code, ce.RequestID)
		}
		msg := fmt.Sprintf("%s (%s)", ce.Err.Message, ce.Err.Code)
		switch {
		case ce.Err.Code != spinbroker.EUNAUTHORIZED:
		case spinbroker.IsTokenExpired(ce.Err), spinbroker.IsTokenRevoked(ce.Err):
			// The broker's sentence says what happened to the token,
			// when, and what to do: there is no typo to look for.
		case tokenFrom != "":
			given := "in " + tokenFrom
			if tokenFrom == "--token" {
				given = "with --token"
			}
			msg += "; the token given " + given + " was refused: revoked, mistyped, or made for another broker ('spinbroker token ls --db' on the broker's database lists its tokens)"
		default:
			// The broker speaks of headers; here a token is a flag.
			msg += "; give --token or set SPINBROKER_TOKEN (spinbroker token create makes one)"
		}
		return msg
	}
	var re *client.RedirectError
	if errors.As(err, &re) && re.Loop {
		return fmt.Sprintf("the broker's address redirects %s %s again and again (10 times, the last to %s): nothing answered it; give --url or SPINBROKER_URL the address the broker answers at itself",
			re.Method, re.Path, re.To.Redacted())
	}
	if errors.As(err, &re) {
		// The client's words, but for a flag rather than New.
		return fmt.Sprintf("the broker's address redirects %s %s to %s, where it would arrive without its body: nothing was sent there; give --url or SPINBROKER_URL the address it redirects to (%s://%s)",
			re.Method, re.Path, re.To.Redacted(), re.To.Scheme, re.To.Host)
	}
	var he x509.HostnameError
	if errors.As(err, &he) {
		// Trusted, but for other names than the one in --url.
		return fmt.Sprintf("the broker's TLS certificate is not for the name in --url: %v; use one of its names", err)
	}
	if client.Untrusted(err) {
		// It was reached: what failed is trusting it.
		return fmt.Sprintf("the broker's TLS certificate is not trusted here: %v; if your own authority signed it, set SSL_CERT_FILE to that authority's certificate (PEM)", err)
	}
	if ue, ok := noAnswer(err); ok {
		msg := fmt.Sprintf("the broker did not answer within %s: %v; it may be stopped or stuck (its log, and /healthz, say which)", answerTimeout, err)
		if isWrite(ue) {
			msg += "; the change may have been made all the same: " + lookBeforeRepeat
		}
		return msg
	}
	if client.Temporary(err) {
		msg := fmt.Sprintf("cannot reach the broker: %v", err)
		if errors.Is(err, syscall.ECONNREFUSED) {
			msg += "; is it running, and is that its address? --url or SPINBROKER_URL names it"
		}
		return msg
	}
	if code := spinbroker.ErrorCode(err); code != spinbroker.EINTERNAL {
		if _, bare := err.(*spinbroker.Error); !bare {
			// A store error of a command on a database file, wrapped with
			// what it was doing to which file ("store: backup: write
			// x.db: database or disk is full"): its code's message alone
			// ("the database is unavailable") lost which file it was
			// about, and blamed the live database for a full backup disk.
			return fmt.Sprintf("%v (%s)", err, code)
		}
		return fmt.Sprintf("%s (%s)", spinbroker.ErrorMessage(err), code)
	}
	return err.Error()
}

// writeSent reports whether err is a write's request cut short after it
// was sent (or while it was): not a dial that failed, nor a read.
func writeSent(err error) bool {
	ue := sent(err)
	return ue != nil && isWrite(ue)
}

// sent is err's *url.Error when err is a request that got past its dial
// (sent to the broker, or being sent), nil for one that never connected.
func sent(err error) *url.Error {
	var ue *url.Error
	if !errors.As(err, &ue) {
		return nil
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return nil
	}
	return ue
}

// isWrite reports whether the request of ue may change something.
func isWrite(ue *url.Error) bool { return ue.Op != "Get" && ue.Op != "Head" }

// noAnswer reports whether err is a request that reached the broker and
// timed out waiting for its answer (answerTimeout), not one that failed
// to connect, and returns its *url.Error, which names the method.
func noAnswer(err error) (*url.Error, bool) {
	ue := sent(err)
	return ue, ue != nil && ue.Timeout()
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "spinbroker",
		Short: "A message broker for finite-state-machine work",
		Long: `spinbroker runs the spin-broker message broker and talks to it.

A client groups commands ({resource, action, parameters, dependencies}) into a
package and enqueues it atomically; each resource has its own queue; agents
take the commands of their resource one after another and report the result.

Start a broker with 'spinbroker serve'; the other commands talk to it at
--url (or $SPINBROKER_URL, default http://localhost:8080).

Exit status: 0 the command did what it was asked (also when the broker's
answer to a write that was made is too large to read: stderr warns); 1 it
failed (the broker refused it, or could not be used as given: a wrong URL,
an untrusted certificate); 2 a mistake in the command line; 4 try again later (the
broker could not be reached, did not answer within 30s, or answered that
it is unavailable or busy; a write may have been made all the same); 130
or 143 SIGINT or SIGTERM cut it short.
'message status', 'check' and 'bench' give some codes more meaning: their
--help says which.`,
		Version:       version.Get().String(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &usageError{cmd: c.CommandPath(), err: flagValueError(err)}
	})
	// An unknown command is a usage error (exit 2), not a failure.
	root.Args = func(c *cobra.Command, a []string) error {
		if len(a) > 0 {
			return &usageError{cmd: c.CommandPath(), err: fmt.Errorf("unknown command %q", a[0])}
		}
		return nil
	}
	root.RunE = func(c *cobra.Command, _ []string) error { return c.Help() }
	pf := root.PersistentFlags()
	pf.StringVar(&a.url, "url", envOr("SPINBROKER_URL", "http://localhost:8080"), "broker URL (env SPINBROKER_URL)")
	pf.StringVar(&a.token, "token", os.Getenv("SPINBROKER_TOKEN"), "API token when auth is on (env SPINBROKER_TOKEN)")
	// --help shows a flag's default, and these come from the environment:
	// a token, or a password in the URL, would be shown to whoever sees
	// the help (pasted into an issue, a shared screen). Their help shows
	// none and the URL without its password; the values stand.
	pf.Lookup("token").DefValue = ""
	pf.Lookup("url").DefValue = client.RedactURL(a.url)
	pf.StringVarP(&a.output, "output", "o", "table", "output format: table or json")
	root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "json"}, cobra.ShellCompDirectiveNoFileComp)) //nolint:errcheck // the flag exists
	root.AddCommand(a.serveCommand(), a.migrateCommand(), a.backupCommand(), a.compactCommand(), a.checkCommand(), a.benchCommand())
	root.AddCommand(a.clientCommands()...)
	for _, c := range root.Commands() {
		switch c.Name() {
		case "serve", "migrate", "backup", "compact", "check", "token":
			a.hideClientFlags(c)
		}
		switch c.Name() {
		case "migrate", "backup", "compact", "check", "token":
			plainStoreErrors(c)
		}
	}
	return root
}

// plainStoreErrors makes c and its subcommands, which work on a database
// file through the store, say the store's errors as sentences (storeError).
func plainStoreErrors(c *cobra.Command) {
	for _, sub := range c.Commands() {
		plainStoreErrors(sub)
	}
	if run := c.RunE; run != nil {
		c.RunE = func(c *cobra.Command, args []string) error {
			return storeSentence(run(c, args))
		}
	}
}

// storeError is an error of the store as the CLI says it; it wraps the
// store's, whose code and kind (fs.ErrNotExist, store.ErrInUse) stay.
type storeError struct {
	msg string
	err error
}

func (e *storeError) Error() string { return e.msg }
func (e *storeError) Unwrap() error { return e.err }

// storeSentence rewords an error of the store, which starts with Go's
// prefixes of the package and the operation ("store: backup: read x.db:
// file is not a database"), as a sentence ("cannot read x.db: file is not
// a database"): the command already says which operation it is. Any other
// error is returned as it is.
func storeSentence(err error) error {
	if err == nil {
		return nil
	}
	msg, ok := strings.CutPrefix(err.Error(), "store: ")
	if !ok {
		return err
	}
	for _, op := range []string{"backup: ", "compact: ", "check: ", "migrate: ", "migrations: "} {
		if rest, ok := strings.CutPrefix(msg, op); ok {
			msg = rest
			break
		}
	}
	for _, verb := range []string{"read ", "write ", "open ", "create ", "lock ", "compact "} {
		if strings.HasPrefix(msg, verb) {
			msg = "cannot " + msg
			break
		}
	}
	return &storeError{msg: msg, err: err}
}

// hideClientFlags keeps the flags of the commands that talk to a broker
// (--url, --token, -o) out of the help of c and its subcommands, which
// work on a database file instead, and refuses them there (exit 2): a
// 'migrate status -o json' that printed a table, or a 'serve --url' that
// listened elsewhere, would mislead. The token commands print tables or
// JSON, and keep -o. A help is the last thing a process prints, so the
// flags stay hidden.
func (a *app) hideClientFlags(c *cobra.Command) {
	c.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		for _, name := range []string{"url", "token", "output"} {
			if name == "output" && (c.Name() == "token" || c.Name() == "check") {
				continue
			}
			if f := cmd.Flags().Lookup(name); f != nil && f.Changed {
				return usagef(cmd, "--%s is for the commands that talk to a broker, not for %s, which works on a database file (--db)", name, cmd.CommandPath())
			}
		}
		if c.Name() == "token" || c.Name() == "check" {
			if err := a.checkOutput(); err != nil {
				return usagef(cmd, "%v", err)
			}
		}
		return nil
	}
	help := c.HelpFunc()
	keepOutput := c.Name() == "token" || c.Name() == "check"
	c.SetHelpFunc(func(cmd *cobra.Command, args []string) {
		for _, name := range []string{"url", "token", "output"} {
			if name == "output" && keepOutput {
				continue // every token command, and check, prints a table or json
			}
			if f := cmd.Root().PersistentFlags().Lookup(name); f != nil {
				f.Hidden = true
			}
		}
		help(cmd, args)
	})
}

// answerTimeout bounds how long a client command waits for the broker to
// start answering one request. A broker that answers at all does so within
// seconds (a write waits at most 10s for its turn, then is told 503), and
// the CLI makes no long-polls; without a bound, a broker that took the
// connection and never answered (stopped, stuck on a disk) hung a terminal
// or a cron job for ever.
var answerTimeout = 30 * time.Second

// client returns a client of the broker the global flags name.
func (a *app) client() (*client.Client, error) { return a.clientWithToken(a.token) }

// clientWithToken is client with another token ("" for none).
func (a *app) clientWithToken(token string) (*client.Client, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = answerTimeout
	return client.New(a.url, client.WithToken(token), client.WithUserAgent("spinbroker-cli/1"),
		client.WithHTTPClient(&http.Client{Transport: t}))
}

// checkOutput validates -o.
func (a *app) checkOutput() error {
	if a.output != "table" && a.output != "json" {
		return &usageError{cmd: "spinbroker", err: fmt.Errorf("--output must be table or json, not %q", a.output)}
	}
	return nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// args returns a cobra positional-argument check that reports a usage error.
func args(n int, names string) cobra.PositionalArgs {
	return func(c *cobra.Command, a []string) error {
		if len(a) != n {
			return &usageError{cmd: c.CommandPath(), err: fmt.Errorf("want %s, got %d argument(s)", names, len(a))}
		}
		return nil
	}
}
