package httpapi_test

import (
	"fmt"
	"strings"
	"testing"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/httpapi"
)

// TestAPI_BatchCompleteJudgedAsSingle: API.md says each item of a batched
// completion is judged as the single form would judge it. Every case is
// set up twice, on queues of its own: once completed by the single form,
// once as an item of one batch; status and error code must agree.
func TestAPI_BatchCompleteJudgedAsSingle(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	const unknown = "0190c3a4-5a6b-7c8d-9e0f-a1b2c3d4e5f6"
	n := 0
	// one makes a fresh command of resource r in a state, and answers its
	// id and lease token (empty when not leased).
	one := func(state string) (id, lease string) {
		n++
		res := fmt.Sprintf("q%d", n)
		switch state {
		case "staged":
			p := e.createPackage(`[{"resource": "`+res+`", "action": "x"}]`, false)
			return p.Commands[0].ID, ""
		case "blocked":
			p := e.createPackage(`[{"key": "a", "resource": "`+res+`-dep", "action": "x"}, {"resource": "`+res+`", "action": "x", "dependencies": ["a"]}]`, true)
			return p.Commands[1].ID, ""
		}
		p := e.createPackage(`[{"resource": "`+res+`", "action": "x"}]`, true)
		id = p.Commands[0].ID
		if state == "ready" {
			return id, ""
		}
		c := e.next(res)
		switch state {
		case "leased":
			return id, c.Lease.Token
		case "succeeded":
			e.want(e.complete(c, true), 200, "")
		case "failed":
			e.want(e.complete(c, false), 200, "")
		case "cancelled":
			e.want(e.do("POST", "/packages/"+p.ID+"/cancel", ""), 200, "")
			e.want(e.complete(c, false), 200, "")
		}
		return id, c.Lease.Token
	}
	cases := []struct {
		name, state string
		item        func(id, lease string) string // the result's fields after the id
	}{
		{"StagedTrue", "staged", func(id, l string) string { return `"status": true` }},
		{"BlockedFalse", "blocked", func(id, l string) string { return `"status": false` }},
		{"ReadyByHand", "ready", func(id, l string) string { return `"status": true` }},
		{"ReadyWithALease", "ready", func(id, l string) string { return `"status": true, "lease": "someone"` }},
		{"LeasedTrue", "leased", func(id, l string) string { return `"status": true, "lease": "` + l + `"` }},
		{"LeasedFalse", "leased", func(id, l string) string { return `"status": false, "lease": "` + l + `"` }},
		{"LeasedRetry", "leased", func(id, l string) string { return `"status": false, "retry": true, "lease": "` + l + `"` }},
		{"LeasedStale", "leased", func(id, l string) string { return `"status": true, "lease": "stale"` }},
		{"LeasedByHand", "leased", func(id, l string) string { return `"status": false` }},
		{"SucceededSame", "succeeded", func(id, l string) string { return `"status": true, "lease": "` + l + `"` }},
		{"SucceededSameStale", "succeeded", func(id, l string) string { return `"status": true, "lease": "stale"` }},
		{"SucceededDifferent", "succeeded", func(id, l string) string { return `"status": false, "lease": "` + l + `"` }},
		{"FailedSame", "failed", func(id, l string) string { return `"status": false` }},
		{"FailedDifferent", "failed", func(id, l string) string { return `"status": true` }},
		{"CancelledSame", "cancelled", func(id, l string) string { return `"status": false` }},
		{"CancelledDifferent", "cancelled", func(id, l string) string { return `"status": true` }},
		{"NoStatus", "leased", func(id, l string) string { return `"lease": "` + l + `"` }},
		{"OutputNotObject", "leased", func(id, l string) string { return `"status": true, "output": [1], "lease": "` + l + `"` }},
		{"ReasonTooLong", "leased", func(id, l string) string {
			return `"status": false, "reason": "` + strings.Repeat("x", 64<<10+1) + `", "lease": "` + l + `"`
		}},
		{"Unknown", "", func(id, l string) string { return `"status": true` }},
		{"UnknownNoStatus", "", func(id, l string) string { return `` }},
		{"UnknownOutputNotObject", "", func(id, l string) string { return `"status": true, "output": "x"` }},
		{"UnknownReasonTooLong", "", func(id, l string) string {
			return `"status": false, "reason": "` + strings.Repeat("x", 64<<10+1) + `"`
		}},
		{"NotAnIDNoStatus", "not-an-id", func(id, l string) string { return `` }},
	}
	type judged struct {
		status int
		code   string
	}
	prepare := func(state string) (string, string) {
		switch state {
		case "":
			return unknown, ""
		case "not-an-id":
			return "not-an-id", ""
		}
		return one(state)
	}
	single := make([]judged, len(cases))
	var items []string
	for i, c := range cases {
		id, lease := prepare(c.state)
		fields := c.item(id, lease)
		r := e.do("POST", "/commands/"+id+"/complete", "{"+fields+"}")
		single[i] = judged{r.status, r.code()}
		id, lease = prepare(c.state)
		items = append(items, `{"id": "`+id+`"`+fields0(c.item(id, lease))+`}`)
	}
	r := e.do("POST", "/commands/complete", `{"results": [`+strings.Join(items, ", ")+`]}`)
	e.want(r, 200, "")
	var out spinbroker.BatchOutcomes
	r.decode(t, &out)
	if len(out.Results) != len(cases) {
		t.Fatalf("%d results for %d items: %s", len(out.Results), len(cases), r.body)
	}
	for i, c := range cases {
		got := judged{out.Results[i].HTTPStatus, ""}
		if out.Results[i].Error != nil {
			got.code = out.Results[i].Error.Code
		}
		if got != single[i] {
			t.Errorf("%s: the batch judged %d %s, the single form %d %s", c.name, got.status, got.code, single[i].status, single[i].code)
		}
	}
}

// fields0 puts a comma before an item's fields, when it has any.
func fields0(fields string) string {
	if fields == "" {
		return ""
	}
	return ", " + fields
}

// TestAPI_BodyErrorsNameTheItem: a refusal of a request body's field says
// where it is in the terms of the API, with the index of the item in a
// list: of a thousand commands or results, which one is wrong. It never
// names a Go type (results.Result.status).
func TestAPI_BodyErrorsNameTheItem(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	const ok = `{"resource": "r", "action": "x"}`
	for _, c := range []struct{ name, path, body, where string }{
		{"ResultType", "/commands/complete", `{"results": [{"id": "x", "status": true}, {"id": "y", "status": "yes"}]}`, `"results[1].status"`},
		{"ResultUnknown", "/commands/complete", `{"results": [{"id": "x", "status": true}, {"id": "y", "status": true, "bogus": 1}]}`, `in results[1]`},
		{"ResultNotObject", "/commands/complete", `{"results": [{"id": "x", "status": true}, 7]}`, `"results[1]"`},
		{"CommandType", "/packages", `{"commands": [` + ok + `, ` + ok + `, {"resource": "r", "action": "x", "max_attempts": "3"}]}`, `"commands[2].max_attempts"`},
		{"CommandDependency", "/packages", `{"commands": [` + ok + `, {"resource": "r", "action": "x", "dependencies": ["a", 1]}]}`, `"commands[1].dependencies[1]"`},
		{"CommandDuration", "/packages", `{"commands": [` + ok + `, {"resource": "r", "action": "x", "lease_duration": {}}]}`, `commands`},
		{"CommandUnknown", "/packages", `{"commands": [` + ok + `, {"resource": "r", "action": "x", "bogus": 1}]}`, `in commands[1]`},
		{"Top", "/packages", `{"enqueue": "yes"}`, `"enqueue"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := e.do("POST", c.path, c.body)
			e.want(r, 400, spinbroker.EINVALID)
			var b spinbroker.ErrorBody
			r.decode(t, &b)
			if msg := b.Error.Message; !strings.Contains(msg, c.where) || strings.Contains(msg, "Result") {
				t.Fatalf("the message does not say %s: %s", c.where, msg)
			}
		})
	}
}
