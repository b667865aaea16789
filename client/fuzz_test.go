package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	spinbroker "github.com/spin-broker/spinbroker"
)

// bodyTransport answers every request with a fixed status and body, as
// an event stream (the broker's Content-Type).
type bodyTransport struct {
	status int
	body   string
}

func (b bodyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	h := http.Header{"Content-Type": {"text/event-stream"}}
	return &http.Response{StatusCode: b.status, Body: io.NopCloser(strings.NewReader(b.body)), Header: h, Request: r}, nil
}

// FuzzEvents: whatever an event stream holds, the client's parser neither
// panics nor loses its footing: an event the broker writes after it, once
// a blank line has ended whatever came before, arrives as written.
func FuzzEvents(f *testing.F) {
	for _, s := range []struct{ raw, typ, data string }{
		{"retry: 2000\n: connected\n\n", "command", `{"id":"x"}`},
		{"event: package\ndata: {\"a\":\ndata: 1}\n\n", "queue", `{"resource":"r"}`},
		{"data: x\r\n\r\n", "resync", `{}`},
		{"event:\n\n:\n", "command", ``},
		{"data", "e", "d"},
		{strings.Repeat("data: y\n", 100), "package", `{"id":"y","deleted":true}`},
	} {
		f.Add(s.raw, s.typ, s.data)
	}
	f.Fuzz(func(t *testing.T, raw, typ, data string) {
		if typ != strings.TrimSpace(typ) || typ == "" || strings.ContainsAny(typ+data, "\r\n") || strings.HasPrefix(data, " ") {
			typ, data = "command", "{}"
		}
		body := raw + "\n\n\n" + "event: " + typ + "\ndata: " + data + "\n\n"
		c, err := New("http://broker.invalid", WithHTTPClient(&http.Client{Transport: bodyTransport{200, body}}))
		if err != nil {
			t.Fatal(err)
		}
		var last Event
		err = c.Events(context.Background(), func(ev Event) error {
			if ev.Type == "" {
				t.Fatalf("an event without a type from %q", body)
			}
			last = ev
			return nil
		})
		// The body ends: the stream ended by the broker, an io.EOF.
		if !errors.Is(err, io.EOF) {
			if strings.Contains(err.Error(), "token too long") {
				return
			}
			t.Fatalf("Events: %v", err)
		}
		if last.Type != typ || string(last.Data) != data {
			t.Fatalf("last event %q %q, want %q %q, from %q", last.Type, last.Data, typ, data, body)
		}
	})
}

// FuzzDecodeError: whatever an error answer holds (the broker's body, a
// proxy's page), it becomes an error with a code and a message that is
// valid UTF-8 when the body was, and no longer than about 200 bytes when
// it is not the broker's.
func FuzzDecodeError(f *testing.F) {
	for _, s := range []string{`{"error": {"code": "stale_lease", "message": "x"}}`, "<html>bad gateway</html>", "", `{"error": null}`,
		`{"error": {"code": ""}}`, strings.Repeat("é", 150), strings.Repeat("a", 199) + "€"} {
		for _, st := range []int{400, 401, 404, 409, 413, 429, 500, 502, 503} {
			f.Add(st, s)
		}
	}
	f.Fuzz(func(t *testing.T, status int, body string) {
		err := decodeError(status, []byte(body))
		var ce *Error
		if !errors.As(err, &ce) || ce.Err == nil || ce.Err.Code == "" || ce.StatusCode != status {
			t.Fatalf("decodeError(%d, %q) = %#v", status, body, err)
		}
		if spinbroker.ErrorCode(err) == "" {
			t.Fatalf("no code: %v", err)
		}
		if ce.Err.Message != strings.TrimSpace(body) && len(ce.Err.Message) > 200+len("…") && !strings.HasPrefix(strings.TrimSpace(body), "{") {
			t.Fatalf("decodeError(%d, %d bytes): a message of %d bytes", status, len(body), len(ce.Err.Message))
		}
		// A proxy's page: its code says "again later" exactly when
		// Temporary does (a 429 read as invalid_request stopped agents).
		var eb spinbroker.ErrorBody
		if status >= 400 && status < 600 && (json.Unmarshal([]byte(body), &eb) != nil || eb.Error == nil || eb.Error.Code == "") {
			code := spinbroker.ErrorCode(err)
			if later := code == spinbroker.EUNAVAILABLE || code == spinbroker.EINTERNAL; later != Temporary(err) {
				t.Fatalf("decodeError(%d, %q): code %s, but Temporary = %v", status, body, code, Temporary(err))
			}
		}
		if utf8.ValidString(body) && !utf8.ValidString(ce.Err.Message) {
			t.Fatalf("decodeError(%d, %q): message %q is not UTF-8", status, body, ce.Err.Message)
		}
	})
}
