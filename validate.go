package spinbroker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// ValidName reports whether s is a valid resource or action name: 1 to 64
// characters of [a-z0-9_.-], starting with a letter or digit.
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > MaxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '_' || c == '.' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}

// CheckName answers EINVALID unless s is a valid name; what says which field.
func CheckName(what, s string) error {
	if !ValidName(s) {
		return Errorf(EINVALID, "%s %q is not a valid name: 1 to 64 characters of [a-z0-9_.-], starting with a letter or digit", what, Truncate(s, 80))
	}
	return nil
}

// ParseID returns the canonical (lower-case) form of a UUID of version 4 or 7
// written as 8-4-4-4-12 hex digits, and false for anything else.
func ParseID(s string) (string, bool) {
	if len(s) != 36 {
		return "", false
	}
	for i := 0; i < 36; i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return "", false
			}
		default:
			if !isHex(c) {
				return "", false
			}
		}
	}
	s = strings.ToLower(s)
	if v := s[14]; v != '4' && v != '7' {
		return "", false
	}
	if v := s[19]; v != '8' && v != '9' && v != 'a' && v != 'b' {
		return "", false
	}
	return s, true
}

// LooksLikeID reports whether s has the shape of a UUID (of any version), so
// that a dependency entry is read as an id rather than a key.
func LooksLikeID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if s[i] != '-' {
				return false
			}
		} else if !isHex(s[i]) {
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// CheckID answers the canonical form of a client-supplied id, or EINVALID.
func CheckID(what, s string) (string, error) {
	id, ok := ParseID(s)
	if !ok {
		return "", Errorf(EINVALID, "%s %q is not a UUID of version 4 or 7", what, Truncate(s, 80))
	}
	return id, nil
}

// MaxIdempotencyKeyLen is the longest Idempotency-Key the broker takes.
const MaxIdempotencyKeyLen = 255

// CheckIdempotencyKey answers EINVALID unless k is a usable Idempotency-Key:
// 1 to 255 printable ASCII characters.
func CheckIdempotencyKey(k string) error {
	if k == "" {
		// Most likely a client's unset variable: read as no key, its
		// retry would create a second time.
		return Errorf(EINVALID, "Idempotency-Key is empty: give a key of 1 to %d printable characters, or leave the header out", MaxIdempotencyKeyLen)
	}
	if len(k) > MaxIdempotencyKeyLen {
		return Errorf(EINVALID, "Idempotency-Key is longer than %d characters", MaxIdempotencyKeyLen)
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return Errorf(EINVALID, "Idempotency-Key must be printable ASCII")
		}
	}
	return nil
}

// CheckKey answers EINVALID unless k is a usable command key: 1 to 128
// characters, valid UTF-8, no control characters, and not shaped like a UUID
// (a dependency entry of that shape is always read as an id).
func CheckKey(k string) error { return checkKey("key", k) }

// checkKey is CheckKey for the field named what (commands[2].key).
func checkKey(what, k string) error {
	n := utf8.RuneCountInString(k)
	switch {
	case n == 0 || n > MaxKeyLen:
		return Errorf(EINVALID, "%s must be 1 to %d characters", what, MaxKeyLen)
	case !utf8.ValidString(k):
		return Errorf(EINVALID, "%s is not valid UTF-8", what)
	case strings.IndexFunc(k, unicode.IsControl) >= 0:
		return Errorf(EINVALID, "%s %q contains a control character", what, Truncate(k, 80))
	case LooksLikeID(k):
		return Errorf(EINVALID, "%s %q has the shape of a UUID, which dependencies would read as an id", what, k)
	}
	return nil
}

// CheckParameters answers EINVALID unless p is absent or a JSON object, and
// returns its compact form ({} when absent).
func CheckParameters(p json.RawMessage) (json.RawMessage, error) {
	return checkParameters("parameters", p)
}

// checkParameters is CheckParameters for the field named what.
func checkParameters(what string, p json.RawMessage) (json.RawMessage, error) {
	if len(p) == 0 {
		return json.RawMessage("{}"), nil
	}
	return checkObject(what, p)
}

// CheckOutput answers EINVALID unless o is absent, null or a JSON object, and
// returns its compact form (nil when absent or null).
func CheckOutput(o json.RawMessage) (json.RawMessage, error) {
	t := bytes.TrimSpace(o)
	if len(t) == 0 || bytes.Equal(t, []byte("null")) {
		return nil, nil
	}
	return checkObject("output", o)
}

func checkObject(what string, raw json.RawMessage) (json.RawMessage, error) {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || t[0] != '{' {
		return nil, Errorf(EINVALID, "%s must be a JSON object", what)
	}
	// Compact validates as it goes: one pass over what may be a MiB,
	// where json.Valid first made two.
	buf := bytes.NewBuffer(make([]byte, 0, len(t)))
	if err := json.Compact(buf, t); err != nil {
		return nil, Errorf(EINVALID, "%s must be a JSON object", what)
	}
	return buf.Bytes(), nil
}

// CheckLease answers EINVALID unless d is a usable lease or extension.
func CheckLease(what string, d time.Duration) error {
	if d < MinLease || d > MaxLease {
		given := d.String()
		if d == math.MaxInt64 || d == math.MinInt64 {
			given = "one of over 292 years" // ParseDuration's saturation
		}
		return Errorf(EINVALID, "%s must be between %s and %s, not %s", what, MinLease, MaxLease, given)
	}
	return nil
}

// CheckClaimMax answers EINVALID unless n is a usable max of a claim.
func CheckClaimMax(n int) error {
	if n < 1 || n > MaxClaim {
		return Errorf(EINVALID, "max must be between 1 and %d", MaxClaim)
	}
	return nil
}

// Validate checks everything about a new command that does not need the
// database: names, key, id, parameters, limits. It normalizes the id,
// parameters and not_before in place.
func (c *NewCommand) Validate() error { return c.validate("") }

// ValidateItem is Validate for the command at index i of a request's
// commands: its errors name the item (commands[2].lease_duration), as
// the HTTP API's decoding errors do, so that one bad command of many can
// be found.
func (c *NewCommand) ValidateItem(i int) error {
	given := *c
	err := c.validate("")
	if err != nil {
		// Again from the command as given, naming its fields by its
		// place: the names cost allocations that only an error needs, and
		// a create of 10,000 commands would make them for every field.
		*c = given
		err = c.validate(fmt.Sprintf("commands[%d]", i))
	}
	return err
}

// validate is Validate with the fields named under item ("" for a
// command on its own).
func (c *NewCommand) validate(item string) error {
	field := func(name string) string {
		if item == "" {
			return name
		}
		return item + "." + name
	}
	command := "a command"
	idField := "command id"
	if item != "" {
		command, idField = item, field("id")
	}
	if c.ID != "" {
		id, err := CheckID(idField, c.ID)
		if err != nil {
			return err
		}
		c.ID = id
	}
	if c.Key != "" {
		if err := checkKey(field("key"), c.Key); err != nil {
			return err
		}
	}
	if err := CheckName(field("resource"), c.Resource); err != nil {
		return err
	}
	if err := CheckName(field("action"), c.Action); err != nil {
		return err
	}
	p, err := checkParameters(field("parameters"), c.Parameters)
	if err != nil {
		return err
	}
	c.Parameters = p
	if len(c.Dependencies) > MaxDependencies {
		return Errorf(EINVALID, "%s may have at most %d dependencies, not %d", command, MaxDependencies, len(c.Dependencies))
	}
	for j, d := range c.Dependencies {
		if d == "" {
			if item == "" {
				return Errorf(EINVALID, "a dependency must not be empty")
			}
			return Errorf(EINVALID, "%s[%d] must not be empty", field("dependencies"), j)
		}
		if c.ID != "" && strings.EqualFold(d, c.ID) || c.Key != "" && d == c.Key {
			return Errorf(EINVALID, "%s cannot depend on itself", command)
		}
	}
	if c.MaxAttempts != nil && (*c.MaxAttempts < 1 || *c.MaxAttempts > MaxMaxAttempts) {
		return Errorf(EINVALID, "%s must be between 1 and %d", field("max_attempts"), MaxMaxAttempts)
	}
	if c.LeaseDuration != nil {
		if err := CheckLease(field("lease_duration"), c.LeaseDuration.D()); err != nil {
			return err
		}
	}
	if c.NotBefore != nil {
		t, err := checkNotBefore(field("not_before"), *c.NotBefore)
		if err != nil {
			return err
		}
		c.NotBefore = &t
	}
	return nil
}

// The times not_before may name: the store keeps times as nanoseconds since
// 1970 in 64 bits, which reach from 1677-09-21 to 2262-04-11.
var (
	MinNotBefore = time.Date(1678, 1, 1, 0, 0, 0, 0, time.UTC)
	MaxNotBefore = time.Date(2262, 1, 1, 0, 0, 0, 0, time.UTC)
)

// CheckNotBefore returns t in UTC, or an invalid_request error for a time
// the store cannot keep (a "never" such as 9999-12-31 would otherwise wrap
// around into the past and run at once) or an offset RFC 3339 does not
// allow (its hours run 00 to 23).
func CheckNotBefore(t time.Time) (time.Time, error) { return checkNotBefore("not_before", t) }

// checkNotBefore is CheckNotBefore for the field named what.
func checkNotBefore(what string, t time.Time) (time.Time, error) {
	if _, off := t.Zone(); off <= -24*60*60 || off >= 24*60*60 {
		return time.Time{}, Errorf(EINVALID, "%s has a time zone offset of %d hours or more; RFC 3339 offsets run from -23:59 to +23:59", what, 24)
	}
	if t.Before(MinNotBefore) || !t.Before(MaxNotBefore) {
		return time.Time{}, Errorf(EINVALID, "%s must be from %s to before %s, not %s",
			what, MinNotBefore.Format(time.DateOnly), MaxNotBefore.Format(time.DateOnly), t.Format(time.RFC3339))
	}
	return t.UTC(), nil
}
