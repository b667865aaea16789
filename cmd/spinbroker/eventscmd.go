package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/client"
)

// eventKinds are the events 'events --kind' can keep: the broker's changes.
// "resync" is not one of them: it says changes were lost, and is always
// said.
var eventKinds = []string{"command", "package", "queue"}

// Reconnecting to a broker that went away backs off from reconnectMin to
// reconnectMax: soon enough to catch up with a restart, rarely enough not
// to hammer a broker that is down.
const (
	reconnectMin = 250 * time.Millisecond
	reconnectMax = 5 * time.Second
)

func (a *app) eventsCommand() *cobra.Command {
	var (
		pkg          string
		resources    []string
		kinds        []string
		reconnectFor time.Duration
	)
	cmd := &cobra.Command{
		Use:   "events [--package ID] [--resource R]... [--kind command|package|queue]...",
		Short: "Follow the broker's changes as they happen",
		Long: `events follows the broker's event stream (GET /events) and prints the changes
as they happen, until interrupted (Ctrl-C: exit 130, quietly) or, piped,
until the pipe's reader goes ('| head -1': exit 141, as SIGPIPE, at once
even when there is nothing to print): every
transition of a command, and the state of a package or a queue after it
changed, at most once every 100ms each (changes closer together than that
come as one event).

Table output (the default) prints one line per event: when it was received
(UTC), its kind, the package and the command it concerns, the resource, a
command's attempts, and the change: a command's "from → state", a package's
state and progress, a queue's counts and settings, or "deleted" and
"forgotten" for a package deleted and a queue the broker forgot. -o json
prints one JSON object per line (JSON Lines), {"received", "kind", "data"},
data being the event as the broker sent it; a "resync" object says the
stream fell behind and changes were dropped (stderr says so, in either
output).

--package follows one package (the broker filters: its stream has its
package and command events only). A command's id there is refused (exit 1),
naming its package; an id that no package has yet is followed, and stderr
says so. --resource keeps the command and queue
events of that resource (repeatable); package events, which have no
resource, still pass unless --kind leaves them out. --kind keeps one kind
(repeatable, or comma-separated).

The broker keeps no history: only changes made while the stream is open are
printed. If the stream drops (the broker restarts) or goes silent (nothing
for 45s, not even the broker's keep-alive: a connection a NAT forgot), events
says so on stderr and reconnects, backing off up to 5s; what changed
meanwhile is not sent.
It gives up (exit 4) once the broker has been away for --reconnect-for. If
the broker cannot be reached at the start, it fails at once (exit 4); if
what answers is not an event stream (another server's page, a proxy's login
page), at once too, at the start or later (exit 1). A stream whose token was
revoked, or ran out, ends with the broker's refusal (exit 1). A viewer token
is enough.`,
		Example: `  spinbroker events
  spinbroker events --package "$PKG"
  spinbroker events --resource storage --kind command
  spinbroker events -o json | jq -c 'select(.kind == "command") | .data'`,
		Args: args(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := a.checkOutput(); err != nil {
				return usagef(cmd, "%v", err)
			}
			if cmd.Flags().Changed("package") && strings.TrimSpace(pkg) == "" {
				return usagef(cmd, "--package must not be empty: give a package's id")
			}
			for _, r := range resources {
				if !spinbroker.ValidName(r) {
					return usagef(cmd, "--resource %q is not a valid name: 1 to 64 characters of [a-z0-9_.-], starting with a letter or digit", clip(r))
				}
			}
			for _, k := range kinds {
				if !slices.Contains(eventKinds, k) {
					return usagef(cmd, "--kind must be one of %s, not %q", strings.Join(eventKinds, ", "), clip(k))
				}
			}
			if pkg != "" && slices.Contains(kinds, "queue") {
				return usagef(cmd, "--kind queue with --package shows nothing: a package's stream has no queue events")
			}
			if reconnectFor < 0 {
				return usagef(cmd, "--reconnect-for must not be negative")
			}
			cl, err := a.dial(cmd)
			if err != nil {
				return err
			}
			f := &eventFollower{
				a:            a,
				cl:           cl,
				resources:    resources,
				kinds:        kinds,
				reconnectFor: reconnectFor,
				table:        &eventTable{w: a.stdout, resWidth: len("RESOURCE")},
			}
			// A pipe whose reader has gone ends events as a write to it
			// would (SIGPIPE), even when there is nothing to write.
			ctx, cancel := context.WithCancelCause(cmd.Context())
			defer cancel(nil)
			go func() {
				select {
				case <-readerGone(ctx, a.stdout):
					cancel(errReaderGone)
				case <-ctx.Done():
				}
			}()
			var opts []client.EventsOption
			if pkg != "" {
				if err := f.lookAtPackage(ctx, pkg); err != nil {
					return err
				}
				opts = append(opts, client.ForPackage(pkg))
			}
			err = f.follow(ctx, opts)
			if errors.Is(context.Cause(ctx), errReaderGone) {
				return &exitError{code: exitBrokenPipe}
			}
			if ctx.Err() != nil {
				// Ctrl-C is how events ends: not worth a word.
				return &exitError{code: interrupted(ctx).code}
			}
			return err
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&pkg, "package", "", "only this package's events (its id)")
	fl.StringArrayVar(&resources, "resource", nil, "only the command and queue events of this resource (repeatable)")
	fl.StringSliceVar(&kinds, "kind", nil, "only events of this kind: command, package or queue (repeatable)")
	fl.DurationVar(&reconnectFor, "reconnect-for", 5*time.Minute, "give up (exit 4) once the broker has been away this long (0: never)")
	_ = cmd.RegisterFlagCompletionFunc("kind", cobra.FixedCompletions(eventKinds, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("package", a.completePackage)
	_ = cmd.RegisterFlagCompletionFunc("resource", a.completeQueue)
	return cmd
}

// lookAtPackage asks the broker once about the package --package names: the
// broker's filter takes any id, so a command's id (what 'message add'
// prints) was followed in silence for ever. A command's id is refused,
// naming its package; an id that names nothing yet is followed (a client
// may create a package with an id of its own), with a word on stderr. Any
// other answer (the package, a token that may not read it, no broker) is
// left to the stream, which says it as it does without --package.
func (f *eventFollower) lookAtPackage(ctx context.Context, id string) error {
	if !spinbroker.LooksLikeID(id) {
		return nil // the broker's 400 says what is wrong with it
	}
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := f.cl.Package(lctx, id)
	if spinbroker.ErrorCode(err) != spinbroker.ENOTFOUND {
		return nil
	}
	if c, cerr := f.cl.Command(lctx, id); cerr == nil {
		return &exitError{code: 1, msg: fmt.Sprintf("%s; %s is a command's id (of package %s): spinbroker events --package %s",
			describe(err), c.ID, c.PackageID, c.PackageID)}
	}
	if lctx.Err() == nil { // the command's lookup was answered: neither is there
		f.note(fmt.Sprintf("no package %s (yet): its events are printed once a package is made with that id", id))
	}
	return nil
}

// errReaderGone is the cause of the context of an 'events' whose stdout, a
// pipe, lost its reader.
var errReaderGone = errors.New("stdout's reader is gone")

// exitBrokenPipe is the exit status of a command whose output's reader went
// away: the shell's 128+13, as for a program that SIGPIPE ended, which a
// write to that pipe does.
const exitBrokenPipe = 141

// eventFollower prints a broker's events, and keeps its stream open.
type eventFollower struct {
	a            *app
	cl           *client.Client
	resources    []string // keep only the command and queue events of these, if any
	kinds        []string // keep only these kinds, if any
	reconnectFor time.Duration
	table        *eventTable
}

// follow prints events until ctx ends or the stream cannot be had: on the
// first try, any error; later, an error that asking again will not mend
// (a token refused), or the broker away for longer than reconnectFor.
func (f *eventFollower) follow(ctx context.Context, opts []client.EventsOption) error {
	var (
		opened    bool      // a stream was open once
		awaySince time.Time // when the stream dropped; zero while it is open
		delay     = reconnectMin
		// held is the note on a stream the broker ended, held until the
		// next try says why it did: a broker stopping cannot be asked again
		// at once, while one that revoked the token refuses it, and that
		// refusal is all there is to say.
		held string
	)
	onOpen := client.OnOpen(func() {
		switch {
		case !opened:
			opened = true
			if !f.a.jsonOutput() {
				f.table.header()
			}
		case !awaySince.IsZero():
			f.noteHeld(&held)
			f.note("connected again; changes made while the stream was down were not sent")
		}
		awaySince, delay = time.Time{}, reconnectMin
	})
	opts = append(opts, onOpen)
	for {
		err := f.cl.Events(ctx, f.print, opts...)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !opened || !client.Temporary(err) {
			return err
		}
		f.noteHeld(&held)
		if awaySince.IsZero() {
			awaySince = time.Now()
			msg := dropped(err) + "; reconnecting…"
			if endedByBroker(err) {
				held = msg
			} else {
				f.note(msg)
			}
		} else if f.reconnectFor > 0 && time.Since(awaySince) >= f.reconnectFor {
			return &exitError{code: exitTryAgain, msg: fmt.Sprintf("the broker has been away for %s (--reconnect-for): %s; giving up",
				time.Since(awaySince).Round(time.Second), describe(err))}
		}
		wait := delay
		var ce *client.Error
		if errors.As(err, &ce) && ce.RetryAfter > wait {
			// A broker too busy for another stream says when to ask again.
			wait = min(ce.RetryAfter, 30*time.Second)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		delay = min(2*delay, reconnectMax)
	}
}

// dropped says briefly why a stream that was open ended.
func dropped(err error) string {
	var se *client.SilentError
	switch {
	case errors.As(err, &se):
		// The broker answered, then nothing came: not "cannot reach".
		return fmt.Sprintf("the event stream went silent for %s (no keep-alive from the broker)", se.Idle)
	case endedByBroker(err):
		return "the event stream dropped (the broker ended it: it is stopping or restarting)"
	}
	return fmt.Sprintf("the event stream dropped (%s)", describe(err))
}

// endedByBroker says whether the broker ended the stream itself, as it does
// when it stops and when the stream's token was revoked or ran out.
func endedByBroker(err error) bool {
	return errors.Is(err, client.ErrStreamEnded)
}

// noteHeld says a held note on a dropped stream, once.
func (f *eventFollower) noteHeld(msg *string) {
	if *msg != "" {
		f.note(*msg)
		*msg = ""
	}
}

// note says something about the stream on stderr, never on stdout, which
// a pipe may be reading.
func (f *eventFollower) note(msg string) {
	fmt.Fprintln(f.a.stderr, "spinbroker:", msg)
}

// print prints one event, unless the filters leave it out.
func (f *eventFollower) print(ev client.Event) error {
	received := time.Now()
	if ev.Type == "resync" {
		f.note("the stream fell behind and the broker dropped events: changes may have been missed (package ls and queue ls show the state now)")
		if f.a.jsonOutput() {
			return f.printJSON(received, ev)
		}
		return nil
	}
	if len(f.kinds) > 0 && !slices.Contains(f.kinds, ev.Type) {
		return nil
	}
	if len(f.resources) > 0 && (ev.Type == "command" || ev.Type == "queue") {
		var v struct {
			Resource string `json:"resource"`
		}
		if json.Unmarshal(ev.Data, &v) != nil || !slices.Contains(f.resources, v.Resource) {
			return nil
		}
	}
	if f.a.jsonOutput() {
		return f.printJSON(received, ev)
	}
	return f.table.line(received, ev)
}

// eventLine is one line of 'events -o json'.
type eventLine struct {
	Received string          `json:"received"`
	Kind     string          `json:"kind"`
	Data     json.RawMessage `json:"data"`
}

// printJSON writes ev as one line of JSON, in one write: stdout may be a
// pipe, whose reader should have each line as it comes.
func (f *eventFollower) printJSON(received time.Time, ev client.Event) error {
	data := ev.Data
	if !json.Valid(data) {
		// Not the broker's JSON: carried as a string rather than lost.
		data, _ = json.Marshal(string(ev.Data))
	}
	b, err := json.Marshal(eventLine{Received: received.UTC().Format(eventTimeJSON), Kind: ev.Type, Data: data})
	if err != nil {
		return err
	}
	_, err = f.a.stdout.Write(append(b, '\n'))
	return err
}

// The times of 'events': when each event was received, in UTC, to the
// millisecond.
const (
	eventTimeTable = "2006-01-02 15:04:05.000Z"
	eventTimeJSON  = "2006-01-02T15:04:05.000Z07:00"
)

// eventTable prints events as aligned lines. The lines are written as they
// come, so the widths are fixed, but for the resource's, which grows to the
// widest seen.
type eventTable struct {
	w        io.Writer
	resWidth int
}

const idWidth = 36 // a UUID

func (t *eventTable) header() {
	t.row("TIME", "KIND", "PACKAGE", "COMMAND", "RESOURCE", "ATTEMPTS", "CHANGE") //nolint:errcheck // a failed write fails the next line too
}

// row writes one line, in one write.
func (t *eventTable) row(when, kind, pkg, cmd, resource, attempts, change string) error {
	resource = oneLine(resource)
	t.resWidth = max(t.resWidth, len(resource))
	_, err := fmt.Fprintf(t.w, "%-*s  %-7s  %-*s  %-*s  %-*s  %-8s  %s\n",
		len(eventTimeTable), when, oneLine(kind), idWidth, oneLine(pkg), idWidth, oneLine(cmd),
		t.resWidth, resource, attempts, change)
	return err
}

// line writes one event.
func (t *eventTable) line(received time.Time, ev client.Event) error {
	when := received.UTC().Format(eventTimeTable)
	switch ev.Type {
	case "command":
		var c spinbroker.Change
		if json.Unmarshal(ev.Data, &c) == nil && c.CommandID != "" {
			change := string(c.To)
			if c.From != "" {
				change = string(c.From) + " → " + change
			}
			return t.row(when, ev.Type, c.PackageID, c.CommandID, c.Resource, strconv.Itoa(c.Attempts), oneLine(change))
		}
	case "package":
		var p struct {
			spinbroker.Package
			Deleted bool `json:"deleted"`
		}
		if json.Unmarshal(ev.Data, &p) == nil && p.ID != "" {
			change := "deleted"
			if !p.Deleted {
				change = fmt.Sprintf("%s, %s", p.State, progress(&p.Package))
				if p.Reason != nil && *p.Reason != "" {
					change += ": " + clip(*p.Reason)
				}
			}
			return t.row(when, ev.Type, p.ID, "-", "-", "-", oneLine(change))
		}
	case "queue":
		var q struct {
			spinbroker.Queue
			Forgotten bool `json:"forgotten"`
		}
		if json.Unmarshal(ev.Data, &q) == nil && q.Resource != "" {
			change := "forgotten"
			if !q.Forgotten {
				change = fmt.Sprintf("%d blocked, %d ready, %d leased; concurrency %d", q.Counts.Blocked, q.Counts.Ready, q.Counts.Leased, q.Concurrency)
				if q.Paused {
					change += ", paused"
				}
			}
			return t.row(when, ev.Type, "-", "-", q.Resource, "-", change)
		}
	}
	// An event this CLI does not know, or cannot read: shown as sent.
	return t.row(when, ev.Type, "-", "-", "-", "-", fmtJSON(ev.Data))
}
