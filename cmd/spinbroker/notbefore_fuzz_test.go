package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	spinbroker "github.com/spin-broker/spinbroker"
)

// FuzzNotBefore: whatever --not-before says, parseNotBefore refuses it with
// a short sentence that names the flag, or accepts a time that the broker
// takes as it is, sent as the client sends it; and any time the broker
// keeps, written in RFC 3339 (in upper or lower case, at any offset), is
// read back as the same instant.
func FuzzNotBefore(f *testing.F) {
	for _, s := range []string{"2026-01-02T15:04:05Z", "2026-01-01t00:00:00+01:00", "2026-01-02T15:04:05.123456789-23:59", "tomorrow",
		"0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2262-01-01T00:00:00Z", "1678-01-01T00:00:00+00:01", "2026-01-02T15:04:05+24:00",
		"2026-02-30T00:00:00Z", "2026-01-02T15:04:05,5Z", "2026-01-02T24:00:00Z", "2026-01-02T15:04:60Z", "\xff2026", strings.Repeat("é", 80)} {
		f.Add(s, int64(1767225600000000000), int16(60))
	}
	f.Add("", int64(-9223372036854775808), int16(-1439))
	f.Add("", int64(9223372036854775807), int16(1439))
	f.Fuzz(func(t *testing.T, s string, nanos int64, offset int16) {
		got, err := parseNotBefore(s)
		if err != nil {
			// clip keeps 60 bytes of the value, and %q writes a byte
			// that is not text as four ("\xa9").
			msg := err.Error()
			if !strings.HasPrefix(msg, "--not-before ") || len(msg) > 60*4+150 || !utf8.ValidString(msg) {
				t.Fatalf("parseNotBefore(%q): %q", s, msg)
			}
		} else {
			// Sent as the client sends it, the broker decodes and keeps
			// the same instant.
			b, err := json.Marshal(spinbroker.NewCommand{Resource: "r", Action: "a", NotBefore: &got})
			if err != nil {
				t.Fatalf("parseNotBefore(%q) = %v, which does not marshal: %v", s, got, err)
			}
			var c spinbroker.NewCommand
			if err := json.Unmarshal(b, &c); err != nil {
				t.Fatalf("parseNotBefore(%q) = %v, sent as %s: %v", s, got, b, err)
			}
			if err := c.Validate(); err != nil || c.NotBefore == nil || !c.NotBefore.Equal(got) {
				t.Fatalf("parseNotBefore(%q) = %v, which the broker reads as %v, %v", s, got, c.NotBefore, err)
			}
		}

		// A time the broker keeps, at an offset RFC 3339 can write.
		zone := time.FixedZone("", int(offset)%(24*60)*60)
		in := time.Unix(0, nanos).In(zone)
		if _, err := spinbroker.CheckNotBefore(in); err != nil {
			return
		}
		for _, text := range []string{in.Format(time.RFC3339Nano), strings.ToLower(in.Format(time.RFC3339Nano))} {
			got, err := parseNotBefore(text)
			if err != nil || !got.Equal(in) {
				t.Fatalf("parseNotBefore(%q) = %v, %v; want %v", text, got, err, in)
			}
		}
	})
}
