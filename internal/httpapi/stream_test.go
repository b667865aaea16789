package httpapi_test

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/httpapi"
	"github.com/spin-broker/spinbroker/internal/syncbuf"
)

// encodedPackage is GET /packages/{id}'s answer as the broker encoded it
// before it streamed it: the package read whole, encoded in one piece.
func (e *env) encodedPackage(id string) []byte {
	e.t.Helper()
	p, err := e.db.Package(ctx, id)
	if err != nil {
		e.t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(p); err != nil {
		e.t.Fatal(err)
	}
	return buf.Bytes()
}

// getPackage answers GET /packages/{id} with its headers and body.
func (e *env) getPackage(id string) (*http.Response, []byte, error) {
	e.t.Helper()
	return e.getStream("/packages/" + id)
}

// getStream answers GET path with its headers and its body, read to its
// end or to the error that cut it.
func (e *env) getStream(path string) (*http.Response, []byte, error) {
	e.t.Helper()
	resp, err := e.srv.Client().Get(e.srv.URL + path)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// bigPackage creates and enqueues a package of n commands whose parameters
// hold about size bytes each, of text that encoding/json escapes (<, >, &,
// U+2028) and of other scripts; some depend on others, some have keys.
func (e *env) bigPackage(n, size int) spinbroker.Package {
	e.t.Helper()
	filler := strings.ToValidUTF8(strings.Repeat("<b>&amp;</b> ñandú ☃ \u2028 ", size/10+1)[:size], "")
	p := e.createPackage(`[]`, false)
	for i := range n {
		deps := ""
		if i > 0 && i%3 == 0 {
			deps = fmt.Sprintf(`, "dependencies": ["k%d"]`, i-1)
		}
		e.want(e.do("POST", "/packages/"+p.ID+"/commands", fmt.Sprintf(`{"key": "k%d", "resource": "big", "action": "a%d", "parameters": {"i": %d, "s": %q}%s}`, i, i, i, filler, deps)), 201, "")
	}
	e.want(e.do("POST", "/packages/"+p.ID+"/enqueue", ""), 200, "")
	return p
}

// TestAPI_PackageStreamedSameBytes: GET /packages/{id} answers, byte for
// byte, what encoding the package read whole answered, for packages small
// and large, empty, in staging, with dependencies, keys, outputs and none,
// failures and HTML-like and non-ASCII text. A small answer still carries
// its Content-Length; one past 1 MiB is streamed (chunked), so that the
// broker holds a batch of commands rather than the package.
func TestAPI_PackageStreamedSameBytes(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	empty := e.createPackage(`[]`, false)
	staged := e.createPackage(`[{"key": "x<y>", "resource": "s", "action": "a", "parameters": {"html": "<script>&</script>", "u": "ünïcödé \u2028"}},
		{"resource": "s", "action": "b", "dependencies": ["x<y>"], "max_attempts": 5, "lease_duration": "2m", "not_before": "2030-01-02T03:04:05.123456789Z"}]`, false)
	ran := e.createPackage(`[{"key": "one", "resource": "run", "action": "a"}, {"key": "two", "resource": "run", "action": "b", "dependencies": ["one"]},
		{"resource": "run", "action": "c", "dependencies": ["two", "`+staged.Commands[0].ID+`"]}, {"resource": "run", "action": "d"}]`, true)
	c := e.next("run")
	e.want(e.do("POST", "/commands/"+c.ID+"/complete", `{"status": true, "lease": "`+c.Lease.Token+`", "output": {"said": "<&> ☃", "n": [1, 2.50, {"z": null}]}}`), 200, "")
	c = e.next("run") // d: a and b's chain waits on b
	e.want(e.do("POST", "/commands/"+c.ID+"/complete", `{"status": false, "reason": "no <space> left & \u2028 done", "lease": "`+c.Lease.Token+`"}`), 200, "")
	// Past the store's batches: of 500 commands, and of 4 MiB.
	var chain []string
	for i := range 1100 {
		dep := ""
		if i > 0 {
			dep = fmt.Sprintf(`, "dependencies": ["c%d"]`, i-1)
		}
		chain = append(chain, fmt.Sprintf(`{"key": "c%d", "resource": "chain", "action": "a"%s}`, i, dep))
	}
	many := e.createPackage("["+strings.Join(chain, ",")+"]", true)
	big := e.bigPackage(160, 30000) // about 5 MiB

	for _, tt := range []struct {
		name     string
		id       string
		streamed bool
	}{
		{"empty", empty.ID, false},
		{"staged", staged.ID, false},
		{"ran", ran.ID, false},
		{"many", many.ID, false},
		{"big", big.ID, true},
		{"big-upper", strings.ToUpper(big.ID), true},
	} {
		resp, body, err := e.getPackage(tt.id)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("%s: %d %s: %.300s", tt.name, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
		if want := e.encodedPackage(strings.ToLower(tt.id)); !bytes.Equal(body, want) {
			i := 0
			for i < min(len(body), len(want)) && body[i] == want[i] {
				i++
			}
			t.Fatalf("%s: the answer differs from the package encoded whole at byte %d of %d (want %d):\ngot  %.200q\nwant %.200q",
				tt.name, i, len(body), len(want), body[max(0, i-40):], want[max(0, i-40):])
		}
		if tt.streamed {
			if resp.ContentLength != -1 || len(resp.TransferEncoding) == 0 {
				t.Fatalf("%s: an answer of %d bytes was sent with Content-Length %d, not streamed", tt.name, len(body), resp.ContentLength)
			}
		} else if len(resp.TransferEncoding) != 0 || resp.ContentLength != int64(len(body)) {
			t.Fatalf("%s: Transfer-Encoding %v, Content-Length %d for a body of %d bytes", tt.name, resp.TransferEncoding, resp.ContentLength, len(body))
		}
	}
	// A package that is not there is still a 404 in the API's shape.
	e.want(e.do("GET", "/packages/01a21d20-0100-7f01-98ab-0905f8abc16a", ""), 404, spinbroker.ENOTFOUND)
}

// TestAPI_PackageStreamBrokenMidway: a fault found once part of a streamed
// answer is sent (here a stored output that is not JSON) cannot become a
// 500 any more: the broker cuts the connection, so that the client sees a
// broken answer rather than one that parses, and logs why.
func TestAPI_PackageStreamBrokenMidway(t *testing.T) {
	var log syncbuf.Buffer
	e := newEnvLogging(t, httpapi.Options{}, &log)
	empty := e.createPackage(`[]`, false)
	big := e.bigPackage(60, 30000)
	raw, err := sql.Open("sqlite", "file:"+e.db.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Exec(`UPDATE commands SET output = '{"cut": ' WHERE package_id = ? AND pos = 55`, big.ID); err != nil {
		t.Fatal(err)
	}
	resp, body, err := e.getPackage(big.ID)
	if err == nil {
		t.Fatalf("the answer was read whole (%d, %d bytes), broken data and all: %.200s", resp.StatusCode, len(body), body)
	}
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("reading the answer: %v, want an unexpected EOF", err)
	}
	if resp.StatusCode != 200 || len(body) < 1<<20 || json.Valid(body) {
		t.Fatalf("%d, %d bytes (valid JSON: %v): want a 200 cut short past its first MiB", resp.StatusCode, len(body), json.Valid(body))
	}
	if !strings.Contains(log.String(), `"msg":"package answer cut off"`) || !strings.Contains(log.String(), `"status":500`) {
		t.Fatalf("no log line says the answer was cut off:\n%s", log.String())
	}
	// The broker goes on answering.
	e.want(e.do("GET", "/packages/"+empty.ID, ""), 200, "")
}

// TestAPI_QueueStreamedSameBytes: GET /queues/{resource} answers, byte for
// byte, what encoding the queue read whole answered: a queue never used,
// one with dependencies, leases and a failure's retry, and one whose 50
// commands hold 30 KB of parameters each, which is streamed (its 50
// commands of 1 MiB took the broker to 546 MB, built whole).
func TestAPI_QueueStreamedSameBytes(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	e.createPackage(`[{"key": "one", "resource": "run", "action": "a", "parameters": {"h": "<&> \u2028"}}, {"key": "two", "resource": "run", "action": "b", "dependencies": ["one"]},
		{"resource": "run", "action": "c"}, {"resource": "run", "action": "d", "not_before": "2030-01-02T03:04:05Z"}]`, true)
	e.next("run")
	e.bigPackage(60, 30000)
	for _, tt := range []struct {
		resource string
		streamed bool
	}{{"never-used", false}, {"run", false}, {"big", true}} {
		resp, body, err := e.getStream("/queues/" + tt.resource)
		if err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("%s: %v %d %s: %.300s", tt.resource, err, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
		q, err := e.db.Queue(ctx, tt.resource)
		if err != nil {
			t.Fatal(err)
		}
		want, err := json.Marshal(q)
		if err != nil {
			t.Fatal(err)
		}
		if want = append(want, '\n'); !bytes.Equal(body, want) {
			t.Fatalf("%s: the answer differs from the queue encoded whole:\ngot  %.300q\nwant %.300q", tt.resource, body, want)
		}
		if tt.streamed != (resp.ContentLength == -1) {
			t.Fatalf("%s: Content-Length %d for a body of %d bytes", tt.resource, resp.ContentLength, len(body))
		}
	}
	e.want(e.do("GET", "/queues/Not_A_Name", ""), 400, spinbroker.EINVALID)
}

// TestAPI_QueueStreamBrokenMidway: as a package's, a queue's streamed
// answer that meets a fault once part of it is sent is cut off, and said.
func TestAPI_QueueStreamBrokenMidway(t *testing.T) {
	var log syncbuf.Buffer
	e := newEnvLogging(t, httpapi.Options{}, &log)
	big := e.bigPackage(50, 30000)
	raw, err := sql.Open("sqlite", "file:"+e.db.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	// Parameters of 30,000 bytes are kept in command_parameters (schema 6).
	r, err := raw.Exec(`UPDATE command_parameters SET parameters = '{"cut": '
		WHERE command_id = (SELECT id FROM commands WHERE package_id = ? AND pos = 45)`, big.ID)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := r.RowsAffected(); n != 1 {
		t.Fatalf("the fault's edit changed %d rows", n)
	}
	resp, body, err := e.getStream("/queues/big")
	if !errors.Is(err, io.ErrUnexpectedEOF) || resp.StatusCode != 200 || len(body) < 1<<20 || json.Valid(body) {
		t.Fatalf("%v, %d, %d bytes: want a 200 cut short past its first MiB", err, resp.StatusCode, len(body))
	}
	if !strings.Contains(log.String(), `"msg":"queue answer cut off"`) {
		t.Fatalf("no log line says the answer was cut off:\n%s", log.String())
	}
}
