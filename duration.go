package spinbroker

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Duration is a time.Duration that travels in JSON as a Go duration string
// ("30s", "5m"), as API.md requires for every duration in a body.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String returns the Go duration string.
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON encodes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON accepts only a duration string; a number is refused because
// its unit would be a guess. The refusal is a *json.UnmarshalTypeError, so
// that the decoder names the field it was for.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return &json.UnmarshalTypeError{Value: jsonKind(b), Type: reflect.TypeFor[Duration]()}
	}
	v, err := ParseDuration(s)
	if err != nil {
		return &json.UnmarshalTypeError{Value: "string " + strconv.Quote(Truncate(s, 64)), Type: reflect.TypeFor[Duration]()}
	}
	*d = Duration(v)
	return nil
}

// jsonKind names the kind of the JSON value b as encoding/json's errors do.
func jsonKind(b []byte) string {
	switch b = bytes.TrimSpace(b); {
	case len(b) == 0:
		return "nothing"
	case b[0] == '{':
		return "object"
	case b[0] == '[':
		return "array"
	case b[0] == 't' || b[0] == 'f':
		return "bool"
	case b[0] == 'n':
		return "null"
	}
	return "number " + Truncate(string(b), 40)
}

// ParseDuration parses a Go duration string and answers EINVALID with a
// readable message when it is not one. A duration too large for
// time.Duration (about 292 years) is taken as the largest there is, of its
// sign: every duration the API takes is then clamped (wait) or refused by
// its range check, which says what the range is, rather than called "not a
// duration".
func ParseDuration(s string) (time.Duration, error) {
	v, err := time.ParseDuration(s)
	if err != nil {
		if durationSyntax.MatchString(s) {
			if strings.HasPrefix(s, "-") {
				return math.MinInt64, nil
			}
			return math.MaxInt64, nil
		}
		return 0, Errorf(EINVALID, "%q is not a duration (use a Go duration such as \"30s\" or \"5m\")", Truncate(s, 64))
	}
	return v, nil
}

// durationSyntax is what time.ParseDuration takes, whatever the size:
// numbers, each with a unit.
var durationSyntax = regexp.MustCompile(`^[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))*$`)

// Truncate shortens s to at most n bytes (and an ellipsis) for a message,
// so that hostile input cannot make an answer large. It cuts between
// characters, never inside one: half a character is not UTF-8, and a
// message, a log line or a page would carry it as such.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := max(n, 0)
	for cut > 0 && cut > n-utf8.UTFMax && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// IsBidiControl reports whether r is one of Unicode's controls of
// bidirectional text that reorder what follows them: the embeddings and
// overrides (U+202A–U+202E) and the isolates (U+2066–U+2069). Text a client
// wrote is shown with them made visible, never obeying them: "failed:
// \u202eevil" would read "failed: live".
func IsBidiControl(r rune) bool {
	return r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069
}
