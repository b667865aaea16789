package httpapi_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/httpapi"
)

// TestAnswers_SameAsEncodingJSON: every answer that carries commands
// (create, its idempotent replay, the package streamed, the command, next,
// claim, complete) is, to the byte, what encoding/json makes of the value
// it decodes to, and gives back each command's parameters and output as
// sent, compacted. The broker copies them from the store instead of having
// encoding/json check them again (internal/jsonenc); these are the words
// that could trip a copy: HTML, U+2028, escaped quotes, keys named like the
// fields around them, and parameters big enough that GET streams the
// package.
func TestAnswers_SameAsEncodingJSON(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	pad := strings.Repeat("<&>\u2028", 40<<10/6)
	first := `{ "html": "<b>a & b</b>", "sep": "x` + "\u2028\u2029" + `y",
		"q": "\"parameters\":null", "output": null, "parameters": {"output": null}, "é": "🙂", "pad": "` + pad + `" }`
	second := `{"n": [1, 2.50, -3e2], "esc": "\\u003c\u0001"}`
	// compact is s as an answer carries it: compacted, with HTML's
	// characters escaped as encoding/json escapes them.
	compact := func(s string) []byte {
		var b, esc bytes.Buffer
		if err := json.Compact(&b, []byte(s)); err != nil {
			t.Fatal(err)
		}
		json.HTMLEscape(&esc, b.Bytes())
		return esc.Bytes()
	}
	sent := map[string][]byte{"first": compact(first), "second": compact(second)}

	// same checks an answer against encoding/json and each command's
	// parameters (and output, when it has one) against what was sent.
	same := func(what string, r response, v any, cmds func() []spinbroker.Command, output []byte) {
		t.Helper()
		// v is decoded afresh: a field the answer leaves out (a complete's
		// lease) must not stay from the last one.
		reflect.ValueOf(v).Elem().SetZero()
		r.decode(t, v)
		want, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if got := bytes.TrimSuffix(r.body, []byte("\n")); !bytes.Equal(got, want) {
			i := 0
			for i < min(len(got), len(want)) && got[i] == want[i] {
				i++
			}
			t.Fatalf("%s: the answer is not encoding/json's; from byte %d:\n got %.300s\nwant %.300s", what, i, got[i:], want[i:])
		}
		for _, c := range cmds() {
			if c.Key == nil || !bytes.Equal(c.Parameters, sent[*c.Key]) {
				t.Errorf("%s: command %v came back with other parameters: %.200s", what, c.Key, c.Parameters)
			}
			if output != nil && !bytes.Equal(c.Output, output) {
				t.Errorf("%s: output %s, want %s", what, c.Output, output)
			}
		}
	}
	body := `{"commands": [{"key": "first", "resource": "r", "action": "a", "parameters": ` + first + `},
		{"key": "second", "resource": "r", "action": "a", "parameters": ` + second + `}], "enqueue": true}`
	var pkg spinbroker.Package
	pkgCmds := func() []spinbroker.Command { return pkg.Commands }
	r := e.do("POST", "/packages", body, "Idempotency-Key", "k1")
	e.want(r, 201, "")
	same("create", r, &pkg, pkgCmds, nil)
	r = e.do("POST", "/packages", body, "Idempotency-Key", "k1")
	e.want(r, 201, "")
	if r.header.Get("Idempotent-Replayed") != "true" {
		t.Fatal("the same Idempotency-Key was not replayed")
	}
	same("replayed create", r, &pkg, pkgCmds, nil)
	r = e.do("GET", "/packages/"+pkg.ID, "")
	e.want(r, 200, "")
	same("GET package", r, &pkg, pkgCmds, nil)

	var cmd spinbroker.Command
	one := func() []spinbroker.Command { return []spinbroker.Command{cmd} }
	r = e.do("POST", "/queues/r/next", "")
	e.want(r, 200, "")
	same("next", r, &cmd, one, nil)
	output := `{"done": "<ok> & \u2028", "output": null}`
	r = e.do("POST", "/commands/"+cmd.ID+"/complete", `{"status": true, "lease": "`+cmd.Lease.Token+`", "output": `+output+`}`)
	e.want(r, 200, "")
	same("complete", r, &cmd, one, compact(output))
	r = e.do("GET", "/commands/"+cmd.ID, "")
	e.want(r, 200, "")
	same("GET command", r, &cmd, one, compact(output))

	var claim spinbroker.ClaimResult
	r = e.do("POST", "/queues/r/claim", `{"max": 10}`)
	e.want(r, 200, "")
	same("claim", r, &claim, func() []spinbroker.Command { return claim.Commands }, nil)
	if len(claim.Commands) != 1 || *claim.Commands[0].Key != "second" {
		t.Fatalf("claim: want the second command, got %+v", claim.Commands)
	}
	r = e.do("POST", "/queues/r/claim", `{"max": 10}`)
	e.want(r, 200, "")
	same("empty claim", r, &claim, func() []spinbroker.Command { return claim.Commands }, nil)
}
