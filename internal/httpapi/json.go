package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/jsonenc"
)

// readBody reads a request body of at most spinbroker.MaxBodyBytes.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	var b []byte
	var err error
	switch ahead, ok := r.Body.(*aheadBody); {
	case ok: // limitWrites has read it
		b, err = ahead.data, ahead.err
		if len(b) > spinbroker.MaxBodyBytes {
			err = &http.MaxBytesError{Limit: spinbroker.MaxBodyBytes}
		}
	case r.ContentLength > spinbroker.MaxBodyBytes:
		// Refused as declared, without reading a byte of it: nor, with
		// Expect: 100-continue, inviting the client to send it.
		err = &http.MaxBytesError{Limit: spinbroker.MaxBodyBytes}
	default:
		r.Body = http.MaxBytesReader(w, r.Body, spinbroker.MaxBodyBytes)
		b, err = io.ReadAll(r.Body)
	}
	// The answer's time to be written (logRequests set it when the headers
	// came) counts from now: a body that took longer to upload, within
	// the server's read timeout, had its request committed and its answer
	// cut off, and a client that retried created twice.
	http.NewResponseController(w).SetWriteDeadline(time.Now().Add(defaultWriteTimeout)) //nolint:errcheck // not every writer supports deadlines
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		w.Header().Set("Connection", "close") // the rest is not read
		return nil, spinbroker.Errorf(spinbroker.ETOOLARGE, "the request body is larger than %d bytes (1 MiB)", spinbroker.MaxBodyBytes)
	case isTimeout(err):
		// Go's words name the connection ("read tcp a->b: i/o timeout"),
		// not what the client can do about it.
		return nil, spinbroker.Errorf(spinbroker.EINVALID, "the request body did not arrive whole within the broker's read timeout (spinbroker serve --read-timeout): %d bytes of it came", len(b))
	case err != nil:
		return nil, spinbroker.Errorf(spinbroker.EINVALID, "the request body could not be read: %v", err)
	case len(b) > 0 && contentCoding(r) != "":
		// Read as JSON, a compressed body is "not valid UTF-8", which
		// sends its author looking at the JSON rather than at the header.
		return nil, spinbroker.Errorf(spinbroker.EINVALID, "Content-Encoding %s is not supported: send the body uncompressed, without the header", spinbroker.Truncate(contentCoding(r), 40))
	case !utf8.Valid(b):
		return nil, spinbroker.Errorf(spinbroker.EINVALID, "the request body is not valid UTF-8")
	}
	// A byte order mark, which Windows tools write at the head of a UTF-8
	// file, is no part of the JSON (RFC 8259, 8.1, lets a parser ignore it):
	// encoding/json would refuse it as an 'ï' the client never wrote.
	return bytes.TrimPrefix(b, []byte("\ufeff")), nil
}

// isTimeout reports whether err is a read that ran out of time.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// contentCoding is the first content coding of r's body other than
// identity (RFC 9110, 8.4), "" when there is none.
func contentCoding(r *http.Request) string {
	for _, v := range r.Header.Values("Content-Encoding") {
		for c := range strings.SplitSeq(v, ",") {
			if c = strings.TrimSpace(c); c != "" && !strings.EqualFold(c, "identity") {
				return c
			}
		}
	}
	return ""
}

// readJSON reads a request body and decodes it into v (see decodeJSON),
// returning the body as read, which idempotency keys hash.
func readJSON(w http.ResponseWriter, r *http.Request, v any, optional bool) ([]byte, error) {
	body, err := readBody(w, r)
	if err != nil {
		return nil, err
	}
	return body, decodeJSON(body, v, optional)
}

// noBody reads the body of a request that takes none: none, or an empty
// object, is fine; anything else is refused as any body would be (413 over
// 1 MiB, 400 malformed or with fields), so that a client who meant to say
// something (a reason for a cancel) learns it was not heard.
func noBody(w http.ResponseWriter, r *http.Request) error {
	var none struct{}
	_, err := readJSON(w, r, &none, true)
	return err
}

// decodeJSON decodes exactly one JSON value from b into v, refusing unknown
// fields, so that a typo is an error rather than silently ignored. An empty
// body is accepted when optional.
//
// encoding/json matches keys to fields ignoring case and lets a repeated key
// overwrite the first, so once the body has decoded, checkKeys walks it again
// beside v's type and refuses what encoding/json let through: a key that is
// not exactly a field's name, a key given twice, and "" for a field tagged
// `spin:"nonempty"`.
func decodeJSON(b []byte, v any, optional bool) error {
	if len(bytes.TrimSpace(b)) == 0 {
		if optional {
			return nil
		}
		return spinbroker.Errorf(spinbroker.EINVALID, "a JSON body is required")
	}
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		// encoding/json decodes null into a struct as nothing at all: it
		// would pass for an empty body, or for {}, where [] or 1 is refused.
		return spinbroker.Errorf(spinbroker.EINVALID, "the body must be a JSON object, not null")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			// encoding/json names the field without the index of the item
			// it is in (commands.max_attempts, of which of a thousand?),
			// and with the Go name of an embedded struct
			// (results.Result.status); where the value ends says which.
			where := locate(b, te.Offset)
			if where == "" && te.Type != nil {
				// A type's own UnmarshalJSON (Duration) refuses with no
				// offset: the first value at the field's path that the
				// type refuses too is the one.
				where = locateBad(b, te.Field, func(raw json.RawMessage) bool {
					return json.Unmarshal(raw, reflect.New(te.Type).Interface()) != nil
				})
			}
			if where != "" {
				te.Field = where
				return jsonError(te)
			}
			if te.Type != nil && isElementOf(reflect.TypeOf(v), te.Field, te.Type) {
				// encoding/json names the array, not its item: [1] where
				// objects belong would read "commands must be an object".
				return spinbroker.Errorf(spinbroker.EINVALID, "field %q must hold %s, not %s", te.Field, plural(jsonTypeName(te.Type.String())), withArticle(te.Value))
			}
		}
		if strings.HasPrefix(err.Error(), "json: unknown field ") {
			// The walk finds it too, and says in which item.
			if kerr := checkKeys(b, reflect.TypeOf(v)); kerr != nil {
				return kerr
			}
		}
		if isTimeError(err) {
			// time.Time's refusals name no field; not_before is the only
			// time a request carries, on its own or in a create's list.
			badTime := func(raw json.RawMessage) bool { var t time.Time; return json.Unmarshal(raw, &t) != nil }
			name := locateBad(b, "not_before", badTime)
			if name == "" {
				name = locateBad(b, "commands.not_before", badTime)
			}
			return timeError(err, name)
		}
		return jsonError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return spinbroker.Errorf(spinbroker.EINVALID, "the body holds more than one JSON value")
	}
	return checkKeys(b, reflect.TypeOf(v))
}

// locate answers where in the JSON value b the value that ends at byte
// offset is, as a path of field names and indexes (commands[2].max_attempts),
// or "" when nothing ends there (an offset encoding/json did not set). It is
// called with a body that has failed to decode, so it costs nothing to one
// that passes.
func locate(b []byte, offset int64) string {
	if offset <= 0 {
		return ""
	}
	type frame struct {
		array   bool
		index   int    // array: of the item being read
		key     string // object: of the value being read
		wantKey bool   // object: a key comes next
	}
	var stack []*frame
	done := func() { // a value has been read whole
		if n := len(stack); n > 0 {
			if stack[n-1].array {
				stack[n-1].index++
			} else {
				stack[n-1].wantKey = true
			}
		}
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber() // 1e400 is a token too, not a float64 that overflows
	for {
		tok, err := dec.Token()
		if err != nil {
			return ""
		}
		top := (*frame)(nil)
		if n := len(stack); n > 0 {
			top = stack[n-1]
		}
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			stack = stack[:len(stack)-1]
			done()
			continue
		}
		if top != nil && !top.array && top.wantKey {
			top.key, top.wantKey = tok.(string), false
			continue
		}
		if dec.InputOffset() >= offset {
			var p strings.Builder
			for _, f := range stack {
				if f.array {
					fmt.Fprintf(&p, "[%d]", f.index)
					continue
				}
				if p.Len() > 0 {
					p.WriteByte('.')
				}
				p.WriteString(f.key)
			}
			return p.String()
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{wantKey: true})
		case json.Delim('['):
			stack = append(stack, &frame{array: true})
		default:
			done()
		}
	}
}

// locateBad answers the place (commands[2].lease_duration) of the first
// value in the JSON value b whose path, without indexes, is field (dotted
// JSON names, as encoding/json gives them) and which bad refuses; "" when
// there is none. Only the objects and arrays on the way to field are
// walked, not the rest (a command's parameters, however deep).
func locateBad(b []byte, field string, bad func(json.RawMessage) bool) string {
	var top json.RawMessage
	if json.NewDecoder(bytes.NewReader(b)).Decode(&top) != nil {
		return ""
	}
	var find func(raw json.RawMessage, names []string, place string) string
	find = func(raw json.RawMessage, names []string, place string) string {
		if len(names) == 0 {
			if bad(raw) {
				return place
			}
			return ""
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		tok, err := dec.Token()
		if err != nil {
			return ""
		}
		switch tok {
		case json.Delim('['):
			for i := 0; dec.More(); i++ {
				var item json.RawMessage
				if dec.Decode(&item) != nil {
					return ""
				}
				if at := find(item, names, fmt.Sprintf("%s[%d]", place, i)); at != "" {
					return at
				}
			}
		case json.Delim('{'):
			for dec.More() {
				key, err := dec.Token()
				if err != nil {
					return ""
				}
				var value json.RawMessage
				if dec.Decode(&value) != nil {
					return ""
				}
				if key != names[0] {
					continue
				}
				at := names[0]
				if place != "" {
					at = place + "." + at
				}
				if at := find(value, names[1:], at); at != "" {
					return at
				}
			}
		}
		return ""
	}
	return find(top, strings.Split(field, "."), "")
}

// isElementOf reports whether the field at path (dotted JSON names) in t is
// an array whose items are of type elem.
func isElementOf(t reflect.Type, path string, elem reflect.Type) bool {
	for _, name := range strings.Split(path, ".") {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return false
		}
		found := false
		for i := range t.NumField() {
			f := t.Field(i)
			if tag, _, _ := strings.Cut(f.Tag.Get("json"), ","); tag == name {
				t, found = f.Type, true
				break
			}
		}
		if !found {
			return false
		}
	}
	return t.Kind() == reflect.Slice && t.Elem() == elem
}

// plural turns "an object" into "objects", for the items of an array.
func plural(kind string) string {
	kind = strings.TrimPrefix(strings.TrimPrefix(kind, "an "), "a ")
	if kind == "true or false" {
		return "true or false"
	}
	return kind + "s"
}

// jsonError turns a decoding error into a sentence that names the field.
func jsonError(err error) error {
	var (
		se *json.SyntaxError
		te *json.UnmarshalTypeError
		ae *spinbroker.Error
	)
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &se):
		return spinbroker.Errorf(spinbroker.EINVALID, "malformed JSON at byte %d: %s", se.Offset, strings.TrimPrefix(se.Error(), "json: "))
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			return spinbroker.Errorf(spinbroker.EINVALID, "the body must be a JSON object, not %s", withArticle(te.Value))
		}
		if te.Type == reflect.TypeFor[spinbroker.Duration]() {
			return spinbroker.Errorf(spinbroker.EINVALID, "field %q must be a duration string such as \"30s\" or \"5m\", not %s", field, withArticle(te.Value))
		}
		want := jsonTypeName(te.Type.String())
		if num, ok := strings.CutPrefix(te.Value, "number "); ok && isIntegerLiteral(num) {
			// A whole number too large (or negative where none may be):
			// "must be an integer, not a number 1e30" would puzzle.
			return spinbroker.Errorf(spinbroker.EINVALID, "field %q: %s is out of range", field, spinbroker.Truncate(num, 40))
		} else if ok && want == "an integer" {
			// "must be an integer, not a number 1e3" would puzzle too.
			// (1e400 is whole: ParseFloat makes it an infinity.)
			f, _ := strconv.ParseFloat(num, 64)
			num = spinbroker.Truncate(num, 40)
			if f == math.Trunc(f) {
				return spinbroker.Errorf(spinbroker.EINVALID, "field %q must be an integer written in digits only (such as 3), not %s", field, num)
			}
			return spinbroker.Errorf(spinbroker.EINVALID, "field %q must be a whole number, not %s", field, num)
		}
		return spinbroker.Errorf(spinbroker.EINVALID, "field %q must be %s, not %s", field, want, withArticle(te.Value))
	case isTimeError(err):
		return timeError(err, "")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return spinbroker.Errorf(spinbroker.EINVALID, "malformed JSON: the body ends early")
	}
	msg := strings.TrimPrefix(err.Error(), "json: ")
	if strings.HasPrefix(msg, "unknown field") {
		return spinbroker.Errorf(spinbroker.EINVALID, "%s (unknown fields are refused so that typos are not ignored)", msg)
	}
	return spinbroker.Errorf(spinbroker.EINVALID, "malformed JSON: %s", msg)
}

// isTimeError reports whether err is time.Time's refusal of a value.
func isTimeError(err error) bool {
	var tpe *time.ParseError
	return errors.As(err, &tpe) || strings.HasPrefix(err.Error(), "Time.UnmarshalJSON")
}

// timeError turns time.Time's refusal into a sentence that names the
// field: name, its place in the body (commands[2].not_before), or
// not_before when that is not known.
func timeError(err error, name string) error {
	if name == "" {
		name = "not_before"
	}
	var tpe *time.ParseError
	if errors.As(err, &tpe) {
		if _, err := time.Parse(time.RFC3339Nano, strings.ToUpper(tpe.Value)); err == nil {
			// RFC 3339 allows them in lower case; Go's parser does not.
			return spinbroker.Errorf(spinbroker.EINVALID, "%s: %q has a lower-case t or z: write them in upper case (such as 2026-01-02T15:04:05Z)", name, tpe.Value)
		}
		return spinbroker.Errorf(spinbroker.EINVALID, "%s: %q is not an RFC 3339 time (such as 2026-01-02T15:04:05Z)", name, tpe.Value)
	}
	// time.Time's own refusal of a number, object or array.
	return spinbroker.Errorf(spinbroker.EINVALID, "%s must be an RFC 3339 time string (such as \"2026-01-02T15:04:05Z\")", name)
}

// isIntegerLiteral reports whether a JSON number is written as a whole
// number: digits, perhaps after a minus.
func isIntegerLiteral(n string) bool {
	n = strings.TrimPrefix(n, "-")
	return n != "" && strings.Trim(n, "0123456789") == ""
}

// withArticle is a JSON kind as encoding/json names it ("array", "number
// 1e3") with its article.
func withArticle(kind string) string {
	if strings.HasPrefix(kind, "a") || strings.HasPrefix(kind, "o") {
		return "an " + kind
	}
	return "a " + kind
}

func jsonTypeName(goType string) string {
	switch {
	case strings.HasPrefix(goType, "int"), strings.HasPrefix(goType, "*int"):
		return "an integer"
	case goType == "bool", goType == "*bool":
		return "true or false"
	case goType == "string", goType == "*string":
		return "a string"
	case strings.HasPrefix(goType, "[]"):
		return "an array"
	case strings.Contains(goType, "RawMessage"):
		return "a JSON object"
	case strings.Contains(goType, "Duration"):
		return "a duration string such as \"30s\""
	case strings.Contains(goType, "Time"):
		return "an RFC 3339 time"
	}
	return "an object"
}

// writeJSON answers v as JSON with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	buf := bufPool.Get().(*bytes.Buffer)
	buf.Reset()
	// jsonenc: what json.Encoder writes, without scanning each command's
	// parameters and output again. It appends into the pooled buffer's
	// room, or into a larger array of its own, which the pool keeps next.
	b, err := jsonenc.Append(buf.AvailableBuffer(), v)
	if err != nil {
		putBuf(buf)
		// Our own types always encode; reaching here is a bug.
		http.Error(w, `{"error":{"code":"internal","message":"internal error"}}`, http.StatusInternalServerError)
		return
	}
	b = append(b, '\n')
	writeBody(w, status, b)
	if cap(b) > buf.Cap() {
		buf = bytes.NewBuffer(b[:0])
	}
	putBuf(buf)
}

// bufPool holds the buffers answers are encoded into: a claim's answer is
// tens of kilobytes, and allocating one per request made the collector a
// tenth of the broker's CPU under load.
var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func putBuf(b *bytes.Buffer) {
	if b.Cap() > 1<<20 {
		return // an outsized answer; let it go rather than keep it
	}
	bufPool.Put(b)
}

// writeRaw answers an encoded JSON body (a replayed idempotent response).
func writeRaw(w http.ResponseWriter, status int, body []byte) {
	writeBody(w, status, append(body[:len(body):len(body)], '\n'))
}

// writeBody answers body, which ends in a newline, in one write with its
// length, so that no answer is sent chunked (but a large package's,
// handlePackageGet's).
func writeBody(w http.ResponseWriter, status int, body []byte) {
	h := jsonHeaders(w)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body) //nolint:errcheck // the client is gone; nothing to do
}

// jsonHeaders sets the headers of every JSON answer, and returns them.
// nosniff keeps a browser from taking a body that echoes a client's text
// for anything but JSON.
func jsonHeaders(w http.ResponseWriter) http.Header {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	return h
}

// statusOf is the only table from error codes to HTTP statuses.
var statusOf = map[string]int{
	spinbroker.EINVALID:      http.StatusBadRequest,
	spinbroker.EUNKNOWNDEP:   http.StatusBadRequest,
	spinbroker.EEMPTY:        http.StatusBadRequest,
	spinbroker.EUNAUTHORIZED: http.StatusUnauthorized,
	spinbroker.EFORBIDDEN:    http.StatusForbidden,
	spinbroker.ENOTFOUND:     http.StatusNotFound,
	spinbroker.EMETHOD:       http.StatusMethodNotAllowed,
	spinbroker.ECONFLICT:     http.StatusConflict,
	spinbroker.ESTALE:        http.StatusConflict,
	spinbroker.ETOOLARGE:     http.StatusRequestEntityTooLarge,
	spinbroker.EUNAVAILABLE:  http.StatusServiceUnavailable,
	spinbroker.EINTERNAL:     http.StatusInternalServerError,
}

// StatusOf returns the HTTP status that answers an error with this code.
func StatusOf(code string) int {
	if s, ok := statusOf[code]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// apiError returns the *spinbroker.Error to answer for err: its own, or a
// generic internal error that hides the details.
func apiError(err error) *spinbroker.Error {
	code := spinbroker.ErrorCode(err)
	if code == spinbroker.EINTERNAL {
		return &spinbroker.Error{Code: code, Message: "internal error"}
	}
	return &spinbroker.Error{Code: code, Message: spinbroker.ErrorMessage(err)}
}

// writeError answers err in API.md's error shape. Internal errors are logged
// here, once, with the request; their details never reach the client. On the
// dashboard's paths it answers as the dashboard does (ui.fail), so that what
// refuses a /ui/ request before its handler runs (the router's 405, the
// cross-origin check, auth, a panic) shows a browser a page, not JSON.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	if spinbroker.ErrorCode(err) == spinbroker.EUNAUTHORIZED {
		w.Header().Set("WWW-Authenticate", `Bearer realm="spin-broker"`)
	}
	if s.ui != nil && (strings.HasPrefix(r.URL.Path, "/ui/") || r.URL.Path == "/") {
		s.ui.fail(w, r, err)
		return
	}
	e, status := s.judge(w, r, err)
	writeJSON(w, status, spinbroker.ErrorBody{Error: e})
}

// judge turns err into what the client is told and its status, for the
// API's answers and the dashboard's alike: internal errors are logged once,
// here, and 503s say when to come back.
func (s *Server) judge(w http.ResponseWriter, r *http.Request, err error) (*spinbroker.Error, int) {
	e := apiError(err)
	noteCode(w, e.Code)
	switch e.Code {
	case spinbroker.EUNAUTHORIZED:
		noteRefusal(w, err)
	case spinbroker.EINTERNAL:
		s.log.Error("internal error", logAttrs(r, "err", err)...)
	case spinbroker.EUNAVAILABLE:
		w.Header().Set("Retry-After", "1")
		// A planned stop is not a fault: at warn, every restart would
		// leave two lines per waiting agent.
		level := slog.LevelWarn
		if errors.Is(err, errShuttingDown) {
			level = slog.LevelInfo
		}
		s.causes.log(s.log, r, level, err, s.now())
	}
	return e, StatusOf(e.Code)
}

// causeLogEvery is how often the cause of 503s that go on is logged again,
// as the store logs its failing writes (failLogEvery).
const causeLogEvery = 10 * time.Second

// causeLog rate-limits the line that gives a 503's cause: every 503 has its
// request line, but on a full disk or a busy broker each one also logged
// its cause, thousands of warnings a second. A cause is logged when first
// seen and then at most once per causeLogEvery, with the number of 503s
// of that cause since its last line; each line keeps its request's id.
// A cause is forgotten once a new one comes an interval after its last
// line; the 503s it left out are counted then, in a line of their own.
type causeLog struct {
	mu     sync.Mutex
	causes map[string]*causeSeen
}

type causeSeen struct {
	last       time.Time  // the last line logged
	suppressed int        // 503s of this cause since, not logged
	level      slog.Level // the last line's
}

func (c *causeLog) log(log *slog.Logger, r *http.Request, level slog.Level, err error, now time.Time) {
	cause := err.Error()
	c.mu.Lock()
	seen := c.causes[cause]
	if seen != nil && now.Sub(seen.last) < causeLogEvery {
		seen.suppressed++
		c.mu.Unlock()
		return
	}
	if c.causes == nil {
		c.causes = map[string]*causeSeen{}
	}
	// Causes whose 503s stopped (those that name a token since revoked,
	// or a driver's error text) would otherwise pile up for as long as
	// the broker runs.
	type unsaid struct {
		cause string
		seen  causeSeen
	}
	var gone []unsaid
	if seen == nil {
		// Forget causes logged over an interval ago. One with 503s left
		// out would tell their count with its next line, which may never
		// come: it is told now.
		for k, v := range c.causes {
			if now.Sub(v.last) >= causeLogEvery {
				if v.suppressed > 0 {
					gone = append(gone, unsaid{k, *v})
				}
				delete(c.causes, k)
			}
		}
		seen = &causeSeen{}
		c.causes[cause] = seen
	}
	suppressed := seen.suppressed
	seen.last, seen.suppressed, seen.level = now, 0, level
	c.mu.Unlock()
	for _, u := range gone {
		log.Log(r.Context(), u.seen.level, "unavailable", "err", u.cause, "suppressed_since_last_line", u.seen.suppressed,
			"last_line_at", u.seen.last)
	}
	attrs := logAttrs(r, "err", err)
	if suppressed > 0 {
		attrs = append(attrs, "suppressed_since_last_line", suppressed)
	}
	log.Log(r.Context(), level, "unavailable", attrs...)
}

// logAttrs is a helper for handlers that log: the request's method, path
// and id, so that a cause is found beside its request's own line.
func logAttrs(r *http.Request, more ...any) []any {
	id, _ := r.Context().Value(requestIDKey{}).(string)
	return append([]any{slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.String("request_id", id)}, more...)
}

// errorf is a shorthand used where handlers build errors.
var errorf = spinbroker.Errorf
