package httpapi

import (
	"bytes"
	"cmp"
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode"

	spinbroker "github.com/spin-broker/spinbroker"
)

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
	// nullable: the elements are pointers, for which null is nil; in a
	// slice of structs, encoding/json would make null a zero struct.
	nullable bool
}

// keyField is one JSON field of a struct as encoding/json sees it.
type keyField struct {
	name     string
	shape    *shape
	nonempty string // for a field tagged spin:"nonempty", what it must be instead of ""
	nonnull  string // for a field tagged spin:"nonnull", what it must be instead of null
	// nullAdvice is what the refusal of its null says to do instead
	// (nullAdviceOf).
	nullAdvice string
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
			if f.nonnull {
				kf.nonnull = jsonTypeName(f.typ.String())
				kf.nullAdvice = f.nullAdvice
			}
			s.fields = append(s.fields, kf)
		}
		return s
	case reflect.Slice, reflect.Array:
		if elem := buildShape(t.Elem(), building); elem != nil {
			return &shape{elem: elem, nullable: t.Elem().Kind() == reflect.Pointer}
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
	name       string
	tagged     bool
	index      []int
	typ        reflect.Type
	nonempty   bool
	nonnull    bool
	nullAdvice string
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
					fields = append(fields, structField{name: name, tagged: tagged, index: index, typ: sf.Type, nonempty: hasOption(sf.Tag.Get("spin"), "nonempty"), nonnull: hasOption(sf.Tag.Get("spin"), "nonnull"), nullAdvice: nullAdviceOf(sf.Tag.Get("spin"))})
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

// nullAdviceOf is what the refusal of a null in a field tagged spin:"nonnull"
// says to do instead, by what leaving the field out does: its default; with
// the option "keep" (a PATCH's settings) the value it has, not the default,
// so a client meaning "back to the default" must give it; with "required",
// nothing, since it cannot be left out.
func nullAdviceOf(tag string) string {
	switch {
	case hasOption(tag, "required"):
		return ""
	case hasOption(tag, "keep"):
		return ": leave it out to keep the queue's current setting"
	}
	return ": leave it out for its default"
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
	advice  string   // null: what to do instead (keyField.nullAdvice)
	path    []string // "name" or "[i]", innermost first
}

type keyProblem uint8

const (
	unknownKey   keyProblem = iota // no field has exactly this name
	duplicateKey                   // the key is given twice in one object
	emptyValue                     // "" for a field tagged spin:"nonempty"
	nullValue                      // null for a field tagged spin:"nonnull"
	nullElement                    // null where an array holds objects
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
	case nullElement:
		return spinbroker.Errorf(spinbroker.EINVALID, "%s must be an object, not null", p.String())
	case nullValue:
		return spinbroker.Errorf(spinbroker.EINVALID, "%s must be %s, not null%s", p.String(), e.hint, e.advice)
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
		return w.array(s)
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
		if f.nonnull != "" && bytes.HasPrefix(w.b[w.i:], []byte("null")) {
			return &keyError{problem: nullValue, hint: f.nonnull, advice: f.nullAdvice, path: []string{f.name}}
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

func (w *walker) array(s *shape) *keyError {
	elem := s.elem
	w.i++ // [
	w.space()
	if w.peek() == ']' {
		w.i++
		return nil
	}
	for n := 0; ; n++ {
		w.space()
		if !s.nullable && elem.object && bytes.HasPrefix(w.b[w.i:], []byte("null")) {
			// encoding/json makes null a zero struct, which would then be
			// refused for its first empty field, not for being null.
			return &keyError{problem: nullElement, path: []string{"[" + strconv.Itoa(n) + "]"}}
		}
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
