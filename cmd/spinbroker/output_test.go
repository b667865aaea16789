package main

import (
	"encoding/json"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
)

func TestCells(t *testing.T) {
	t.Parallel()
	s := func(v string) *string { return &v }
	at := time.Date(2026, 1, 2, 3, 4, 5, 600, time.FixedZone("CET", 3600))
	tests := []struct {
		name, got, want string
	}{
		{"OneLinePlain", oneLine("disk full"), "disk full"},
		{"OneLineControls", oneLine("a\tb\nc\x7f"), `a\tb\nc\x7f`},
		{"OneLineUnicode", oneLine("größe ✓"), "größe ✓"},
		// Spaces, joiners and hyphens of ordinary text are not escaped.
		{"OneLineScripts", oneLine("日本\u3000語, prix\u00a0100 €, dev 👩\u200d💻, a\u00adb"), "日本\u3000語, prix\u00a0100 €, dev 👩\u200d💻, a\u00adb"},
		{"OneLineBidi", oneLine("failed: \u202eevil"), `failed: \u202eevil`},
		{"OneLineC1AndBytes", oneLine("\u009b2J\xff"), `\u009b2J\xff`},
		{"JSONKeepsText", fmtJSON(json.RawMessage("{\"name\":\"日本\u3000語\"}")), "{\"name\":\"日本\u3000語\"}"},
		{"JSONEscapesControls", fmtJSON(json.RawMessage("{\"a\":\"x\u0085\u202e\"}")), `{"a":"x\u0085\u202e"}`},
		{"StrNil", fmtStr(nil), "-"},
		{"StrEmpty", fmtStr(s("")), "-"},
		{"TimeUTC", fmtTime(at), "2026-01-02 02:04:05Z"},
		{"TimeZero", fmtTime(time.Time{}), "-"},
		{"TimePtrNil", fmtTimePtr(nil), "-"},
		{"JSONCompact", fmtJSON(json.RawMessage("{ \"a\" : [1, 2] }")), `{"a":[1,2]}`},
		{"JSONNull", fmtJSON(json.RawMessage("null")), "-"},
		{"JSONNone", fmtJSON(nil), "-"},
		{"ListNone", fmtList(nil), "-"},
		{"Counts", fmtCounts(spinbroker.Counts{Ready: 2, Failed: 1}), "2 ready, 1 failed"},
		{"CountsNone", fmtCounts(spinbroker.Counts{}), "no commands"},
		{"OldestNoneReady", fmtOldest(&spinbroker.Queue{OldestReadyAgeSeconds: 9}), "-"},
		{"Oldest", fmtOldest(&spinbroker.Queue{Counts: spinbroker.QueueCounts{Ready: 1}, OldestReadyAgeSeconds: 65.4}), "1m5s"},
		{"OldestJustNow", fmtOldest(&spinbroker.Queue{Counts: spinbroker.QueueCounts{Ready: 1}}), "0s"},
		{"Progress", progress(&spinbroker.Package{Total: 3, Counts: spinbroker.Counts{Succeeded: 1, Cancelled: 1, Leased: 1}}), "2/3 done"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}
