package httpapi

import (
	"bytes"
	"cmp"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	spinbroker "github.com/spin-broker/spinbroker"
)

// readBody reads a request body of at most spinbroker.MaxBodyBytes.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	r.Body = http.MaxBytesReader(w, r.Body, spinbroker.MaxBodyBytes)
	b, err := io.ReadAll(r.Body)
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return nil, spinbroker.Errorf(spinbroker.ETOOLARGE, "the request body is larger than %d bytes (1 MiB)", spinbroker.MaxBodyBytes)
	case err != nil:
		return nil, spinbroker.Errorf(spinbroker.EINVALID, "the request body could not be read: %v", err)
	case !utf8.Valid(b):
		return nil, spinbroker.Errorf(spinbroker.EINVALID, "the request body is not valid UTF-8")
	}
	return b, nil
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
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return spinbroker.Errorf(spinbroker.EINVALID, "the body holds more than one JSON value")
	}
	return checkKeys(b, reflect.TypeOf(v))
}

// jsonError turns a decoding error into a sentence that names the field.
func jsonError(err error) error {
	var (
		se  *json.SyntaxError
		te  *json.UnmarshalTypeError
		ae  *spinbroker.Error
		tpe *time.ParseError
	)
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &se):
		return spinbroker.Errorf(spinbroker.EINVALID, "malformed JSON at byte %d: %s", se.Offset, strings.TrimPrefix(se.Error(), "json: "))
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			return spinbroker.Errorf(spinbroker.EINVALID, "the body must be a JSON object, not a %s", te.Value)
		}
		return spinbroker.Errorf(spinbroker.EINVALID, "field %q must be %s, not a %s", field, jsonTypeName(te.Type.String()), te.Value)
	case errors.As(err, &tpe):
		return spinbroker.Errorf(spinbroker.EINVALID, "%q is not an RFC 3339 time (such as 2026-01-02T15:04:05Z)", tpe.Value)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return spinbroker.Errorf(spinbroker.EINVALID, "malformed JSON: the body ends early")
	}
	msg := strings.TrimPrefix(err.Error(), "json: ")
	if strings.HasPrefix(msg, "unknown field") {
		return spinbroker.Errorf(spinbroker.EINVALID, "%s (unknown fields are refused so that typos are not ignored)", msg)
	}
	return spinbroker.Errorf(spinbroker.EINVALID, "malformed JSON: %s", msg)
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
	defer putBuf(buf)
	buf.Reset()
	if err := json.NewEncoder(buf).Encode(v); err != nil {
		// Our own types always encode; reaching here is a bug.
		http.Error(w, `{"error":{"code":"internal","message":"internal error"}}`, http.StatusInternalServerError)
		return
	}
	writeBody(w, status, buf.Bytes())
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
// length, so that no answer is sent chunked.
func writeBody(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body) //nolint:errcheck // the client is gone; nothing to do
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
	if s.ui != nil && strings.HasPrefix(r.URL.Path, "/ui/") {
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
	switch e.Code {
	case spinbroker.EINTERNAL:
		s.log.Error("internal error", logAttrs(r, "err", err)...)
	case spinbroker.EUNAVAILABLE:
		w.Header().Set("Retry-After", "1")
		s.log.Warn("unavailable", logAttrs(r, "err", err)...)
	}
	return e, StatusOf(e.Code)
}

// logAttrs is a helper for handlers that log.
func logAttrs(r *http.Request, more ...any) []any {
	return append([]any{slog.String("method", r.Method), slog.String("path", r.URL.Path)}, more...)
}

// errorf is a shorthand used where handlers build errors.
var errorf = spinbroker.Errorf

// The exact-keys walk. API.md fixes the field names and refuses unknown
// ones; encoding/json would take {"RESOURCE": …} for "resource" and keep the
// last of two "resource" keys. checkKeys walks the raw body, which has
// already decoded (so it is one well-formed JSON value), beside a shape
// derived once per Go type, and refuses such keys with a message that names
// the field and where it is.
//
// A value whose Go type is a map, an interface, json.RawMessage or any other
// type with its own UnmarshalJSON or UnmarshalText (spinbroker.Duration,
// time.Time) is opaque: its keys are the client's own (a command's
// parameters) and are skipped unread.

// A shape is what the walk needs to know of a Go type. A nil *shape is a
// value the walk skips: a scalar or an opaque type.
type shape struct {
	object bool       // a struct: its keys are checked against fields
	fields []keyField // object: the JSON fields, in struct order
	elem   *shape     // !object: a slice or array, the shape of its elements
}

// keyField is one JSON field of a struct as encoding/json sees it.
type keyField struct {
	name     string
	shape    *shape
	nonempty string // for a field tagged spin:"nonempty", what it must be instead of ""
}

// find answers the index of the field named exactly key, or -1.
func (s *shape) find(key []byte) int {
	for i := range s.fields {
		if s.fields[i].name == string(key) {
			return i
		}
	}
	return -1
}

// shapes caches shapeOf per reflect.Type.
var shapes sync.Map // reflect.Type → *shape

func shapeOf(t reflect.Type) *shape {
	if s, ok := shapes.Load(t); ok {
		return s.(*shape)
	}
	s := buildShape(t, map[reflect.Type]*shape{})
	got, _ := shapes.LoadOrStore(t, s)
	return got.(*shape)
}

var (
	jsonUnmarshalerType = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// opaque reports whether the walk leaves a value of type t unread: encoding/json
// hands it whole to the type's own method, or decodes it into a map or an
// interface, whose keys are the client's.
func opaque(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Map, reflect.Interface:
		return true
	}
	pt := reflect.PointerTo(t)
	return t.Implements(jsonUnmarshalerType) || pt.Implements(jsonUnmarshalerType) ||
		t.Implements(textUnmarshalerType) || pt.Implements(textUnmarshalerType)
}

// buildShape derives t's shape; building holds the structs being built, so
// that a recursive type ends.
func buildShape(t reflect.Type, building map[reflect.Type]*shape) *shape {
	for {
		if opaque(t) {
			return nil
		}
		if t.Kind() != reflect.Pointer {
			break
		}
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		if s, ok := building[t]; ok {
			return s
		}
		s := &shape{object: true}
		building[t] = s
		for _, f := range structFields(t) {
			kf := keyField{name: f.name, shape: buildShape(f.typ, building)}
			if f.nonempty {
				kf.nonempty = nonemptyWant(f.name)
			}
			s.fields = append(s.fields, kf)
		}
		return s
	case reflect.Slice, reflect.Array:
		if elem := buildShape(t.Elem(), building); elem != nil {
			return &shape{elem: elem}
		}
	}
	return nil
}

// nonemptyWant says what a field tagged spin:"nonempty" must be, for the
// message that refuses "" (API.md, Names and limits).
func nonemptyWant(name string) string {
	if name == "id" {
		return "a UUID of version 4 or 7"
	}
	return fmt.Sprintf("1 to %d characters", spinbroker.MaxKeyLen)
}

// structField is a JSON field found by structFields.
type structField struct {
	name     string
	tagged   bool
	index    []int
	typ      reflect.Type
	nonempty bool
}

// structFields lists the JSON fields of struct type t by encoding/json's
// rules (typeFields in encoding/json/encode.go): json:"-" is left out,
// untagged embedded structs are flattened, and of fields with the same name
// the shallowest wins, a tagged one at equal depth, else none.
func structFields(t reflect.Type) []structField {
	current := []structField{}
	next := []structField{{typ: t}}
	var count, nextCount map[reflect.Type]int
	visited := map[reflect.Type]bool{}
	var fields []structField
	for len(next) > 0 {
		current, next = next, current[:0]
		count, nextCount = nextCount, map[reflect.Type]int{}
		for _, f := range current {
			if visited[f.typ] {
				continue
			}
			visited[f.typ] = true
			for i := range f.typ.NumField() {
				sf := f.typ.Field(i)
				if sf.Anonymous {
					et := sf.Type
					if et.Kind() == reflect.Pointer {
						et = et.Elem()
					}
					if !sf.IsExported() && et.Kind() != reflect.Struct {
						continue
					}
				} else if !sf.IsExported() {
					continue
				}
				tag := sf.Tag.Get("json")
				if tag == "-" {
					continue
				}
				name, _, _ := strings.Cut(tag, ",")
				if !validTag(name) {
					name = ""
				}
				index := append(append([]int(nil), f.index...), i)
				ft := sf.Type
				if ft.Name() == "" && ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				if name != "" || !sf.Anonymous || ft.Kind() != reflect.Struct {
					tagged := name != ""
					if name == "" {
						name = sf.Name
					}
					fields = append(fields, structField{name: name, tagged: tagged, index: index, typ: sf.Type, nonempty: hasOption(sf.Tag.Get("spin"), "nonempty")})
					if count[f.typ] > 1 {
						// Two embeddings of one type at this depth: keep a
						// second copy so that neither dominates.
						fields = append(fields, fields[len(fields)-1])
					}
					continue
				}
				nextCount[ft]++
				if nextCount[ft] == 1 {
					next = append(next, structField{name: ft.Name(), index: index, typ: ft})
				}
			}
		}
	}
	slices.SortFunc(fields, func(a, b structField) int {
		if c := strings.Compare(a.name, b.name); c != 0 {
			return c
		}
		if c := cmp.Compare(len(a.index), len(b.index)); c != 0 {
			return c
		}
		if a.tagged != b.tagged {
			if a.tagged {
				return -1
			}
			return +1
		}
		return slices.Compare(a.index, b.index)
	})
	out := fields[:0]
	for advance, i := 0, 0; i < len(fields); i += advance {
		for advance = 1; i+advance < len(fields) && fields[i+advance].name == fields[i].name; advance++ {
		}
		same := fields[i : i+advance]
		if len(same) > 1 && len(same[0].index) == len(same[1].index) && same[0].tagged == same[1].tagged {
			continue // ambiguous: encoding/json drops them all
		}
		out = append(out, same[0])
	}
	slices.SortFunc(out, func(a, b structField) int { return slices.Compare(a.index, b.index) })
	return out
}

// validTag is encoding/json's isValidTag: a name it would not use is ignored.
func validTag(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		switch {
		case strings.ContainsRune("!#$%&()*+-./:;<=>?@[]^_{|}~ ", c):
		case !unicode.IsLetter(c) && !unicode.IsDigit(c):
			return false
		}
	}
	return true
}

// hasOption reports whether a comma-separated tag value holds opt.
func hasOption(tag, opt string) bool {
	for tag != "" {
		var o string
		o, tag, _ = strings.Cut(tag, ",")
		if o == opt {
			return true
		}
	}
	return false
}

// keyError is a refusal found by the walk. Its path is built as the walk
// unwinds, innermost first, so that a body that passes costs nothing.
type keyError struct {
	problem keyProblem
	key     string   // the key as given (unknown, duplicate)
	hint    string   // unknown: the field it matches but for case; empty: what the field must be
	path    []string // "name" or "[i]", innermost first
}

type keyProblem uint8

const (
	unknownKey   keyProblem = iota // no field has exactly this name
	duplicateKey                   // the key is given twice in one object
	emptyValue                     // "" for a field tagged spin:"nonempty"
)

func (e *keyError) error() error {
	var p strings.Builder
	for i := len(e.path) - 1; i >= 0; i-- {
		if seg := e.path[i]; seg[0] != '[' && p.Len() > 0 {
			p.WriteByte('.')
		}
		p.WriteString(e.path[i])
	}
	where := ""
	if p.Len() > 0 {
		where = " in " + p.String()
	}
	key := spinbroker.Truncate(e.key, 64)
	switch e.problem {
	case unknownKey:
		if e.hint != "" {
			return spinbroker.Errorf(spinbroker.EINVALID, "unknown field %q%s (field names are case-sensitive: did you mean %q?)", key, where, e.hint)
		}
		return spinbroker.Errorf(spinbroker.EINVALID, "unknown field %q%s (unknown fields are refused so that typos are not ignored)", key, where)
	case duplicateKey:
		return spinbroker.Errorf(spinbroker.EINVALID, "duplicate field %q%s (a field may be given once)", key, where)
	default:
		return spinbroker.Errorf(spinbroker.EINVALID, "%s must be %s, not empty", p.String(), e.hint)
	}
}

func checkKeys(b []byte, t reflect.Type) error {
	s := shapeOf(t)
	if s == nil {
		return nil
	}
	w := walker{b: b}
	if ke := w.value(s); ke != nil {
		return ke.error()
	}
	return nil
}

// walker reads a well-formed JSON value. It never indexes past the end, so
// that a body it was not meant to see ends the walk rather than panics.
type walker struct {
	b []byte
	i int
}

func (w *walker) peek() byte {
	if w.i < len(w.b) {
		return w.b[w.i]
	}
	return 0
}

func (w *walker) space() {
	for w.i < len(w.b) {
		switch w.b[w.i] {
		case ' ', '\t', '\n', '\r':
			w.i++
		default:
			return
		}
	}
}

// value walks one value of shape s.
func (w *walker) value(s *shape) *keyError {
	w.space()
	switch c := w.peek(); {
	case s != nil && s.object && c == '{':
		return w.object(s)
	case s != nil && !s.object && c == '[':
		return w.array(s.elem)
	}
	w.skip()
	return nil
}

func (w *walker) object(s *shape) *keyError {
	w.i++ // {
	var seen uint64
	var seenMore []bool // for a struct of more than 64 fields
	if len(s.fields) > 64 {
		seenMore = make([]bool, len(s.fields))
	}
	w.space()
	if w.peek() == '}' {
		w.i++
		return nil
	}
	for {
		w.space()
		if w.peek() != '"' {
			return nil
		}
		start := w.i + 1
		end, escaped := w.str()
		key := w.b[start:end]
		if escaped {
			if key = unescape(w.b[start-1 : end+1]); key == nil {
				return nil
			}
		}
		fi := s.find(key)
		if fi < 0 {
			return s.unknown(string(key))
		}
		if seenMore != nil {
			if seenMore[fi] {
				return &keyError{problem: duplicateKey, key: string(key)}
			}
			seenMore[fi] = true
		} else {
			if seen&(1<<fi) != 0 {
				return &keyError{problem: duplicateKey, key: string(key)}
			}
			seen |= 1 << fi
		}
		w.space()
		if w.peek() != ':' {
			return nil
		}
		w.i++
		w.space()
		f := &s.fields[fi]
		if f.nonempty != "" && w.i+1 < len(w.b) && w.b[w.i] == '"' && w.b[w.i+1] == '"' {
			return &keyError{problem: emptyValue, hint: f.nonempty, path: []string{f.name}}
		}
		if ke := w.value(f.shape); ke != nil {
			ke.path = append(ke.path, f.name)
			return ke
		}
		w.space()
		if w.peek() != ',' {
			w.i++ // }
			return nil
		}
		w.i++
	}
}

// unescape answers a quoted key with escapes as encoding/json reads it (nil
// should it not be a string). It is apart from the walk so that the string
// it decodes into is allocated only for such a key.
func unescape(quoted []byte) []byte {
	var s string
	if json.Unmarshal(quoted, &s) != nil {
		return nil
	}
	return []byte(s)
}

// unknown refuses key, naming the field it matches but for case, as
// encoding/json would have matched it, if any.
func (s *shape) unknown(key string) *keyError {
	for _, f := range s.fields {
		if strings.EqualFold(f.name, key) {
			return &keyError{problem: unknownKey, key: key, hint: f.name}
		}
	}
	return &keyError{problem: unknownKey, key: key}
}

func (w *walker) array(elem *shape) *keyError {
	w.i++ // [
	w.space()
	if w.peek() == ']' {
		w.i++
		return nil
	}
	for n := 0; ; n++ {
		if ke := w.value(elem); ke != nil {
			ke.path = append(ke.path, "["+strconv.Itoa(n)+"]")
			return ke
		}
		w.space()
		if w.peek() != ',' {
			w.i++ // ]
			return nil
		}
		w.i++
	}
}

// str reads the string at w.i, answering where its contents end and whether
// they hold escapes; w.i is left after the closing quote.
func (w *walker) str() (end int, escaped bool) {
	i := w.i + 1
	for {
		q := bytes.IndexByte(w.b[i:], '"')
		if q < 0 {
			w.i = len(w.b)
			return len(w.b), escaped
		}
		j := i + q
		bs := bytes.IndexByte(w.b[i:j], '\\')
		if bs < 0 {
			w.i = j + 1
			return j, escaped
		}
		escaped = true
		k := i + bs
		for k < j {
			if w.b[k] == '\\' {
				k += 2
			} else {
				k++
			}
		}
		if k == j {
			w.i = j + 1
			return j, true
		}
		i = k // the quote at j was escaped
	}
}

// skip steps over one value without looking inside it.
func (w *walker) skip() {
	switch w.peek() {
	case '"':
		w.str()
	case '{', '[':
		depth := 0
		for w.i < len(w.b) {
			switch w.b[w.i] {
			case '"':
				w.str()
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					w.i++
					return
				}
			}
			w.i++
		}
	default:
		for w.i < len(w.b) {
			switch w.b[w.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return
			}
			w.i++
		}
	}
}
