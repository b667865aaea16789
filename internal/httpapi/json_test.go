package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
)

// Types that exercise encoding/json's field rules in the exact-keys walk.
type (
	inner struct {
		A string `json:"a"`
		B int    `json:"b,omitempty"`
	}
	Embedded struct {
		E      string `json:"e"`
		Shadow string `json:"shadow"`
	}
	embeddedLower struct {
		L string `json:"l"`
	}
	Twin1 struct{ T string } // untagged, as vet refuses a repeated tag
	Twin2 struct{ T string }

	tree struct {
		Name     string          `json:"name" spin:"nonempty"`
		Children []*tree         `json:"children"`
		Arr      [2]inner        `json:"arr"`
		PP       **inner         `json:"pp"`
		Map      map[string]tree `json:"map"`
		Any      any             `json:"any"`
		Raw      json.RawMessage `json:"raw"`
		When     *time.Time      `json:"when"`
		Dur      spinbroker.Duration
		Skip     string `json:"-"`
		//lint:ignore SA5008 encoding/json names this field "-", which the walk must do too
		Dash     string `json:"-,"`
		Untagged int
		//lint:ignore SA5008 encoding/json ignores an invalid name and uses BadTag, which the walk must do too
		BadTag string `json:"a\"b"`
		Embedded
		embeddedLower
		Twin1
		Twin2
		Shadow string `json:"shadow"`
		Named  inner  `json:"named"`
		Bytes  []byte `json:"bytes"`
		//lint:ignore U1000 encoding/json ignores an unexported field, which the walk must do too
		hidden string
	}
)

func TestCheckKeys(t *testing.T) {
	for _, tt := range []struct {
		body string
		want string // "" when the body is accepted
	}{
		{`{}`, ""},
		{`{"name": "x", "children": [{"name": "y", "children": [null, {"name": "z"}]}]}`, ""},
		{`{"children": [{"Name": "y"}]}`, `unknown field "Name" in children[0] (field names are case-sensitive: did you mean "name"?)`},
		{`{"children": [{}, {"children": [{"NAME": "y"}]}]}`, `unknown field "NAME" in children[1].children[0] (field names are case-sensitive: did you mean "name"?)`},
		{`{"name": "a", "name": "b"}`, `duplicate field "name" (a field may be given once)`},
		{`{"name": "a", "Name": "b"}`, `unknown field "Name" (field names are case-sensitive: did you mean "name"?)`},
		{`{"name": ""}`, `name must be 1 to 128 characters, not empty`},
		{`{"children": [{"name": ""}]}`, `children[0].name must be 1 to 128 characters, not empty`},
		{`{"name": " "}`, ""},
		{`{"name": "\u0000"}`, ""},
		{`{"name": null}`, ""},
		// escapes in keys are read as encoding/json reads them
		{`{"n\u0061me": "x"}`, ""},
		{`{"N\u0061me": "x"}`, `unknown field "Name" (field names are case-sensitive: did you mean "name"?)`},
		{`{"name": "x", "n\u0061me": "y"}`, `duplicate field "name" (a field may be given once)`},
		// and in values, around quotes
		{`{"name": "a\"b\\", "Untagged": 1, "shadow": "\\\"}{", "e": "x"}`, ""},
		{`{"name": "\\", "NAME": "1"}`, `unknown field "NAME" (field names are case-sensitive: did you mean "name"?)`},
		// arrays, pointers to pointers
		{`{"arr": [{"a": "x"}, {"A": "y"}]}`, `unknown field "A" in arr[1] (field names are case-sensitive: did you mean "a"?)`},
		// null is nil in a slice of pointers, refused where it would be a zero struct
		{`{"arr": [{"a": "x"}, null]}`, `arr[1] must be an object, not null`},
		{`{"children": [ null ]}`, ""},
		{`{"pp": {"a": "x", "b": 1, "b": 2}}`, `duplicate field "b" in pp (a field may be given once)`},
		{`{"named": {"a": "x", "B": 1}}`, `unknown field "B" in named (field names are case-sensitive: did you mean "b"?)`},
		// opaque values are not read
		{`{"map": {"K": {"NAME": "1", "NAME": "2"}}, "any": {"X": 1, "X": 2}, "raw": {"Y": [{"Z": 1, "Z": 1}]}}`, ""},
		{`{"when": "2026-01-02T15:04:05Z", "Dur": "5s", "bytes": "AAEC"}`, ""},
		{`{"dur": "5s"}`, `unknown field "dur" (field names are case-sensitive: did you mean "Dur"?)`},
		// json:"-", json:"-,", untagged and invalid tags
		{`{"-": "x", "Untagged": 2, "BadTag": "y"}`, ""},
		{`{"untagged": 2}`, `unknown field "untagged" (field names are case-sensitive: did you mean "Untagged"?)`},
		// embedded structs are flattened; the outer field shadows; twins cancel
		{`{"e": "x", "l": "y", "shadow": "z"}`, ""},
		{`{"E": "x"}`, `unknown field "E" (field names are case-sensitive: did you mean "e"?)`},
		{`{"L": "y"}`, `unknown field "L" (field names are case-sensitive: did you mean "l"?)`},
		{`{"shadow": "a", "shadow": "b"}`, `duplicate field "shadow" (a field may be given once)`},
	} {
		var v tree
		err := decodeJSON([]byte(tt.body), &v, false)
		got := ""
		if err != nil {
			got = spinbroker.ErrorMessage(err)
			if code := spinbroker.ErrorCode(err); code != spinbroker.EINVALID {
				t.Errorf("%s: code %s", tt.body, code)
			}
		}
		if got != tt.want {
			t.Errorf("%s:\n got %s\nwant %s", tt.body, got, tt.want)
		}
	}
	// Twins cancel each other in encoding/json, which then refuses "t"
	// as unknown before the walk sees it.
	if err := decodeJSON([]byte(`{"T": "x"}`), new(tree), false); err == nil || !strings.Contains(err.Error(), `unknown field "T"`) {
		t.Errorf("twin embedded fields: %v", err)
	}
}

// TestCheckKeys_API walks the API's own bodies: the embedded Result of a
// batch item, the nonempty fields, and parameters kept verbatim.
func TestCheckKeys_API(t *testing.T) {
	for _, tt := range []struct {
		v    any
		body string
		want string
	}{
		{new(spinbroker.BatchComplete), `{"results": [{"id": "x", "status": true, "lease": "t", "reason": "r", "output": {"A": 1, "A": 2}, "retry": false}]}`, ""},
		{new(spinbroker.BatchComplete), `{"results": [{"id": "x", "status": true}, {"id": "y", "Status": true}]}`, `unknown field "Status" in results[1] (field names are case-sensitive: did you mean "status"?)`},
		{new(spinbroker.NewPackage), `{"id": ""}`, `id must be a UUID of version 4 or 7, not empty`},
		{new(spinbroker.NewPackage), `{"commands": [{"resource": "r", "action": "a", "key": ""}]}`, `commands[0].key must be 1 to 128 characters, not empty`},
		{new(spinbroker.NewPackage), `{"commands": [{"resource": "r", "action": "a", "id": ""}]}`, `commands[0].id must be a UUID of version 4 or 7, not empty`},
		{new(spinbroker.NewPackage), `{"COMMANDS": []}`, `unknown field "COMMANDS" (field names are case-sensitive: did you mean "commands"?)`},
		{new(spinbroker.NewCommand), `{"resource": "r", "action": "a", "lease_duration": "1m", "not_before": "2026-01-01T00:00:00Z", "parameters": {"Resource": "R", "resource": 1, "resource": 2}}`, ""},
		{new(spinbroker.Claim), `{"max": 1, "Max": 2}`, `unknown field "Max" (field names are case-sensitive: did you mean "max"?)`},
		{new(spinbroker.QueueSettings), `{"paused": true, "paused": false}`, `duplicate field "paused" (a field may be given once)`},
		{new(spinbroker.Heartbeat), `{"lease": "t", "Extend": "1s"}`, `unknown field "Extend" (field names are case-sensitive: did you mean "extend"?)`},
		// encoding/json folds case as Unicode does: ſ is s, K (Kelvin) is k
		{new(spinbroker.Result), `{"ſtatus": true}`, `unknown field "ſtatus" (field names are case-sensitive: did you mean "status"?)`},
		{new(spinbroker.NewCommand), "{\"\u212aey\": \"k\"}", "unknown field \"\u212aey\" (field names are case-sensitive: did you mean \"key\"?)"},
	} {
		err := decodeJSON([]byte(tt.body), tt.v, false)
		got := ""
		if err != nil {
			got = spinbroker.ErrorMessage(err)
		}
		if got != tt.want {
			t.Errorf("%T %s:\n got %s\nwant %s", tt.v, tt.body, got, tt.want)
		}
	}
}

// TestCheckKeys_Unchanged: what encoding/json refused before is refused
// with the same message (a value in a list named with its index).
func TestCheckKeys_Unchanged(t *testing.T) {
	for _, tt := range []struct{ body, want string }{
		{`{"comands": []}`, `unknown field "comands" (unknown fields are refused so that typos are not ignored)`},
		{`{"commands": [`, `malformed JSON: the body ends early`},
		{`{"enqueue": "yes"}`, `field "enqueue" must be true or false, not a string`},
		{`{} {}`, `the body holds more than one JSON value`},
		{`[1]`, `the body must be a JSON object, not an array`},
		{`{"commands": [{"resource": "r", "action": "a", "max_attempts": 99999999999999999999}]}`, `field "commands[0].max_attempts": 99999999999999999999 is out of range`},
		{`{"commands": [{"resource": "r", "action": "a", "max_attempts": 1e3}]}`, `field "commands[0].max_attempts" must be an integer written in digits only (such as 3), not 1e3`},
		{`{"commands": [{"resource": "r", "action": "a", "max_attempts": 2.5}]}`, `field "commands[0].max_attempts" must be a whole number, not 2.5`},
		{`{"commands": [{"resource": "r", "action": "a", "max_attempts": 2.0}]}`, `field "commands[0].max_attempts" must be an integer written in digits only (such as 3), not 2.0`},
		{`{"commands": [{"resource": "r", "action": "a", "max_attempts": 1e400}]}`, `field "commands[0].max_attempts" must be an integer written in digits only (such as 3), not 1e400`},
		{`{"commands": [{"resource": "r", "action": "a", "lease_duration": 30}]}`, `field "commands[0].lease_duration" must be a duration string such as "30s" or "5m", not a number 30`},
		{`{"commands": [{"resource": "r", "action": "a", "lease_duration": "soon"}]}`, `field "commands[0].lease_duration" must be a duration string such as "30s" or "5m", not a string "soon"`},
		{`{"commands": [{"resource": "r", "action": "a", "lease_duration": {}}]}`, `field "commands[0].lease_duration" must be a duration string such as "30s" or "5m", not an object`},
		{`{"commands": [1]}`, `field "commands[0]" must be an object, not a number`},
		{`{"commands": [{"resource": "r", "action": "a", "dependencies": [1]}]}`, `field "commands[0].dependencies[0]" must be a string, not a number`},
		{`{"commands": 1}`, `field "commands" must be an array, not a number`},
		{`{"commands": [{"resource": "r", "action": "a", "not_before": 1700000000}]}`, `commands[0].not_before must be an RFC 3339 time string (such as "2026-01-02T15:04:05Z")`},
	} {
		err := decodeJSON([]byte(tt.body), new(spinbroker.NewPackage), false)
		if err == nil || spinbroker.ErrorMessage(err) != tt.want {
			t.Errorf("%s: got %v, want %s", tt.body, err, tt.want)
		}
	}
}

// TestCheckKeys_Wide: a struct of more fields than a uint64 has bits
// still has its duplicates found.
func TestCheckKeys_Wide(t *testing.T) {
	var fields []reflect.StructField
	for i := range 70 {
		fields = append(fields, reflect.StructField{Name: fmt.Sprintf("F%d", i), Type: reflect.TypeFor[int]()})
	}
	wide := reflect.StructOf(fields)
	if err := decodeJSON([]byte(`{"F0": 1, "F63": 1, "F64": 1, "F69": 1}`), reflect.New(wide).Interface(), false); err != nil {
		t.Fatal(err)
	}
	for _, body := range []string{`{"F69": 1, "F69": 2}`, `{"F1": 1, "F1": 2}`, `{"F65": 1, "f65": 2}`} {
		if err := decodeJSON([]byte(body), reflect.New(wide).Interface(), false); err == nil {
			t.Errorf("%s: accepted", body)
		}
	}
}

// FuzzCheckKeys compares the walk with a slow one built on json.Decoder's
// tokens and encoding/json's own unquoting: on every body encoding/json
// decodes, both refuse, or accept, the same.
func FuzzCheckKeys(f *testing.F) {
	for _, seed := range []string{
		`{"name": "x", "children": [{"name": "y", "Name": "z"}]}`, `{"n\u0061me": "a\"", "name": "b"}`,
		`{"map": {"K": {"NAME": 1}}, "raw": [{"a": "\\"}], "pp": {"a": "", "a": ""}}`, `{"arr": [{}, {"b": 1, "B": 2}]}`,
		`{"name": ""}`, `{"e": "x", "L": "y"}`, `{"Dur": "1s", "dur": "1s"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, v := range []any{new(tree), new(spinbroker.NewPackage), new(spinbroker.BatchComplete)} {
			if !decodes(b, v) {
				continue
			}
			got := checkKeys(b, reflect.TypeOf(v))
			want := slowCheckKeys(b, reflect.TypeOf(v))
			if (got == nil) != (want == nil) {
				t.Fatalf("%T %q: walk %v, tokens %v", v, b, got, want)
			}
		}
	})
}

// decodes reports whether decodeJSON's encoding/json step accepts b.
func decodes(b []byte, v any) bool {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if dec.Decode(v) != nil {
		return false
	}
	_, err := dec.Token()
	return err == io.EOF
}

// slowCheckKeys is the walk written with json.Decoder.Token.
func slowCheckKeys(b []byte, t reflect.Type) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	return slowValue(dec, shapeOf(t))
}

func slowValue(dec *json.Decoder, s *shape) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return nil
	}
	switch {
	case s != nil && s.object && d == '{':
		seen := map[string]bool{}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return err
			}
			key := tok.(string)
			fi := s.find([]byte(key))
			if fi < 0 {
				return fmt.Errorf("unknown %q", key)
			}
			if seen[key] {
				return fmt.Errorf("duplicate %q", key)
			}
			seen[key] = true
			if s.fields[fi].nonempty != "" {
				var raw json.RawMessage
				if err := dec.Decode(&raw); err != nil {
					return err
				}
				if string(raw) == `""` {
					return errors.New("empty")
				}
				if err := slowValue(json.NewDecoder(bytes.NewReader(raw)), s.fields[fi].shape); err != nil {
					return err
				}
				continue
			}
			if err := slowValue(dec, s.fields[fi].shape); err != nil {
				return err
			}
		}
	case s != nil && !s.object && d == '[':
		for dec.More() {
			if err := slowValue(dec, s.elem); err != nil {
				return err
			}
		}
	default:
		for dec.More() {
			if d == '{' {
				if _, err := dec.Token(); err != nil { // a key
					return err
				}
			}
			if err := slowValue(dec, nil); err != nil {
				return err
			}
		}
	}
	_, err = dec.Token() // the closing delimiter
	return err
}

// TestPrettyJSON: parameters sent as ASCII-only JSON show their characters,
// not \uXXXX escapes; escapes of quotes, backslashes and control
// characters, and text that only looks like an escape, stay as they were.
func TestPrettyJSON(t *testing.T) {
	for in, want := range map[string]string{
		`{"a":"\u00fcber \ud83d\ude00"}`:      "{\n  \"a\": \"über 😀\"\n}",
		`["\u0022", "\u005c", "\u0007"]`:      "[\n  \"\\u0022\",\n  \"\\u005c\",\n  \"\\u0007\"\n]",
		`["\\u00fc", "\"\u00fc\""]`:           "[\n  \"\\\\u00fc\",\n  \"\\\"ü\\\"\"\n]",
		`{"k\u00e9y": "\ud83d", "n": 1}`:      "{\n  \"kéy\": \"\\ud83d\",\n  \"n\": 1\n}",
		`{"plain": "text", "x": [1.50, 2e3]}`: "{\n  \"plain\": \"text\",\n  \"x\": [\n    1.50,\n    2e3\n  ]\n}",
		`not json`:                            "not json",
	} {
		if got := prettyJSON(json.RawMessage(in)); got != want {
			t.Errorf("prettyJSON(%s):\n got %q\nwant %q", in, got, want)
		}
	}
}

// FuzzReadableEscapes: whatever the JSON, unescaping printable characters
// leaves JSON that decodes to the same value.
func FuzzReadableEscapes(f *testing.F) {
	for _, s := range []string{`{"a":"\u00fcber \ud83d\ude00"}`, `["\\u00fc", "\"\u00fc\""]`, `"\ud83d"`, `{"k\u00e9y": [1, "\u0000"]}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var before any
		if json.Unmarshal([]byte(s), &before) != nil {
			return
		}
		got := prettyJSON(json.RawMessage(s))
		var after any
		if err := json.Unmarshal([]byte(got), &after); err != nil {
			t.Fatalf("prettyJSON(%q) = %q, not JSON: %v", s, got, err)
		}
		if !reflect.DeepEqual(before, after) {
			t.Fatalf("prettyJSON(%q) = %q changed the value: %v != %v", s, got, before, after)
		}
	})
}

// FuzzIndentFits: indentFits never says a value fits that json.Indent
// makes larger than the limit, so that prettyJSON's bound holds.
func FuzzIndentFits(f *testing.F) {
	for _, s := range []string{`{}`, `[]`, `{"a": [1, 2, {"b": "x,]}\"{["}], "c": {}}`, `[[[[1,2],[3]]]]`, `"\\"`, `{"a":"\u00fc"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if !json.Valid(raw) {
			return
		}
		var buf bytes.Buffer
		if err := json.Indent(&buf, raw, "", "  "); err != nil {
			return
		}
		if n := buf.Len(); n > 0 && indentFits(raw, n-1) {
			t.Fatalf("indentFits says %q fits in %d bytes; indented it is %d", raw, n-1, n)
		}
	})
}
