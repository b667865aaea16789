// Package logging builds the structured logger of every spin-broker
// command that serves: the broker (spinbroker serve) and the agents, so
// that their JSON logs have one shape for a log pipeline to parse.
package logging

import (
	"fmt"
	"io"
	"log/slog"
)

// New returns a logger that writes to w in format ("text" or "json") from
// level ("debug", "info", "warn" or "error", in any case) up. In JSON,
// durations are written as Go writes them ("10s", "927µs"), as in the
// text format, not as bare nanoseconds: a log pipeline reads one unit
// whatever the format.
//
// Its errors name the flags bare ("log-level must be …"): each command
// spells them its own way, --log-level (spinbroker's, cobra) or -log-level
// (the agents', package flag).
func New(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log-level must be debug, info, warn or error, not %q", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		opts.ReplaceAttr = durationString
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log-format must be text or json, not %q", format)
}

// durationString writes a duration as its string; slog calls it for the
// attributes in groups too.
func durationString(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}
