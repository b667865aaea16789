package main

import (
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/spin-broker/spinbroker/internal/store"
)

// FuzzLifetime: whatever --expires says, parseLifetime refuses it with a
// short sentence that names the flag, or accepts a lifetime the store
// takes (more than 0, at most a century); and any lifetime the store
// takes, written as days and a Go duration ("3d4h5m0s") or as a Go
// duration alone, is read back as the same.
func FuzzLifetime(f *testing.F) {
	for _, s := range []string{"90d", "720h", "1d12h", "36500d", "36501d", "36500d1ns", "0d", "0d1ns", "1d-1h", "-1d", "+1d", "d", "1dd", "1h1d",
		"18446744073709551616d", "9999999999999999999h", "-9999999999999999999h", "1.5d", "1d 2h", "\xffd", strings.Repeat("é", 80)} {
		f.Add(s, int64(time.Hour))
	}
	f.Add("", int64(1))
	f.Add("", int64(store.MaxTokenLifetime))
	f.Fuzz(func(t *testing.T, s string, nanos int64) {
		got, err := parseLifetime(s)
		if err != nil {
			// clip keeps 60 bytes of the value, and %q writes a byte
			// that is not text as four ("\xa9").
			if msg := err.Error(); !strings.HasPrefix(msg, "--expires must ") || len(msg) > 60*4+200 || !utf8.ValidString(msg) {
				t.Fatalf("parseLifetime(%q): %q", s, msg)
			}
		} else if got <= 0 || got > store.MaxTokenLifetime {
			t.Fatalf("parseLifetime(%q) = %v", s, got)
		}

		d := time.Duration(nanos)
		if d <= 0 || d > store.MaxTokenLifetime {
			return
		}
		day := 24 * time.Hour
		texts := []string{d.String()}
		if d >= day {
			texts = append(texts, fmt.Sprintf("%dd", d/day)+(d%day).String())
			if d%day == 0 {
				texts = append(texts, fmt.Sprintf("%dd", d/day))
			}
		}
		for _, text := range texts {
			if got, err := parseLifetime(text); err != nil || got != d {
				t.Fatalf("parseLifetime(%q) = %v, %v; want %v", text, got, err, d)
			}
		}
	})
}
