package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	spinbroker "github.com/spin-broker/spinbroker"
)

// How the client commands print: -o json prints the API's JSON, indented;
// -o table (the default) prints aligned columns, or "Field: value" lines for
// one object, with times in UTC and "-" for what is not set.

// timeLayout is how tables show a time: UTC, to the second, one word-pair
// wide, the same as 'migrate status'.
const timeLayout = "2006-01-02 15:04:05Z"

// jsonOutput reports whether -o json was asked for.
func (a *app) jsonOutput() bool { return a.output == "json" }

// printJSON writes v as indented JSON followed by a newline.
func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// newTable returns a writer that aligns tab-separated columns; Flush it.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
}

// row writes one tab-separated line to a table.
func row(w io.Writer, cells ...string) {
	fmt.Fprintln(w, strings.Join(cells, "\t"))
}

// field writes one "Name:  value" line of a single object's view.
func field(w io.Writer, name, value string) {
	fmt.Fprintf(w, "%s:\t%s\n", name, value)
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(timeLayout)
}

func fmtTimePtr(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return fmtTime(*t)
}

func fmtStr(s *string) string {
	if s == nil || *s == "" {
		return "-"
	}
	return oneLine(*s)
}

// cellWidth is the most characters a free-text cell (a token's name) takes
// in a table: one long value would otherwise widen its column on every row
// and push the columns after it off the terminal. -o json has it whole.
const cellWidth = 40

// clipCell shortens a table cell past cellWidth characters to its first
// cellWidth-1 and "…". It counts characters, not bytes as clip does for a
// message: text/tabwriter aligns columns by characters, and a name in
// Cyrillic would be cut at half the width.
func clipCell(s string) string {
	if utf8.RuneCountInString(s) <= cellWidth {
		return s
	}
	n := 0
	for i := range s {
		if n == cellWidth-1 {
			return s[:i] + "…"
		}
		n++
	}
	return s
}

// oneLine keeps a table cell on one line and its columns aligned whatever a
// reason or a name holds, and keeps what the terminal would act on rather
// than show (C0 and C1 controls such as ESC and CSI, line separators, bidi
// controls, bytes that are not UTF-8) from reaching it: those, and only
// those, are written as escapes (\t, \x1b, \u202e, \xff). Any other text,
// in any script, prints as it is.
func oneLine(s string) string {
	if utf8.ValidString(s) && !strings.ContainsFunc(s, actsOnTerminal) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x80 && actsOnTerminal(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case actsOnTerminal(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// actsOnTerminal reports whether a terminal, or the text around it, would
// act on r rather than show it: C0 and C1 controls and DEL, the line and
// paragraph separators, and the controls of bidirectional text that
// reorder what follows ("failed: \u202eevil" reads "failed: live").
func actsOnTerminal(r rune) bool {
	switch {
	case r < 0x20, r >= 0x7f && r <= 0x9f:
		return true
	case r == 0x2028, r == 0x2029, r == 0x061c, r == 0x200e, r == 0x200f:
		return true // the separators, and the marks of bidirectional text
	case spinbroker.IsBidiControl(r):
		return true
	}
	return false
}

// fmtJSON shows a JSON value compactly on one line ("-" for none). A
// character a terminal would act on, which a JSON string may hold as it
// is, is written as a JSON escape, so that the cell is still the JSON that
// was sent; bytes that are not UTF-8 as U+FFFD.
func fmtJSON(raw json.RawMessage) string {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || string(t) == "null" {
		return "-"
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, t); err != nil {
		return oneLine(string(t))
	}
	out := buf.String()
	if utf8.ValidString(out) && !strings.ContainsFunc(out, actsOnTerminal) {
		return out
	}
	var b strings.Builder
	for _, r := range out { // invalid bytes come as U+FFFD
		if actsOnTerminal(r) {
			fmt.Fprintf(&b, `\u%04x`, r)
		} else {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// fmtOldest shows the age of a queue's oldest ready command as a short
// duration, "-" when it has none.
func fmtOldest(q *spinbroker.Queue) string {
	if q.Counts.Ready == 0 {
		return "-"
	}
	seconds := max(q.OldestReadyAgeSeconds, 0)
	return time.Duration(seconds * float64(time.Second)).Round(time.Second).String()
}

// progress is a package's "n/m done".
func progress(p *spinbroker.Package) string {
	return fmt.Sprintf("%d/%d done", p.Counts.Done(), p.Total)
}

func fmtAttempts(c *spinbroker.Command) string {
	return fmt.Sprintf("%d/%d", c.Attempts, c.MaxAttempts)
}

func fmtSeq(seq *int64) string {
	if seq == nil {
		return "-"
	}
	return strconv.FormatInt(*seq, 10)
}

func fmtList(ss []string) string {
	if len(ss) == 0 {
		return "-"
	}
	return strings.Join(ss, ",")
}

// noneNote says on stderr, after the header row of a list with nothing in
// it (what: "packages"), that it is empty, when stdout is a terminal: a
// header alone reads as a command cut short. Piped output, which scripts
// read, stays the header alone.
func (a *app) noneNote(n int, what string) {
	if n == 0 && isTerminal(a.stdout) {
		fmt.Fprintf(a.stderr, "no %s\n", what)
	}
}

// printPackageList prints packages, without their commands, one a row.
func printPackageList(w io.Writer, pkgs []spinbroker.Package) error {
	tw := newTable(w)
	row(tw, "ID", "STATE", "DONE", "CREATED", "FINISHED", "REASON")
	for i := range pkgs {
		p := &pkgs[i]
		row(tw, p.ID, string(p.State), fmt.Sprintf("%d/%d", p.Counts.Done(), p.Total),
			fmtTime(p.CreatedAt), fmtTimePtr(p.FinishedAt), fmtStr(p.Reason))
	}
	return tw.Flush()
}

// printPackage prints one package: its fields, then its commands.
func printPackage(w io.Writer, p *spinbroker.Package) error {
	tw := newTable(w)
	field(tw, "ID", p.ID)
	field(tw, "State", string(p.State))
	field(tw, "Done", fmt.Sprintf("%d/%d (%s)", p.Counts.Done(), p.Total, fmtCounts(p.Counts)))
	field(tw, "Created", fmtTime(p.CreatedAt))
	field(tw, "Enqueued", fmtTimePtr(p.EnqueuedAt))
	field(tw, "Finished", fmtTimePtr(p.FinishedAt))
	if p.Causer != nil || p.Reason != nil {
		field(tw, "Causer", fmtStr(p.Causer))
		field(tw, "Reason", fmtStr(p.Reason))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(p.Commands) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	return printCommandList(w, p.Commands)
}

// fmtCounts lists the non-zero counts, in the order of the states.
func fmtCounts(c spinbroker.Counts) string {
	var parts []string
	for _, s := range []struct {
		name string
		n    int
	}{
		{"staged", c.Staged}, {"blocked", c.Blocked}, {"ready", c.Ready}, {"leased", c.Leased},
		{"succeeded", c.Succeeded}, {"failed", c.Failed}, {"cancelled", c.Cancelled},
	} {
		if s.n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", s.n, s.name))
		}
	}
	if len(parts) == 0 {
		return "no commands"
	}
	return strings.Join(parts, ", ")
}

// printCommandList prints commands one a row, in the order given.
func printCommandList(w io.Writer, cmds []spinbroker.Command) error {
	tw := newTable(w)
	row(tw, "ID", "KEY", "RESOURCE", "ACTION", "STATE", "ATTEMPTS", "REASON")
	for i := range cmds {
		c := &cmds[i]
		row(tw, c.ID, fmtStr(c.Key), c.Resource, c.Action, string(c.State), fmtAttempts(c), fmtStr(c.Reason))
	}
	return tw.Flush()
}

// printCommand prints every field of one command.
func printCommand(w io.Writer, c *spinbroker.Command) error {
	tw := newTable(w)
	field(tw, "ID", c.ID)
	field(tw, "Package", c.PackageID)
	field(tw, "Key", fmtStr(c.Key))
	field(tw, "Resource", c.Resource)
	field(tw, "Action", c.Action)
	field(tw, "Parameters", fmtJSON(c.Parameters))
	field(tw, "Dependencies", fmtList(c.Dependencies))
	field(tw, "State", string(c.State))
	field(tw, "Attempts", fmtAttempts(c))
	field(tw, "Seq", fmtSeq(c.Seq))
	if c.LeaseDuration != nil {
		field(tw, "Lease duration", c.LeaseDuration.String())
	}
	if c.NotBefore != nil {
		field(tw, "Not before", fmtTimePtr(c.NotBefore))
	}
	if c.LeaseExpiresAt != nil {
		field(tw, "Lease expires", fmtTimePtr(c.LeaseExpiresAt))
	}
	field(tw, "Reason", fmtStr(c.Reason))
	field(tw, "Output", fmtJSON(c.Output))
	field(tw, "Created", fmtTime(c.CreatedAt))
	field(tw, "Enqueued", fmtTimePtr(c.EnqueuedAt))
	field(tw, "Started", fmtTimePtr(c.StartedAt))
	field(tw, "Finished", fmtTimePtr(c.FinishedAt))
	return tw.Flush()
}

// printQueueList prints queues one a row.
func printQueueList(w io.Writer, qs []spinbroker.Queue) error {
	tw := newTable(w)
	row(tw, "RESOURCE", "CONCURRENCY", "PAUSED", "BLOCKED", "READY", "LEASED", "OLDEST READY")
	for i := range qs {
		q := &qs[i]
		row(tw, q.Resource, strconv.Itoa(q.Concurrency), strconv.FormatBool(q.Paused),
			strconv.Itoa(q.Counts.Blocked), strconv.Itoa(q.Counts.Ready), strconv.Itoa(q.Counts.Leased),
			fmtOldest(q))
	}
	return tw.Flush()
}

// printQueue prints one queue: its row, then its first unfinished commands.
func printQueue(w io.Writer, q *spinbroker.Queue) error {
	if err := printQueueList(w, []spinbroker.Queue{*q}); err != nil {
		return err
	}
	if len(q.Commands) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw := newTable(w)
	row(tw, "SEQ", "ID", "PACKAGE", "ACTION", "STATE", "ATTEMPTS")
	for i := range q.Commands {
		c := &q.Commands[i]
		row(tw, fmtSeq(c.Seq), c.ID, c.PackageID, c.Action, string(c.State), fmtAttempts(c))
	}
	return tw.Flush()
}
