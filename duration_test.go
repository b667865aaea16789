package spinbroker

import (
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
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

// FuzzTruncate: a cut message is a prefix of what it cuts, at most n bytes
// of it and the ellipsis, and valid UTF-8 when what it cuts was.
func FuzzTruncate(f *testing.F) {
	for _, s := range []string{"", "abc", "é", strings.Repeat("é", 50), strings.Repeat("a", 39) + "€", "\xff\xfe", "日本語のテキスト"} {
		f.Add(s, uint8(40))
		f.Add(s, uint8(1))
	}
	f.Fuzz(func(t *testing.T, s string, n uint8) {
		got := Truncate(s, int(n))
		if len(s) <= int(n) {
			if got != s {
				t.Fatalf("Truncate(%q, %d) = %q", s, n, got)
			}
			return
		}
		cut, ok := strings.CutSuffix(got, "…")
		if !ok || !strings.HasPrefix(s, cut) || len(cut) > int(n) || len(cut) < int(n)-utf8.UTFMax {
			t.Fatalf("Truncate(%q, %d) = %q", s, n, got)
		}
		if utf8.ValidString(s) && !utf8.ValidString(got) {
			t.Fatalf("Truncate(%q, %d) = %q, not UTF-8", s, n, got)
		}
	})
}
