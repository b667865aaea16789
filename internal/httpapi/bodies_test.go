package httpapi_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/httpapi"
	"github.com/spin-broker/spinbroker/internal/store"
	"github.com/spin-broker/spinbroker/internal/store/storetest"
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

// TestAPI_BodyReadTimeout: a body that stops arriving until the server's
// read timeout (spinbroker serve --read-timeout) is answered 400 in words
// that say so, not with the text of Go's network error ("read tcp
// 127.0.0.1:8080->127.0.0.1:51234: i/o timeout"), on a write route (whose
// body is read ahead of its turn) and on next (read by its handler).
func TestAPI_BodyReadTimeout(t *testing.T) {
	db, _ := storetest.MustOpen(t, store.Options{})
	api := httpapi.New(db, slog.New(slog.NewTextHandler(io.Discard, nil)), httpapi.Options{})
	srv := httptest.NewUnstartedServer(api.Handler())
	srv.Config.ReadTimeout = 300 * time.Millisecond
	srv.Start()
	t.Cleanup(func() { api.Shutdown(); srv.Close() })
	for _, path := range []string{"/packages", "/queues/r/next", "/commands/complete"} {
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{\"commands\": ", path)
		conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		var b spinbroker.ErrorBody
		json.NewDecoder(resp.Body).Decode(&b)
		resp.Body.Close()
		conn.Close()
		if resp.StatusCode != 400 || b.Error == nil || b.Error.Code != spinbroker.EINVALID {
			t.Fatalf("%s: %d %+v, want 400 invalid_request", path, resp.StatusCode, b.Error)
		}
		if msg := b.Error.Message; !strings.Contains(msg, "read timeout") || strings.Contains(msg, "127.0.0.1") {
			t.Errorf("%s: %q, want it to name the read timeout, not the connection", path, msg)
		}
	}
}
