package jsonenc

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
)

// command is a command in every field, with parameters and output as the
// store keeps them: compact JSON objects.
func command(key, reason string, params, output []byte) spinbroker.Command {
	seq := int64(42)
	now := time.Date(2026, 11, 27, 23, 30, 0, 123456789, time.UTC)
	d := spinbroker.Duration(90 * time.Second)
	c := spinbroker.Command{
		ID: "0193a9b0-0000-7000-8000-000000000001", PackageID: "0193a9b0-0000-7000-8000-000000000002",
		Resource: "vm-1", Action: "start", Parameters: params, Dependencies: []string{"0193a9b0-0000-7000-8000-000000000003"},
		MaxAttempts: 3, LeaseDuration: &d, State: spinbroker.Leased, Seq: &seq, Attempts: 1, Output: output,
		CreatedAt: now, EnqueuedAt: &now, StartedAt: &now, LeaseExpiresAt: &now,
		Lease: &spinbroker.Lease{Token: "tok", ExpiresAt: now},
	}
	if key != "" {
		c.Key = &key
	}
	if reason != "" {
		c.Reason = &reason
	}
	return c
}

// compactObject makes raw into what the store would hold: raw compacted
// when it is a JSON object, else an object holding it as a string.
func compactObject(raw []byte) []byte {
	var buf bytes.Buffer
	if t := bytes.TrimSpace(raw); len(t) > 0 && t[0] == '{' && json.Compact(&buf, t) == nil {
		return buf.Bytes()
	}
	b, _ := json.Marshal(map[string]string{"s": string(raw)})
	return b
}

// same fails unless Append encodes v to the byte as json.Marshal does.
func same(t *testing.T, v any) {
	t.Helper()
	want, werr := json.Marshal(v)
	got, gerr := Append([]byte("prefix"), v)
	if (werr == nil) != (gerr == nil) {
		t.Fatalf("Append's error %v, json.Marshal's %v", gerr, werr)
	}
	if werr == nil && !bytes.Equal(got, append([]byte("prefix"), want...)) {
		t.Fatalf("Append differs from json.Marshal:\n got %s\nwant prefix%s", got, want)
	}
}

func TestAppend_SameAsEncodingJSON(t *testing.T) {
	params := [][]byte{
		nil, []byte(`{}`), []byte(`{"size":10}`),
		[]byte(`{"html":"<b>&amp;</b>","sep":"a` + "\u2028" + `b` + "\u2029" + `c","nested":{"output":null,"parameters":null}}`),
		[]byte(`{"parameters":null,"output":null}`),
		[]byte(`{"é":"ü","emoji":"🙂","esc":"\"quoted\" \\ \u0001"}`),
		[]byte(`{"big":"` + strings.Repeat("x<", 40000) + `"}`),
	}
	for _, p := range params {
		for _, o := range params {
			c := command("k\"parameters\":null", `reason "output":null <&>`, p, o)
			same(t, &c)
			same(t, c)
			pkg := spinbroker.Package{ID: "p", State: spinbroker.PackageRunning, Total: 2, Commands: []spinbroker.Command{c, command("", "", o, p)}}
			same(t, &pkg)
			same(t, pkg)
			same(t, &spinbroker.ClaimResult{Commands: pkg.Commands})
			same(t, spinbroker.ClaimResult{Commands: pkg.Commands})
		}
	}
	// The shapes without commands.
	same(t, &spinbroker.Package{ID: "p"})
	same(t, &spinbroker.Package{ID: "p", Commands: []spinbroker.Command{}})
	same(t, &spinbroker.ClaimResult{})
	same(t, &spinbroker.ClaimResult{Commands: []spinbroker.Command{}})
	// Nil pointers are null, as encoding/json has them.
	same(t, (*spinbroker.Command)(nil))
	same(t, (*spinbroker.Package)(nil))
	same(t, (*spinbroker.ClaimResult)(nil))
	// Anything else is json.Marshal's, errors included.
	same(t, spinbroker.Health{Status: "ok"})
	same(t, make(chan int))
}

// Bytes the store would never give back take encoding/json's path, which
// validates them: no invalid JSON reaches a client.
func TestAppend_UntrustedRawIsJudged(t *testing.T) {
	for _, raw := range []string{`[1]`, `"s"`, `{`, `}`, `1}`, ""} {
		c := command("", "", json.RawMessage(raw), nil)
		same(t, &c)
		c = command("", "", nil, json.RawMessage(raw))
		same(t, &c)
	}
}

// TestCommandKeysAreItsFields guards what appendCommand's search relies
// on: the only object keys in a command's JSON are its fields' names. A
// map or interface field would let a client's words be keys, one of them
// "parameters" ahead of the field.
func TestCommandKeysAreItsFields(t *testing.T) {
	seen := map[reflect.Type]bool{}
	var walk func(reflect.Type, string)
	walk = func(typ reflect.Type, path string) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice || typ.Kind() == reflect.Array {
			typ = typ.Elem()
		}
		if seen[typ] {
			return
		}
		seen[typ] = true
		switch typ.Kind() {
		case reflect.Map, reflect.Interface:
			t.Errorf("%s is a %s: its keys would come from a client", path, typ.Kind())
		case reflect.Struct:
			if typ == reflect.TypeFor[time.Time]() {
				return
			}
			for f := range typ.Fields() {
				walk(f.Type, path+"."+f.Name)
			}
		}
	}
	walk(reflect.TypeFor[spinbroker.Command](), "Command")
	walk(reflect.TypeFor[spinbroker.Package](), "Package")
}

// FuzzCommand holds Append to json.Marshal's bytes for any command whose
// parameters and output are compact JSON objects, as the store keeps them.
func FuzzCommand(f *testing.F) {
	f.Add("key", "reason", []byte(`{"a":1}`), []byte(`{"b":"<x>"}`), true)
	f.Add("", "", []byte(`{"parameters":null}`), []byte{}, false)
	f.Add("\"output\":null", "\u2028", []byte("{\"s\":\"\u2029&\"}"), []byte(`{"output":null}`), true)
	f.Add("\xff", "\x00", []byte("\xe2\x80\xa8"), []byte("{ \"spaced\" : [ 1 , 2 ] }"), false)
	f.Fuzz(func(t *testing.T, key, reason string, params, output []byte, withOutput bool) {
		p := compactObject(params)
		var o []byte
		if withOutput {
			o = compactObject(output)
		}
		c := command(key, reason, p, o)
		same(t, &c)
		same(t, &spinbroker.Package{ID: key, Commands: []spinbroker.Command{c, command(reason, key, o, p)}})
		same(t, &spinbroker.ClaimResult{Commands: []spinbroker.Command{c}})
	})
}

// BenchmarkAppend: a command with 64 KiB of parameters, encoded by
// encoding/json and by Append.
func BenchmarkAppend(b *testing.B) {
	c := command("k", "", []byte(`{"pad":"`+strings.Repeat("x", 64<<10)+`"}`), []byte(`{"ok":true}`))
	b.Run("encoding-json", func(b *testing.B) {
		b.SetBytes(int64(len(c.Parameters)))
		for b.Loop() {
			if _, err := json.Marshal(&c); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("jsonenc", func(b *testing.B) {
		b.SetBytes(int64(len(c.Parameters)))
		buf := make([]byte, 0, 128<<10)
		for b.Loop() {
			var err error
			if buf, err = Append(buf[:0], &c); err != nil {
				b.Fatal(err)
			}
		}
	})
}
