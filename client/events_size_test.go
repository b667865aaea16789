package client

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

// endlessEvent is an event stream that opens one event and sends data
// lines for it without end, as a broken or hostile server at the broker's
// address could; it stops at limit bytes, counting what was read.
type endlessEvent struct {
	read, limit int
}

func (e *endlessEvent) Read(p []byte) (int, error) {
	if e.read >= e.limit {
		return 0, io.EOF
	}
	line := "data: " + strings.Repeat("x", 1017) + "\n"
	if e.read == 0 {
		line = "event: command\n"
	}
	n := copy(p, line) // a line at a time: p is at least 4 KiB
	e.read += n
	return n, nil
}

type readerTransport struct{ body io.Reader }

func (rt readerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	h := http.Header{"Content-Type": {"text/event-stream"}}
	return &http.Response{StatusCode: 200, Body: io.NopCloser(rt.body), Header: h, Request: r}, nil
}

// TestEvents_EventTooLarge: an event whose data lines never end is refused
// once it is past what the client reads of an answer, as every other
// answer is, rather than held in memory for as long as it comes. Not
// parallel: it lowers maxAnswer.
func TestEvents_EventTooLarge(t *testing.T) {
	defer func(n int) { maxAnswer = n }(maxAnswer)
	maxAnswer = 1 << 20
	body := &endlessEvent{limit: 64 << 20}
	c, err := New("http://broker.invalid", WithHTTPClient(&http.Client{Transport: readerTransport{body}}))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Events(context.Background(), func(ev Event) error {
		t.Errorf("an event of %d bytes was delivered", len(ev.Data))
		return nil
	})
	var tl *AnswerTooLargeError
	if !errors.As(err, &tl) || tl.Limit != maxAnswer || Temporary(err) || !strings.Contains(err.Error(), "an event of GET /events is larger than 1 MiB") {
		t.Fatalf("an endless event: %v (temporary %v), want an *AnswerTooLargeError of 1 MiB", err, Temporary(err))
	}
	// Read ahead by the scanner's buffer at most, not the whole stream.
	if body.read > maxAnswer+(1<<20) {
		t.Fatalf("read %d bytes of an endless event, past the limit of %d", body.read, maxAnswer)
	}
}

// TestEvents_LineTooLarge: an event whose one data line never ends (no
// newline at all) is refused as an endless event of many lines is, with an
// *AnswerTooLargeError once past what the client reads of an answer, as
// Events says; it was the scanner's "token too long" at 16 MiB, whatever
// the limit. Not parallel: it lowers maxAnswer.
func TestEvents_LineTooLarge(t *testing.T) {
	defer func(n int) { maxAnswer = n }(maxAnswer)
	maxAnswer = 1 << 20
	for _, prefix := range []string{"event: command\ndata: ", ": "} {
		body := io.MultiReader(strings.NewReader(prefix), io.LimitReader(endlessX{}, 64<<20))
		c, err := New("http://broker.invalid", WithHTTPClient(&http.Client{Transport: readerTransport{body}}))
		if err != nil {
			t.Fatal(err)
		}
		err = c.Events(context.Background(), func(ev Event) error {
			t.Errorf("an event of %d bytes was delivered", len(ev.Data))
			return nil
		})
		var tl *AnswerTooLargeError
		if !errors.As(err, &tl) || tl.Limit != maxAnswer || Temporary(err) {
			t.Errorf("a line without end after %q: %v (temporary %v), want an *AnswerTooLargeError of 1 MiB", prefix, err, Temporary(err))
		}
	}
	// A data line of the limit, past the scanner's old 16 MiB, is an
	// event like any other.
	data := strings.Repeat("x", 17<<20)
	maxAnswer = len(data)
	body := strings.NewReader("event: command\ndata: " + data + "\n\n")
	c, err := New("http://broker.invalid", WithHTTPClient(&http.Client{Transport: readerTransport{body}}))
	if err != nil {
		t.Fatal(err)
	}
	var got int
	err = c.Events(context.Background(), func(ev Event) error { got = len(ev.Data); return nil })
	if got != len(data) || !errors.Is(err, ErrStreamEnded) {
		t.Errorf("an event of one 17 MiB line, at a 17 MiB limit: got %d bytes, %v", got, err)
	}
}

// endlessX reads as x without end.
type endlessX struct{}

func (endlessX) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}
