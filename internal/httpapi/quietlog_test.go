package httpapi_test

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/httpapi"
	"github.com/spin-broker/spinbroker/internal/syncbuf"
)

// TestRequestLog_AgentChatterAtDebug: the calls agents repeat while
// nothing happens (a next or a claim that found nothing, a heartbeat that
// extended its lease) are logged at debug, not info, while every call that
// changed something or failed keeps its line at info. A hundred idle
// agents wrote hundreds of lines a minute that said nothing.
func TestRequestLog_AgentChatterAtDebug(t *testing.T) {
	var log syncbuf.Buffer
	e := newEnvLogging(t, httpapi.Options{}, &log)
	call := func(id, method, path, body string) response {
		return e.do(method, path, body, "X-Request-Id", id)
	}
	e.want(call("empty-next", "POST", "/queues/storage/next", ""), 204, "")
	e.want(call("empty-claim", "POST", "/queues/storage/claim", `{"max": 10}`), 200, "")
	e.want(call("create", "POST", "/packages", `{"enqueue": true, "commands": [{"resource": "storage", "action": "a", "parameters": {}}]}`), 201, "")
	r := call("next", "POST", "/queues/storage/next", "")
	e.want(r, 200, "")
	var c spinbroker.Command
	r.decode(t, &c)
	e.want(call("heartbeat", "POST", "/commands/"+c.ID+"/heartbeat", `{"lease": "`+c.Lease.Token+`"}`), 200, "")
	e.want(call("stale-heartbeat", "POST", "/commands/"+c.ID+"/heartbeat", `{"lease": "not-the-lease"}`), 409, spinbroker.ESTALE)
	e.want(call("complete", "POST", "/commands/"+c.ID+"/complete", `{"status": true, "lease": "`+c.Lease.Token+`"}`), 200, "")

	levels := map[string]string{}
	for line := range strings.Lines(log.String()) {
		var l struct {
			Msg, Level string
			ID         string `json:"request_id"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "request" {
			levels[l.ID] = l.Level
		}
	}
	for id, want := range map[string]string{
		"empty-next": "", "empty-claim": "", "heartbeat": "", // at debug: not written at info
		"create": "INFO", "next": "INFO", "stale-heartbeat": "INFO", "complete": "INFO",
	} {
		if levels[id] != want {
			t.Errorf("request %s logged at %q, want %q\n%s", id, levels[id], want, log.String())
		}
	}

	// At debug they are there.
	var debug syncbuf.Buffer
	d := newEnvLogger(t, httpapi.Options{}, slog.New(slog.NewJSONHandler(&debug, &slog.HandlerOptions{Level: slog.LevelDebug})))
	d.want(d.do("POST", "/queues/storage/next", "", "X-Request-Id", "idle"), 204, "")
	if !strings.Contains(debug.String(), `"level":"DEBUG","msg":"request"`) || !strings.Contains(debug.String(), `"request_id":"idle"`) {
		t.Errorf("an empty next is not logged at debug:\n%s", debug.String())
	}
}
