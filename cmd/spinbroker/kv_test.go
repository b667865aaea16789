package main

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseKV(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		want    string // the JSON text; empty when an error is wanted
		wantErr string // a part of the error message
	}{
		{name: "None", args: nil, want: `{}`},
		{name: "String", args: []string{"path=/srv/images"}, want: `{"path":"/srv/images"}`},
		{name: "Number", args: []string{"size=10"}, want: `{"size":10}`},
		{name: "Float", args: []string{"ratio=-1.5e3"}, want: `{"ratio":-1.5e3}`},
		{name: "Bools", args: []string{"a=true", "b=false"}, want: `{"a":true,"b":false}`},
		{name: "Null", args: []string{"x=null"}, want: `{"x":null}`},
		{name: "QuotedString", args: []string{`n="10"`}, want: `{"n":"10"}`},
		{name: "Object", args: []string{`vm={"name": "a", "cpus": 2}`}, want: `{"vm":{"name":"a","cpus":2}}`},
		{name: "Array", args: []string{`images=[ {"path":"a.raw"} ]`}, want: `{"images":[{"path":"a.raw"}]}`},
		{name: "OrderKept", args: []string{"b=1", "a=2"}, want: `{"b":1,"a":2}`},
		{name: "EmptyValue", args: []string{"x="}, want: `{"x":""}`},
		{name: "EqualsInValue", args: []string{"q=a=b"}, want: `{"q":"a=b"}`},
		{name: "LeadingZeroIsString", args: []string{"id=007"}, want: `{"id":"007"}`},
		{name: "CapitalTrueIsString", args: []string{"x=True"}, want: `{"x":"True"}`},
		{name: "BrokenJSONIsString", args: []string{`x={"a":`}, want: `{"x":"{\"a\":"}`},
		{name: "HTMLNotEscaped", args: []string{"url=http://h/?a=1&b=<2>"}, want: `{"url":"http://h/?a=1&b=<2>"}`},
		{name: "ControlCharacters", args: []string{"s=a\tb\nc"}, want: `{"s":"a\tb\nc"}`},
		{name: "UnicodeKey", args: []string{"größe=1"}, want: `{"größe":1}`},
		{name: "SpacesAroundJSON", args: []string{"n= 1 "}, want: `{"n":1}`},
		{name: "SpaceIsString", args: []string{"s= "}, want: `{"s":" "}`},
		{name: "NoEquals", args: []string{"size"}, wantErr: "not of the form key=value"},
		{name: "EmptyKey", args: []string{"=1"}, wantErr: "empty key"},
		{name: "RepeatedKey", args: []string{"a=1", "b=2", "a=3"}, wantErr: "more than once"},
		{name: "InvalidUTF8", args: []string{"a=\xff"}, wantErr: "not valid UTF-8"},
		// A JSON object or array pasted whole, as for the API's
		// parameters: one with an "=" in it became one parameter named by
		// its text up to the "=".
		{name: "WholeObject", args: []string{`{"vm":{"cpus":2},"url":"http://h/?a=b"}`}, wantErr: "is JSON, not key=value"},
		{name: "WholeArray", args: []string{`[{"a":"b=c"}]`}, wantErr: "is JSON, not key=value"},
		{name: "WholeObjectNoEquals", args: []string{`{"path":"vm1"}`}, wantErr: "is JSON, not key=value"},
		{name: "WholeString", args: []string{`"a=b"`}, wantErr: "is JSON, not key=value"},
		{name: "InvalidUTF8InKey", args: []string{"\xfe=1"}, wantErr: "not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseKV(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseKV(%q) = %s, %v; want an error with %q", tt.args, got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseKV(%q): %v", tt.args, err)
			}
			if string(got) != tt.want {
				t.Errorf("parseKV(%q) = %s, want %s", tt.args, got, tt.want)
			}
		})
	}
}

// FuzzParseKV feeds parseKV argument lists separated by NUL, the one byte a
// command-line argument cannot hold. Whatever parseKV accepts must be a JSON
// object with one member per argument, each value what the argument said:
// the JSON value it was, or else the string itself.
func FuzzParseKV(f *testing.F) {
	f.Fuzz(func(t *testing.T, argv string) {
		var args []string
		if argv != "" {
			args = strings.Split(argv, "\x00")
		}
		got, err := parseKV(args)
		if err != nil {
			return
		}
		if !json.Valid(got) || !bytes.HasPrefix(got, []byte("{")) {
			t.Fatalf("parseKV(%q) = %q: not a JSON object", args, got)
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(got, &obj); err != nil {
			t.Fatalf("parseKV(%q) = %q: %v", args, got, err)
		}
		if len(obj) != len(args) {
			t.Fatalf("parseKV(%q) = %q: %d members for %d arguments", args, got, len(obj), len(args))
		}
		for _, arg := range args {
			if !utf8.ValidString(arg) {
				t.Fatalf("parseKV accepted invalid UTF-8 in %q", arg)
			}
			key, value, _ := strings.Cut(arg, "=")
			raw, ok := obj[key]
			if !ok {
				t.Fatalf("parseKV(%q) = %q: no member %q", args, got, key)
			}
			var gotV, wantV any
			if err := json.Unmarshal(raw, &gotV); err != nil {
				t.Fatalf("member %q = %q: %v", key, raw, err)
			}
			if json.Valid([]byte(value)) {
				if err := json.Unmarshal([]byte(value), &wantV); err != nil {
					t.Fatalf("value %q: %v", value, err)
				}
			} else {
				wantV = value
			}
			if !reflect.DeepEqual(gotV, wantV) {
				t.Fatalf("parseKV(%q): member %q = %#v, want %#v", args, key, gotV, wantV)
			}
		}
	})
}

// FuzzTableCells: what the broker answers is printed in tables and views
// (a reason, a key, parameters, an output: anyone's words); a cell is one
// line of printable text whatever it holds, so that no escape sequence
// reaches the terminal (C0 and C1 controls, ESC and CSI among them) and no
// invisible character (a bidi override) changes what the reader sees.
func FuzzTableCells(f *testing.F) {
	for _, s := range []string{"disk full", "a\tb\nc\x7f", "größe ✓", "\x1b[31mred", "\u009b31mred", "\u202egnp.exe", "\xff\xfe", `{"a": "\u001b"}`, "{\"a\": \"\u0085\"}", `{"a":[1, 2]}`, "日本\u3000語", "dev 👩\u200d💻"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cells := []string{oneLine(s), fmtJSON(json.RawMessage(s))}
		for _, got := range cells {
			if !utf8.ValidString(got) {
				t.Fatalf("cell of %q is not UTF-8: %q", s, got)
			}
			if i := strings.IndexFunc(got, actsOnTerminal); i >= 0 {
				t.Fatalf("cell of %q holds %U: %q", s, []rune(got[i:])[0], got)
			}
		}
		// Text a terminal only shows prints as it is.
		if utf8.ValidString(s) && !strings.ContainsFunc(s, actsOnTerminal) && cells[0] != s {
			t.Fatalf("oneLine(%q) = %q, want it unchanged", s, cells[0])
		}
		// JSON stays JSON, meaning the same.
		var v any
		if json.Valid([]byte(s)) && utf8.ValidString(s) && json.Unmarshal([]byte(cells[1]), &v) != nil {
			t.Fatalf("fmtJSON(%q) = %q, not JSON", s, cells[1])
		}
	})
}
