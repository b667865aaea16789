package httpapi_test

import (
	"strings"
	"testing"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/httpapi"
)

// TestAPI_NullScalar: null where a number, true or false, a duration or a
// time belongs is refused, naming the field and the item it is in: in a
// PATCH it could as well mean "back to the default" as "leave it", and
// elsewhere it is most likely a client's unset variable. Leaving the field
// out is how to say "the default".
func TestAPI_NullScalar(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	staging := e.createPackage(`[]`, false)
	cmd := func(extra string) string { return `{"resource": "r", "action": "x", ` + extra + `}` }
	for _, tt := range []struct{ method, path, body, want string }{
		{"PATCH", "/queues/q", `{"paused": null}`, "paused must be true or false, not null"},
		{"PATCH", "/queues/q", `{"concurrency": null}`, "concurrency must be an integer, not null"},
		{"PATCH", "/queues/q", `{"concurrency": 2, "paused": null}`, "paused must be true or false, not null"},
		{"POST", "/packages", `{"commands": [` + cmd(`"key": "a"`) + `, ` + cmd(`"key": "b"`) + `, ` + cmd(`"max_attempts": null`) + `]}`, "commands[2].max_attempts must be an integer, not null"},
		{"POST", "/packages", `{"commands": [` + cmd(`"lease_duration": null`) + `]}`, "commands[0].lease_duration must be a duration"},
		{"POST", "/packages", `{"commands": [` + cmd(`"not_before": null`) + `]}`, "commands[0].not_before must be an RFC 3339 time, not null"},
		{"POST", "/packages", `{"enqueue": null}`, "enqueue must be true or false, not null"},
		{"POST", "/packages/" + staging.ID + "/commands", cmd(`"max_attempts": null`), "max_attempts must be an integer, not null"},
		{"POST", "/queues/q/claim", `{"max": 1, "wait": null}`, "wait must be a duration"},
		{"POST", "/queues/q/claim", `{"max": null}`, "max must be an integer, not null"},
		{"POST", "/commands/complete", `{"results": [{"id": "` + staging.ID + `", "status": true, "retry": null}]}`, "results[0].retry must be true or false, not null"},
	} {
		r := e.do(tt.method, tt.path, tt.body)
		e.want(r, 400, spinbroker.EINVALID)
		var b spinbroker.ErrorBody
		r.decode(t, &b)
		if !strings.Contains(b.Error.Message, tt.want) {
			t.Errorf("%s %s %s: %q, want it to say %q", tt.method, tt.path, tt.body, b.Error.Message, tt.want)
		}
	}
	var list spinbroker.QueueList
	e.do("GET", "/queues", "").decode(t, &list)
	if len(list.Queues) != 0 {
		t.Fatalf("a refused patch listed a queue: %+v", list.Queues)
	}
	// null for a string, a list or an output still reads as left out.
	e.want(e.do("POST", "/packages", `{"id": null, "commands": [`+cmd(`"key": null, "dependencies": null`)+`]}`), 201, "")
}

// TestAPI_NullSaysWhatLeavingItOutDoes: the refusal of a null says what
// leaving the field out does, and only where that is what the client
// wants. In a PATCH it keeps the queue's setting (it does not go back to
// the default: told "leave it out for its default", a client that sends
// {} changes nothing and thinks it reset the queue); claim's max and a
// result's status cannot be left out at all.
func TestAPI_NullSaysWhatLeavingItOutDoes(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	id := "01a21d20-0100-7f01-98ab-0905f8abc16a"
	for _, tt := range []struct{ method, path, body, want, not string }{
		{"PATCH", "/queues/q", `{"concurrency": null}`, "leave it out to keep the queue's current setting", "default"},
		{"PATCH", "/queues/q", `{"paused": null}`, "leave it out to keep the queue's current setting", "default"},
		{"POST", "/queues/q/claim", `{"max": null}`, "max must be an integer, not null", "leave it out"},
		{"POST", "/commands/complete", `{"results": [{"id": "` + id + `", "status": null}]}`, "results[0].status must be true or false, not null", "leave it out"},
		{"POST", "/queues/q/claim", `{"max": 1, "lease": null}`, "leave it out for its default", ""},
	} {
		r := e.do(tt.method, tt.path, tt.body)
		e.want(r, 400, spinbroker.EINVALID)
		var b spinbroker.ErrorBody
		r.decode(t, &b)
		if !strings.Contains(b.Error.Message, tt.want) || tt.not != "" && strings.Contains(b.Error.Message, tt.not) {
			t.Errorf("%s %s %s: %q, want it to say %q and not %q", tt.method, tt.path, tt.body, b.Error.Message, tt.want, tt.not)
		}
	}
}
