package logging

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestNew_JSONDurations: in JSON a duration is the string Go writes ("10s"),
// as in the text format, at the top level, in a group and in With's attrs;
// slog's own JSON would write bare nanoseconds (10000000000).
func TestNew_JSONDurations(t *testing.T) {
	var buf bytes.Buffer
	log, err := New(&buf, "json", "info")
	if err != nil {
		t.Fatal(err)
	}
	log.With("grace", 30*time.Second).Info("hello", "took", 927*time.Microsecond,
		slog.Group("retry", slog.Duration("in", 1500*time.Millisecond)), "count", 3)
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("not one JSON object: %v\n%s", err, buf.String())
	}
	for k, want := range map[string]any{"msg": "hello", "level": "INFO", "grace": "30s", "took": "927µs", "count": float64(3)} {
		if rec[k] != want {
			t.Errorf("%s: %#v, want %#v", k, rec[k], want)
		}
	}
	if g, _ := rec["retry"].(map[string]any); g == nil || g["in"] != "1.5s" {
		t.Errorf("retry.in: %#v, want \"1.5s\"", rec["retry"])
	}
	if _, ok := rec["time"].(string); !ok {
		t.Errorf("time: %#v, want a string", rec["time"])
	}
}

// TestNew_TextAndLevel: the text format writes durations as Go does too,
// and a record below the level is left out.
func TestNew_TextAndLevel(t *testing.T) {
	var buf bytes.Buffer
	log, err := New(&buf, "text", "WARN")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("quiet")
	log.Warn("loud", "took", 10*time.Second)
	out := buf.String()
	if strings.Contains(out, "quiet") || !strings.Contains(out, "level=WARN msg=loud took=10s") {
		t.Errorf("got:\n%s", out)
	}
}

// TestNew_Refused: a value New cannot use is an error naming the flag bare
// and the value, and no logger.
func TestNew_Refused(t *testing.T) {
	for _, c := range []struct{ format, level, want string }{
		{"json", "loud", `log-level must be debug, info, warn or error, not "loud"`},
		{"yaml", "info", `log-format must be text or json, not "yaml"`},
		{"", "info", `log-format must be text or json, not ""`},
		{"text", "", `log-level must be debug, info, warn or error, not ""`},
	} {
		log, err := New(&bytes.Buffer{}, c.format, c.level)
		if err == nil || err.Error() != c.want || log != nil {
			t.Errorf("New(%q, %q): %v, %v; want the error %s", c.format, c.level, log, err, c.want)
		}
	}
}
