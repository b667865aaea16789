package spinbroker

import (
	"encoding/json"
	"time"
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
// its unit would be a guess.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return Errorf(EINVALID, "a duration must be a string such as \"30s\" or \"5m\"")
	}
	v, err := ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// ParseDuration parses a Go duration string and answers EINVALID with a
// readable message when it is not one.
func ParseDuration(s string) (time.Duration, error) {
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, Errorf(EINVALID, "%q is not a duration (use a Go duration such as \"30s\" or \"5m\")", Truncate(s, 64))
	}
	return v, nil
}

// Truncate shortens s to at most n bytes (and an ellipsis) for a message,
// so that hostile input cannot make an answer large.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
