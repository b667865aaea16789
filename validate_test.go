package spinbroker

import (
	"strings"
	"testing"
	"time"
)

func TestValidName(t *testing.T) {
	for name, want := range map[string]bool{
		"storage": true, "a": true, "0": true, "q-1.x_y": true, strings.Repeat("a", 64): true,
		"": false, "Storage": false, "-a": false, ".a": false, "_a": false, "a b": false, "a/b": false,
		"résumé": false, "a\x00": false, strings.Repeat("a", 65): false,
	} {
		if got := ValidName(name); got != want {
			t.Errorf("ValidName(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestParseID(t *testing.T) {
	for in, want := range map[string]string{
		"0190c3a4-5a6b-7c8d-9e0f-a1b2c3d4e5f6":   "0190c3a4-5a6b-7c8d-9e0f-a1b2c3d4e5f6",
		"0190C3A4-5A6B-4C8D-AE0F-A1B2C3D4E5F6":   "0190c3a4-5a6b-4c8d-ae0f-a1b2c3d4e5f6",
		"a8098c1a-f86e-11da-bd1a-00112444be1e":   "", // version 1
		"0190c3a4-5a6b-7c8d-ce0f-a1b2c3d4e5f6":   "", // variant bits
		"0190c3a45a6b7c8d9e0fa1b2c3d4e5f6":       "", // no dashes
		"{0190c3a4-5a6b-7c8d-9e0f-a1b2c3d4e5f6}": "",
		"0190c3a4-5a6b-7c8d-9e0f-a1b2c3d4e5fg":   "",
		"":                                       "",
	} {
		got, ok := ParseID(in)
		if got != want || ok != (want != "") {
			t.Errorf("ParseID(%q) = %q %v, want %q", in, got, ok, want)
		}
	}
}

func TestCheckKey(t *testing.T) {
	for key, ok := range map[string]bool{
		"vol": true, "a key with spaces": true, "ключ": true, strings.Repeat("k", 128): true,
		"": false, strings.Repeat("k", 129): false, "a\nb": false, "a\x00": false, "\xff": false,
		"0190c3a4-5a6b-7c8d-9e0f-a1b2c3d4e5f6": false, // read as an id in dependencies
	} {
		if err := CheckKey(key); (err == nil) != ok {
			t.Errorf("CheckKey(%q) = %v", key, err)
		}
	}
}

func TestBackoff(t *testing.T) {
	for attempts, want := range map[int]time.Duration{0: time.Second, 1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 9: 256 * time.Second, 10: 5 * time.Minute, 1000: 5 * time.Minute} {
		if got := Backoff(attempts); got != want {
			t.Errorf("Backoff(%d) = %v, want %v", attempts, got, want)
		}
	}
}

func TestErrorCode(t *testing.T) {
	if ErrorCode(nil) != "" || ErrorCode(Errorf(ESTALE, "x")) != ESTALE || ErrorCode(errString("plain")) != EINTERNAL {
		t.Fatal("ErrorCode")
	}
	if ErrorMessage(errString("secret detail")) != "internal error" {
		t.Fatal("an internal error's details must not become its message")
	}
}

type errString string

func (e errString) Error() string { return string(e) }

// FuzzValidate feeds the validators anything: they never panic, and what
// they accept has the shape they promise.
func FuzzValidate(f *testing.F) {
	for _, s := range []string{"storage", "0190c3a4-5a6b-7c8d-9e0f-a1b2c3d4e5f6", "", "\xff", "a-", "ключ"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidName(s) && (len(s) > MaxNameLen || strings.ToLower(s) != s) {
			t.Fatalf("ValidName accepted %q", s)
		}
		if id, ok := ParseID(s); ok && (len(id) != 36 || strings.ToLower(id) != id || !LooksLikeID(id)) {
			t.Fatalf("ParseID(%q) = %q", s, id)
		}
		if CheckKey(s) == nil && LooksLikeID(s) {
			t.Fatalf("CheckKey accepted an id-shaped key %q", s)
		}
		c := NewCommand{Resource: s, Action: "a", Key: s, Dependencies: []string{s}}
		_ = c.Validate()
	})
}

func TestCheckNotBefore(t *testing.T) {
	east := time.FixedZone("", 2*60*60)
	for _, c := range []struct {
		in   time.Time
		want time.Time // zero: refused
	}{
		{time.Date(2026, 1, 1, 2, 0, 0, 0, east), time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
		{MinNotBefore, MinNotBefore},
		{MaxNotBefore.Add(-time.Nanosecond), MaxNotBefore.Add(-time.Nanosecond)},
		{time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)},
		{MaxNotBefore, time.Time{}},
		{MinNotBefore.Add(-time.Nanosecond), time.Time{}},
		{time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC), time.Time{}}, // wrapped to 1816 once
		{time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC), time.Time{}},
		{time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("", 24*60*60)), time.Time{}},
		{time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("", -24*60*60)), time.Time{}},
	} {
		got, err := CheckNotBefore(c.in)
		if c.want.IsZero() {
			if ErrorCode(err) != EINVALID {
				t.Errorf("CheckNotBefore(%v) = %v, %v; want invalid_request", c.in, got, err)
			}
			continue
		}
		if err != nil || !got.Equal(c.want) || got.Location() != time.UTC {
			t.Errorf("CheckNotBefore(%v) = %v, %v; want %v in UTC", c.in, got, err, c.want)
		}
	}
}
