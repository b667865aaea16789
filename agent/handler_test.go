package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/client"
)

type image struct {
	Path  string `json:"Path" spin:"required"`
	Cdrom bool   `json:"Cdrom"`
}

type vm struct {
	Name   string  `json:"Name" spin:"required"`
	Cpus   int     `json:"Cpus"`
	Images []image `json:"Images"`
}

type common struct {
	ID string `json:"id" spin:"required"`
}

type params struct {
	common
	VM      *vm                  `json:"vm" spin:"required"`
	Timeout *spinbroker.Duration `json:"timeout"`
	Labels  map[string]image     `json:"labels"`
	Size    uint64               `json:"size"`
	Pair    [2]string            `json:"pair"`
	Grid    [][2]int             `json:"grid"`
}

func (p params) Validate() error {
	if p.VM.Cpus < 0 {
		return errors.New("vm.Cpus must not be negative")
	}
	return nil
}

func TestDecode(t *testing.T) {
	cases := []struct {
		name      string
		raw       string
		wantField string // "" with wantErr: the problem concerns the whole
		wantErr   string // a substring of the error; "" for success
	}{
		{name: "OK", raw: `{"id":"a","vm":{"Name":"n","Cpus":2,"Images":[{"Path":"/x"}]},"timeout":"3s"}`},
		{name: "CaseInsensitiveNames", raw: `{"ID":"a","VM":{"name":"n","images":[{"path":"/x"}]}}`},
		{name: "Null", raw: `null`, wantField: "id", wantErr: "required parameter is missing"},
		{name: "Empty", raw: ``, wantField: "id", wantErr: "required"},
		{name: "NotObject", raw: `[1]`, wantErr: "must be a JSON object"},
		{name: "Trailing", raw: `{"id":"a","vm":{"Name":"n"}} {}`, wantErr: "nothing after it"},
		{name: "Syntax", raw: `{"id":`, wantErr: "not valid JSON"},
		{name: "Unknown", raw: `{"id":"a","vm":{"Name":"n"},"colour":1}`, wantField: "colour", wantErr: "unknown parameter"},
		{name: "UnknownNested", raw: `{"id":"a","vm":{"Name":"n","Disk":1}}`, wantField: "vm.Disk", wantErr: "unknown parameter"},
		{name: "UnknownInSlice", raw: `{"id":"a","vm":{"Name":"n","Images":[{"Path":"/x"},{"Path":"/y","Size":1}]}}`, wantField: "vm.Images[1].Size", wantErr: `invalid parameter "vm.Images[1].Size": unknown parameter`},
		{name: "UnknownInMap", raw: `{"id":"a","vm":{"Name":"n"},"labels":{"k":{"Path":"/x"},"j":{"Pth":"/y"}}}`, wantField: `labels["j"].Pth`, wantErr: "unknown parameter"},
		{name: "UnknownAfterAnotherNested", raw: `{"id":"a","vm":{"Name":"n","Images":[{"Path":"/x"}]},"labels":{"k":{"Path":"/x","Extra":1}}}`, wantField: `labels["k"].Extra`, wantErr: "unknown parameter"},
		{name: "UnknownInEmbedded", raw: `{"id":"a","vm":{"Name":"n"},"Colour":1}`, wantField: "Colour", wantErr: "unknown parameter"},
		{name: "WrongType", raw: `{"id":"a","vm":{"Name":"n","Cpus":"two"}}`, wantField: "vm.Cpus", wantErr: "want an integer, got a JSON string"},
		{name: "WrongTypeInSlice", raw: `{"id":"a","vm":{"Name":"n","Images":[{"Path":"/x"},{"Path":3}]}}`, wantField: "vm.Images[1].Path", wantErr: "want a string"},
		{name: "WrongTypeInMap", raw: `{"id":"a","vm":{"Name":"n"},"labels":{"k":{"Path":3}}}`, wantField: `labels["k"].Path`, wantErr: "want a string"},
		{name: "BadDurationNoFieldFromItsType", raw: `{"id":"a","vm":{"Name":"n"},"timeout":"soon"}`, wantField: "timeout", wantErr: "duration"},
		{name: "Negative", raw: `{"id":"a","vm":{"Name":"n"},"size":-1}`, wantField: "size", wantErr: "non-negative integer"},
		{name: "TooLarge", raw: `{"id":"a","vm":{"Name":"n","Cpus":99999999999999999999}}`, wantField: "vm.Cpus", wantErr: "99999999999999999999 is out of range for int (-9223372036854775808 to 9223372036854775807)"},
		{name: "TooLargeUnsigned", raw: `{"id":"a","vm":{"Name":"n"},"size":99999999999999999999}`, wantField: "size", wantErr: "out of range for uint64 (0 to 18446744073709551615)"},
		{name: "Fraction", raw: `{"id":"a","vm":{"Name":"n","Cpus":1.5}}`, wantField: "vm.Cpus", wantErr: "want an integer"},
		{name: "MissingTop", raw: `{"vm":{"Name":"n"}}`, wantField: "id", wantErr: "required parameter is missing"},
		{name: "NullRequired", raw: `{"id":"a","vm":null}`, wantField: "vm", wantErr: "required parameter is missing"},
		{name: "MissingNested", raw: `{"id":"a","vm":{"Cpus":1}}`, wantField: "vm.Name", wantErr: "required"},
		{name: "MissingInSlice", raw: `{"id":"a","vm":{"Name":"n","Images":[{"Path":"/x"},{"Cdrom":true}]}}`, wantField: "vm.Images[1].Path", wantErr: "required"},
		{name: "MissingInMap", raw: `{"id":"a","vm":{"Name":"n"},"labels":{"k":{}}}`, wantField: `labels["k"].Path`, wantErr: "required"},
		{name: "BadDuration", raw: `{"id":"a","vm":{"Name":"n"},"timeout":30}`, wantField: "timeout", wantErr: `want a duration string such as "30s", got a JSON number 30`},
		{name: "HugeDuration", raw: `{"id":"a","vm":{"Name":"n"},"timeout":99999999999999999999}`, wantField: "timeout", wantErr: `want a duration string such as "30s"`},
		{name: "NotADuration", raw: `{"id":"a","vm":{"Name":"n"},"timeout":"soon"}`, wantField: "timeout", wantErr: `want a duration string such as "30s", got a JSON string "soon"`},
		{name: "Repeated", raw: `{"id":"a","id":"b","vm":{"Name":"n"}}`, wantField: "id", wantErr: "given twice"},
		{name: "RepeatedInAnyCase", raw: `{"id":"a","vm":{"Name":"n","NAME":"evil"}}`, wantField: "vm.Name", wantErr: `given twice, as "Name" and "NAME"`},
		{name: "RepeatedInSlice", raw: `{"id":"a","vm":{"Name":"n","Images":[{"Path":"/x","Path":"/y"}]}}`, wantField: "vm.Images[0].Path", wantErr: "given twice"},
		{name: "RepeatedMapKey", raw: `{"id":"a","vm":{"Name":"n"},"labels":{"k":{"Path":"/x"},"k":{"Path":"/y"}}}`, wantField: `labels["k"]`, wantErr: "given twice"},
		{name: "MapKeysDifferInCase", raw: `{"id":"a","vm":{"Name":"n"},"labels":{"k":{"Path":"/x"},"K":{"Path":"/y"}}}`},
		{name: "FixedArray", raw: `{"id":"a","vm":{"Name":"n"},"pair":["x","y"],"grid":[[1,2],[3,4]]}`},
		{name: "FixedArrayTooLong", raw: `{"id":"a","vm":{"Name":"n"},"pair":["x","y","z"]}`, wantField: "pair", wantErr: "want an array of exactly 2 items, got 3"},
		{name: "FixedArrayTooShort", raw: `{"id":"a","vm":{"Name":"n"},"pair":["x"]}`, wantField: "pair", wantErr: "want an array of exactly 2 items, got 1"},
		{name: "FixedArrayInSlice", raw: `{"id":"a","vm":{"Name":"n"},"grid":[[1,2],[3]]}`, wantField: "grid[1]", wantErr: "exactly 2 items, got 1"},
		{name: "Validate", raw: `{"id":"a","vm":{"Name":"n","Cpus":-1}}`, wantErr: "vm.Cpus must not be negative"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var p params
			err := Decode(json.RawMessage(tc.raw), &p)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				return
			}
			var pe *ParamError
			if !errors.As(err, &pe) {
				t.Fatalf("Decode error = %v (%T), want a *ParamError", err, err)
			}
			if pe.Field != tc.wantField {
				t.Errorf("Field = %q, want %q (error %q)", pe.Field, tc.wantField, err)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q does not contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestDecode_Values(t *testing.T) {
	var p params
	raw := `{"id":"a","vm":{"Name":"n","Cpus":2,"Images":[{"Path":"/x","Cdrom":true}]},"timeout":"3s"}`
	if err := Decode(json.RawMessage(raw), &p); err != nil {
		t.Fatal(err)
	}
	if p.ID != "a" || p.VM.Name != "n" || p.VM.Cpus != 2 || len(p.VM.Images) != 1 || !p.VM.Images[0].Cdrom || p.Timeout.D() != 3*time.Second {
		t.Errorf("decoded %+v %+v", p, p.VM)
	}
}

// A time.Duration parameter decodes only an integer of nanoseconds, as
// encoding/json has it, while API.md writes every duration as a string
// ("30s"): a command that gives one to an agent that declared a
// time.Duration must not fail with a bare "want an integer", which leaves
// both the client and the agent's author guessing; the reason says that
// the agent's type takes nanoseconds and what takes "30s".
func TestDecode_TimeDurationSaysWhatTakesAString(t *testing.T) {
	type job struct {
		Every time.Duration `json:"every"`
	}
	var p struct {
		Jobs []job `json:"jobs"`
	}
	err := Decode(json.RawMessage(`{"jobs":[{"every":"5m"}]}`), &p)
	var pe *ParamError
	if !errors.As(err, &pe) {
		t.Fatalf("Decode = %v, want a *ParamError", err)
	}
	if pe.Field != "jobs[0].every" {
		t.Errorf("Field = %q, want jobs[0].every", pe.Field)
	}
	for _, want := range []string{"nanoseconds", "time.Duration", "spinbroker.Duration", "got a JSON string"} {
		if !strings.Contains(pe.Problem, want) {
			t.Errorf("Problem = %q, want it to say %q", pe.Problem, want)
		}
	}
	// An integer of nanoseconds still decodes, as it always has.
	if err := Decode(json.RawMessage(`{"jobs":[{"every":300000000000}]}`), &p); err != nil || p.Jobs[0].Every != 5*time.Minute {
		t.Errorf("Decode of nanoseconds = %v, %v; want 5m0s", err, p.Jobs)
	}
}

// A parameter type that is itself a pointer still gets validated.
func TestDecode_PointerParams(t *testing.T) {
	var p *params
	err := Decode(json.RawMessage(`{"id":"a","vm":{"Name":"n","Cpus":-3}}`), &p)
	if err == nil || !strings.Contains(err.Error(), "must not be negative") {
		t.Errorf("Decode = %v, want the Validate error", err)
	}
}

func TestHandle(t *testing.T) {
	type in struct {
		N int `json:"n" spin:"required"`
	}
	ran := false
	h := Handle("double", func(ctx context.Context, p in) (any, error) {
		ran = true
		return map[string]int{"n": 2 * p.N}, nil
	})
	if h.Action() != "double" {
		t.Errorf("Action = %q", h.Action())
	}
	out, err := h.run(context.Background(), json.RawMessage(`{"n":21}`))
	if err != nil || string(out) != `{"n":42}` {
		t.Errorf("run = %s, %v", out, err)
	}
	ran = false
	if _, err := h.run(context.Background(), json.RawMessage(`{"m":1}`)); err == nil || ran {
		t.Errorf("run with an unknown parameter: err %v, handler ran %v", err, ran)
	}

	for _, tc := range []struct {
		out     any
		want    string
		wantErr bool
	}{
		{out: nil, want: ""},
		{out: (*struct{})(nil), want: ""},
		{out: json.RawMessage(`{"a":1}`), want: `{"a":1}`},
		{out: struct {
			Path string `json:"path"`
		}{"p"}, want: `{"path":"p"}`},
		{out: 3, wantErr: true},
		{out: []int{1}, wantErr: true},
		{out: "s", wantErr: true},
		{out: func() {}, wantErr: true},
	} {
		h := Handle("o", func(ctx context.Context, p struct{}) (any, error) { return tc.out, nil })
		out, err := h.run(context.Background(), nil)
		if (err != nil) != tc.wantErr || string(out) != tc.want {
			t.Errorf("output %#v: got %s, %v; want %s (error %v)", tc.out, out, err, tc.want, tc.wantErr)
		}
	}
}

func TestTransient(t *testing.T) {
	base := errors.New("device busy")
	err := Transient(base)
	if !IsTransient(err) || !errors.Is(err, base) || err.Error() != "device busy" {
		t.Errorf("Transient(%v) = %v, transient %v", base, err, IsTransient(err))
	}
	if IsTransient(base) || Transient(nil) != nil {
		t.Error("plain errors are not transient; Transient(nil) is nil")
	}
	wrapped := errors.Join(errors.New("x"), err)
	if !IsTransient(wrapped) {
		t.Error("a wrapped transient error is transient")
	}
}

// FuzzDecode: any input either decodes or fails with a *ParamError; never a
// panic, never another error type. What decodes has its required fields,
// and encoded again (as a program building parameters would send them) it
// decodes to the same value.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"id":"a","vm":{"Name":"n","Cpus":2,"Images":[{"Path":"/x"}]},"timeout":"3s"}`,
		`{"id":"a","vm":{"Name":"n"},"labels":{"k":{}}}`,
		`{"vm":{"Images":[{},{"Path":null}]}}`,
		`null`, `[]`, `{"id":1}`, `{"id":"a"} x`, `{"ID":"a","VM":{"NAME":"x"}}`,
		`{"id":"a","vm":{"Name":"n","Images":[{"Path":"/x","Size":1}]}}`,
		`{"id":"a","vm":{"Name":"n"},"labels":{"k.l":{"Pth":"/y"}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var p params
		err := Decode(raw, &p)
		if err == nil {
			if s := strings.ToLower(string(raw)); p.ID == "" && !strings.Contains(s, "id") && !strings.Contains(s, `\`) {
				t.Errorf("decoded without the required id: %q", raw)
			}
			if p.VM == nil {
				t.Fatalf("decoded without the required vm: %q", raw)
			}
			sent, err := json.Marshal(p)
			if err != nil {
				t.Fatalf("Decode(%q) = %+v, which does not encode: %v", raw, p, err)
			}
			var again params
			if err := Decode(sent, &again); err != nil || !reflect.DeepEqual(again, p) {
				t.Fatalf("Decode(%q) = %+v; encoded as %s it decodes to %+v, %v", raw, p, sent, again, err)
			}
			return
		}
		var pe *ParamError
		if !errors.As(err, &pe) {
			t.Fatalf("Decode(%q) = %v (%T), want a *ParamError", raw, err, err)
		}
		// An unknown key is named at the end of its path, as sent (unless
		// sent escaped, or as bytes that are not UTF-8).
		key := pe.Field[strings.LastIndex(pe.Field, ".")+1:]
		if pe.Problem == problemUnknown && utf8.Valid(raw) && !bytes.Contains(raw, []byte(`\`)) && !bytes.Contains(raw, []byte(key)) {
			t.Errorf("Decode(%q) names the unknown parameter %q", raw, pe.Field)
		}
	})
}

// TestDecode_NamesTheItem: a member that fails to decode is named with its
// array index, and a type that decodes itself (a time) with its field.
func TestDecode_NamesTheItem(t *testing.T) {
	type stamped struct {
		At time.Time `json:"at"`
	}
	var p struct {
		Items []stamped `json:"items"`
		Sizes []int8    `json:"sizes"`
	}
	for raw, want := range map[string]string{
		`{"items":[{"at":"2026-01-01T00:00:00Z"},{"at":"yesterday"}]}`: "items[1].at",
		`{"sizes":[1,2,300]}`: "sizes[2]",
	} {
		var pe *ParamError
		if err := Decode(json.RawMessage(raw), &p); !errors.As(err, &pe) || pe.Field != want {
			t.Errorf("Decode(%s) = %v (field %q), want the field %q", raw, err, fieldOf(pe), want)
		}
	}
}

func fieldOf(pe *ParamError) string {
	if pe == nil {
		return ""
	}
	return pe.Field
}

// TestBackoff_Bounds: the back-off grows from MinBackoff to MaxBackoff and
// stays within them, even with a MaxBackoff so large that doubling would
// overflow (a negative duration made rand.N panic).
func TestBackoff_Bounds(t *testing.T) {
	for _, o := range []Options{
		{},
		{MinBackoff: time.Second, MaxBackoff: math.MaxInt64},
		{MinBackoff: 3 * time.Millisecond, MaxBackoff: 7 * time.Millisecond},
	} {
		c, err := client.New("http://localhost:1")
		if err != nil {
			t.Fatal(err)
		}
		a, err := newRunner(c, "r", []Handler{Handle("x", func(context.Context, struct{}) (any, error) { return nil, nil })}, o)
		if err != nil {
			t.Fatal(err)
		}
		for n := 1; n <= 200; n++ {
			if d := a.backoff(n); d < a.opts.MinBackoff/2 || d > a.opts.MaxBackoff {
				t.Fatalf("%+v: back-off %d is %v, outside %v..%v", o, n, d, a.opts.MinBackoff/2, a.opts.MaxBackoff)
			}
		}
	}
}

// TestHandle_OutputNotObjectSaysWhat: an output that is not a JSON object
// fails its command with a reason that says what the output was, so that
// the agent's author sees the mistake. The likeliest one is the bytes of a
// program's JSON (exec.Cmd.Output), which encoding/json writes as a base64
// string: "not a JSON object" alone reads as false about a JSON object.
func TestHandle_OutputNotObjectSaysWhat(t *testing.T) {
	for _, c := range []struct {
		out  any
		want []string
	}{
		{[]byte(`{"size": 1}`), []string{"[]byte", "a JSON string", "json.RawMessage"}},
		{[]int{1}, []string{"[]int", "a JSON array"}},
		{"done", []string{"string", "a JSON string"}},
		{3.5, []string{"float64", "a JSON number"}},
		{true, []string{"bool", "a JSON boolean"}},
	} {
		h := Handle("run", func(ctx context.Context, p struct{}) (any, error) { return c.out, nil })
		_, err := h.Call(context.Background(), nil)
		if err == nil || !strings.HasPrefix(err.Error(), "the handler's output is not a JSON object") {
			t.Errorf("output %#v: %v, want it refused as no JSON object", c.out, err)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("output %#v: %q does not say %q", c.out, err, w)
			}
		}
	}
	// The bytes of a JSON object as a json.RawMessage are the output.
	h := Handle("run", func(ctx context.Context, p struct{}) (any, error) { return json.RawMessage(`{"size": 1}`), nil })
	if out, err := h.Call(context.Background(), nil); err != nil || string(out) != `{"size":1}` && string(out) != `{"size": 1}` {
		t.Errorf("json.RawMessage output: %s, %v", out, err)
	}
}

// TestDecode_FloatOutOfRange: a number too large for a float32 (or a
// float64: 1e400) is refused as out of range, not with "want a number,
// got a JSON number", which contradicts itself.
func TestDecode_FloatOutOfRange(t *testing.T) {
	var p struct {
		Ratio float32 `json:"ratio"`
		Big   float64 `json:"big"`
	}
	for raw, want := range map[string]string{
		`{"ratio": 1e40}`: `invalid parameter "ratio": 1e40 is out of range for float32`,
		`{"big": 1e400}`:  `invalid parameter "big": 1e400 is out of range for float64`,
	} {
		if err := Decode(json.RawMessage(raw), &p); err == nil || err.Error() != want {
			t.Errorf("Decode(%s) = %v, want %s", raw, err, want)
		}
	}
	if err := Decode(json.RawMessage(`{"ratio": 0.5, "big": 1e300}`), &p); err != nil {
		t.Errorf("Decode of numbers in range: %v", err)
	}
}
