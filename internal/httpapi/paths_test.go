package httpapi_test

import (
	"strings"
	"testing"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/httpapi"
)

// TestAPI_EmptyPathParameter: a path whose id or resource is empty (`//`,
// or a trailing slash where it belongs) answers 404 not_found with a
// sentence that says what is missing, not "package  not found" with no id
// in it or a bare "no route"; and it is answered before the body, as a
// missing package is (API.md, Errors: 404 before 413 and 400).
func TestAPI_EmptyPathParameter(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	big := `{"blob": "` + strings.Repeat("x", spinbroker.MaxBodyBytes) + `"}`
	for _, tt := range []struct{ method, path, body, want string }{
		{"POST", "/packages//commands", `{"resource": "r", "action": "x"}`, "no package id in the path"},
		{"POST", "/packages//commands", `{`, "no package id in the path"},
		{"POST", "/packages//commands", big, "no package id in the path"},
		{"POST", "/packages//enqueue", ``, "no package id in the path"},
		{"POST", "/packages//cancel", ``, "no package id in the path"},
		{"GET", "/packages/", ``, "no package id in the path"},
		{"DELETE", "/packages/", ``, "no package id in the path"},
		{"GET", "/commands/", ``, "no command id in the path"},
		{"POST", "/commands//heartbeat", `{"lease": "x"}`, "no command id in the path"},
		{"POST", "/commands//complete", `{"status": true}`, "no command id in the path"},
		{"POST", "/commands//retry", ``, "no command id in the path"},
		{"GET", "/queues/", ``, "no resource in the path"},
		{"PATCH", "/queues/", `{"paused": true}`, "no resource in the path"},
		{"POST", "/queues//next", ``, "no resource in the path"},
		{"POST", "/queues//next", big, "no resource in the path"},
		{"POST", "/queues//claim", `{"max": 1}`, "no resource in the path"},
	} {
		r := e.do(tt.method, tt.path, tt.body)
		e.want(r, 404, spinbroker.ENOTFOUND)
		var b spinbroker.ErrorBody
		r.decode(t, &b)
		if !strings.Contains(b.Error.Message, tt.want) {
			t.Errorf("%s %s: %q, want it to say %q", tt.method, tt.path, b.Error.Message, tt.want)
		}
	}
	// A HEAD has no body to read, but its status is GET's.
	if r := e.do("HEAD", "/packages/", ""); r.status != 404 {
		t.Errorf("HEAD /packages/: %d", r.status)
	}
	// A path no route has stays a route not found.
	r := e.do("POST", "/packages/", `{}`)
	e.want(r, 404, spinbroker.ENOTFOUND)
	if !strings.Contains(string(r.body), "no route POST /packages/") {
		t.Errorf("POST /packages/: %s", r.body)
	}
}

// TestAPI_EmptyQueuePatch: PATCH /queues/{resource} with {} changes
// nothing, so it makes no queue appear in GET /queues (API.md: the list
// holds the queues that have commands or settings); it answers the queue
// as it is.
func TestAPI_EmptyQueuePatch(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	r := e.do("PATCH", "/queues/ghost", `{}`)
	e.want(r, 200, "")
	var q spinbroker.Queue
	if r.decode(t, &q); q.Resource != "ghost" || q.Concurrency != 1 || q.Paused {
		t.Fatalf("PATCH {} answered %s", r.body)
	}
	var list spinbroker.QueueList
	e.do("GET", "/queues", "").decode(t, &list)
	if len(list.Queues) != 0 {
		t.Fatalf("an empty patch listed a queue: %+v", list.Queues)
	}
	// A queue with settings keeps them.
	e.want(e.do("PATCH", "/queues/set", `{"concurrency": 3}`), 200, "")
	r = e.do("PATCH", "/queues/set", `{}`)
	e.want(r, 200, "")
	if r.decode(t, &q); q.Concurrency != 3 {
		t.Fatalf("PATCH {} on a set queue answered %s", r.body)
	}
}

// TestAPI_PercentEncodedRoute: a path whose fixed words are written with
// escaped unreserved characters (/%70ackages, /commands/%63omplete) is the
// same URI as the plain one (RFC 3986, 6.2.2.2) and reaches the same
// route; and a 405 names the methods of the route the path was matched
// to: a path whose parameter holds an escaped slash (/queues/x%2Fnext, the
// queue "x/next") is no other route's, nor refused in words that allow
// the very method refused ("POST is not allowed ...; use POST").
func TestAPI_PercentEncodedRoute(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	p := e.createPackage(`[{"resource": "r", "action": "x"}]`, true)
	e.want(e.do("GET", "/%70ackages", ""), 200, "")
	e.want(e.do("GET", "/queues/r/%6Eext", ""), 405, spinbroker.EMETHOD)
	c := e.next("r")
	r := e.do("POST", "/commands/%63omplete", `{"results": [{"id": "`+c.ID+`", "status": true, "lease": "`+c.Lease.Token+`"}]}`)
	e.want(r, 200, "")
	var res spinbroker.BatchOutcomes
	if r.decode(t, &res); len(res.Results) != 1 || res.Results[0].HTTPStatus != 200 {
		t.Fatalf("batch complete through an escaped path: %s", r.body)
	}
	if got, _ := e.db.Package(ctx, p.ID); got.State != spinbroker.PackageSucceeded {
		t.Fatalf("the package is %s after its one command completed", got.State)
	}
	for _, tt := range []struct{ method, path, allow string }{
		{"POST", "/queues/x%2Fnext", "GET, HEAD, PATCH"},
		{"PUT", "/queues/a%2Fb", "GET, HEAD, PATCH"},
		{"PUT", "/packages/a%2Fcommands", "GET, HEAD, DELETE"},
		{"GET", "/commands/complete", "POST"},
		{"GET", "/commands/%63omplete", "POST"},
	} {
		r := e.do(tt.method, tt.path, "")
		e.want(r, 405, spinbroker.EMETHOD)
		if got := r.header.Get("Allow"); got != tt.allow {
			t.Errorf("%s %s: Allow %q, want %q (%s)", tt.method, tt.path, got, tt.allow, r.body)
		}
	}
}
