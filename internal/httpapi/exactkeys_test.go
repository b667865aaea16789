package httpapi_test

import (
	"strings"
	"testing"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/httpapi"
)

// TestAPI_ExactFieldNames: field names are matched exactly, a key given
// twice is refused, and so is "" for a command's key or id or a package's
// id; what encoding/json alone let through (it matches keys ignoring case
// and keeps the last of two) answers 400 and changes nothing.
func TestAPI_ExactFieldNames(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	staging := e.createPackage(`[{"key": "a", "resource": "r", "action": "x"}]`, false)
	e.createPackage(`[{"resource": "work", "action": "x"}, {"resource": "work", "action": "y"}]`, true)
	e.want(e.do("PATCH", "/queues/work", `{"concurrency": 2}`), 200, "")
	leased := []*spinbroker.Command{e.next("work"), e.next("work")}
	if leased[0] == nil || leased[1] == nil {
		t.Fatal("nothing leased")
	}
	cmds := "/packages/" + staging.ID + "/commands"
	batch := `{"results": [{"id": "` + leased[0].ID + `", "status": true, "lease": "` + leased[0].Lease.Token + `"}, ` +
		`{"id": "` + leased[1].ID + `", "status": true, "Lease": "` + leased[1].Lease.Token + `"}]}`

	for _, tt := range []struct{ name, method, path, body, message string }{
		{"TopLevelCase", "POST", "/packages", `{"COMMANDS": [], "enqueue": false}`,
			`unknown field "COMMANDS" (field names are case-sensitive: did you mean "commands"?)`},
		{"CommandCase", "POST", "/packages", `{"commands": [{"resource": "r", "action": "x"}, {"RESOURCE": "r", "ACTION": "x"}]}`,
			`unknown field "RESOURCE" in commands[1] (field names are case-sensitive: did you mean "resource"?)`},
		{"DuplicateKey", "POST", "/packages", `{"commands": [{"resource": "r", "resource": "s", "action": "x"}]}`,
			`duplicate field "resource" in commands[0] (a field may be given once)`},
		{"DifferentCaseTwice", "POST", cmds, `{"resource": "r", "Resource": "s", "action": "x"}`,
			`unknown field "Resource" (field names are case-sensitive: did you mean "resource"?)`},
		{"DuplicateTopLevel", "POST", "/packages", `{"enqueue": true, "enqueue": false}`,
			`duplicate field "enqueue" (a field may be given once)`},
		{"QueueSettings", "PATCH", "/queues/r", `{"Concurrency": 4}`,
			`unknown field "Concurrency" (field names are case-sensitive: did you mean "concurrency"?)`},
		{"Claim", "POST", "/queues/r/claim", `{"MAX": 1}`,
			`unknown field "MAX" (field names are case-sensitive: did you mean "max"?)`},
		{"BatchComplete", "POST", "/commands/complete", batch,
			`unknown field "Lease" in results[1] (field names are case-sensitive: did you mean "lease"?)`},
		{"Complete", "POST", "/commands/" + leased[0].ID + "/complete", `{"Status": true, "lease": "` + leased[0].Lease.Token + `"}`,
			`unknown field "Status" (field names are case-sensitive: did you mean "status"?)`},
		{"Heartbeat", "POST", "/commands/" + leased[0].ID + "/heartbeat", `{"lease": "` + leased[0].Lease.Token + `", "Extend": "1m"}`,
			`unknown field "Extend" (field names are case-sensitive: did you mean "extend"?)`},
		{"EmptyKey", "POST", cmds, `{"key": "", "resource": "r", "action": "x"}`,
			`key must be 1 to 128 characters, not empty`},
		{"EmptyCommandID", "POST", cmds, `{"id": "", "resource": "r", "action": "x"}`,
			`id must be a UUID of version 4 or 7, not empty`},
		{"EmptyPackageID", "POST", "/packages", `{"id": "", "commands": []}`,
			`id must be a UUID of version 4 or 7, not empty`},
		{"EmptyKeyInPackage", "POST", "/packages", `{"commands": [{"resource": "r", "action": "x", "key": ""}]}`,
			`commands[0].key must be 1 to 128 characters, not empty`},
		{"NullCommand", "POST", "/packages", `{"commands": [{"resource": "r", "action": "x"}, null]}`,
			`commands[1] must be an object, not null`},
		{"NullResult", "POST", "/commands/complete", `{"results": [ null ]}`,
			`results[0] must be an object, not null`},
		{"Unknown", "POST", cmds, `{"resource": "r", "action": "x", "paramters": {}}`,
			`unknown field "paramters" (unknown fields are refused so that typos are not ignored)`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e.t = t
			r := e.do(tt.method, tt.path, tt.body)
			e.want(r, 400, spinbroker.EINVALID)
			var b spinbroker.ErrorBody
			r.decode(t, &b)
			if b.Error.Message != tt.message {
				t.Fatalf("message %q, want %q", b.Error.Message, tt.message)
			}
		})
	}
	e.t = t

	// The refused requests changed nothing.
	var p spinbroker.Package
	e.do("GET", "/packages/"+staging.ID, "").decode(t, &p)
	if p.Total != 1 {
		t.Fatalf("refused adds changed the package: %d commands", p.Total)
	}
	var list spinbroker.PackageList
	e.do("GET", "/packages", "").decode(t, &list)
	if len(list.Packages) != 2 {
		t.Fatalf("refused creates made packages: %d", len(list.Packages))
	}
	var q spinbroker.Queue
	e.do("GET", "/queues/r", "").decode(t, &q)
	if q.Concurrency != 1 {
		t.Fatalf("a refused PATCH set concurrency %d", q.Concurrency)
	}
	for _, c := range leased {
		var got spinbroker.Command
		e.do("GET", "/commands/"+c.ID, "").decode(t, &got)
		if got.State != spinbroker.Leased {
			t.Fatalf("a refused completion settled %s: %s", c.ID, got.State)
		}
	}

	// Valid requests of each kind still pass, and parameters, whatever
	// the case or repetition of their keys, are kept as given.
	params := `{"Resource":"R","resource":"r","RESOURCE":{"Key":"","key":"","ID":[{"id":1,"id":2}]}}`
	r := e.do("POST", "/packages", `{"id": "0190c3a4-5a6b-7c8d-9e0f-a1b2c3d4e5f6", "commands": [`+
		`{"id": "0190c3a4-5a6b-7c8d-9e0f-000000000001", "key": "k", "resource": "r", "action": "x", "parameters": `+params+`, `+
		`"max_attempts": 2, "lease_duration": "1m", "not_before": "2026-01-01T00:00:00Z"}, `+
		`{"resource": "r", "action": "y", "dependencies": ["k"]}], "enqueue": true}`)
	e.want(r, 201, "")
	p = spinbroker.Package{}
	r.decode(t, &p)
	if p.ID != "0190c3a4-5a6b-7c8d-9e0f-a1b2c3d4e5f6" || len(p.Commands) != 2 || string(p.Commands[0].Parameters) != params {
		t.Fatalf("created: %s", r.body)
	}
	var got spinbroker.Command
	e.do("GET", "/commands/"+p.Commands[0].ID, "").decode(t, &got)
	if string(got.Parameters) != params {
		t.Fatalf("parameters %s, want %s", got.Parameters, params)
	}
	e.want(e.do("POST", cmds, `{"id": "0190c3a4-5a6b-7c8d-9e0f-000000000002", "key": "b", "resource": "r", "action": "x", "parameters": {"A": 1, "a": 2}}`), 201, "")
	e.want(e.do("POST", "/packages", `{}`), 201, "")
	e.want(e.do("PATCH", "/queues/r", `{"concurrency": 4, "paused": false}`), 200, "")
	e.want(e.do("POST", "/queues/r/claim", `{"max": 1, "wait": "0s", "lease": "30s"}`), 200, "")
	e.want(e.do("POST", "/commands/"+leased[0].ID+"/heartbeat", `{"lease": "`+leased[0].Lease.Token+`", "extend": "1m"}`), 200, "")
	e.want(e.do("POST", "/commands/"+leased[0].ID+"/complete", `{"status": true, "lease": "`+leased[0].Lease.Token+`", "output": {"X": 1, "x": 2}}`), 200, "")
	r = e.do("POST", "/commands/complete", strings.Replace(batch, `"Lease"`, `"lease"`, 1))
	e.want(r, 200, "")
	var out spinbroker.BatchOutcomes
	r.decode(t, &out)
	if len(out.Results) != 2 || out.Results[0].HTTPStatus != 200 || out.Results[1].HTTPStatus != 200 {
		t.Fatalf("batch: %s", r.body)
	}
}
