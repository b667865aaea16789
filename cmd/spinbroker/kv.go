package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// parseKV turns command-line arguments of the form key=value into the text
// of a JSON object, keys in the order given. A value that is valid JSON on
// its own (a number, true, false, null, an object, an array or a quoted
// string) is sent as that JSON value; anything else is sent as a plain
// string. So n=3 sends the number 3, n='"3"' the string "3", and
// path=/srv/a the string "/srv/a".
//
// It refuses an argument that is a JSON object, array or string on its
// own (parameters pasted whole), an argument without '=', an empty key, a
// key given twice, and text that is not valid UTF-8 (which JSON could not
// carry faithfully).
func parseKV(args []string) (json.RawMessage, error) {
	var buf bytes.Buffer
	buf.WriteByte('{')
	seen := make(map[string]bool, len(args))
	for i, arg := range args {
		key, value, ok := strings.Cut(arg, "=")
		switch {
		case pastedJSON(arg):
			// The API's parameters pasted whole: a key=value is never JSON
			// on its own, and one with an "=" inside a string would
			// become a parameter named by the text before it.
			return nil, fmt.Errorf("parameter %q is JSON, not key=value: give each parameter as key=value (an object as a value: vm='{\"cpus\":2}')", clip(arg))
		case !ok:
			return nil, fmt.Errorf("parameter %q is not of the form key=value", clip(arg))
		case key == "":
			return nil, fmt.Errorf("parameter %q has an empty key", clip(arg))
		case !utf8.ValidString(arg):
			return nil, fmt.Errorf("parameter %q is not valid UTF-8", clip(arg))
		case seen[key]:
			return nil, fmt.Errorf("parameter %q is given more than once", clip(key))
		}
		seen[key] = true
		if i > 0 {
			buf.WriteByte(',')
		}
		writeJSONString(&buf, key)
		buf.WriteByte(':')
		if json.Valid([]byte(value)) {
			// Compact cannot fail on valid JSON; it drops the spaces a
			// shell user may have typed inside an object or array.
			if err := json.Compact(&buf, []byte(value)); err != nil {
				return nil, err
			}
		} else {
			writeJSONString(&buf, value)
		}
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

// pastedJSON reports whether arg is, on its own, a JSON object, array or
// string: never a key=value, whose key would be the text up to an "="
// inside it.
func pastedJSON(arg string) bool {
	t := strings.TrimSpace(arg)
	return t != "" && strings.IndexByte(`{["`, t[0]) >= 0 && json.Valid([]byte(t))
}

// writeJSONString writes s as a JSON string without escaping <, > and &,
// which encoding/json does by default for HTML's sake and which would only
// make a path or a URL harder to read in the broker.
func writeJSONString(buf *bytes.Buffer, s string) {
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	// Encoding a string cannot fail.
	_ = enc.Encode(s)
	buf.Truncate(buf.Len() - 1) // the newline Encode adds
}

// clip shortens s for an error message.
func clip(s string) string {
	const n = 60
	if len(s) <= n {
		return s
	}
	for i := n; i > 0; i-- {
		if utf8.RuneStart(s[i]) {
			return s[:i] + "…"
		}
	}
	return s[:n] + "…"
}
