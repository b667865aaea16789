package httpapi_test

import (
	"encoding/json"
	"strings"
	"testing"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/httpapi"
)

// TestLeaseBounds_OneSentence: next's lease, a claim's and a heartbeat's
// extend are the same kind of value, and a value out of bounds, negative,
// zero or too short, is refused by one sentence that gives the bounds;
// next's negative wait, as a claim's.
func TestLeaseBounds_OneSentence(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	e.createPackage(`[{"resource": "r", "action": "a"}]`, true)
	c := e.next("r")
	if c == nil {
		t.Fatal("nothing to lease")
	}
	for _, v := range []string{"-1s", "0s", "500ms", "25h"} {
		calls := map[string]response{
			"next":      e.do("POST", "/queues/r/next?lease="+v, ""),
			"claim":     e.do("POST", "/queues/r/claim", `{"max": 1, "lease": "`+v+`"}`),
			"heartbeat": e.do("POST", "/commands/"+c.ID+"/heartbeat", `{"lease": "`+c.Lease.Token+`", "extend": "`+v+`"}`),
		}
		for call, r := range calls {
			e.want(r, 400, spinbroker.EINVALID)
			var b spinbroker.ErrorBody
			if err := json.Unmarshal(r.body, &b); err != nil || !strings.Contains(b.Error.Message, "must be between 1s and 24h0m0s, not "+v) {
				t.Errorf("%s with %s: %s", call, v, r.body)
			}
		}
	}
	for _, r := range []response{e.do("POST", "/queues/r/next?wait=-1s", ""), e.do("POST", "/queues/r/claim", `{"max": 1, "wait": "-1s"}`)} {
		var b spinbroker.ErrorBody
		if err := json.Unmarshal(r.body, &b); err != nil || r.status != 400 || b.Error.Message != "wait must not be negative" {
			t.Errorf("a negative wait: %d %s", r.status, r.body)
		}
	}
}
