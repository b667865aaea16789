package httpapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/httpapi"
	"github.com/spin-broker/spinbroker/internal/store"
	"github.com/spin-broker/spinbroker/internal/store/storetest"
	"github.com/spin-broker/spinbroker/internal/syncbuf"
)

// TestAPI_Errors walks API.md's error table: every code, from a real
// server over a real SQLite file.
func TestAPI_Errors(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	staging := e.createPackage(`[{"key": "a", "resource": "r", "action": "x"}]`, false)
	running := e.createPackage(`[{"key": "a", "resource": "busy", "action": "x"}, {"key": "b", "resource": "busy", "action": "y", "dependencies": ["a"]}]`, true)
	leased := e.next("busy")
	if leased == nil {
		t.Fatal("nothing leased")
	}
	blocked := running.Commands[1]
	empty := e.createPackage(`[]`, false)
	cancelledEmpty := e.createPackage(`[]`, false)
	e.want(e.do("POST", "/packages/"+cancelledEmpty.ID+"/cancel", ""), 200, "")
	done := e.createPackage(`[{"resource": "fin", "action": "x"}]`, true)
	fin := e.next("fin")
	e.want(e.complete(fin, true), 200, "")
	missing := "0190c3a4-5a6b-7c8d-9e0f-a1b2c3d4e5f6"
	big := `{"resource": "r", "action": "x", "parameters": {"blob": "` + strings.Repeat("x", spinbroker.MaxBodyBytes) + `"}}`

	tests := []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		// 400 invalid_request
		{"MalformedJSON", "POST", "/packages", `{"commands": [`, 400, spinbroker.EINVALID},
		{"TwoValues", "POST", "/packages", `{} {}`, 400, spinbroker.EINVALID},
		{"NotAnObject", "POST", "/packages", `[1, 2]`, 400, spinbroker.EINVALID},
		// null is not an object either, nor nothing: it is not taken for
		// an empty body.
		{"NullCreate", "POST", "/packages", `null`, 400, spinbroker.EINVALID},
		{"NullEnqueue", "POST", "/packages/" + staging.ID + "/enqueue", ` null `, 400, spinbroker.EINVALID},
		{"NullQueueSettings", "PATCH", "/queues/r", `null`, 400, spinbroker.EINVALID},
		{"NullBatch", "POST", "/commands/complete", `null`, 400, spinbroker.EINVALID},
		{"WrongType", "POST", "/packages", `{"enqueue": "yes"}`, 400, spinbroker.EINVALID},
		{"UnknownField", "POST", "/packages", `{"comands": []}`, 400, spinbroker.EINVALID},
		{"UnknownCommandField", "POST", "/packages/" + staging.ID + "/commands", `{"resource": "r", "action": "x", "paramters": {}}`, 400, spinbroker.EINVALID},
		{"BadResource", "POST", "/packages/" + staging.ID + "/commands", `{"resource": "R!", "action": "x"}`, 400, spinbroker.EINVALID},
		{"BadAction", "POST", "/packages/" + staging.ID + "/commands", `{"resource": "r", "action": ""}`, 400, spinbroker.EINVALID},
		{"ParamsArray", "POST", "/packages/" + staging.ID + "/commands", `{"resource": "r", "action": "x", "parameters": [1]}`, 400, spinbroker.EINVALID},
		{"BadLeaseDuration", "POST", "/packages/" + staging.ID + "/commands", `{"resource": "r", "action": "x", "lease_duration": "soon"}`, 400, spinbroker.EINVALID},
		{"NumericDuration", "POST", "/packages/" + staging.ID + "/commands", `{"resource": "r", "action": "x", "lease_duration": 30}`, 400, spinbroker.EINVALID},
		{"BadNotBefore", "POST", "/packages/" + staging.ID + "/commands", `{"resource": "r", "action": "x", "not_before": "tomorrow"}`, 400, spinbroker.EINVALID},
		{"SelfDependency", "POST", "/packages/" + staging.ID + "/commands", `{"key": "k", "resource": "r", "action": "x", "dependencies": ["k"]}`, 400, spinbroker.EINVALID},
		{"BadWait", "POST", "/queues/r/next?wait=forever", ``, 400, spinbroker.EINVALID},
		{"NegativeWait", "POST", "/queues/r/next?wait=-1s", ``, 400, spinbroker.EINVALID},
		{"ShortLease", "POST", "/queues/r/next?lease=1ms", ``, 400, spinbroker.EINVALID},
		{"ZeroLease", "POST", "/queues/r/next?lease=0s", ``, 400, spinbroker.EINVALID},
		{"BadQueueName", "GET", "/queues/NOT%20OK", ``, 400, spinbroker.EINVALID},
		{"BadLimit", "GET", "/packages?limit=lots", ``, 400, spinbroker.EINVALID},
		{"BadState", "GET", "/packages?state=sleeping", ``, 400, spinbroker.EINVALID},
		{"BadCursor", "GET", "/packages?cursor=xyz", ``, 400, spinbroker.EINVALID},
		{"ClaimMax", "POST", "/queues/r/claim", `{"max": 0}`, 400, spinbroker.EINVALID},
		{"Concurrency", "PATCH", "/queues/r", `{"concurrency": 0}`, 400, spinbroker.EINVALID},
		{"CompleteNoStatus", "POST", "/commands/" + leased.ID + "/complete", `{"lease": "` + leased.Lease.Token + `"}`, 400, spinbroker.EINVALID},
		{"CompleteOutputNotObject", "POST", "/commands/" + leased.ID + "/complete", `{"status": true, "output": "done"}`, 400, spinbroker.EINVALID},
		{"HeartbeatNoLease", "POST", "/commands/" + leased.ID + "/heartbeat", `{}`, 400, spinbroker.EINVALID},
		{"InvalidUTF8", "POST", "/packages", "{\"commands\": [{\"resource\": \"r\", \"action\": \"x\", \"key\": \"\xff\xfe\"}]}", 400, spinbroker.EINVALID},
		// An endpoint that takes no body refuses one that says something.
		{"CancelWithReason", "POST", "/packages/" + staging.ID + "/cancel", `{"reason": "why"}`, 400, spinbroker.EINVALID},
		{"EnqueueMalformed", "POST", "/packages/" + staging.ID + "/enqueue", `{`, 400, spinbroker.EINVALID},
		{"DeleteWithBody", "DELETE", "/packages/" + done.ID, `{"force": true}`, 400, spinbroker.EINVALID},
		{"RetryWithBody", "POST", "/commands/" + fin.ID + "/retry", `{"now": true}`, 400, spinbroker.EINVALID},
		// 400 unknown_dependency, empty_package
		{"UnknownKey", "POST", "/packages/" + staging.ID + "/commands", `{"resource": "r", "action": "x", "dependencies": ["nope"]}`, 400, spinbroker.EUNKNOWNDEP},
		{"UnknownID", "POST", "/packages/" + staging.ID + "/commands", `{"resource": "r", "action": "x", "dependencies": ["` + missing + `"]}`, 400, spinbroker.EUNKNOWNDEP},
		{"EmptyPackage", "POST", "/packages/" + empty.ID + "/enqueue", ``, 400, spinbroker.EEMPTY},
		// 400 before 409 (API.md, Errors): an empty enqueue is answered
		// before the id that exists or the cancel that forbids it.
		{"EmptyBeatsDuplicateID", "POST", "/packages", `{"id": "` + running.ID + `", "enqueue": true}`, 400, spinbroker.EEMPTY},
		{"EmptyBeatsCancelled", "POST", "/packages/" + cancelledEmpty.ID + "/enqueue", ``, 400, spinbroker.EEMPTY},
		// 404 not_found
		{"NoPackage", "GET", "/packages/" + missing, ``, 404, spinbroker.ENOTFOUND},
		{"NotAnID", "GET", "/packages/not-an-id", ``, 404, spinbroker.ENOTFOUND},
		{"NoCommand", "GET", "/commands/" + missing, ``, 404, spinbroker.ENOTFOUND},
		{"NoRoute", "GET", "/nowhere", ``, 404, spinbroker.ENOTFOUND},
		{"CompleteMissing", "POST", "/commands/" + missing + "/complete", `{"status": true}`, 404, spinbroker.ENOTFOUND},
		// 404 wins over 413 and 400 (API.md, Errors)
		{"MissingBeatsTooLarge", "POST", "/packages/" + missing + "/commands", big, 404, spinbroker.ENOTFOUND},
		{"MissingBeatsMalformed", "POST", "/packages/" + missing + "/commands", `{`, 404, spinbroker.ENOTFOUND},
		{"MissingBeatsInvalid", "POST", "/commands/" + missing + "/heartbeat", `{}`, 404, spinbroker.ENOTFOUND},
		{"MissingBeatsBodyOfCancel", "POST", "/packages/" + missing + "/cancel", `{"reason": "why"}`, 404, spinbroker.ENOTFOUND},
		{"MissingBeatsBodyOfRetry", "POST", "/commands/" + missing + "/retry", big, 404, spinbroker.ENOTFOUND},
		// 405
		{"GetNext", "GET", "/queues/r/next", ``, 405, spinbroker.EMETHOD},
		{"PutPackage", "PUT", "/packages/" + staging.ID, ``, 405, spinbroker.EMETHOD},
		// 409 conflict, stale_lease
		{"AddToEnqueued", "POST", "/packages/" + running.ID + "/commands", `{"resource": "r", "action": "x"}`, 409, spinbroker.ECONFLICT},
		{"DuplicateID", "POST", "/packages", `{"id": "` + running.ID + `"}`, 409, spinbroker.ECONFLICT},
		{"DuplicateKey", "POST", "/packages/" + staging.ID + "/commands", `{"key": "a", "resource": "r", "action": "x"}`, 409, spinbroker.ECONFLICT},
		{"CompleteBlocked", "POST", "/commands/" + blocked.ID + "/complete", `{"status": true}`, 409, spinbroker.ECONFLICT},
		{"CompleteStaged", "POST", "/commands/" + staging.Commands[0].ID + "/complete", `{"status": true}`, 409, spinbroker.ECONFLICT},
		{"DifferentResult", "POST", "/commands/" + fin.ID + "/complete", `{"status": false}`, 409, spinbroker.ECONFLICT},
		{"DeleteUnfinished", "DELETE", "/packages/" + running.ID, ``, 409, spinbroker.ECONFLICT},
		{"RetrySucceeded", "POST", "/commands/" + fin.ID + "/retry", ``, 409, spinbroker.ECONFLICT},
		{"StaleComplete", "POST", "/commands/" + leased.ID + "/complete", `{"status": true, "lease": "stale"}`, 409, spinbroker.ESTALE},
		{"StaleHeartbeat", "POST", "/commands/" + leased.ID + "/heartbeat", `{"lease": "stale"}`, 409, spinbroker.ESTALE},
		// 413
		{"TooLarge", "POST", "/packages", `{"commands": [` + big + `]}`, 413, spinbroker.ETOOLARGE},
		{"TooLargeAdd", "POST", "/packages/" + staging.ID + "/commands", big, 413, spinbroker.ETOOLARGE},
		{"TooLargeEnqueue", "POST", "/packages/" + staging.ID + "/enqueue", big, 413, spinbroker.ETOOLARGE},
		{"TooLargeNext", "POST", "/queues/r/next", big, 413, spinbroker.ETOOLARGE},
		// 413 wins over a bad queue name's 400
		{"TooLargeBeatsBadQueueSet", "PATCH", "/queues/BAD!", big, 413, spinbroker.ETOOLARGE},
		{"TooLargeBeatsBadQueueClaim", "POST", "/queues/BAD!/claim", big, 413, spinbroker.ETOOLARGE},
		{"BadQueueBeatsBadBody", "POST", "/queues/BAD!/claim", `{`, 400, spinbroker.EINVALID},
		// next takes its settings in the query: a body is refused, not ignored
		{"NextWithSettingsInBody", "POST", "/queues/r/next", `{"wait": "5s"}`, 400, spinbroker.EINVALID},
		{"NextWithGarbage", "POST", "/queues/r/next", `garbage`, 400, spinbroker.EINVALID},
		{"NextWithEmptyObject", "POST", "/queues/r/next", `{}`, 204, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.t = t
			r := e.do(tt.method, tt.path, tt.body)
			e.want(r, tt.status, tt.code)
		})
	}
	e.t = t
	// Nothing the refused requests carried was written.
	r := e.do("GET", "/packages/"+staging.ID, "")
	var p spinbroker.Package
	r.decode(t, &p)
	if p.Total != 1 {
		t.Fatalf("refused adds changed the package: %d commands", p.Total)
	}
	if got := e.do("GET", "/packages/"+done.ID, ""); got.status != 200 {
		t.Fatal(got.status)
	}
}

// TestAPI_Head: every read answers HEAD with GET's status and headers and
// no body.
func TestAPI_Head(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	w := seedWorld(t, e)
	for _, path := range []string{"/healthz", "/metrics", "/packages", "/packages/" + w.running, "/commands/" + w.leased.ID, "/queues", "/queues/storage"} {
		get, head := e.do("GET", path, ""), e.do("HEAD", path, "")
		if head.status != get.status || head.status != 200 || len(head.body) != 0 || head.header.Get("Content-Type") != get.header.Get("Content-Type") {
			t.Errorf("HEAD %s: %d %q %q; GET answered %d %q", path, head.status, head.header.Get("Content-Type"), head.body, get.status, get.header.Get("Content-Type"))
		}
	}
	if r := e.do("HEAD", "/packages/"+fixedID(99), ""); r.status != 404 {
		t.Errorf("HEAD of a missing package: %d", r.status)
	}
}

func TestAPI_MethodNotAllowed(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	for _, tt := range []struct{ method, path, allow string }{
		{"GET", "/queues/storage/next", "POST"},
		{"DELETE", "/queues/storage", "GET, HEAD, PATCH"},
		{"POST", "/packages/0190c3a4-5a6b-7c8d-9e0f-a1b2c3d4e5f6", "GET, HEAD, DELETE"},
		{"PATCH", "/packages", "GET, HEAD, POST"},
		{"HEAD", "/commands/complete", "POST"},
		// The batched completion is POST only, though GET /commands/{id}
		// would match its path.
		{"GET", "/commands/complete", "POST"},
		{"PUT", "/commands/complete", "POST"},
	} {
		r := e.do(tt.method, tt.path, "")
		if tt.method == "HEAD" { // no body to read the code from
			if r.status != 405 || r.header.Get("Allow") != tt.allow {
				t.Errorf("HEAD %s: %d, Allow %q", tt.path, r.status, r.header.Get("Allow"))
			}
			continue
		}
		e.want(r, 405, spinbroker.EMETHOD)
		if got := r.header.Get("Allow"); got != tt.allow {
			t.Errorf("%s %s: Allow %q, want %q", tt.method, tt.path, got, tt.allow)
		}
	}
}

// TestAPI_PercentEncodedPath: a path segment is read percent-decoded, as
// the same URI (RFC 3986, 6.2.2.2) names the same package, command or
// queue: /queues/%72 is the queue r.
func TestAPI_PercentEncodedPath(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	p := e.createPackage(`[{"resource": "r", "action": "x"}]`, true)
	escape := func(id string) string { return id[:len(id)-1] + fmt.Sprintf("%%%02X", id[len(id)-1]) }
	var got spinbroker.Package
	r := e.do("GET", "/packages/"+escape(p.ID), "")
	e.want(r, 200, "")
	if r.decode(t, &got); got.ID != p.ID {
		t.Fatalf("package %s, want %s", got.ID, p.ID)
	}
	e.want(e.do("GET", "/commands/"+escape(p.Commands[0].ID), ""), 200, "")
	var q spinbroker.Queue
	r = e.do("GET", "/queues/%72", "")
	e.want(r, 200, "")
	if r.decode(t, &q); q.Resource != "r" || q.Counts.Ready != 1 {
		t.Fatalf("queue %+v", q)
	}
	r = e.do("POST", "/queues/%72/next", "")
	e.want(r, 200, "")
	// An escaped character that is not allowed is still refused.
	e.want(e.do("GET", "/queues/a%2Fb", ""), 400, spinbroker.EINVALID)
	// Decoded once, not twice: %2572 is the three characters %72, not r,
	// and an id with %25 in it is no id.
	e.want(e.do("GET", "/queues/%2572", ""), 400, spinbroker.EINVALID)
	e.want(e.do("POST", "/queues/%2572/next", ""), 400, spinbroker.EINVALID)
	e.want(e.do("GET", "/packages/"+strings.Replace(escape(p.ID), "%", "%25", 1), ""), 404, spinbroker.ENOTFOUND)
}

func TestAPI_Unavailable(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	if err := e.db.Close(); err != nil {
		t.Fatal(err)
	}
	r := e.do("POST", "/packages", "")
	e.want(r, 503, spinbroker.EUNAVAILABLE)
	if r.header.Get("Retry-After") == "" {
		t.Fatal("503 without Retry-After")
	}
	e.want(e.do("GET", "/healthz", ""), 503, spinbroker.EUNAVAILABLE)
}

// TestAPI_Flow drives a package through its whole life over HTTP.
func TestAPI_Flow(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	e.want(e.do("GET", "/healthz", ""), 200, "")
	if r := e.do("HEAD", "/healthz", ""); r.status != 200 || len(r.body) != 0 { // as load balancers probe
		t.Fatalf("HEAD /healthz: %d %q", r.status, r.body)
	}

	r := e.do("POST", "/packages", "")
	e.want(r, 201, "")
	var p spinbroker.Package
	r.decode(t, &p)
	if p.State != spinbroker.PackageStaging || r.header.Get("Location") != "/packages/"+p.ID {
		t.Fatalf("created %s, Location %q", p.State, r.header.Get("Location"))
	}
	if !strings.Contains(string(r.body), `"commands":[]`) {
		t.Fatalf("a package answers its commands, even none: %s", r.body)
	}
	r = e.do("POST", "/packages/"+p.ID+"/commands", `{"key": "vol", "resource": "storage", "action": "add_volume", "parameters": {"path": "vms"}}`)
	e.want(r, 201, "")
	var vol spinbroker.Command
	r.decode(t, &vol)
	r = e.do("POST", "/packages/"+p.ID+"/commands", `{"resource": "storage", "action": "create_image", "parameters": {"image_size": 10}, "dependencies": ["vol"], "lease_duration": "2m"}`)
	e.want(r, 201, "")
	var img spinbroker.Command
	r.decode(t, &img)
	if len(img.Dependencies) != 1 || img.Dependencies[0] != vol.ID || img.State != spinbroker.Staged {
		t.Fatalf("command: %s", r.body)
	}
	r = e.do("POST", "/packages/"+p.ID+"/enqueue", "")
	e.want(r, 200, "")
	r.decode(t, &p)
	if p.State != spinbroker.PackageQueued || p.Counts.Ready != 1 || p.Counts.Blocked != 1 {
		t.Fatalf("enqueued: %s", r.body)
	}
	e.want(e.do("POST", "/packages/"+p.ID+"/enqueue", ""), 200, "") // safe to retry

	c := e.next("storage")
	if c == nil || c.ID != vol.ID || c.Lease == nil {
		t.Fatalf("next: %+v", c)
	}
	if e.next("storage") != nil {
		t.Fatal("a serial queue handed out two")
	}
	r = e.do("POST", "/commands/"+c.ID+"/heartbeat", `{"lease": "`+c.Lease.Token+`", "extend": "90s"}`)
	e.want(r, 200, "")
	var hb spinbroker.HeartbeatResult
	r.decode(t, &hb)
	if !hb.LeaseExpiresAt.Equal(e.clock.Now().Add(90 * time.Second)) {
		t.Fatalf("heartbeat: %s", r.body)
	}
	r = e.do("POST", "/commands/"+c.ID+"/complete", `{"status": true, "lease": "`+c.Lease.Token+`", "output": {"path": "vms"}}`)
	e.want(r, 200, "")
	var got spinbroker.Command
	r.decode(t, &got)
	if got.State != spinbroker.Succeeded || string(got.Output) != `{"path":"vms"}` {
		t.Fatalf("completed: %s", r.body)
	}
	c = e.next("storage")
	if c == nil || c.ID != img.ID {
		t.Fatal("the dependent did not become ready")
	}
	if !c.Lease.ExpiresAt.Equal(e.clock.Now().Add(2 * time.Minute)) {
		t.Fatalf("the command's own lease_duration: %v", c.Lease.ExpiresAt)
	}
	e.want(e.complete(c, false), 200, "")
	r = e.do("GET", "/packages/"+p.ID, "")
	r.decode(t, &p)
	if p.State != spinbroker.PackageFailed || p.Causer == nil || *p.Causer != img.ID {
		t.Fatalf("failed package: %s", r.body)
	}
	r = e.do("POST", "/commands/"+img.ID+"/retry", "")
	e.want(r, 200, "")
	c = e.next("storage")
	e.want(e.complete(c, true), 200, "")
	r = e.do("GET", "/packages/"+p.ID, "")
	r.decode(t, &p)
	if p.State != spinbroker.PackageSucceeded {
		t.Fatalf("after retry: %s", p.State)
	}
	e.want(e.do("DELETE", "/packages/"+p.ID, ""), 204, "")
	e.want(e.do("GET", "/packages/"+p.ID, ""), 404, spinbroker.ENOTFOUND)
}

func TestAPI_ListsAndQueues(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	for i := 0; i < 5; i++ {
		e.createPackage(fmt.Sprintf(`[{"resource": "q%d", "action": "x"}]`, i%2), i%2 == 0)
		e.clock.Add(time.Second)
	}
	r := e.do("GET", "/packages?limit=2", "")
	e.want(r, 200, "")
	var list spinbroker.PackageList
	r.decode(t, &list)
	if len(list.Packages) != 2 || list.NextCursor == nil || strings.Contains(string(r.body), `"commands"`) {
		t.Fatalf("page: %s", r.body)
	}
	seen := 2
	for list.NextCursor != nil {
		r = e.do("GET", "/packages?limit=2&cursor="+*list.NextCursor, "")
		list = spinbroker.PackageList{}
		r.decode(t, &list)
		seen += len(list.Packages)
	}
	if seen != 5 {
		t.Fatalf("paged through %d", seen)
	}
	// A limit over 1,000 is clamped (API.md), even one too large for an int.
	for _, l := range []string{"5000", "99999999999999999999"} {
		r = e.do("GET", "/packages?limit="+l, "")
		e.want(r, 200, "")
		list = spinbroker.PackageList{}
		r.decode(t, &list)
		if len(list.Packages) != 5 {
			t.Fatalf("limit=%s: %s", l, r.body)
		}
	}
	r = e.do("GET", "/packages?state=staging", "")
	r.decode(t, &list)
	if len(list.Packages) != 2 || !strings.Contains(string(r.body), `"next_cursor":null`) {
		t.Fatalf("staging: %s", r.body)
	}

	r = e.do("PATCH", "/queues/q0", `{"concurrency": 3, "paused": true}`)
	e.want(r, 200, "")
	var q spinbroker.Queue
	r.decode(t, &q)
	if q.Concurrency != 3 || !q.Paused || q.Counts.Ready != 3 || len(q.Commands) != 3 {
		t.Fatalf("queue: %s", r.body)
	}
	if e.next("q0") != nil {
		t.Fatal("a paused queue delivered")
	}
	r = e.do("GET", "/queues", "")
	var ql spinbroker.QueueList
	r.decode(t, &ql)
	if len(ql.Queues) != 1 || ql.Queues[0].Commands != nil {
		t.Fatalf("queues: %s", r.body)
	}
	r = e.do("GET", "/queues/never-used", "")
	e.want(r, 200, "")
	r.decode(t, &q)
	if q.Concurrency != 1 || q.Paused || len(q.Commands) != 0 {
		t.Fatalf("unused queue: %s", r.body)
	}
	e.want(e.do("PATCH", "/queues/q0", `{"paused": false}`), 200, "")
	r = e.do("POST", "/queues/q0/claim", `{"max": 10}`)
	e.want(r, 200, "")
	var cl spinbroker.ClaimResult
	r.decode(t, &cl)
	if len(cl.Commands) != 3 {
		t.Fatalf("claim: %d", len(cl.Commands))
	}
	r = e.do("POST", "/queues/q0/claim", `{"max": 10}`)
	e.want(r, 200, "")
	if !strings.Contains(string(r.body), `"commands":[]`) {
		t.Fatalf("an empty claim answers an empty list: %s", r.body)
	}
	// Batched completion: each item judged on its own.
	body := fmt.Sprintf(`{"results": [
		{"id": "%s", "status": true, "lease": "%s"},
		{"id": "%s", "status": true, "lease": "stale"},
		{"id": "not-an-id", "status": true},
		{"id": "%s", "status": false, "lease": "%s", "retry": true}]}`,
		cl.Commands[0].ID, cl.Commands[0].Lease.Token, cl.Commands[1].ID, cl.Commands[2].ID, cl.Commands[2].Lease.Token)
	r = e.do("POST", "/commands/complete", body)
	e.want(r, 200, "")
	var out spinbroker.BatchOutcomes
	r.decode(t, &out)
	var codes []string
	for _, o := range out.Results {
		codes = append(codes, fmt.Sprintf("%d", o.HTTPStatus))
	}
	if strings.Join(codes, " ") != "200 409 404 200" || out.Results[1].Error.Code != spinbroker.ESTALE {
		t.Fatalf("batch: %s", r.body)
	}
}

func TestAPI_Idempotency(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	body := `{"commands": [{"resource": "r", "action": "x"}], "enqueue": true}`
	first := e.do("POST", "/packages", body, "Idempotency-Key", "abc-1")
	e.want(first, 201, "")
	e.next("r")
	again := e.do("POST", "/packages", body, "Idempotency-Key", "abc-1")
	e.want(again, 201, "")
	if string(again.body) != string(first.body) || again.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay differs:\n%s\n%s", first.body, again.body)
	}
	if loc := first.header.Get("Location"); !strings.HasPrefix(loc, "/packages/") || again.header.Get("Location") != loc {
		t.Fatalf("Location %q first, %q on the replay", loc, again.header.Get("Location"))
	}
	e.want(e.do("POST", "/packages", `{"commands": []}`, "Idempotency-Key", "abc-1"), 409, spinbroker.ECONFLICT)
	e.want(e.do("POST", "/packages", body, "Idempotency-Key", strings.Repeat("k", 300)), 400, spinbroker.EINVALID)
	e.want(e.do("POST", "/packages", body, "Idempotency-Key", "k-3", "Idempotency-Key", "k-4"), 400, spinbroker.EINVALID)
	r := e.do("GET", "/packages", "")
	var list spinbroker.PackageList
	r.decode(t, &list)
	if len(list.Packages) != 1 {
		t.Fatalf("%d packages, want 1", len(list.Packages))
	}
	// A command's create too.
	staging := e.createPackage(`[]`, false)
	add := `{"resource": "r", "action": "x"}`
	c1 := e.do("POST", "/packages/"+staging.ID+"/commands", add, "Idempotency-Key", "add-1")
	c2 := e.do("POST", "/packages/"+staging.ID+"/commands", add, "Idempotency-Key", "add-1")
	if loc := c1.header.Get("Location"); !strings.HasPrefix(loc, "/commands/") || c2.header.Get("Location") != loc || c2.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("a command's Location %q first, %q on the replay", loc, c2.header.Get("Location"))
	}
}

// TestAPI_IdempotencyConflictAfterBadRequest: a key used before with
// another body is a 409, but a body that is itself refused with a 400 (a
// dependency that names nothing, an empty package to enqueue) answers that
// 400, as API.md's order of errors says and as it does when the 409 is a
// reused id or an enqueued package.
func TestAPI_IdempotencyConflictAfterBadRequest(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	e.want(e.do("POST", "/packages", `{"commands": [{"resource": "r", "action": "x"}]}`, "Idempotency-Key", "k"), 201, "")
	badDep := `{"commands": [{"resource": "r", "action": "y", "dependencies": ["nothing"]}]}`
	e.want(e.do("POST", "/packages", badDep, "Idempotency-Key", "k"), 400, spinbroker.EUNKNOWNDEP)
	e.want(e.do("POST", "/packages", `{"enqueue": true}`, "Idempotency-Key", "k"), 400, spinbroker.EEMPTY)
	// A body that would be fine is still the key's conflict, and nothing
	// of any of them was created.
	e.want(e.do("POST", "/packages", `{}`, "Idempotency-Key", "k"), 409, spinbroker.ECONFLICT)
	var list spinbroker.PackageList
	e.do("GET", "/packages", "").decode(t, &list)
	if len(list.Packages) != 1 {
		t.Fatalf("%d packages, want 1", len(list.Packages))
	}

	staging := e.createPackage(`[]`, false)
	path := "/packages/" + staging.ID + "/commands"
	e.want(e.do("POST", path, `{"resource": "r", "action": "x"}`, "Idempotency-Key", "a"), 201, "")
	e.want(e.do("POST", path, `{"resource": "r", "action": "y", "dependencies": ["nothing"]}`, "Idempotency-Key", "a"), 400, spinbroker.EUNKNOWNDEP)
	e.want(e.do("POST", path, `{"resource": "r", "action": "y"}`, "Idempotency-Key", "a"), 409, spinbroker.ECONFLICT)
	e.want(e.do("POST", "/packages/"+staging.ID+"/enqueue", ""), 200, "")
	e.want(e.do("POST", path, `{"resource": "r", "action": "y", "dependencies": ["nothing"]}`, "Idempotency-Key", "a"), 400, spinbroker.EUNKNOWNDEP)
	if got := e.do("GET", "/packages/"+staging.ID, ""); !strings.Contains(string(got.body), `"total":1,`) {
		t.Fatalf("a refused add added a command: %s", got.body)
	}
}

func TestAPI_CrossOrigin(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	// A page on another site posting to the broker through a browser.
	r := e.do("POST", "/packages", `{}`, "Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site")
	e.want(r, 403, spinbroker.EFORBIDDEN)
	// Reads are fine; so are programs, which send no Origin.
	e.want(e.do("GET", "/queues", "", "Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site"), 200, "")
	e.want(e.do("POST", "/packages", `{}`), 201, "")
}

// TestAPI_MetricsForgetQueues: a queue the sweeper forgets leaves
// /metrics, counters and gauges alike, and comes back from 0 with its next
// command.
func TestAPI_MetricsForgetQueues(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	e.createPackage(`[{"resource": "brief", "action": "x"}]`, true)
	e.want(e.complete(e.next("brief"), true), 200, "")
	metrics := func() string { return string(e.do("GET", "/metrics", "").body) }
	if m := metrics(); !strings.Contains(m, `spinbroker_commands_succeeded_total{resource="brief"} 1`) {
		t.Fatal("no series for the queue before the sweep")
	}
	e.clock.Add(2 * time.Hour)
	if res, err := e.db.Sweep(ctx, store.SweepOptions{Retain: time.Hour}); err != nil || res.QueuesForgotten != 1 {
		t.Fatalf("sweep: %+v %v", res, err)
	}
	if m := metrics(); strings.Contains(m, `resource="brief"`) {
		t.Errorf("a forgotten queue is still in /metrics:\n%s", grepLines(m, `resource="brief"`))
	}
	var list spinbroker.QueueList
	e.do("GET", "/queues", "").decode(t, &list)
	if len(list.Queues) != 0 {
		t.Errorf("GET /queues lists %+v", list.Queues)
	}
	e.createPackage(`[{"resource": "brief", "action": "x"}]`, true)
	if m := metrics(); !strings.Contains(m, `spinbroker_commands_enqueued_total{resource="brief"} 1`) ||
		!strings.Contains(m, `spinbroker_queue_commands{resource="brief",state="ready"} 1`) {
		t.Errorf("the queue did not come back:\n%s", grepLines(m, `resource="brief"`))
	}
}

// TestAPI_MetricsNoSeriesWithoutAQueue: a staged command cancelled with
// its package never reached its queue, and is not the queue's to count:
// neither enqueued nor cancelled, on a queue that has series as on one that
// has none (forgotten, or never used), where it makes none: no queue row
// stands behind them, so nothing would ever remove them. (It used to count
// as cancelled on a queue with series only.)
func TestAPI_MetricsNoSeriesWithoutAQueue(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	p := e.createPackage(`[{"resource": "gone", "action": "x"}]`, false)
	e.want(e.do("POST", "/packages/"+p.ID+"/cancel", ""), 200, "")
	if m := string(e.do("GET", "/metrics", "").body); strings.Contains(m, `resource="gone"`) {
		t.Errorf("a cancelled staged command made series:\n%s", grepLines(m, `resource="gone"`))
	}
	e.createPackage(`[{"resource": "kept", "action": "x"}]`, true)
	p = e.createPackage(`[{"resource": "kept", "action": "y"}]`, false)
	e.want(e.do("POST", "/packages/"+p.ID+"/cancel", ""), 200, "")
	m := string(e.do("GET", "/metrics", "").body)
	for _, want := range []string{`spinbroker_commands_enqueued_total{resource="kept"} 1`, `spinbroker_commands_cancelled_total{resource="kept"} 0`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s:\n%s", want, grepLines(m, `resource="kept"`))
		}
	}
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestAPI_Metrics(t *testing.T) {
	opened := time.Now()
	e := newEnv(t, httpapi.Options{})
	e.createPackage(`[{"resource": "m", "action": "x"}, {"resource": "m", "action": "y"}]`, true)
	c := e.next("m")
	e.want(e.complete(c, true), 200, "")
	r := e.do("GET", "/metrics", "")
	e.want(r, 200, "")
	body := string(r.body)
	for _, want := range []string{
		`spinbroker_commands_enqueued_total{resource="m"} 2`,
		`spinbroker_commands_delivered_total{resource="m"} 1`,
		`spinbroker_commands_succeeded_total{resource="m"} 1`,
		// Counters that nothing moved yet are there at 0, for rate().
		`spinbroker_commands_redelivered_total{resource="m"} 0`,
		`spinbroker_commands_failed_total{resource="m"} 0`,
		`spinbroker_commands_cancelled_total{resource="m"} 0`,
		`spinbroker_queue_commands{resource="m",state="ready"} 1`,
		`spinbroker_http_request_duration_seconds_bucket{code="200",method="POST",route="/queues/{resource}/next"`,
		"\nspinbroker_store_transactions_total 3\n",
		"\nspinbroker_store_writes_total 3\n",
		"\nspinbroker_store_checkpoints_total 0\n",
		"\nspinbroker_store_writer_busy_seconds_total ",
		"\nspinbroker_store_free_bytes ",
		"\nspinbroker_store_writes_failing 0\n",
		`go_goroutines`,
		// The build: the test binary's version is "(devel)" or its module's.
		`spinbroker_build_info{goversion="` + runtime.Version() + `",revision="`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// The database's size on disk: its file and its WAL, both there now.
	var onDisk int64
	for _, f := range []string{e.db.Path(), e.db.Path() + "-wal"} {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		onDisk += st.Size()
	}
	reported, ok := metricValue(body, "spinbroker_store_bytes")
	if onDisk == 0 || !ok || reported != float64(onDisk) {
		t.Errorf("spinbroker_store_bytes is %v, the files hold %d bytes", reported, onDisk)
	}
	// The writer ran three transactions, within the time the test took.
	busy, ok := metricValue(body, "spinbroker_store_writer_busy_seconds_total")
	if !ok || busy <= 0 || busy > time.Since(opened).Seconds() {
		t.Errorf("spinbroker_store_writer_busy_seconds_total is %v (found: %v), %v after the database was opened", busy, ok, time.Since(opened))
	}
}

func TestAPI_ContentTypes(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	for _, path := range []string{"/packages", "/queues", "/nowhere", "/healthz"} {
		r := e.do("GET", path, "", "Accept", "text/html")
		if ct := r.header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("GET %s with Accept: text/html answered %q; API paths never answer HTML", path, ct)
		}
	}
	var _ = http.StatusOK
	var _ = json.Valid
}

// TestAPI_AnswersCarryTheirLength: every JSON answer, however large, is sent
// in one piece with its Content-Length, never chunked, and answers encoded
// one after another into reused buffers do not bleed into each other.
func TestAPI_AnswersCarryTheirLength(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	var cmds []string
	for i := range 300 {
		cmds = append(cmds, fmt.Sprintf(`{"resource": "r", "action": "a%d", "parameters": {"n": %d}}`, i, i))
	}
	big := e.createPackage("["+strings.Join(cmds, ",")+"]", true)
	small := e.createPackage(`[{"resource": "s", "action": "x"}]`, false)
	for _, path := range []string{"/packages/" + big.ID, "/packages/" + small.ID, "/packages/nope", "/packages/" + big.ID} {
		resp, err := e.srv.Client().Get(e.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.TransferEncoding) != 0 || resp.ContentLength != int64(len(body)) {
			t.Fatalf("%s: Transfer-Encoding %v, Content-Length %d for a body of %d bytes", path, resp.TransferEncoding, resp.ContentLength, len(body))
		}
		if !json.Valid(body) || body[len(body)-1] != '\n' {
			t.Fatalf("%s: not one JSON value and a newline: %.200s", path, body)
		}
	}
	r := e.do("GET", "/packages/"+big.ID, "")
	var got spinbroker.Package
	r.decode(t, &got)
	if len(got.Commands) != 300 || got.Commands[299].Action != "a299" {
		t.Fatalf("the large answer came back with %d commands", len(got.Commands))
	}
	if len(r.body) < 16<<10 {
		t.Fatalf("the answer is %d bytes; the test wants one larger than the server's write buffer", len(r.body))
	}
}

// TestAPI_RequestID: every answer carries X-Request-Id, the id its log line
// has: the client's when it sent a short printable one, else a new one.
func TestAPI_RequestID(t *testing.T) {
	var log syncbuf.Buffer
	e := newEnvLogging(t, httpapi.Options{}, &log)
	hex16 := regexp.MustCompile(`^[0-9a-f]{16}$`)
	ids := map[string]bool{}
	for _, c := range []struct{ given, want string }{
		{"", ""},
		{"trace-4bf92f3577b34da6", "trace-4bf92f3577b34da6"},
		{"has a space", ""},
		{strings.Repeat("x", 65), ""},
		{"tab\there", ""},
	} {
		var r response
		if c.given == "" {
			r = e.do("GET", "/queues", "")
		} else {
			r = e.do("GET", "/queues", "", "X-Request-Id", c.given)
		}
		got := r.header.Get("X-Request-Id")
		if c.want != "" && got != c.want || c.want == "" && !hex16.MatchString(got) {
			t.Errorf("X-Request-Id %q answered %q", c.given, got)
		}
		if ids[got] {
			t.Errorf("request id %q given twice", got)
		}
		ids[got] = true
	}
	deadline := time.Now().Add(5 * time.Second)
	for id := range ids {
		for !strings.Contains(log.String(), `"request_id":"`+id+`"`) {
			if time.Now().After(deadline) {
				t.Fatalf("no log line has request_id %q:\n%s", id, log.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// An error answer carries one too.
	r := e.do("GET", "/packages/"+fixedID(999), "")
	if r.status != 404 || !hex16.MatchString(r.header.Get("X-Request-Id")) {
		t.Errorf("a 404 without a request id: %d %v", r.status, r.header)
	}

	// The line that gives a 503's cause has its request's id, and the
	// request's own line is a warning.
	var busyLog syncbuf.Buffer
	busy := newEnvLogging(t, httpapi.Options{MaxWrites: 1, MaxWriteWait: 10 * time.Millisecond}, &busyLog)
	unlock := busy.lockDatabase()
	first := busy.startCreate(strings.NewReader(`{"commands": []}`))
	busy.waitWritesInFlight(1)
	busy.want(busy.do("POST", "/packages", `{"commands": []}`, "X-Request-Id", "cause-1"), 503, spinbroker.EUNAVAILABLE)
	unlock()
	<-first
	cause := regexp.MustCompile(`"msg":"unavailable"[^\n]*"request_id":"cause-1"[\s\S]*"level":"WARN","msg":"request"[^\n]*"status":503[^\n]*"request_id":"cause-1"`)
	for !cause.MatchString(busyLog.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("the cause's line lacks the request id:\n%s", busyLog.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAPI_WritesTakeTurns: past MaxWrites state-changing requests at once,
// another waits MaxWriteWait for a turn and is then answered 503 with
// Retry-After; reads, next and claim are not held back; once a turn frees,
// writes go through again.
func TestAPI_WritesTakeTurns(t *testing.T) {
	e := newEnv(t, httpapi.Options{MaxWrites: 1, MaxWriteWait: 50 * time.Millisecond})
	// A create waiting for the database's write lock, which another
	// connection holds, holds the one turn.
	unlock := e.lockDatabase()
	first := e.startCreate(strings.NewReader(`{"commands": [{"resource": "q", "action": "first"}], "enqueue": true}`))
	e.waitWritesInFlight(1)

	r := e.do("POST", "/packages", `{"commands": [{"resource": "q", "action": "second"}]}`)
	e.want(r, 503, spinbroker.EUNAVAILABLE)
	if r.header.Get("Retry-After") == "" || !strings.Contains(r.code()+string(r.body), "retry shortly") {
		t.Errorf("the refusal: %v %s", r.header, r.body)
	}
	e.want(e.do("GET", "/queues", ""), 200, "")
	// next waits for the database too, but never for a turn, which would
	// have been refused within MaxWriteWait.
	client := &http.Client{Timeout: 500 * time.Millisecond}
	if resp, err := client.Post(e.srv.URL+"/queues/q/next", "", nil); err == nil {
		resp.Body.Close()
		t.Errorf("next answered %d while the database was locked: did it wait for a write's turn?", resp.StatusCode)
	}

	unlock()
	if status := <-first; status != 201 {
		t.Fatalf("the first create answered %d", status)
	}
	e.createPackage(`[{"resource": "q", "action": "third"}]`, true)
	if c := e.next("q"); c == nil || c.Action != "first" {
		t.Fatalf("after the turns: %+v", c)
	}
}

// TestAPI_SlowBodyHoldsNoTurn: a body still arriving is read before its
// request takes a turn, so a slow upload never stalls the other writes.
func TestAPI_SlowBodyHoldsNoTurn(t *testing.T) {
	e := newEnv(t, httpapi.Options{MaxWrites: 1, MaxWriteWait: 50 * time.Millisecond})
	body, feed := io.Pipe()
	t.Cleanup(func() { feed.Close() }) // a failed test must not hang the server's close
	slow := e.startCreate(body)
	feed.Write([]byte(`{"commands": [{"resource": "q", `))

	e.createPackage(`[{"resource": "q", "action": "quick"}]`, true)
	if r := e.do("GET", "/metrics", ""); !strings.Contains(string(r.body), "\nspinbroker_http_writes_in_flight 0\n") {
		t.Errorf("a body still arriving holds a turn:\n%s", r.body)
	}

	feed.Write([]byte(`"action": "slow"}], "enqueue": true}`))
	feed.Close()
	if status := <-slow; status != 201 {
		t.Fatalf("the slow create answered %d", status)
	}
	for _, want := range []string{"quick", "slow"} {
		c := e.next("q")
		if c == nil || c.Action != want {
			t.Fatalf("want %s, got %+v", want, c)
		}
		e.want(e.complete(c, true), 200, "")
	}
}

// TestAPI_BodiesHoldBoundedMemory: bodies read ahead of their turn hold at
// most MaxBodyMemory; past it a write is refused 503, and the memory comes
// back when the bodies are done with.
func TestAPI_BodiesHoldBoundedMemory(t *testing.T) {
	e := newEnv(t, httpapi.Options{MaxWriteWait: 50 * time.Millisecond, MaxBodyMemory: spinbroker.MaxBodyBytes + 1})
	body, feed := io.Pipe()
	t.Cleanup(func() { feed.Close() }) // a failed test must not hang the server's close
	slow := e.startCreate(body)
	// Most of a megabyte has arrived: the budget is nearly spent.
	blob := strings.Repeat("x", spinbroker.MaxBodyBytes-64<<10)
	feed.Write([]byte(`{"commands": [{"resource": "q", "action": "big", "parameters": {"blob": "` + blob + `"}}], `))

	// Wait until the broker has read it all (it holds at least that much).
	deadline := time.Now().Add(10 * time.Second)
	for bodyBytes(e) < len(blob) {
		if time.Now().After(deadline) {
			t.Fatalf("the slow body's %d bytes were never all read: %d held", len(blob), bodyBytes(e))
		}
		time.Sleep(5 * time.Millisecond)
	}
	big := `{"commands": [{"resource": "q", "action": "second", "parameters": {"blob": "` + strings.Repeat("y", 300<<10) + `"}}]}`
	r := e.do("POST", "/packages", big)
	e.want(r, 503, spinbroker.EUNAVAILABLE)
	if !strings.Contains(string(r.body), "memory") {
		t.Errorf("the refusal does not say why: %s", r.body)
	}
	// Small writes still fit.
	e.createPackage(`[{"resource": "q", "action": "small"}]`, false)
	// Agents' reports draw on their own budget: a large completion still
	// fits while clients' uploads hold all of theirs.
	e.createPackage(`[{"resource": "work", "action": "report"}]`, true)
	c := e.next("work")
	e.want(e.do("POST", "/commands/"+c.ID+"/heartbeat", `{"lease": "`+c.Lease.Token+`"}`), 200, "")
	e.want(e.do("POST", "/commands/"+c.ID+"/complete", `{"status": true, "lease": "`+c.Lease.Token+`", "output": {"log": "`+strings.Repeat("z", 300<<10)+`"}}`), 200, "")

	feed.Write([]byte(`"enqueue": true}`))
	feed.Close()
	if status := <-slow; status != 201 {
		t.Fatalf("the slow create answered %d", status)
	}
	// Its memory comes back as its handler returns, just after the answer.
	for {
		r := e.do("POST", "/packages", big)
		if r.status == 201 {
			break
		}
		if r.status != 503 || time.Now().After(deadline) {
			t.Fatalf("once the slow body was done with: %d %s", r.status, r.body)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// bodyBytes is the broker's spinbroker_http_body_bytes.
func bodyBytes(e *env) int {
	v, ok := metricValue(string(e.do("GET", "/metrics", "").body), "spinbroker_http_body_bytes")
	if !ok {
		e.t.Fatal("no spinbroker_http_body_bytes in the metrics")
	}
	return int(v)
}

// metricValue is the value of the unlabelled metric name in a /metrics
// answer, and whether it is there.
func metricValue(body, name string) (float64, bool) {
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}

// TestAPI_DeclaredLengthNotCharged: a body is charged as it arrives, not as
// its Content-Length declares: connections that sent headers only hold
// next to nothing.
func TestAPI_DeclaredLengthNotCharged(t *testing.T) {
	e := newEnv(t, httpapi.Options{MaxBodyMemory: spinbroker.MaxBodyBytes + 1})
	addr := strings.TrimPrefix(e.srv.URL, "http://")
	for range 8 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		fmt.Fprintf(c, "POST /packages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 262144\r\n\r\n")
	}
	// Wait until the server has taken all eight in: each holds its first
	// piece, 4 KiB.
	deadline := time.Now().Add(10 * time.Second)
	for bodyBytes(e) < 8*4096 {
		if time.Now().After(deadline) {
			t.Fatalf("the eight connections hold %d bytes", bodyBytes(e))
		}
		time.Sleep(5 * time.Millisecond)
	}
	big := `{"commands": [{"resource": "q", "action": "b", "parameters": {"blob": "` + strings.Repeat("y", 900<<10) + `"}}]}`
	e.want(e.do("POST", "/packages", big), 201, "")
}

// TestAPI_DeclaredTooLarge: a body whose Content-Length is over the limit
// is refused with 413 at once, before a byte of it arrives, and a client
// that asked whether to send it (Expect: 100-continue) is not invited to.
func TestAPI_DeclaredTooLarge(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	addr := strings.TrimPrefix(e.srv.URL, "http://")
	for _, path := range []string{"/packages", "/queues/q/claim", "/commands/complete"} {
		for _, expect := range []string{"", "Expect: 100-continue\r\n"} {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000000\r\n%s\r\n{}", path, expect)
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("POST %s %q: no answer before its body: %v", path, expect, err)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 413 || !strings.Contains(string(body), `"too_large"`) {
				t.Errorf("POST %s %q: %d %s, want 413 too_large", path, expect, resp.StatusCode, body)
			}
		}
	}
}

// panicky is the real store with one read that panics, as a bug would.
type panicky struct{ httpapi.Store }

func (panicky) QueueEach(context.Context, string, func(*spinbroker.Queue) error, func(*spinbroker.Command) error) error {
	panic("a bug")
}

// TestAPI_PanicLogged: a panic in a handler answers 500 internal_error and
// is logged with its stack and its request's id, beside the request's own
// line, which is an error's.
func TestAPI_PanicLogged(t *testing.T) {
	var log syncbuf.Buffer
	db, _ := storetest.MustOpen(t, store.Options{})
	api := httpapi.New(panicky{db}, slog.New(slog.NewJSONHandler(&log, nil)), httpapi.Options{})
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(func() { api.Shutdown(); srv.Close() })
	e := &env{t: t, db: db, api: api, srv: srv}

	e.want(e.do("GET", "/queues/q", "", "X-Request-Id", "oops-1"), 500, spinbroker.EINTERNAL)
	want := []*regexp.Regexp{
		regexp.MustCompile(`"msg":"panic"[^\n]*"request_id":"oops-1"[^\n]*"stack":"goroutine`),
		regexp.MustCompile(`"level":"ERROR","msg":"request"[^\n]*"status":500[^\n]*"request_id":"oops-1"`),
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, re := range want {
		for !re.MatchString(log.String()) {
			if time.Now().After(deadline) {
				t.Fatalf("no log line matches %s:\n%s", re, log.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// TestAPI_NotBeforeLowerCase: a not_before whose t or z is in lower case
// (which RFC 3339 allows and Go's parser refuses) is a 400 that says
// what to change, not that it is no RFC 3339 time.
func TestAPI_NotBeforeLowerCase(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	r := e.do("POST", "/packages", `{"commands": [{"resource": "r", "action": "x", "not_before": "2030-01-01t00:00:00z"}]}`)
	e.want(r, 400, spinbroker.EINVALID)
	if !strings.Contains(string(r.body), "lower-case t or z: write them in upper case") {
		t.Errorf("the refusal does not say what to change: %s", r.body)
	}
	r = e.do("POST", "/packages", `{"commands": [{"resource": "r", "action": "x", "not_before": "soon"}]}`)
	if !strings.Contains(string(r.body), "is not an RFC 3339 time") {
		t.Errorf("a time that is none: %s", r.body)
	}
}

// TestAPI_UnavailableCauseLoggedOncePerInterval: every 503 has its request
// line, but the line that gives its cause is logged once per cause per 10
// seconds, the next one saying how many went unlogged: on a full disk or a
// busy broker, each 503 wrote two warnings, thousands a second. Another
// cause is logged at once.
func TestAPI_UnavailableCauseLoggedOncePerInterval(t *testing.T) {
	var log syncbuf.Buffer
	e := newEnvLogging(t, httpapi.Options{MaxWrites: 1, MaxWriteWait: 10 * time.Millisecond}, &log)
	unlock := e.lockDatabase()
	first := e.startCreate(strings.NewReader(`{"commands": []}`))
	e.waitWritesInFlight(1)
	busy := func(n int) {
		for range n {
			e.want(e.do("POST", "/packages", `{"commands": []}`), 503, spinbroker.EUNAVAILABLE)
		}
	}
	type line struct {
		Msg        string `json:"msg"`
		Status     int    `json:"status"`
		Err        string `json:"err"`
		Suppressed int    `json:"suppressed_since_last_line"`
	}
	lines := func(wantRequests int) (causes []line) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			var requests int
			causes = nil
			for _, l := range strings.Split(strings.TrimSpace(log.String()), "\n") {
				var got line
				if err := json.Unmarshal([]byte(l), &got); err != nil {
					t.Fatalf("%v: %s", err, l)
				}
				switch {
				case got.Msg == "request" && got.Status == 503:
					requests++
				case got.Msg == "unavailable":
					causes = append(causes, got)
				}
			}
			if requests >= wantRequests || time.Now().After(deadline) {
				if requests != wantRequests {
					t.Fatalf("%d request lines of a 503, want %d:\n%s", requests, wantRequests, log.String())
				}
				return causes
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	busy(20)
	if c := lines(20); len(c) != 1 || !strings.Contains(c[0].Err, "busy") || c[0].Suppressed != 0 {
		t.Fatalf("20 busy 503s logged their cause as %+v, want one line", c)
	}
	e.clock.Add(11 * time.Second)
	busy(1)
	if c := lines(21); len(c) != 2 || c[1].Suppressed != 19 {
		t.Fatalf("the cause's line after the interval: %+v, want one saying 19 were not logged", c)
	}
	unlock()
	if status := <-first; status != 201 {
		t.Fatalf("the first create answered %d", status)
	}

	// Another cause within the interval: a long-poll answered at shutdown
	// (on a queue the metrics know, whose one command is leased).
	e.createPackage(`[{"resource": "stop", "action": "x"}]`, true)
	e.next("stop")
	done := make(chan response, 1)
	go func() { done <- e.do("POST", "/queues/stop/next?wait=30s", "") }()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(string(e.do("GET", "/metrics", "").body), `spinbroker_queue_waiting_polls{resource="stop"} 1`) {
		if time.Now().After(deadline) {
			t.Fatal("the long-poll never waited")
		}
		time.Sleep(5 * time.Millisecond)
	}
	e.api.Shutdown()
	e.want(<-done, 503, spinbroker.EUNAVAILABLE)
	if c := lines(22); len(c) != 3 || !strings.Contains(c[2].Err, "shutting down") {
		t.Fatalf("a second cause: %+v, want its own line", c)
	}
}

// TestAPI_DuplicateKeyInACreate: two commands of one create with the same
// key are a conflict whose message names no package: the one it would
// have created does not exist, and its id (one the broker chose) answers
// 404 to a client who looks it up.
func TestAPI_DuplicateKeyInACreate(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	r := e.do("POST", "/packages", `{"commands": [{"key": "k", "resource": "r", "action": "x"}, {"key": "k", "resource": "r", "action": "y"}]}`)
	e.want(r, 409, spinbroker.ECONFLICT)
	var b spinbroker.ErrorBody
	r.decode(t, &b)
	if msg := b.Error.Message; strings.Contains(msg, "package 0") || !strings.Contains(msg, "this request") || !strings.Contains(msg, `"k"`) {
		t.Fatalf("message: %s", msg)
	}
	// Adding to a package that exists still names it.
	p := e.createPackage(`[{"key": "k", "resource": "r", "action": "x"}]`, false)
	r = e.do("POST", "/packages/"+p.ID+"/commands", `{"key": "k", "resource": "r", "action": "y"}`)
	e.want(r, 409, spinbroker.ECONFLICT)
	if !strings.Contains(string(r.body), p.ID) {
		t.Fatalf("message: %s", r.body)
	}
}

// TestAPI_ClaimSettingsInTheQuery: claim takes max, wait and lease in its
// body. Given in the query, as next takes them, they were ignored: an
// agent asking ?wait=30s was answered at once, and asked again at once, in
// a loop. They are refused instead, as next refuses a body.
func TestAPI_ClaimSettingsInTheQuery(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	for _, q := range []string{"wait=30s", "lease=5m", "max=5"} {
		// With a body, and without one (all its settings in the query):
		// either way the answer says where they go, not only that the
		// body is missing.
		for _, body := range []string{`{"max": 1}`, ""} {
			r := e.do("POST", "/queues/q/claim?"+q, body)
			e.want(r, 400, spinbroker.EINVALID)
			if !strings.Contains(string(r.body), "in its JSON body, not in the query") {
				t.Fatalf("?%s with body %q: %s", q, body, r.body)
			}
		}
	}
	// Other query parameters are still ignored (proxies add their own).
	e.want(e.do("POST", "/queues/q/claim?utm=x", `{"max": 1}`), 200, "")
}

// TestQueueList_AgentCostsItsQueue: an agent token's GET /queues, which
// lists its own queue only, costs what its queue costs, whatever the
// other queues: with 2,000 queues it allocates about what it does with
// 10. (It read every queue and kept its own: 100 ms with 50,000 queues,
// for each agent that asked.) A queue it has not used yet is not listed.
func TestQueueList_AgentCostsItsQueue(t *testing.T) {
	e := newEnv(t, httpapi.Options{Auth: true})
	loadQueues(t, e, 0, 10)
	agent := e.secret("agent", queueName(5), "agent")
	list := func(token, want string) float64 {
		return testing.AllocsPerRun(3, func() {
			req := httptest.NewRequest("GET", "/queues", nil)
			req.Header.Set("Authorization", "Bearer "+token)
			w := httptest.NewRecorder()
			e.api.Handler().ServeHTTP(w, req)
			var ql spinbroker.QueueList
			if err := json.Unmarshal(w.Body.Bytes(), &ql); w.Code != 200 || err != nil || fmt.Sprint(len(ql.Queues)) != want {
				t.Fatalf("GET /queues: %d, want %s queues\n%.2000s", w.Code, want, w.Body)
			}
		})
	}
	few := list(agent, "1")
	loadQueues(t, e, 10, 2_000)
	if many := list(agent, "1"); many > 2*few {
		t.Errorf("an agent's GET /queues allocates %.0f times with 2,000 queues, %.0f with 10", many, few)
	}
	list(e.secret("agent", "unused", "agent"), "0")
	list(e.secret("admin", "", "admin"), "2000")
}
