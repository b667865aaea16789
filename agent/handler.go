package agent

import (
	"bytes"
	"context"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
)

// Handler runs one action of a resource. Make one with Handle.
type Handler struct {
	action string
	run    func(ctx context.Context, params json.RawMessage) (json.RawMessage, error)
	bad    error // why Run cannot take it (Handle was given a nil function)
}

// Action is the name of the action h runs.
func (h Handler) Action() string { return h.action }

// Handle returns the Handler of action: the command's parameters are decoded
// into a P (see Decode), fn runs with them, and what fn returns becomes the
// command's output. The output must marshal to a JSON object, or be nil.
//
// P is normally a struct with json tags; a field tagged `spin:"required"`
// must be present and not null, and a P (or *P) with a Validate() error
// method is validated after decoding. Parameters that do not decode, miss a
// required field or fail validation fail the command without running fn.
// A field left out keeps its zero value: make it a pointer to tell "not
// given" from zero. A duration is a spinbroker.Duration, which takes a
// string such as "30s", as API.md writes every duration; a time.Duration
// takes only an integer of nanoseconds, and refuses "30s".
// A nil fn, a P that no JSON object decodes into (an int, a slice), or a
// P with a `spin` tag other than "required" at any depth (a typo, or the
// API types' "nonempty", which Decode does not apply) makes a Handler that
// Run refuses to start with.
func Handle[P any](action string, fn func(ctx context.Context, p P) (any, error)) Handler {
	if fn == nil {
		// A field not set yet: Run refuses it rather than fail every
		// command of action with a nil dereference's panic.
		return refused(action, fmt.Errorf("agent: the handler of action %q is a nil function", action))
	}
	if t := reflect.TypeFor[P](); !fromObject(t) {
		// Every command would fail "want an integer, got a JSON object",
		// blaming its parameters for the handler's mistake.
		return refused(action, fmt.Errorf("agent: the parameters of action %q cannot be a %s: they are a JSON object, so decode them into a struct or a map", action, t))
	}
	if field, tag, ok := unknownSpinTag(reflect.TypeFor[P](), "", map[reflect.Type]bool{}); ok {
		// Decode would ignore it: a field meant to be required would
		// reach fn as its zero value, without a word.
		return refused(action, fmt.Errorf("agent: the parameters of action %q tag %s with spin:%q, which the agent does not know: it knows only spin:\"required\"", action, field, tag))
	}
	return Handler{action: action, run: func(ctx context.Context, raw json.RawMessage) (json.RawMessage, error) {
		var p P
		if err := Decode(raw, &p); err != nil {
			return nil, err
		}
		out, err := fn(ctx, p)
		if err != nil {
			return nil, err
		}
		return encodeOutput(out)
	}}
}

// unknownSpinTag finds a field of t, at any depth, whose `spin` tag is
// neither empty nor "required", and names it as a path ("vm.Disks[].path").
// seen holds the types walked already, for a type that contains itself.
func unknownSpinTag(t reflect.Type, prefix string, seen map[reflect.Type]bool) (field, tag string, ok bool) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if seen[t] || decodesItself(t) || t.PkgPath() == apiPkg {
		// (The API's own types carry the broker's tags, which the broker
		// applies: a parameter may hold a spinbroker.NewPackage.)
		return "", "", false
	}
	seen[t] = true
	switch t.Kind() {
	case reflect.Slice, reflect.Array, reflect.Map:
		return unknownSpinTag(t.Elem(), strings.TrimSuffix(prefix, ".")+"[].", seen)
	case reflect.Struct:
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" || !f.IsExported() && !f.Anonymous {
				continue
			}
			if name == "" {
				name = f.Name
			}
			if tag := f.Tag.Get("spin"); tag != "" && tag != "required" {
				return prefix + name, tag, true
			}
			inner := prefix + name + "."
			if f.Anonymous && f.Tag.Get("json") == "" {
				inner = prefix // an embedded struct's fields are the outer one's
			}
			if field, tag, ok := unknownSpinTag(f.Type, inner, seen); ok {
				return field, tag, true
			}
		}
	}
	return "", "", false
}

// apiPkg is the path of package spinbroker, whose types carry tags of
// their own.
var apiPkg = reflect.TypeFor[spinbroker.NewCommand]().PkgPath()

// refused is a Handler that Run refuses to start with, for bad, and whose
// Call returns bad.
func refused(action string, bad error) Handler {
	return Handler{action: action, bad: bad, run: func(context.Context, json.RawMessage) (json.RawMessage, error) {
		return nil, bad
	}}
}

// fromObject reports whether a JSON object may decode into a t: a struct,
// a map, an interface (any), a pointer to one of them, or a type that
// decodes itself.
func fromObject(t reflect.Type) bool {
	unmarshaler := reflect.TypeFor[json.Unmarshaler]()
	for {
		if t.Implements(unmarshaler) || reflect.PointerTo(t).Implements(unmarshaler) {
			return true
		}
		if t.Kind() != reflect.Pointer {
			break
		}
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct, reflect.Map, reflect.Interface:
		return true
	}
	return false
}

// WithTimeout returns h with a time limit: once it has run for d, its
// context is cancelled (ctx.Err() and context.Cause(ctx) are, to
// errors.Is, context.DeadlineExceeded), and the error it then returns
// fails the command with a reason that says it timed out, for a retry
// while its attempts last (a handler that succeeds all the same has done
// its work). Without one a handler may run for ever, its lease kept alive
// by heartbeats, and a queue that runs one command at a time waits behind
// it (a stuck mount, a wedged program). The handler must return once its
// context is done: one that ignores it is not stopped. A d of zero or less
// makes a Handler that Run refuses to start with: every command would time
// out as it began.
func (h Handler) WithTimeout(d time.Duration) Handler {
	if h.bad != nil || h.run == nil {
		return h // Run refuses it already, and says why
	}
	if d <= 0 {
		return refused(h.action, fmt.Errorf("agent: the time limit of action %q must be positive, not %s (without WithTimeout a handler has none)", h.action, d))
	}
	run := h.run
	h.run = func(ctx context.Context, raw json.RawMessage) (json.RawMessage, error) {
		limit := &timeoutError{d: d}
		ctx, cancel := context.WithTimeoutCause(ctx, d, limit)
		defer cancel()
		out, err := run(ctx, raw)
		if err != nil && context.Cause(ctx) == limit {
			if errors.Is(err, limit) {
				return nil, Transient(err) // it names the limit already
			}
			return nil, Transient(fmt.Errorf("%w: %w", limit, err))
		}
		return out, err // done, even as the time ran out: the work stands
	}
	return h
}

// timeoutError is the cause of a handler's context cancelled by its time
// limit. It unwraps to context.DeadlineExceeded, so that a handler testing
// errors.Is(context.Cause(ctx), context.DeadlineExceeded) finds its time
// limit as it would any other deadline.
type timeoutError struct{ d time.Duration }

func (e *timeoutError) Error() string { return fmt.Sprintf("the handler timed out after %s", e.d) }
func (e *timeoutError) Unwrap() error { return context.DeadlineExceeded }

// Call runs the handler once on params, as Run would (decoding, then the
// handler), without a broker: for tests and tools. The output is the
// command's output as it would be reported. Unlike Run, Call does not
// recover a panic: it reaches the caller (a test fails with its stack),
// where Run would fail the command for good. The handler runs with ctx as
// given, which belongs to no command: CommandFrom reports false in it, and
// Logger is slog.Default.
func (h Handler) Call(ctx context.Context, params json.RawMessage) (json.RawMessage, error) {
	return h.run(ctx, params)
}

// ParamError is the error of parameters that cannot be used: they do not
// decode into the action's type, name an unknown field, miss a required one
// or fail validation. A command with such parameters fails without a retry.
type ParamError struct {
	Field   string // the parameter concerned, as a path ("vm.Images[0].Path"); empty when the parameters as a whole are at fault
	Problem string // what is wrong with it, as the command's reason says it ("required parameter is missing")
}

// Error implements the error interface.
func (e *ParamError) Error() string {
	if e.Field == "" {
		return "invalid parameters: " + e.Problem
	}
	return fmt.Sprintf("invalid parameter %q: %s", e.Field, e.Problem)
}

// Validator is implemented by parameter types that check their values after
// decoding (a count at least 1, a name without control characters). An error
// Validate returns is the command's reason as "invalid parameters: …"; to
// name the field at fault, return a *ParamError with its Field set.
type Validator interface {
	Validate() error
}

// Decode decodes a command's parameters into p, a pointer (normally to a
// struct), strictly: the parameters must be one JSON object (absent or null
// counts as {}), every field must be known to p's type and of its type,
// every field tagged `spin:"required"` must be present and not null (at
// any depth, in slices and maps of structs too), a fixed-length array
// ([2]string) must be given exactly that many items, and if p (or what it points
// to) implements Validator its Validate must pass. Any failure is a
// *ParamError naming the field.
//
// Field names match as encoding/json matches them: the json tag's name,
// or the Go field name, case-insensitively. A field given twice (in any
// case: "name" and "NAME") is refused, where encoding/json would keep the
// last, and so is a map key given twice.
func Decode(raw json.RawMessage, p any) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		raw = []byte("{}")
	}
	if raw[0] != '{' {
		return &ParamError{Problem: "parameters must be a JSON object"}
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(p); err != nil {
		pe := decodeError(err)
		// encoding/json names no array index ("items.size" for
		// items[3].size), a type that decodes itself (a time) no field
		// at all, and an unknown key only by itself ("Disk" for vm.Disk):
		// the member that fails on its own says where.
		e, ok := pe.(*ParamError)
		if t := reflect.TypeOf(p); ok && t != nil && t.Kind() == reflect.Pointer {
			if e.Problem == problemUnknown {
				if path := locate(t.Elem(), raw, "", failsAlike(err)); path != "" {
					e.Field = path + "." + e.Field // "vm.Images[0]." for a key ""
				}
			} else if path := locate(t.Elem(), raw, "", fails); path != "" {
				e.Field = path
			}
		}
		return pe
	}
	if _, err := dec.Token(); err != io.EOF {
		return &ParamError{Problem: "parameters must be one JSON object, with nothing after it"}
	}
	rv := reflect.ValueOf(p)
	if rv.Kind() == reflect.Pointer && !rv.IsNil() {
		if err := checkComplete(rv.Elem().Type(), raw, ""); err != nil {
			return err
		}
	}
	v, ok := p.(Validator)
	if !ok && rv.Kind() == reflect.Pointer && !rv.IsNil() {
		v, ok = rv.Elem().Interface().(Validator) // P is itself a pointer type
	}
	if ok {
		if err := v.Validate(); err != nil {
			var pe *ParamError
			if errors.As(err, &pe) {
				return pe
			}
			return &ParamError{Problem: err.Error()}
		}
	}
	return nil
}

// decodeError turns an encoding/json error into a ParamError that names the
// field and says what was expected, in words a person can act on.
func decodeError(err error) error {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	var pe *ParamError
	switch {
	case errors.As(err, &pe):
		return pe
	case errors.As(err, &te):
		problem := fmt.Sprintf("want %s, got a JSON %s", typeWord(te.Type), te.Value)
		if te.Type == reflect.TypeFor[time.Duration]() && te.Value == "string" {
			// API.md writes durations as strings: the client followed
			// it, and the agent's type is what to change.
			problem += ` (the agent declares a time.Duration, which JSON gives in nanoseconds; to take a duration string such as "30s", it declares a spinbroker.Duration)`
		}
		if num, ok := strings.CutPrefix(te.Value, "number "); ok && te.Type != nil && isWhole(num) {
			// (A negative one for an unsigned type keeps "want a
			// non-negative integer", and one in range was refused for
			// another reason, a duration's say.)
			if lo, hi, ok := intRange(te.Type); ok && !decodesItself(te.Type) && (lo < 0 || !strings.HasPrefix(num, "-")) && !fits(num, lo, hi) {
				// A whole number is an integer: what is wrong is its size.
				problem = fmt.Sprintf("%s is out of range for %s (%d to %d)", num, te.Type.Kind(), lo, hi)
			}
		}
		if num, ok := strings.CutPrefix(te.Value, "number "); ok && te.Type != nil && !decodesItself(te.Type) &&
			(te.Type.Kind() == reflect.Float32 || te.Type.Kind() == reflect.Float64) {
			// A number for a number: what is wrong is its size.
			problem = fmt.Sprintf("%s is out of range for %s", num, te.Type.Kind())
		}
		return &ParamError{Field: te.Field, Problem: problem}
	case errors.As(err, &se):
		return &ParamError{Problem: "not valid JSON: " + se.Error()}
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return &ParamError{Problem: "not valid JSON: unexpected end"}
	}
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		if s, err := strconv.Unquote(name); err == nil {
			name = s
		}
		return &ParamError{Field: name, Problem: problemUnknown}
	}
	return &ParamError{Problem: strings.TrimPrefix(msg, "json: ")}
}

// typeWord names a Go type the way a JSON author thinks of it.
func typeWord(t reflect.Type) string {
	if t == nil {
		return "another type"
	}
	if t == reflect.TypeFor[spinbroker.Duration]() {
		return `a duration string such as "30s"`
	}
	if t == reflect.TypeFor[time.Duration]() {
		return "an integer of nanoseconds"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "a boolean"
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return t.String()
}

var (
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// checkComplete walks t beside raw (which has already decoded into t) and
// reports the first field tagged `spin:"required"` that is absent or null,
// or the first fixed-length array given another number of items (which
// encoding/json would cut short or pad with zeros without a word).
// prefix is the path of raw, ending in "." when not empty.
func checkComplete(t reflect.Type, raw json.RawMessage, prefix string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if isNull(raw) || decodesItself(t) {
		return nil
	}
	switch t.Kind() {
	case reflect.Struct:
		obj, err := objectOf(raw, true, func(k string) string { return prefix + k })
		if obj == nil {
			return err
		}
		return checkFields(t, obj, prefix)
	case reflect.Slice, reflect.Array:
		var items []json.RawMessage
		if json.Unmarshal(raw, &items) != nil {
			return nil
		}
		base := strings.TrimSuffix(prefix, ".")
		if t.Kind() == reflect.Array && len(items) != t.Len() {
			return &ParamError{Field: base, Problem: fmt.Sprintf("want an array of exactly %d items, got %d", t.Len(), len(items))}
		}
		for i, item := range items {
			if err := checkComplete(t.Elem(), item, fmt.Sprintf("%s[%d].", base, i)); err != nil {
				return err
			}
		}
	case reflect.Map:
		base := strings.TrimSuffix(prefix, ".")
		items, err := objectOf(raw, false, func(k string) string { return fmt.Sprintf("%s[%q]", base, k) })
		if items == nil {
			return err
		}
		for k, item := range items {
			if err := checkComplete(t.Elem(), item, fmt.Sprintf("%s[%q].", base, k)); err != nil {
				return err
			}
		}
	}
	return nil
}

// problemUnknown is the problem of a key that names no field.
const problemUnknown = "unknown parameter"

// fails reports whether v does not decode into a t on its own.
func fails(t reflect.Type, v json.RawMessage) bool {
	return json.Unmarshal(v, reflect.New(t).Interface()) != nil
}

// failsAlike reports whether v, decoded into a t on its own and strictly,
// fails with the same error as err: it holds the unknown key err names.
func failsAlike(err error) func(t reflect.Type, v json.RawMessage) bool {
	return func(t reflect.Type, v json.RawMessage) bool {
		dec := json.NewDecoder(bytes.NewReader(v))
		dec.DisallowUnknownFields()
		e := dec.Decode(reflect.New(t).Interface())
		return e != nil && e.Error() == err.Error()
	}
}

// locate is the path of the innermost member or item of raw that fails
// ("items[3].size": one that does not decode into its type on its own, or,
// strictly, one that holds an unknown key), "" when none does. Of two
// members that fail, it names the first in t's order of fields, which may
// not be the first in raw.
func locate(t reflect.Type, raw json.RawMessage, path string, fails func(reflect.Type, json.RawMessage) bool) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if isNull(raw) || decodesItself(t) {
		return ""
	}
	switch t.Kind() {
	case reflect.Struct:
		obj, _ := objectOf(raw, true, func(k string) string { return k })
		for _, f := range reflect.VisibleFields(t) {
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if !f.IsExported() || name == "-" || f.Anonymous && name == "" {
				continue
			}
			if name == "" {
				name = f.Name
			}
			v, ok := lookup(obj, name)
			if !ok || !fails(f.Type, v) {
				continue
			}
			field := name
			if path != "" {
				field = path + "." + name
			}
			if deeper := locate(f.Type, v, field, fails); deeper != "" {
				return deeper
			}
			return field
		}
	case reflect.Slice, reflect.Array, reflect.Map:
		// An array's items by index, a map's by key.
		var at []string
		var items []json.RawMessage
		if t.Kind() == reflect.Map {
			obj, _ := objectOf(raw, false, func(k string) string { return k })
			for k, item := range obj {
				at, items = append(at, fmt.Sprintf("%s[%q]", path, k)), append(items, item)
			}
		} else if json.Unmarshal(raw, &items) == nil {
			for i := range items {
				at = append(at, fmt.Sprintf("%s[%d]", path, i))
			}
		}
		for i, item := range items {
			if fails(t.Elem(), item) {
				if deeper := locate(t.Elem(), item, at[i], fails); deeper != "" {
					return deeper
				}
				return at[i]
			}
		}
	}
	return ""
}

// objectOf reads the JSON object raw into its members, and refuses a key
// that it gives twice: encoding/json would keep the last, so that what
// checked the first (a proxy, a policy, a person reading the command) and
// what the handler acts on would differ. For a struct (fold), keys that
// differ only in case are the same field, as encoding/json matches them;
// field names the key in an error. It answers nil, and no error, for what
// is not an object.
func objectOf(raw json.RawMessage, fold bool, field func(key string) string) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, nil
	}
	obj := map[string]json.RawMessage{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, nil
		}
		k, _ := t.(string)
		for seen := range obj {
			switch {
			case seen == k:
				return nil, &ParamError{Field: field(k), Problem: "given twice"}
			case fold && strings.EqualFold(seen, k):
				return nil, &ParamError{Field: field(seen), Problem: fmt.Sprintf("given twice, as %q and %q (field names match in any case)", seen, k)}
			}
		}
		var v json.RawMessage
		if dec.Decode(&v) != nil {
			return nil, nil
		}
		obj[k] = v
	}
	return obj, nil
}

func checkFields(t reflect.Type, obj map[string]json.RawMessage, prefix string) error {
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				if err := checkFields(ft, obj, prefix); err != nil {
					return err
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		v, ok := lookup(obj, name)
		if !ok || isNull(v) {
			if f.Tag.Get("spin") == "required" {
				return &ParamError{Field: prefix + name, Problem: "required parameter is missing"}
			}
			continue
		}
		if err := checkComplete(f.Type, v, prefix+name+"."); err != nil {
			return err
		}
	}
	return nil
}

// lookup finds a key as encoding/json does: exactly, else ignoring case.
func lookup(obj map[string]json.RawMessage, name string) (json.RawMessage, bool) {
	if v, ok := obj[name]; ok {
		return v, true
	}
	for k, v := range obj {
		if strings.EqualFold(k, name) {
			return v, true
		}
	}
	return nil, false
}

func isNull(raw json.RawMessage) bool {
	return bytes.Equal(bytes.TrimSpace(raw), []byte("null"))
}

// outputError is the reason of a command whose handler returned an output
// that is not a JSON object: a bug in the agent, reported as one, with what
// the output was.
func outputError(out any, b []byte) error {
	kind := "a JSON value"
	switch b[0] {
	case '"':
		kind = "a JSON string"
	case '[':
		kind = "a JSON array"
	case 't', 'f':
		kind = "a JSON boolean"
	default:
		if b[0] == '-' || b[0] >= '0' && b[0] <= '9' {
			kind = "a JSON number"
		}
	}
	if reflect.TypeOf(out) == reflect.TypeFor[[]byte]() {
		// The bytes of a program's JSON (exec.Cmd.Output): encoding/json
		// writes a []byte in base64.
		return fmt.Errorf("the handler's output is not a JSON object: a []byte encodes to %s (base64); return a json.RawMessage for bytes that hold JSON", kind)
	}
	return fmt.Errorf("the handler's output is not a JSON object: a %T encodes to %s", out, kind)
}

// encodeOutput marshals a handler's output, which must be a JSON object or
// nil.
func encodeOutput(out any) (json.RawMessage, error) {
	if out == nil {
		return nil, nil
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("encode the handler's output: %w", err)
	}
	if isNull(b) {
		return nil, nil
	}
	if t := bytes.TrimSpace(b); len(t) == 0 || t[0] != '{' {
		if len(t) == 0 {
			return nil, fmt.Errorf("the handler's output is not a JSON object: a %T encodes to nothing", out)
		}
		return nil, outputError(out, t)
	}
	return b, nil
}

// isWhole reports whether a JSON number is written as a whole number.
func isWhole(n string) bool {
	n = strings.TrimPrefix(n, "-")
	return n != "" && strings.Trim(n, "0123456789") == ""
}

// intRange is the range of an integer kind, for saying a number is out of
// it; ok is false for other kinds.
func intRange(t reflect.Type) (lo int64, hi uint64, ok bool) {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		bits := t.Bits()
		return -1 << (bits - 1), 1<<(bits-1) - 1, true
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return 0, 1<<t.Bits() - 1, true
	}
	return 0, 0, false
}

// fits reports whether the whole number n lies in lo..hi.
func fits(n string, lo int64, hi uint64) bool {
	if strings.HasPrefix(n, "-") {
		v, err := strconv.ParseInt(n, 10, 64)
		return err == nil && v >= lo
	}
	v, err := strconv.ParseUint(n, 10, 64)
	return err == nil && v <= hi
}

// decodesItself reports whether t (or a pointer to it) decodes its own
// JSON, as a duration does: its refusal is about its form, not a range.
func decodesItself(t reflect.Type) bool {
	return t.Implements(jsonUnmarshaler) || reflect.PointerTo(t).Implements(jsonUnmarshaler) ||
		t.Implements(textUnmarshaler) || reflect.PointerTo(t).Implements(textUnmarshaler)
}
