package httpapi

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/spin-broker/spinbroker/internal/store"
	"github.com/spin-broker/spinbroker/internal/store/storetest"
)

// TestWriteDeadline_FromTheBody: the time an answer has to be written
// (defaultWriteTimeout) counts from when its request's body has arrived,
// not from its headers. A create whose body took longer than that to
// upload (a large one over a slow link, within --read-timeout, which the
// README says to raise for them) was committed and logged 201, but its
// answer could no longer be written: the client saw the connection close,
// and a retry without an Idempotency-Key created the package twice. So
// was an error answer to such a body, and a next's without a wait.
func TestWriteDeadline_FromTheBody(t *testing.T) {
	was := defaultWriteTimeout
	defaultWriteTimeout = 500 * time.Millisecond
	t.Cleanup(func() { defaultWriteTimeout = was })
	db, _ := storetest.MustOpen(t, store.Options{})
	s := New(db, slog.New(slog.NewTextHandler(io.Discard, nil)), Options{})
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(func() { s.Shutdown(); srv.Close() })

	for _, tt := range []struct {
		path, body string
		want       int
	}{
		{"/packages", `{"commands": [{"resource": "r", "action": "x"}], "enqueue": true}`, 201},
		{"/packages", `{"commands": [`, 400},
		{"/queues/r/next", `{}`, 200},
	} {
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n%s", tt.path, len(tt.body), tt.body[:1])
		// The rest of the body comes after the write timeout has passed
		// since the headers.
		time.Sleep(3 * defaultWriteTimeout)
		io.WriteString(conn, tt.body[1:])
		conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("POST %s with a slow body: no answer: %v", tt.path, err)
		}
		b, err := io.ReadAll(resp.Body)
		conn.Close()
		if err != nil || resp.StatusCode != tt.want {
			t.Fatalf("POST %s with a slow body: %d %s (%v), want %d", tt.path, resp.StatusCode, strings.TrimSpace(string(b)), err, tt.want)
		}
	}
}
