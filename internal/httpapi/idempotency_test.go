package httpapi_test

import (
	"bufio"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/httpapi"
)

// rawCreate sends POST /packages with the header line given verbatim
// (Go's client would not send an empty or padded value as written).
func rawCreate(t *testing.T, e *env, headerLine, body string) int {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := "POST /packages HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nConnection: close\r\n" +
		headerLine + "\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	if _, err := conn.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestAPI_IdempotencyKeyEmpty: an Idempotency-Key header sent empty is
// most likely a client's unset variable; read as no key, a retry created
// the package twice. It is refused, and nothing is created.
func TestAPI_IdempotencyKeyEmpty(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	body := `{"commands": [{"resource": "r", "action": "x"}]}`
	for _, line := range []string{"Idempotency-Key:", "Idempotency-Key: ", "Idempotency-Key:   \t "} {
		if got := rawCreate(t, e, line, body); got != 400 {
			t.Errorf("%q: %d, want 400", line, got)
		}
	}
	r := e.do("POST", "/packages", body, "Idempotency-Key", "")
	e.want(r, 400, spinbroker.EINVALID)
	if !strings.Contains(string(r.body), "Idempotency-Key is empty") {
		t.Errorf("empty key: %s", r.body)
	}
	staging := e.createPackage(`[]`, false)
	e.want(e.do("POST", "/packages/"+staging.ID+"/commands", `{"resource": "r", "action": "x"}`, "Idempotency-Key", ""), 400, spinbroker.EINVALID)
	var list spinbroker.PackageList
	e.do("GET", "/packages", "").decode(t, &list)
	if len(list.Packages) != 1 || list.Packages[0].Total != 0 {
		t.Fatalf("refused creates created: %+v", list.Packages)
	}

	// Spaces around a value are not part of it (RFC 9110, 5.5): " k " is
	// the key k, a replay.
	if got := rawCreate(t, e, "Idempotency-Key: k", body); got != 201 {
		t.Fatalf("key k: %d", got)
	}
	r = e.do("POST", "/packages", body, "Idempotency-Key", "  k  ")
	e.want(r, 201, "")
	if r.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("a padded key was not the same key")
	}
	// 255 characters is the limit.
	e.want(e.do("POST", "/packages", body, "Idempotency-Key", strings.Repeat("k", 255)), 201, "")
	r = e.do("POST", "/packages", body, "Idempotency-Key", strings.Repeat("k", 256))
	e.want(r, 400, spinbroker.EINVALID)
	if !strings.Contains(string(r.body), "255") {
		t.Errorf("overlong key: %s", r.body)
	}
}

// TestAPI_IdempotencyScopeIgnoresIDCase: ids are case-insensitive, so a
// retry that writes the package's id in upper case is the same request to
// the same package; the key's scope was the path as written, and such a
// retry added the command twice.
func TestAPI_IdempotencyScopeIgnoresIDCase(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	staging := e.createPackage(`[]`, false)
	add := `{"resource": "r", "action": "x"}`
	first := e.do("POST", "/packages/"+staging.ID+"/commands", add, "Idempotency-Key", "add-1")
	e.want(first, 201, "")
	again := e.do("POST", "/packages/"+strings.ToUpper(staging.ID)+"/commands", add, "Idempotency-Key", "add-1")
	e.want(again, 201, "")
	if again.header.Get("Idempotent-Replayed") != "true" || string(again.body) != string(first.body) {
		t.Errorf("the retry in upper case was not a replay: %s", again.body)
	}
	// Nor does an escaped character make it another path.
	escaped := "/packages/" + staging.ID[:35] + "%" + strings.ToUpper(hexOf(staging.ID[35])) + "/commands"
	e.want(e.do("POST", escaped, `{"resource": "r", "action": "y"}`, "Idempotency-Key", "add-1"), 409, spinbroker.ECONFLICT)
	var p spinbroker.Package
	e.do("GET", "/packages/"+staging.ID, "").decode(t, &p)
	if p.Total != 1 {
		t.Fatalf("%d commands, want 1", p.Total)
	}
}

func hexOf(c byte) string { return strconv.FormatInt(int64(c), 16) }

// TestAPI_IdempotencyConflictSaysWhatToDo: a retry whose body was encoded
// again (other whitespace, other field order) is refused 409, and the
// answer said only that the key "was used with a different request": the
// client learnt neither that the bytes must be the same nor that a new
// request takes a new key. It says both now, for a package's create and a
// command's.
func TestAPI_IdempotencyConflictSaysWhatToDo(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	e.want(e.do("POST", "/packages", `{"commands": [{"resource": "r", "action": "x"}]}`, "Idempotency-Key", "k"), 201, "")
	staging := e.createPackage(`[]`, false)
	path := "/packages/" + staging.ID + "/commands"
	e.want(e.do("POST", path, `{"resource": "r", "action": "x"}`, "Idempotency-Key", "k"), 201, "")
	for _, r := range []response{
		e.do("POST", "/packages", `{"commands":[{"resource":"r","action":"x"}]}`, "Idempotency-Key", "k"),
		e.do("POST", path, `{"action": "x", "resource": "r"}`, "Idempotency-Key", "k"),
	} {
		e.want(r, 409, spinbroker.ECONFLICT)
		for _, want := range []string{`Idempotency-Key \"k\"`, "different body", "byte for byte", "new key", "24 hours"} {
			if !strings.Contains(string(r.body), want) {
				t.Errorf("the conflict does not say %q: %s", want, r.body)
			}
		}
	}
}
