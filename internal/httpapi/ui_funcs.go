package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	spinbroker "github.com/spin-broker/spinbroker"
)

// funcs are the helpers the templates call. They return plain strings and
// numbers: html/template escapes everything they produce.
func (u *ui) funcs() template.FuncMap {
	return template.FuncMap{
		"static":         func(name string) string { return "/ui/static/" + name + "?v=" + u.version },
		"short":          shortID,
		"icon":           stateIcon,
		"stateName":      func(s any) string { return fmt.Sprint(s) },
		"pretty":         prettyJSON,
		"when":           when,
		"iso":            iso,
		"str":            func(s *string) string { return shown(deref(s)) },
		"shown":          shown,
		"cutReason":      cutReason,
		"progress":       newProgress,
		"duration":       runDuration,
		"human":          func(sec float64) string { return human(time.Duration(sec * float64(time.Second))) },
		"cancelQuestion": func() string { return cancelQuestion },
		"pkgTable": func(v *view, list []spinbroker.Package, empty, label string) pkgTable {
			return pkgTable{V: v, List: list, Empty: empty, Label: label}
		},
		"packageStates": func() []spinbroker.PackageState {
			return spinbroker.PackageStates
		},
	}
}

// shortID is an id short enough for a table: its first block and its last
// four digits. Ids of version 7 begin with their creation time, so packages
// made in the same minute share the first block; the end tells them apart.
// The full id is in the link and its title, and any prefix finds it.
func shortID(id string) string {
	if len(id) != 36 {
		return id
	}
	return id[:8] + "…" + id[32:]
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// stateIcon names the symbol (in layout.html's sprite) drawn beside a state,
// so that states differ by shape as well as by colour: a check, a cross, a
// slashed circle, a play sign, an open circle, a pause sign, a diamond.
func stateIcon(state any) string {
	switch fmt.Sprint(state) {
	case "succeeded":
		return "i-ok"
	case "failed":
		return "i-fail"
	case "cancelled":
		return "i-cancel"
	case "leased", "running":
		return "i-run"
	case "ready", "queued":
		return "i-ready"
	case "blocked":
		return "i-wait"
	default: // staged, staging
		return "i-new"
	}
}

// prettyJSON indents a JSON value for a <pre>; html/template escapes it.
// A value whose indentation would outgrow maxPrettyJSON is shown as it
// was sent.
func prettyJSON(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	if !indentFits(raw, maxPrettyJSON) {
		return bidiEscapes.Replace(readableEscapes(string(raw)))
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return string(raw)
	}
	return bidiEscapes.Replace(readableEscapes(buf.String()))
}

// maxPrettyJSON bounds an indented value's size. Indentation grows with
// depth: 60 KB nested 10,000 deep indent to 200 MB, and a client's 1 MiB
// body (or an agent's output) to gigabytes of the broker's memory, for
// every look at its command's page.
const maxPrettyJSON = 4 << 20

// indentFits reports whether json.Indent(raw, "", "  ") takes at most
// limit bytes, counting without indenting: at most a newline and two
// spaces a level after each bracket and comma, and a space after each
// colon, outside strings.
func indentFits(raw []byte, limit int) bool {
	size, depth := len(raw), 0
	inString, escaped := false, false
	for _, b := range raw {
		if inString {
			switch {
			case escaped:
				escaped = false
			case b == '\\':
				escaped = true
			case b == '"':
				inString = false
			}
			continue
		}
		switch b {
		case '"':
			inString = true
		case '{', '[':
			depth++
			size += 1 + 2*depth
		case '}', ']':
			depth--
			size += 1 + 2*max(depth, 0)
		case ',':
			size += 1 + 2*depth
		case ':':
			size++
		}
		if size > limit {
			return false
		}
	}
	return true
}

// bidiEscapes writes the bidirectional controls a client put raw into its
// JSON as JSON escapes: the same value, shown as it is rather than obeyed.
// (They can only be inside strings: raw, they are no JSON elsewhere.)
var bidiEscapes = bidiReplacer(`\u%04x`)

// readableEscapes writes the \uXXXX escapes of printable characters in
// JSON strings as the characters themselves: a client that sends ASCII-only
// JSON (Python's default) would otherwise show "\u00fcber" for "über". The
// escapes of quotes, backslashes and control characters stay; the template
// escapes the rest for HTML.
func readableEscapes(s string) string {
	if !strings.Contains(s, `\u`) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	inString := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			inString = !inString
		case c == '\\' && inString && i+1 < len(s):
			if r, n := jsonEscape(s[i:]); n > 0 && unicode.IsPrint(r) && r != '"' && r != '\\' {
				b.WriteRune(r)
				i += n - 1
				continue
			}
			b.WriteByte(c)
			b.WriteByte(s[i+1]) // an escape's second byte is never a quote
			i++
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// jsonEscape decodes the \uXXXX escape (or surrogate pair of them) that s
// starts with, and answers its length; 0 when s starts with no such escape.
func jsonEscape(s string) (rune, int) {
	unit := func(s string) (rune, bool) {
		if len(s) < 6 || s[0] != '\\' || s[1] != 'u' {
			return 0, false
		}
		v, err := strconv.ParseUint(s[2:6], 16, 16)
		return rune(v), err == nil
	}
	r, ok := unit(s)
	if !ok {
		return 0, 0
	}
	if utf16.IsSurrogate(r) {
		lo, ok := unit(s[6:])
		if d := utf16.DecodeRune(r, lo); ok && d != unicode.ReplacementChar {
			return d, 12
		}
		return 0, 0
	}
	return r, 6
}

// when formats a time for people: UTC, to the second, and says so in
// words ("Z" says it only to those who know the convention).
func when(t any) string {
	const layout = "2006-01-02 15:04:05 UTC"
	switch t := t.(type) {
	case time.Time:
		return t.UTC().Format(layout)
	case *time.Time:
		if t != nil {
			return t.UTC().Format(layout)
		}
	}
	return ""
}

// iso formats a time for a <time datetime> attribute.
func iso(t any) string {
	switch t := t.(type) {
	case time.Time:
		return t.UTC().Format(time.RFC3339)
	case *time.Time:
		if t != nil {
			return t.UTC().Format(time.RFC3339)
		}
	}
	return ""
}

// human writes a duration the way people read one on a dashboard: two
// units at most, "45s", "3m 20s", "2h 5m", "4d 1h".
func human(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm %ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh %dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd %dh", int(d.Hours())/24, int(d.Hours())%24)
}

// runDuration is how long a command's last attempt ran: until it finished,
// or until now while it is leased; "" when it never started.
func runDuration(c spinbroker.Command, now time.Time) string {
	if c.StartedAt == nil {
		return ""
	}
	end := now
	if c.FinishedAt != nil {
		end = *c.FinishedAt
	} else if c.State != spinbroker.Leased {
		return ""
	}
	return human(end.Sub(*c.StartedAt))
}

// progress is a package's progress bar: one segment per terminal or running
// state, in percent of its commands, drawn as SVG rectangles (no inline
// styles, which the page's security policy forbids).
type progress struct {
	Done, Total int
	Segments    []segment
	Label       string
}

type segment struct {
	X, W  float64
	State string
}

func newProgress(p spinbroker.Package) progress {
	pr := progress{Done: p.Counts.Done(), Total: p.Total}
	pr.Label = fmt.Sprintf("%d/%d done", pr.Done, pr.Total)
	if p.Total == 0 {
		return pr
	}
	x := 0.0
	for _, s := range []struct {
		state string
		n     int
	}{
		{"succeeded", p.Counts.Succeeded},
		{"failed", p.Counts.Failed},
		{"cancelled", p.Counts.Cancelled},
		{"leased", p.Counts.Leased},
	} {
		if s.n == 0 {
			continue
		}
		w := 100 * float64(s.n) / float64(p.Total)
		pr.Segments = append(pr.Segments, segment{X: x, W: w, State: s.state})
		x += w
	}
	return pr
}

// pkgTable is what the package table partial gets: the page's view (for
// relative times) and the packages.
type pkgTable struct {
	V     *view
	List  []spinbroker.Package
	Empty string // said when the list is empty
	Label string // the id of the heading that names the table
}

// bidiControls shows the characters that reorder the text around them
// (spinbroker.IsBidiControl) in a reason or a key a client wrote by their
// code points.
var bidiControls = bidiReplacer("⟨U+%04X⟩")

// bidiReplacer replaces each bidirectional control with format applied to
// its code point.
func bidiReplacer(format string) *strings.Replacer {
	var pairs []string
	for r := rune(0x2000); r < 0x2100; r++ {
		if spinbroker.IsBidiControl(r) {
			pairs = append(pairs, string(r), fmt.Sprintf(format, r))
		}
	}
	return strings.NewReplacer(pairs...)
}

// shown is a client's text as the dashboard shows it: its bidirectional
// controls made visible, so that it reads as it is.
func shown(s string) string { return bidiControls.Replace(s) }

// A reason may be 16 KiB. A sentence that quotes one (why a package failed,
// a command's reason) shows its first previewLines lines, at most
// previewBytes of them; the rest is one click away.
const (
	previewLines = 3
	previewBytes = 240
)

// reasonCut is a reason as a sentence quotes it.
type reasonCut struct {
	Head  string // the first lines, bidirectional controls made visible
	Full  string // the whole reason, likewise; "" when Head is all of it
	Lines int    // the whole reason's lines
	Size  string // the whole reason's size: "15.6 KiB", "900 bytes"
}

// cutReason cuts a reason (a string or a *string) to what a sentence
// shows. It cuts at a line's end when it can, else after a word, never
// inside a character.
func cutReason(r any) reasonCut {
	var s string
	switch r := r.(type) {
	case string:
		s = r
	case *string:
		s = deref(r)
	}
	head := s
	if i := nthIndex(head, '\n', previewLines); i >= 0 {
		head = head[:i]
	}
	if len(head) > previewBytes {
		cut := previewBytes
		for cut > 0 && !utf8.RuneStart(head[cut]) {
			cut--
		}
		if sp := strings.LastIndexAny(head[:cut], " \n"); sp > previewBytes/2 {
			cut = sp
		}
		head = head[:cut]
	}
	if head == s {
		return reasonCut{Head: shown(s)}
	}
	size := fmt.Sprintf("%d bytes", len(s))
	if len(s) >= 1024 {
		size = fmt.Sprintf("%.1f KiB", float64(len(s))/1024)
	}
	return reasonCut{Head: shown(head), Full: shown(s), Lines: strings.Count(s, "\n") + 1, Size: size}
}

// nthIndex is the index of the nth c in s, or -1.
func nthIndex(s string, c byte, n int) int {
	at := -1
	for range n {
		i := strings.IndexByte(s[at+1:], c)
		if i < 0 {
			return -1
		}
		at += i + 1
	}
	return at
}
