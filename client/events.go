package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Event is one Server-Sent Event of GET /events: Type is "package",
// "command", "queue" or "resync", and Data the JSON the broker sent with
// it (a package or queue without its commands, a command transition, or
// for "resync" a reason). "resync" says that the stream fell behind and
// events were dropped: read again the state that matters.
type Event struct {
	Type string          // the SSE event name: "package", "command", "queue" or "resync"
	Data json.RawMessage // its data, JSON as the broker sent it
}

// eventsIdle is how long Events waits for anything on an open stream
// before it takes the connection for dead, unless IdleTimeout says: three
// of the broker's keep-alives.
var eventsIdle = 45 * time.Second

// EventsOption narrows an event stream, or watches it open.
type EventsOption func(*eventsConfig)

type eventsConfig struct {
	query  url.Values
	onOpen func()
	idle   time.Duration
}

// ForPackage streams only the events of one package (and resyncs).
func ForPackage(id string) EventsOption {
	return func(c *eventsConfig) { c.query.Set("package", id) }
}

// IdleTimeout sets how long Events waits for anything on an open stream,
// an event or the keep-alive the broker sends every 15s, before it takes
// the connection for dead and returns a *SilentError: 45s unless set. The
// time Events' fn takes is not counted.
// Shorter finds a dead connection sooner; under 15s it ends streams that
// are well.
func IdleTimeout(d time.Duration) EventsOption {
	return func(c *eventsConfig) {
		if d > 0 {
			c.idle = d
		}
	}
}

// SilentError is the error of Events for a stream on which nothing came
// for Idle, not even the broker's keep-alive: a connection that died
// without a word (a NAT or a firewall forgot it, a host went away), whose
// broker may well be up. Temporary reports it: a new stream may work.
type SilentError struct {
	Idle time.Duration // how long nothing came
}

// Error says how long nothing came.
func (e *SilentError) Error() string {
	return fmt.Sprintf("client: event stream: nothing from the broker in %s, not even its keep-alive: the connection is gone", e.Idle)
}

// Unwrap makes Temporary, and errors.Is, see a deadline that passed.
func (e *SilentError) Unwrap() error { return context.DeadlineExceeded }

// NotStreamError is the error of Events for an answer of 200 that is not
// an event stream (its Content-Type is not text/event-stream): a web
// server's page or some other service at the broker's address, or a
// proxy's login page in front of it. Temporary does not report it: asking
// again gets the same.
type NotStreamError struct {
	StatusCode  int    // the answer's status
	ContentType string // its Content-Type, "" for none
	Host        string // the host that answered, as in the URL
}

// Error says what answered, and where.
func (e *NotStreamError) Error() string {
	ct := "no Content-Type"
	if e.ContentType != "" {
		ct = fmt.Sprintf("Content-Type %q", e.ContentType)
	}
	return fmt.Sprintf("client: GET /events at %s answered %d %s with %s, not an event stream (text/event-stream): not spin-broker's answer",
		e.Host, e.StatusCode, http.StatusText(e.StatusCode), ct)
}

// isEventStream reports whether a Content-Type is text/event-stream, with
// any parameters, in any case.
func isEventStream(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "text/event-stream")
}

// OnOpen has Events call fn once, when the broker has answered the
// subscription and before the first event: every change from then on is
// sent (or, if the stream falls behind, a "resync" says so). A follower
// reads the state it follows after fn has been called, so that no change
// falls between its read and the stream. fn runs on the goroutine that
// calls fn for events, which waits for it: it should signal and return.
func OnOpen(fn func()) EventsOption {
	return func(c *eventsConfig) { c.onOpen = fn }
}

// Events streams the broker's events to fn until ctx ends (it returns
// ctx's error), fn returns an error (which Events then returns), or the
// stream ends: the connection drops, or the broker stops or restarts, for
// which it returns an error that Temporary reports (ErrStreamEnded, when
// the broker ended it). An answer that is no
// event stream (200 with another Content-Type than text/event-stream: a
// page of another server, a proxy's login page) is refused at once with a
// *NotStreamError, which Temporary does not report.
//
// Events does not reconnect, and the broker keeps no history to replay:
// what changed while no stream was open (between two calls, or before
// the broker answered this one) is never sent. A follower reconnects and
// then reads again the packages it follows, rather than wait for an
// event that may have passed. WaitPackage does all of this for one
// package. The HTTP client's Timeout, if set, cuts the stream too.
//
// A stream on which nothing arrives for 45s (IdleTimeout), not even the
// comment the broker sends every 15s to keep it open, is taken for a
// connection that died without a word (a NAT or a firewall forgot it, a
// host went away): Events ends it and returns a *SilentError, which
// Temporary reports, rather than wait for ever. The time fn takes is not
// counted: what the broker sends meanwhile waits to be read. An event larger than
// the client reads of any answer (64 MiB) ends the stream with an
// *AnswerTooLargeError, which Temporary does not report.
func (c *Client) Events(ctx context.Context, fn func(Event) error, opts ...EventsOption) error {
	cfg := eventsConfig{query: url.Values{}, idle: eventsIdle}
	for _, o := range opts {
		o(&cfg)
	}
	u := c.endpoint("/events")
	u.RawQuery = cfg.query.Encode()
	reqCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	req, err := http.NewRequestWithContext(reqCtx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("User-Agent", c.userAgent)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return schemeError(c.base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return schemeError(c.base, answerError(resp, data))
	}
	if ct := resp.Header.Get("Content-Type"); !isEventStream(ct) {
		// Another server, or a proxy's login page: read as a stream, it
		// was one that ended, opened again and again to no end.
		host := u.Host
		if resp.Request != nil && resp.Request.URL != nil {
			host = resp.Request.URL.Host // where a redirect led
		}
		return &NotStreamError{StatusCode: resp.StatusCode, ContentType: ct, Host: host}
	}
	if cfg.onOpen != nil {
		cfg.onOpen()
	}
	silent := &SilentError{Idle: cfg.idle}
	watchdog := time.AfterFunc(cfg.idle, func() { cancel(silent) })
	defer watchdog.Stop()
	sc := bufio.NewScanner(resp.Body)
	// A line as long as an answer may be, with its field's name: an
	// event's data may be one line, and the scanner's refusal of a longer
	// one (a line without end) is the answer too large, as Events says.
	maxLine := maxAnswer + len("data: \n")
	sc.Buffer(make([]byte, 64<<10), maxLine)
	var ev Event
	var data strings.Builder
	for sc.Scan() {
		watchdog.Reset(cfg.idle)
		line := sc.Text()
		switch {
		case line == "":
			if ev.Type != "" || data.Len() > 0 {
				if ev.Type == "" {
					ev.Type = "message"
				}
				ev.Data = json.RawMessage(data.String())
				// The time fn takes is the caller's, not the broker's
				// silence: what the broker sends meanwhile waits in the
				// connection, and a paused pipe or a slow read must not
				// end a stream that is well.
				watchdog.Stop()
				err := fn(ev)
				watchdog.Reset(cfg.idle)
				if err != nil {
					return err
				}
			}
			ev, data = Event{}, strings.Builder{}
		case strings.HasPrefix(line, ":"):
			// a comment: the broker's keep-alive
		case strings.HasPrefix(line, "event:"):
			ev.Type = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		case strings.HasPrefix(line, "data:"):
			value := strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " ")
			// An event's data lines are held until the blank line that
			// ends it: bounded as every answer is, or a stream whose
			// event never ends (not the broker's) takes any memory.
			sep := min(data.Len(), 1) // the newline between two data lines
			if data.Len()+sep+len(value) > maxAnswer {
				return &AnswerTooLargeError{Method: http.MethodGet, Path: "/events", StatusCode: resp.StatusCode, Limit: maxAnswer}
			}
			if data.Len() > 0 {
				data.WriteByte('\n')
			}
			data.WriteString(value)
		}
	}
	if errors.Is(context.Cause(reqCtx), silent) && ctx.Err() == nil {
		return silent
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return &AnswerTooLargeError{Method: http.MethodGet, Path: "/events", StatusCode: resp.StatusCode, Limit: maxAnswer}
		}
		return fmt.Errorf("client: event stream: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// The broker ended the stream (it is stopping): not a success, and
	// worth a new one once it is back.
	return fmt.Errorf("%w: %w", ErrStreamEnded, io.EOF)
}

// ErrStreamEnded is in the error of Events when the broker ended the
// stream itself, as it does when it stops or restarts and when the
// stream's token was revoked or ran out (the next try says which). It
// wraps io.EOF too, and Temporary reports it.
var ErrStreamEnded = errors.New("client: event stream: the broker ended it")
