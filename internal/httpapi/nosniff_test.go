package httpapi_test

import (
	"testing"

	"github.com/spin-broker/spinbroker/internal/httpapi"
)

// TestJSON_NoSniff: every JSON answer, success or error, says nosniff
// beside its Content-Type and no-store, as the dashboard's pages do: a
// browser pointed at an API URL must never guess a JSON body that echoes
// a client's text (parameters, a reason) to be something else. (Go's
// encoder escapes < and > as well.)
func TestJSON_NoSniff(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	for _, tc := range []struct {
		method, path, body string
		status             int
	}{
		{"POST", "/packages", `{"commands":[{"resource":"r","action":"a","parameters":{"x":"<script>x</script>"}}]}`, 201},
		{"GET", "/packages", "", 200},
		{"GET", "/packages/<b>nope</b>", "", 404},
		{"POST", "/packages", `{"commands":`, 400},
	} {
		r := e.do(tc.method, tc.path, tc.body)
		if r.status != tc.status {
			t.Fatalf("%s %s: %d, want %d: %s", tc.method, tc.path, r.status, tc.status, r.body)
		}
		if got := r.header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("%s %s (%d): X-Content-Type-Options %q, want nosniff", tc.method, tc.path, r.status, got)
		}
	}
}
