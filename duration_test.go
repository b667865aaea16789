package spinbroker

import (
	"math"
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"30s", 30 * time.Second, true},
		{"1h2m3.5s", time.Hour + 2*time.Minute + 3500*time.Millisecond, true},
		{"-5m", -5 * time.Minute, true},
		{"9999999999999999999h", math.MaxInt64, true}, // too large: the largest there is
		{"-99999999999h", math.MinInt64, true},
		{"1.5h99999999999h", math.MaxInt64, true},
		{"30", 0, false}, // no unit
		{"soon", 0, false},
		{"", 0, false},
		{"5 s", 0, false},
		{"1e3s", 0, false},
		{"99999999999x", 0, false},
	} {
		got, err := ParseDuration(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v (ok %v)", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

// FuzzParseDuration: whatever it is given, ParseDuration agrees with
// time.ParseDuration where that succeeds, and otherwise either refuses or
// saturates a well-formed duration; it never panics.
func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"30s", "-1h", "9999999999999999999h", ".5ms", "1h2m", "µs", "+3us", "1..2s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseDuration(s)
		want, werr := time.ParseDuration(s)
		switch {
		case werr == nil && (err != nil || got != want):
			t.Fatalf("ParseDuration(%q) = %v, %v; time.ParseDuration says %v", s, got, err, want)
		case werr != nil && err == nil && got != math.MaxInt64 && got != math.MinInt64:
			t.Fatalf("ParseDuration(%q) = %v where time.ParseDuration refuses it (%v)", s, got, werr)
		}
	})
}
