package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/store"
	"github.com/spin-broker/spinbroker/internal/store/storetest"
)

// fuzzRoutes are the routes that decode a body, with a package and command
// that exist filled in.
var fuzzRoutes = []struct{ method, path string }{
	{"POST", "/packages"},
	{"POST", "/packages/{pkg}/commands"},
	{"POST", "/commands/{cmd}/complete"},
	{"POST", "/commands/{cmd}/heartbeat"},
	{"POST", "/commands/complete"},
	{"POST", "/queues/fuzz/claim"},
	{"PATCH", "/queues/fuzz"},
}

// FuzzRequest sends arbitrary bodies to every route that decodes one,
// through the real router and a real store: the answer is never a 5xx or a
// panic, and always JSON in the API's shape.
func FuzzRequest(f *testing.F) {
	for i := range fuzzRoutes {
		for _, seed := range []string{
			``, `{}`, `null`, `[]`, `{"commands": [{"resource": "r", "action": "a"}], "enqueue": true}`,
			`{"resource": "r", "action": "a", "parameters": {"x": [1, {"y": null}]}, "dependencies": ["k"]}`,
			`{"status": true, "output": {"a": 1}}`, `{"results": [{"id": "x", "status": false}]}`,
			`{"max": 3, "wait": "1ms", "lease": "10s"}`, `{"concurrency": 2, "paused": true}`,
			`{"lease": "t", "extend": "5m"}`, "{\"key\": \"\x00\"}", `{"not_before": "2026-13-45T99:00:00Z"}`,
		} {
			f.Add(uint8(i), []byte(seed))
		}
	}
	db, _ := storetest.MustOpen(f, store.Options{Now: time.Now})
	s := New(db, slog.New(slog.NewTextHandler(io.Discard, nil)), Options{})
	h := s.Handler()
	p, _, err := db.CreatePackage(f.Context(), spinbroker.NewPackage{Commands: []spinbroker.NewCommand{{Key: "k", Resource: "fuzz", Action: "a"}}}, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		rt := fuzzRoutes[int(route)%len(fuzzRoutes)]
		path := bytes.ReplaceAll([]byte(rt.path), []byte("{pkg}"), []byte(p.ID))
		path = bytes.ReplaceAll(path, []byte("{cmd}"), []byte(p.Commands[0].ID))
		// A generated "wait" may ask for a minute; the request gives up
		// sooner, and an abandoned long-poll answers nothing.
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		req := httptest.NewRequestWithContext(ctx, rt.method, string(path), bytes.NewReader(body))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if ctx.Err() != nil && w.Body.Len() == 0 {
			return
		}
		if w.Code >= 500 {
			t.Fatalf("%s %s %q: %d %s", rt.method, path, body, w.Code, w.Body)
		}
		if w.Code == http.StatusNoContent {
			return
		}
		if !json.Valid(w.Body.Bytes()) {
			t.Fatalf("%s %s: answer is not JSON: %s", rt.method, path, w.Body)
		}
		if w.Code >= 400 {
			var e spinbroker.ErrorBody
			if json.Unmarshal(w.Body.Bytes(), &e) != nil || e.Error == nil || StatusOf(e.Error.Code) != w.Code {
				t.Fatalf("%s %s: error body %s does not match status %d", rt.method, path, w.Body, w.Code)
			}
		}
	})
}

// FuzzDecode runs the decoders and validation alone, much faster than a
// round trip: they never panic and refuse only with EINVALID. What they
// accept, sent again as the client (or the CLI) encodes it, is accepted
// again and means the same.
func FuzzDecode(f *testing.F) {
	for _, seed := range []string{
		`{"id": "0190c3a4-5a6b-7c8d-9e0f-a1b2c3d4e5f6", "commands": [{"key": "k", "resource": "r", "action": "a", "max_attempts": 2, "lease_duration": "1m", "not_before": "2026-01-01T00:00:00Z"}]}`,
		`{"commands": [{"resource": "r", "action": "a", "parameters": {"deep": [[[[[[1]]]]]]}}]}`,
		`{"status": false, "retry": true, "reason": "x", "output": {}}`, `{"max": 1e9}`, `{"lease_duration": "-5s"}`,
		`{"commands": [{"resource": "r", "action": "a", "max_attempts": -1}]}`, "\xff\xfe", `{"a":1}{"b":2}`,
		// Values whose refusal is found by walking the body (locateBad).
		`{"commands": [{"resource": "r", "action": "a"}, {"resource": "r", "action": "a", "lease_duration": 30}]}`,
		`{"commands": [{}, {"not_before": "2030-01-01t00:00:00z"}, {"max_attempts": 1e400}]}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		targets := []any{&spinbroker.NewPackage{}, &spinbroker.NewCommand{}, &spinbroker.Result{}, &spinbroker.BatchComplete{},
			&spinbroker.Claim{}, &spinbroker.QueueSettings{}, &spinbroker.Heartbeat{}}
		for _, v := range targets {
			err := decodeJSON(b, v, false)
			if err != nil {
				if code := spinbroker.ErrorCode(err); code != spinbroker.EINVALID {
					t.Fatalf("decode %T of %q: code %s (%v)", v, b, code, err)
				}
				continue
			}
			// What the checks after decoding refuse (a command's
			// validation, the store's "status is required") no client
			// sends again.
			accepted := true
			switch v := v.(type) {
			case *spinbroker.NewPackage:
				for i := range v.Commands {
					if err := v.Commands[i].Validate(); err != nil {
						if spinbroker.ErrorCode(err) != spinbroker.EINVALID {
							t.Fatalf("validate: %v", err)
						}
						accepted = false
					}
				}
			case *spinbroker.NewCommand:
				if err := v.Validate(); err != nil {
					if spinbroker.ErrorCode(err) != spinbroker.EINVALID {
						t.Fatalf("validate: %v", err)
					}
					accepted = false
				}
			case *spinbroker.Result:
				accepted = v.Status != nil
			case *spinbroker.BatchComplete:
				for _, r := range v.Results {
					accepted = accepted && r.Status != nil
				}
			}
			if !accepted {
				continue
			}
			sent, err := json.Marshal(v)
			if err != nil {
				t.Fatalf("%T of %q does not encode: %v", v, b, err)
			}
			again := reflect.New(reflect.TypeOf(v).Elem()).Interface()
			if err := decodeJSON(sent, again, false); err != nil {
				t.Fatalf("%T of %q, encoded as %s, is refused: %v", v, b, sent, err)
			}
			if resent, _ := json.Marshal(again); !bytes.Equal(resent, sent) {
				t.Fatalf("%T of %q: encoded as %s, decoded and encoded again as %s", v, b, sent, resent)
			}
		}
	})
}
