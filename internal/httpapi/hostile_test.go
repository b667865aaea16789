package httpapi_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/httpapi"
)

// TestHostile sends requests built to hurt: each gets a clear 4xx in the
// API's shape, the server stays healthy, and nothing else changes.
func TestHostile(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	p := e.createPackage(`[{"key": "a", "resource": "r", "action": "x"}]`, false)
	live := e.createPackage(`[{"resource": "q", "action": "x"}]`, true)
	c := e.next("q")
	snapshot := func() string {
		var b strings.Builder
		for _, path := range []string{"/packages?limit=1000", "/queues", "/packages/" + p.ID, "/packages/" + live.ID} {
			b.Write(e.do("GET", path, "").body)
		}
		return b.String()
	}
	before := snapshot()

	many := make([]string, 10000)
	for i := range many {
		many[i] = fmt.Sprintf("%q", "k"+fmt.Sprint(i))
	}
	deep := strings.Repeat("[", 100000) + strings.Repeat("]", 100000)
	cmdPath := "/packages/" + p.ID + "/commands"
	tests := []struct {
		name, method, path, body string
		status                   int
	}{
		{"HugeBody", "POST", "/packages", `{"commands": [{"resource": "r", "action": "x", "parameters": {"x": "` + strings.Repeat("A", 5<<20) + `"}}]}`, 413},
		{"HugeBodyNoJSON", "POST", cmdPath, strings.Repeat("\x00", 2<<20), 413},
		{"DeepNesting", "POST", "/packages", `{"commands": [{"resource": "r", "action": "x", "parameters": {"d": ` + deep + `}}]}`, 400},
		{"DeepNestingTop", "POST", "/packages", deep, 400},
		{"TenThousandDependencies", "POST", cmdPath, `{"resource": "r", "action": "x", "dependencies": [` + strings.Join(many, ",") + `]}`, 400},
		{"InvalidUTF8", "POST", cmdPath, "{\"resource\": \"r\", \"action\": \"x\", \"parameters\": {\"s\": \"\xc3\x28\"}}", 400},
		{"InvalidUTF8Key", "POST", cmdPath, "{\"resource\": \"r\", \"action\": \"x\", \"key\": \"\xed\xa0\x80\"}", 400},
		{"NULInResource", "POST", cmdPath, `{"resource": "r\u0000x", "action": "x"}`, 400},
		{"NULInAction", "POST", cmdPath, `{"resource": "r", "action": "x\u0000"}`, 400},
		{"NULInKey", "POST", cmdPath, `{"key": "a\u0000b", "resource": "r", "action": "x"}`, 400},
		{"UnicodeResource", "POST", cmdPath, `{"resource": "résumé", "action": "x"}`, 400},
		{"LongResource", "POST", cmdPath, `{"resource": "` + strings.Repeat("r", 65) + `", "action": "x"}`, 400},
		{"LongKey", "POST", cmdPath, `{"key": "` + strings.Repeat("k", 10000) + `", "resource": "r", "action": "x"}`, 400},
		{"IDNotUUID", "POST", "/packages", `{"id": "../../etc/passwd"}`, 400},
		{"CommandIDNotUUID", "POST", cmdPath, `{"id": "1; DROP TABLE commands", "resource": "r", "action": "x"}`, 400},
		{"PathIDNotUUID", "GET", "/packages/' OR '1'='1", "", 404},
		{"PathTraversal", "GET", "/packages/..%2f..%2fqueues", "", 404},
		{"DependencyNotUUID", "POST", cmdPath, `{"resource": "r", "action": "x", "dependencies": ["' OR 1=1 --"]}`, 400},
		{"NegativeAttempts", "POST", cmdPath, `{"resource": "r", "action": "x", "max_attempts": -1}`, 400},
		{"HugeAttempts", "POST", cmdPath, `{"resource": "r", "action": "x", "max_attempts": 99999999999999999999999}`, 400},
		{"FloatAttempts", "POST", cmdPath, `{"resource": "r", "action": "x", "max_attempts": 2.5}`, 400},
		{"HugeLease", "POST", cmdPath, `{"resource": "r", "action": "x", "lease_duration": "99999999h"}`, 400},
		{"OverflowLease", "POST", cmdPath, `{"resource": "r", "action": "x", "lease_duration": "9999999999999999999h"}`, 400},
		{"NaN", "POST", cmdPath, `{"resource": "r", "action": "x", "max_attempts": NaN}`, 400},
		{"NegativeConcurrency", "PATCH", "/queues/r", `{"concurrency": -5}`, 400},
		{"HugeConcurrency", "PATCH", "/queues/r", `{"concurrency": 1e30}`, 400},
		{"NegativeClaim", "POST", "/queues/r/claim", `{"max": -1}`, 400},
		{"HugeClaim", "POST", "/queues/r/claim", `{"max": 9223372036854775807}`, 400},
		{"NegativeLimit", "GET", "/packages?limit=-1", "", 400},
		{"HugeNegativeLimit", "GET", "/packages?limit=-99999999999999999999", "", 400},
		{"InjectedState", "GET", "/packages?state=" + url.QueryEscape("' OR 1=1 --"), "", 400},
		{"GarbageCursor", "GET", "/packages?cursor=" + url.QueryEscape(strings.Repeat("%", 1000)), "", 400},
		{"NotBeforeYear9999", "POST", cmdPath, `{"resource": "r", "action": "x", "not_before": "99999-01-01T00:00:00Z"}`, 400},
		{"RepeatedState", "GET", "/packages?state=staging&state=queued", "", 400},
		{"MalformedState", "GET", "/packages?state=%zz", "", 400},
		{"MalformedLimit", "GET", "/packages?limit=1%", "", 400},
		{"MalformedWait", "POST", "/queues/r/next?wait=5%s", "", 400},
		{"MalformedEventsQuery", "GET", "/events?package=%", "", 400},
		{"RepeatedLimit", "GET", "/packages?limit=1&limit=2", "", 400},
		{"RepeatedWait", "POST", "/queues/r/next?wait=1s&wait=2s", "", 400},
		{"RepeatedEventsPackage", "GET", "/events?package=" + p.ID + "&package=" + live.ID, "", 400},
		{"EmptyLease", "POST", "/commands/" + c.ID + "/complete", `{"status": true, "lease": ""}`, 400},
		{"EmptyLeaseInBatch", "POST", "/commands/complete", `{"results": [{"id": "` + c.ID + `", "status": true, "lease": ""}]}`, 400},
		{"NotBeforeNever", "POST", cmdPath, `{"resource": "r", "action": "x", "not_before": "9999-12-31T23:59:59Z"}`, 400},
		{"NotBeforeBeforeItCanBeStored", "POST", cmdPath, `{"resource": "r", "action": "x", "not_before": "1677-09-21T00:00:00Z"}`, 400},
		{"NotBeforeOffset24h", "POST", cmdPath, `{"resource": "r", "action": "x", "not_before": "2026-01-01T00:00:00+24:00"}`, 400},
		{"TrailingGarbage", "POST", "/packages", `{} garbage`, 400},
		{"ArrayBody", "POST", "/commands/complete", `[{"id": "x"}]`, 400},
		{"TooManyResults", "POST", "/commands/complete", `{"results": [` + strings.TrimSuffix(strings.Repeat(`{"id": "x", "status": true},`, 1001), ",") + `]}`, 400},
		{"StaleLeaseForgery", "POST", "/commands/" + c.ID + "/complete", `{"status": false, "lease": "` + strings.Repeat("A", 26) + `"}`, 409},
		{"LongIdempotencyKey", "POST", "/packages", `{}`, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.t = t
			var hdr []string
			if tt.name == "LongIdempotencyKey" {
				hdr = []string{"Idempotency-Key", strings.Repeat("k", 5000)}
			}
			r := e.do(tt.method, tt.path, tt.body, hdr...)
			if r.status != tt.status {
				t.Fatalf("got %d, want %d: %.300s", r.status, tt.status, r.body)
			}
			var body spinbroker.ErrorBody
			if err := json.Unmarshal(r.body, &body); err != nil || body.Error == nil || body.Error.Message == "" || len(body.Error.Message) > 600 {
				t.Fatalf("not a clear error: %.300s", r.body)
			}
			e.want(e.do("GET", "/healthz", ""), 200, "")
		})
	}
	e.t = t
	if after := snapshot(); after != before {
		t.Fatalf("hostile requests changed the broker's state:\nbefore %s\nafter  %s", before, after)
	}
	t.Logf("%d hostile requests, each refused with a clear 4xx; state unchanged", len(tests))
}
