package httpapi_test

import (
	"bytes"
	"compress/gzip"
	"strings"
	"testing"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/httpapi"
)

// TestAPI_ContentEncoding: a body sent compressed (Content-Encoding: gzip,
// which some HTTP libraries add) is refused 400 in words that name the
// header, not read as JSON and refused as "not valid UTF-8" or as
// malformed, which sends its author looking at the JSON. Nothing is
// created; identity is no encoding at all and is served.
func TestAPI_ContentEncoding(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(`{"commands": [{"resource": "r", "action": "x"}], "enqueue": true}`))
	zw.Close()
	for _, enc := range []string{"gzip", "br", "deflate"} {
		r := e.do("POST", "/packages", gz.String(), "Content-Encoding", enc)
		e.want(r, 400, spinbroker.EINVALID)
		var b spinbroker.ErrorBody
		if r.decode(t, &b); !strings.Contains(b.Error.Message, "Content-Encoding "+enc) {
			t.Errorf("Content-Encoding %s: %q, want it to name the header", enc, b.Error.Message)
		}
	}
	// The same words on a route whose body is a queue's or a result's.
	e.want(e.do("PATCH", "/queues/r", gz.String(), "Content-Encoding", "gzip"), 400, spinbroker.EINVALID)
	var list spinbroker.PackageList
	if e.do("GET", "/packages", "").decode(t, &list); len(list.Packages) != 0 {
		t.Fatalf("a refused body created %d packages", len(list.Packages))
	}
	e.want(e.do("POST", "/packages", `{}`, "Content-Encoding", "identity"), 201, "")
}

// TestAPI_ByteOrderMark: a body that starts with a UTF-8 byte order mark
// (what Windows tools write at the head of a UTF-8 file: PowerShell's
// Out-File, Notepad) is read as the JSON after it, as RFC 8259 (8.1)
// allows, not refused as "invalid character 'ï' looking for beginning of
// value", a character the client never wrote.
func TestAPI_ByteOrderMark(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	const bom = "\ufeff"
	r := e.do("POST", "/packages", bom+`{"commands": [{"resource": "r", "action": "x"}], "enqueue": true}`)
	e.want(r, 201, "")
	var p spinbroker.Package
	if r.decode(t, &p); p.State != spinbroker.PackageQueued || p.Total != 1 {
		t.Fatalf("created %s", r.body)
	}
	e.want(e.do("PATCH", "/queues/r", bom+`{"concurrency": 2}`), 200, "")
	c := e.next("r")
	e.want(e.do("POST", "/commands/"+c.ID+"/complete", bom+`{"status": true, "lease": "`+c.Lease.Token+`"}`), 200, "")
	// Only at the head: one inside the JSON is still refused.
	e.want(e.do("POST", "/packages", `{`+bom+`}`), 400, spinbroker.EINVALID)
}

// TestAPI_QuerySemicolon: parameters separated by ";" (?wait=30s;lease=60s,
// an old CGI habit) are refused 400 saying to separate them with "&", not
// "escape % as %25", which is advice about a different mistake.
func TestAPI_QuerySemicolon(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	for _, tt := range []struct{ method, path, want string }{
		{"POST", "/queues/r/next?wait=0s;lease=60s", `separate query parameters with "&"`},
		{"GET", "/packages?state=queued;limit=5", `separate query parameters with "&"`},
		{"GET", "/packages?state=%zz", "escape % as %25"},
	} {
		r := e.do(tt.method, tt.path, "")
		e.want(r, 400, spinbroker.EINVALID)
		var b spinbroker.ErrorBody
		if r.decode(t, &b); !strings.Contains(b.Error.Message, tt.want) {
			t.Errorf("%s %s: %q, want it to say %q", tt.method, tt.path, b.Error.Message, tt.want)
		}
	}
}
