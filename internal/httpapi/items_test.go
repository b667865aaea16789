package httpapi_test

import (
	"strings"
	"testing"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/httpapi"
)

// TestAPI_ItemErrorsNameTheItem: a command of POST /packages refused by a
// check made after decoding names its place in the list, as decoding's own
// errors do (commands[2].max_attempts): in a create of a thousand commands,
// "lease_duration must be between 1s and 24h" said nothing of which. A
// single add keeps its plain field names.
func TestAPI_ItemErrorsNameTheItem(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	const uuid = "0190c3a4-5a6b-7c8d-9e0f-a1b2c3d4e5f6"
	for _, tt := range []struct{ fields, want string }{
		{`"lease_duration": "0s"`, `commands[2].lease_duration must be between 1s and`},
		{`"max_attempts": 0`, `commands[2].max_attempts must be between 1 and`},
		{`"resource": "R!", "action": "x"`, `commands[2].resource "R!" is not a valid name`},
		{`"resource": "r", "action": "X"`, `commands[2].action "X" is not a valid name`},
		{`"id": "zz"`, `commands[2].id "zz" is not a UUID`},
		{`"parameters": [1]`, `commands[2].parameters must be a JSON object`},
		{`"not_before": "9999-12-31T23:59:59Z"`, `commands[2].not_before must be from 1678-01-01`},
		{`"not_before": "2030-01-01T00:00:00+24:00"`, `commands[2].not_before has a time zone offset`},
		{`"key": "` + uuid + `"`, `commands[2].key "` + uuid + `" has the shape of a UUID`},
		{`"key": "a\u0001"`, `commands[2].key "a\x01" contains a control character`},
		{`"dependencies": ["a", ""]`, `commands[2].dependencies[1] must not be empty`},
		{`"key": "c", "dependencies": ["a", "c"]`, `commands[2] cannot depend on itself`},
		{`"dependencies": ["nope"]`, `commands[2].dependencies[0] "nope" names no command added earlier`},
		{`"dependencies": ["a", "` + uuid + `"]`, `commands[2].dependencies[1] ` + uuid + ` names no existing command`},
	} {
		third := `{"resource": "r", "action": "x", ` + tt.fields + `}`
		if strings.Contains(tt.fields, `"resource"`) {
			third = `{` + tt.fields + `}`
		}
		body := `{"commands": [{"key": "a", "resource": "r", "action": "x"}, {"resource": "r", "action": "x"}, ` + third + `]}`
		r := e.do("POST", "/packages", body)
		if r.status != 400 {
			t.Errorf("%s: %d %s", tt.fields, r.status, r.body)
			continue
		}
		var b spinbroker.ErrorBody
		r.decode(t, &b)
		if !strings.HasPrefix(b.Error.Message, tt.want) {
			t.Errorf("%s:\n got %s\nwant %s…", tt.fields, b.Error.Message, tt.want)
		}
	}
	// A dependency named nothing beside a key given twice: the 400 (API.md,
	// Errors: before the 409) names its item too.
	r := e.do("POST", "/packages", `{"commands": [{"key": "a", "resource": "r", "action": "x"}, {"key": "a", "resource": "r", "action": "x"}, {"resource": "r", "action": "x", "dependencies": ["a", "nope"]}]}`)
	e.want(r, 400, spinbroker.EUNKNOWNDEP)
	if !strings.Contains(string(r.body), `commands[2].dependencies[1] \"nope\" names no command`) {
		t.Errorf("conflict and a bad dependency: %s", r.body)
	}
	// One command in a request of its own: its fields are named plainly.
	staging := e.createPackage(`[]`, false)
	r = e.do("POST", "/packages/"+staging.ID+"/commands", `{"resource": "r", "action": "x", "lease_duration": "0s"}`)
	e.want(r, 400, spinbroker.EINVALID)
	if !strings.Contains(string(r.body), `"lease_duration must be between 1s and`) {
		t.Errorf("single add: %s", r.body)
	}
	r = e.do("POST", "/packages/"+staging.ID+"/commands", `{"resource": "r", "action": "x", "dependencies": ["nope"]}`)
	e.want(r, 400, spinbroker.EUNKNOWNDEP)
	if !strings.Contains(string(r.body), `"dependency \"nope\" names no command`) {
		t.Errorf("single add: %s", r.body)
	}
}

// TestAPI_DecodeErrorsNameTheItem: a command's value that decoding itself
// refuses names its place in the list too, whatever the field's type: a
// duration (lease_duration), a time (not_before) and a whole number too
// large for a float (1e400) said "commands.lease_duration" or only
// "not_before", of which of a thousand commands the client had to guess.
func TestAPI_DecodeErrorsNameTheItem(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	for _, tt := range []struct{ fields, want string }{
		{`"lease_duration": "soon"`, `field "commands[2].lease_duration" must be a duration string`},
		{`"lease_duration": 30`, `field "commands[2].lease_duration" must be a duration string`},
		{`"lease_duration": {}`, `field "commands[2].lease_duration" must be a duration string`},
		{`"max_attempts": 1e400`, `field "commands[2].max_attempts" must be an integer written in digits only`},
		{`"not_before": "soon"`, `commands[2].not_before: "soon" is not an RFC 3339 time`},
		{`"not_before": "2030-01-01t00:00:00z"`, `commands[2].not_before: "2030-01-01t00:00:00z" has a lower-case t or z`},
		{`"not_before": 1700000000`, `commands[2].not_before must be an RFC 3339 time string`},
	} {
		body := `{"commands": [{"resource": "r", "action": "x", "lease_duration": "5s", "not_before": "2030-01-01T00:00:00Z"}, {"resource": "r", "action": "x", "max_attempts": 2}, {"resource": "r", "action": "x", ` + tt.fields + `}]}`
		r := e.do("POST", "/packages", body)
		e.want(r, 400, spinbroker.EINVALID)
		var b spinbroker.ErrorBody
		r.decode(t, &b)
		if !strings.HasPrefix(b.Error.Message, tt.want) {
			t.Errorf("%s:\n got %s\nwant %s…", tt.fields, b.Error.Message, tt.want)
		}
	}
	// One command in a request of its own: its fields are named plainly.
	staging := e.createPackage(`[]`, false)
	for _, tt := range []struct{ fields, want string }{
		{`"lease_duration": "soon"`, `field "lease_duration" must be a duration string`},
		{`"not_before": "soon"`, `not_before: "soon" is not an RFC 3339 time`},
		{`"not_before": 1700000000`, `not_before must be an RFC 3339 time string`},
	} {
		r := e.do("POST", "/packages/"+staging.ID+"/commands", `{"resource": "r", "action": "x", `+tt.fields+`}`)
		e.want(r, 400, spinbroker.EINVALID)
		var b spinbroker.ErrorBody
		r.decode(t, &b)
		if !strings.HasPrefix(b.Error.Message, tt.want) {
			t.Errorf("single add %s:\n got %s\nwant %s…", tt.fields, b.Error.Message, tt.want)
		}
	}
}

// TestAPI_BadKeyBesideConflictNamesTheRequestsPackage: a create's key
// dependency that names nothing is answered before the request's conflict
// (API.md, Errors: 400 before 409), and says, as it does without the
// conflict, that it names no command added earlier to the package the
// request creates: not "to package <id>", an id the broker made up for a
// package that was never created, or the id of another package that
// exists already, whose commands keys never name.
func TestAPI_BadKeyBesideConflictNamesTheRequestsPackage(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	other := e.createPackage(`[{"resource": "r", "action": "x"}]`, false)
	const want = `commands[1].dependencies[0] "nope" names no command added earlier to the package this request creates`
	for name, body := range map[string]string{
		"no conflict":       `{"commands": [{"resource": "r", "action": "x"}, {"resource": "r", "action": "x", "dependencies": ["nope"]}]}`,
		"a command id":      `{"commands": [{"id": "` + other.Commands[0].ID + `", "resource": "r", "action": "x"}, {"resource": "r", "action": "x", "dependencies": ["nope"]}]}`,
		"a key given twice": `{"commands": [{"key": "a", "resource": "r", "action": "x"}, {"key": "a", "resource": "r", "action": "x", "dependencies": ["nope"]}]}`,
		"the package id":    `{"id": "` + other.ID + `", "commands": [{"resource": "r", "action": "x"}, {"resource": "r", "action": "x", "dependencies": ["nope"]}]}`,
	} {
		r := e.do("POST", "/packages", body)
		e.want(r, 400, spinbroker.EUNKNOWNDEP)
		var b spinbroker.ErrorBody
		r.decode(t, &b)
		if b.Error.Message != want {
			t.Errorf("%s:\n got %s\nwant %s", name, b.Error.Message, want)
		}
	}
}
