package httpapi_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/httpapi"
	"github.com/spin-broker/spinbroker/internal/store"
	"github.com/spin-broker/spinbroker/internal/syncbuf"
)

// TestMetrics_MethodLabelBounded: a client invents any method it likes;
// each must not become a histogram of its own in /metrics, with auth on
// and no token too.
func TestMetrics_MethodLabelBounded(t *testing.T) {
	for _, auth := range []bool{false, true} {
		e := newEnv(t, httpapi.Options{Auth: auth, MetricsOpen: true})
		for _, m := range []string{"FOO1", "FOO2", "X" + strings.Repeat("Y", 1000)} {
			e.do(m, "/packages", "")
			e.do(m, "/nowhere", "")
		}
		body := string(e.do("GET", "/metrics", "").body)
		if strings.Contains(body, "FOO1") || strings.Contains(body, "YYYY") {
			t.Errorf("auth %v: invented methods are label values:\n%s", auth, grepLines(body, "method=\""))
		}
		if !strings.Contains(body, `method="other"`) {
			t.Errorf("auth %v: no method=\"other\" series:\n%s", auth, grepLines(body, "method=\""))
		}
	}
}

// TestUnknownMethodUnknownPath: a method no route has, on a path no route
// has, is a 404 (no such route), not a 405 with an empty Allow.
func TestUnknownMethodUnknownPath(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	e.want(e.do("FOO", "/nowhere", ""), 404, spinbroker.ENOTFOUND)
	r := e.do("FOO", "/packages", "")
	e.want(r, 405, spinbroker.EMETHOD)
	if r.header.Get("Allow") == "" {
		t.Error("405 without Allow")
	}
}

// TestMetrics_SurviveDatabaseFailure: when the queues cannot be read,
// /metrics still answers the rest, the gauges that say what is wrong first.
func TestMetrics_SurviveDatabaseFailure(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	e.createPackage(`[{"resource": "r", "action": "a"}]`, true)
	e.db.Close()
	r := e.do("GET", "/metrics", "")
	if r.status != 200 || !strings.Contains(string(r.body), "spinbroker_store_writes_failing") || !strings.Contains(string(r.body), "spinbroker_build_info") {
		t.Fatalf("/metrics with the database closed: %d\n%.500s", r.status, r.body)
	}
}

// TestRequestLog_Route: each request's line names its route pattern
// beside the path, so that lines group by route without parsing ids out.
func TestRequestLog_Route(t *testing.T) {
	var log syncbuf.Buffer
	e := newEnvLogging(t, httpapi.Options{}, &log)
	p := e.createPackage(`[{"resource": "r", "action": "a"}]`, false)
	e.do("GET", "/packages/"+p.ID, "")
	e.do("GET", "/nowhere", "")
	want := map[string]any{"/packages/" + p.ID: "/packages/{id}", "/nowhere": "unmatched"}
	wantRequestLines(t, &log, "route", want)
}

// wantRequestLines waits for the request line of each path in want, and
// checks that its field holds the value want gives (nil: no such field).
func wantRequestLines(t *testing.T, log *syncbuf.Buffer, field string, want map[string]any) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(want) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		for _, l := range strings.Split(strings.TrimSpace(log.String()), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) != nil || m["msg"] != "request" {
				continue
			}
			if v, ok := want[m["path"].(string)]; ok {
				if m[field] != v {
					t.Errorf("line %s: %s %v, want %v", l, field, m[field], v)
				}
				delete(want, m["path"].(string))
			}
		}
	}
	if len(want) > 0 {
		t.Fatalf("lines missing for %v:\n%s", want, log.String())
	}
}

// TestRequestLog_ErrorCode: a request answered with an error has its code
// on its log line (a stale lease and a conflict are both 409); one that
// went well has none.
func TestRequestLog_ErrorCode(t *testing.T) {
	var log syncbuf.Buffer
	e := newEnvLogging(t, httpapi.Options{}, &log)
	e.createPackage(`[{"resource": "r", "action": "a"}]`, true)
	c := e.next("r")
	e.want(e.do("POST", "/commands/"+c.ID+"/complete", `{"status": true, "lease": "not-it"}`), 409, spinbroker.ESTALE)
	e.want(e.do("GET", "/packages/nope", ""), 404, spinbroker.ENOTFOUND)
	e.want(e.do("GET", "/queues", ""), 200, "")
	want := map[string]any{"/commands/" + c.ID + "/complete": spinbroker.ESTALE, "/packages/nope": spinbroker.ENOTFOUND, "/queues": nil}
	wantRequestLines(t, &log, "code", want)
}

// TestMetrics_ResultsAfterRestart: a broker that restarts while commands
// are leased counts their results when their agents report them, though
// nothing was enqueued or delivered on their queue since it started: the
// first results after every deploy went missing from the counters.
func TestMetrics_ResultsAfterRestart(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	e.createPackage(`[{"resource": "ok", "action": "x"}]`, true)
	e.createPackage(`[{"resource": "bad", "action": "x"}]`, true)
	ok, bad := e.next("ok"), e.next("bad")
	// The broker restarts: a new server, with new metrics, on the database.
	api := httpapi.New(e.db, slog.New(slog.DiscardHandler), httpapi.Options{Now: e.clock.Now})
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(func() { api.Shutdown(); srv.Close() })
	e.srv = srv
	e.want(e.complete(ok, true), 200, "")
	e.want(e.complete(bad, false), 200, "")
	m := string(e.do("GET", "/metrics", "").body)
	for _, want := range []string{`spinbroker_commands_succeeded_total{resource="ok"} 1`, `spinbroker_commands_failed_total{resource="bad"} 1`,
		`spinbroker_commands_failed_total{resource="ok"} 0`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s:\n%s", want, grepLines(m, "spinbroker_commands_"))
		}
	}
}

// TestMetrics_LeaseExpiries: a lease that runs out (an agent that died,
// hung or lost the broker) is counted by queue, whether the command goes
// back to ready or, out of attempts, fails; a retry asked for by its agent
// is not one. Without it an alert on agents that take work and never
// report has only redeliveries, which retries move too.
func TestMetrics_LeaseExpiries(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	e.createPackage(`[{"resource": "exp", "action": "x", "max_attempts": 2}, {"resource": "exp", "action": "y"}]`, true)
	const want = `spinbroker_commands_lease_expired_total{resource="exp"} `
	metrics := func() string { return string(e.do("GET", "/metrics", "").body) }
	if m := metrics(); !strings.Contains(m, want+"0\n") {
		t.Fatalf("no series at 0 before the first expiry:\n%s", grepLines(m, "lease_expired"))
	}
	// Expired twice: back to ready, then failed "lease expired".
	for range 2 {
		e.want(e.do("POST", "/queues/exp/next?lease=1s", ""), 200, "")
		e.clock.Add(2 * time.Second)
		if _, err := e.db.Sweep(ctx, store.SweepOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// A retry the agent asks for is no expiry.
	c := e.next("exp")
	e.want(e.do("POST", "/commands/"+c.ID+"/complete", `{"status": false, "retry": true, "lease": "`+c.Lease.Token+`"}`), 200, "")
	if m := metrics(); !strings.Contains(m, want+"2\n") {
		t.Errorf("after two leases ran out and one retry:\n%s", grepLines(m, `resource="exp"`))
	}
}

// TestHealth_FileReplacedBeforeAnyWrite: a database file replaced under
// the running broker (a restore done without stopping it) is reported by
// /healthz and spinbroker_store_writes_failing at once, not only after a
// client's write has failed: an idle broker's monitors stayed green while
// every write it would take was refused.
func TestHealth_FileReplacedBeforeAnyWrite(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	e.createPackage(`[{"resource": "r", "action": "a"}]`, true)
	dir := t.TempDir()
	if err := store.Backup(ctx, e.db.Path(), filepath.Join(dir, "copy.db")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "copy.db"), e.db.Path()); err != nil {
		t.Fatal(err)
	}
	r := e.do("GET", "/healthz", "")
	var h map[string]string
	r.decode(t, &h)
	if r.status != 200 || h["status"] != "degraded" || !strings.Contains(h["writes"], "replaced") {
		t.Errorf("/healthz once the file was replaced: %d %s", r.status, r.body)
	}
	if v, ok := metricValue(string(e.do("GET", "/metrics", "").body), "spinbroker_store_writes_failing"); !ok || v != 1 {
		t.Errorf("spinbroker_store_writes_failing %v (%v), want 1", v, ok)
	}
}

// TestMetrics_WALBytes: the WAL's size has a gauge of its own. It grows
// past its usual 32 MiB only when checkpoints cannot keep up or a reader
// holds them back, which spinbroker_store_bytes (file and WAL together)
// cannot tell from a database that grows.
func TestMetrics_WALBytes(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	e.createPackage(`[{"resource": "r", "action": "a"}]`, true)
	st, err := os.Stat(e.db.Path() + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	v, ok := metricValue(string(e.do("GET", "/metrics", "").body), "spinbroker_store_wal_bytes")
	if !ok || st.Size() == 0 || v != float64(st.Size()) {
		t.Errorf("spinbroker_store_wal_bytes %v (%v), the WAL holds %d bytes", v, ok, st.Size())
	}
}

// TestRequestLog_ClientGone: a request whose client went away before it
// was answered (an agent stopped during its long-poll) is logged and
// counted as 499, nginx's "client closed request", not as status 0, which
// is no HTTP status and which no dashboard or alert knows.
func TestRequestLog_ClientGone(t *testing.T) {
	var log syncbuf.Buffer
	e := newEnvLogging(t, httpapi.Options{}, &log)
	client := &http.Client{Timeout: 200 * time.Millisecond}
	if resp, err := client.Post(e.srv.URL+"/queues/gone/next?wait=5s", "", nil); err == nil {
		resp.Body.Close()
		t.Fatalf("the long-poll answered %d before its client left", resp.StatusCode)
	}
	wantRequestLines(t, &log, "status", map[string]any{"/queues/gone/next": float64(499)})
	m := string(e.do("GET", "/metrics", "").body)
	if !strings.Contains(m, `spinbroker_http_request_duration_seconds_count{code="499",method="POST",route="/queues/{resource}/next"} 1`) {
		t.Errorf("no 499 in the request histogram:\n%s", grepLines(m, "_count{"))
	}
}

// TestMetrics_DocumentedInREADME: every spinbroker_ metric that /metrics
// serves is named in README.md, where an operator writing alerts looks
// for what each one means.
func TestMetrics_DocumentedInREADME(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, httpapi.Options{})
	e.createPackage(`[{"resource": "r", "action": "a"}, {"resource": "r", "action": "b"}]`, true)
	e.want(e.complete(e.next("r"), true), 200, "")
	for _, l := range strings.Split(string(e.do("GET", "/metrics", "").body), "\n") {
		name, ok := strings.CutPrefix(l, "# TYPE ")
		if !ok || !strings.HasPrefix(name, "spinbroker_") {
			continue
		}
		name, _, _ = strings.Cut(name, " ")
		if !strings.Contains(string(readme), "`"+name+"`") {
			t.Errorf("README does not name %s", name)
		}
	}
}

// TestMetrics_Lint: /metrics passes Prometheus's own linter (promlint:
// names with their unit and _total, help on every metric, no camelCase),
// with every kind of series present, so that an operator's recording rules
// and dashboards written by the conventions find what they expect.
func TestMetrics_Lint(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	e.createPackage(`[{"resource": "r", "action": "a"}, {"resource": "r", "action": "b"}]`, true)
	e.want(e.complete(e.next("r"), true), 200, "")
	e.want(e.complete(e.next("r"), false), 200, "")
	body := e.do("GET", "/metrics", "").body
	problems, err := promlint.New(bytes.NewReader(body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	if !bytes.Contains(body, []byte("spinbroker_")) {
		t.Fatalf("no spinbroker_ metric in /metrics:\n%.500s", body)
	}
}

// TestRequestLog_HeadBytes: a HEAD request's line says how many bytes of
// body were sent, none, not the size of the GET's body that Go's server
// ate (16213 on HEAD /metrics); a GET's says its body's size.
func TestRequestLog_HeadBytes(t *testing.T) {
	var log syncbuf.Buffer
	e := newEnvLogging(t, httpapi.Options{}, &log)
	p := e.createPackage(`[{"resource": "r", "action": "a"}]`, true)
	e.want(e.do("HEAD", "/queues", ""), 200, "")
	e.want(e.do("HEAD", "/packages/"+p.ID, ""), 200, "")
	r := e.do("GET", "/queues/r", "")
	e.want(r, 200, "")
	want := map[string]any{"/queues": float64(0), "/packages/" + p.ID: float64(0), "/queues/r": float64(len(r.body))}
	wantRequestLines(t, &log, "bytes", want)
}

// TestLog_LeaseExpired: every lease that runs out is logged at warn with
// its command, package, queue, attempts and where the command goes (back
// to ready, or failed), whether the sweeper settled it or a queue's own
// next did: before, the sweeper's were a count in its "swept" line, and a
// next's were not logged at all, so the log of an agent that died named
// no command.
func TestLog_LeaseExpired(t *testing.T) {
	var log syncbuf.Buffer
	e := newEnvLogging(t, httpapi.Options{}, &log)
	p := e.createPackage(`[{"resource": "exp", "action": "x", "max_attempts": 2}]`, true)
	c := e.next("exp")
	// Settled by the queue's own next, which then delivers it again.
	e.clock.Add(2 * time.Minute)
	again := e.next("exp")
	if again.ID != c.ID {
		t.Fatalf("redelivered %s, want %s", again.ID, c.ID)
	}
	// Settled by the sweeper, out of attempts.
	e.clock.Add(2 * time.Minute)
	if _, err := e.db.Sweep(ctx, store.SweepOptions{}); err != nil {
		t.Fatal(err)
	}
	want := []map[string]any{
		{"level": "WARN", "command_id": c.ID, "package_id": p.ID, "resource": "exp", "attempts": float64(1), "state": "ready"},
		{"level": "WARN", "command_id": c.ID, "package_id": p.ID, "resource": "exp", "attempts": float64(2), "state": "failed"},
	}
	var got []map[string]any
	for deadline := time.Now().Add(5 * time.Second); len(got) < len(want) && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		got = logLines(&log, "lease expired")
	}
	if len(got) != len(want) {
		t.Fatalf("%d lease expired lines, want %d:\n%s", len(got), len(want), log.String())
	}
	if n := len(logLines(&log, "command failed")); n != 0 {
		t.Errorf("a failure by lease expiry is said twice, also as %d command failed line(s):\n%s", n, log.String())
	}
	for i, w := range want {
		for k, v := range w {
			if got[i][k] != v {
				t.Errorf("line %d: %s %v, want %v (%v)", i, k, got[i][k], v, got[i])
			}
		}
	}
}

// TestLog_LeasesExpiredAtOnce: a commit that settles more than a few
// leases (a fleet of agents gone: the sweeper settles up to 1,000 a
// transaction, a queue's own next all of its own) logs one warn line that
// counts them, by where they went and by queue, and each lease's line at
// debug. Each had its warn line: 20,000 leases lost at once were 20,000
// lines (4 MB), written on the store's writer goroutine, which held every
// write for as long (0.25 s for 10,000).
func TestLog_LeasesExpiredAtOnce(t *testing.T) {
	var log syncbuf.Buffer
	e := newEnvLogger(t, httpapi.Options{}, slog.New(slog.NewJSONHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug})))
	e.want(e.do("PATCH", "/queues/many", `{"concurrency": 20}`), 200, "")
	e.want(e.do("PATCH", "/queues/few", `{"concurrency": 5}`), 200, "")
	var cmds []string
	for range 20 {
		cmds = append(cmds, `{"resource": "many", "action": "x"}`)
	}
	for range 5 {
		cmds = append(cmds, `{"resource": "few", "action": "x", "max_attempts": 1}`)
	}
	e.createPackage("["+strings.Join(cmds, ",")+"]", true)
	e.want(e.do("POST", "/queues/many/claim", `{"max": 20}`), 200, "")
	e.want(e.do("POST", "/queues/few/claim", `{"max": 5}`), 200, "")
	e.clock.Add(2 * time.Minute)
	if res, err := e.db.Sweep(ctx, store.SweepOptions{}); err != nil || res.LeasesSettled != 25 {
		t.Fatalf("sweep settled %d leases (%v), want 25", res.LeasesSettled, err)
	}
	wantSummed(t, &log, "leases expired", map[string]any{"level": "WARN", "leases": float64(25), "ready": float64(20),
		"failed": float64(5), "queues": float64(2), "resources": "many,few"}, "lease expired", 25)
}

// wantSummed checks that log has one line summary with the fields of want,
// and n lines each, one per thing it sums, at debug with their command.
func wantSummed(t *testing.T, log *syncbuf.Buffer, summary string, want map[string]any, each string, n int) {
	t.Helper()
	var got []map[string]any
	for deadline := time.Now().Add(5 * time.Second); len(got) == 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		got = logLines(log, summary)
	}
	if len(got) != 1 {
		t.Fatalf("%d %s lines, want 1:\n%s", len(got), summary, log.String())
	}
	for k, v := range want {
		if got[0][k] != v {
			t.Errorf("%s %v, want %v (%v)", k, got[0][k], v, got[0])
		}
	}
	lines := logLines(log, each)
	if len(lines) != n {
		t.Fatalf("%d %s lines, want one each, %d", len(lines), each, n)
	}
	for _, l := range lines {
		if l["level"] != "DEBUG" || l["command_id"] == nil {
			t.Fatalf("a %s line %v, want it at debug with its command", each, l)
		}
	}
}

// TestLog_CommandFailed: a command that fails for good, by its agent's
// result or by a person's hand, is logged at warn with its command,
// package, queue and attempts, once; the commands its failure cancels
// downstream are not lines of their own. Only the agent's log said it.
func TestLog_CommandFailed(t *testing.T) {
	var log syncbuf.Buffer
	e := newEnvLogging(t, httpapi.Options{}, &log)
	p := e.createPackage(`[{"key": "a", "resource": "f", "action": "x"}, {"resource": "g", "action": "y", "dependencies": ["a"]}]`, true)
	a := e.next("f")
	e.want(e.do("POST", "/commands/"+a.ID+"/complete", `{"status": false, "reason": "disk on fire", "lease": "`+a.Lease.Token+`"}`), 200, "")
	q := e.createPackage(`[{"resource": "h", "action": "z"}]`, true)
	byHand := q.Commands[0]
	e.want(e.do("POST", "/commands/"+byHand.ID+"/complete", `{"status": false, "reason": "not wanted"}`), 200, "")
	want := []map[string]any{
		{"level": "WARN", "command_id": a.ID, "package_id": p.ID, "resource": "f", "attempts": float64(1)},
		{"level": "WARN", "command_id": byHand.ID, "package_id": q.ID, "resource": "h", "attempts": float64(0)},
	}
	var got []map[string]any
	for deadline := time.Now().Add(5 * time.Second); len(got) < len(want) && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		got = logLines(&log, "command failed")
	}
	if len(got) != len(want) {
		t.Fatalf("%d command failed lines, want %d:\n%s", len(got), len(want), log.String())
	}
	for i, w := range want {
		for k, v := range w {
			if got[i][k] != v {
				t.Errorf("line %d: %s %v, want %v (%v)", i, k, got[i][k], v, got[i])
			}
		}
	}
}

// TestLog_CommandsFailedAtOnce: a commit in which more than a few commands
// fail for good (a batch of results from agents whose dependency is down)
// logs one warn line that counts them by queue, and each command's line
// at debug, as leases that run out at once do.
func TestLog_CommandsFailedAtOnce(t *testing.T) {
	var log syncbuf.Buffer
	e := newEnvLogger(t, httpapi.Options{}, slog.New(slog.NewJSONHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug})))
	e.want(e.do("PATCH", "/queues/a", `{"concurrency": 8}`), 200, "")
	e.want(e.do("PATCH", "/queues/b", `{"concurrency": 4}`), 200, "")
	var cmds []string
	for range 8 {
		cmds = append(cmds, `{"resource": "a", "action": "x"}`)
	}
	for range 4 {
		cmds = append(cmds, `{"resource": "b", "action": "x"}`)
	}
	e.createPackage("["+strings.Join(cmds, ",")+"]", true)
	var results []string
	for _, q := range []string{"a", "b"} {
		r := e.do("POST", "/queues/"+q+"/claim", `{"max": 8}`)
		e.want(r, 200, "")
		var got struct{ Commands []spinbroker.Command }
		r.decode(t, &got)
		for _, c := range got.Commands {
			results = append(results, `{"id": "`+c.ID+`", "status": false, "reason": "dependency down", "lease": "`+c.Lease.Token+`"}`)
		}
	}
	e.want(e.do("POST", "/commands/complete", `{"results": [`+strings.Join(results, ",")+`]}`), 200, "")
	wantSummed(t, &log, "commands failed", map[string]any{"level": "WARN", "commands": float64(12), "queues": float64(2),
		"resources": "a,b"}, "command failed", 12)
}

// logLines are the lines of log whose msg is msg, decoded.
func logLines(log *syncbuf.Buffer, msg string) []map[string]any {
	var got []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(log.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == msg {
			got = append(got, m)
		}
	}
	return got
}

// TestRequestLog_CutOff: a request still running when a stop cuts it off
// (CutOff, then its connection closed) is logged and counted as a 503
// unavailable with cut_off=true, at info: an upload whose body stopped
// arriving with its connection was logged as the client's 400.
func TestRequestLog_CutOff(t *testing.T) {
	var log syncbuf.Buffer
	e := newEnvLogging(t, httpapi.Options{}, &log)
	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "POST /packages HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{\"comm"); err != nil {
		t.Fatal(err)
	}
	// The handler holds the body's first bytes: it is running.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if v, _ := metricValue(string(e.do("GET", "/metrics", "").body), "spinbroker_http_body_bytes"); v > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the upload never reached its handler")
		}
		time.Sleep(5 * time.Millisecond)
	}
	e.api.CutOff()
	e.srv.CloseClientConnections()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(conn); len(b) != 0 || err != nil {
		t.Fatalf("the upload cut off was answered %q (%v), want its connection closed", b, err)
	}
	for field, want := range map[string]any{"status": float64(503), "code": spinbroker.EUNAVAILABLE, "cut_off": true, "level": "INFO"} {
		wantRequestLines(t, &log, field, map[string]any{"/packages": want})
	}
	m := string(e.do("GET", "/metrics", "").body)
	if !strings.Contains(m, `spinbroker_http_request_duration_seconds_count{code="503",method="POST",route="/packages"} 1`) {
		t.Errorf("the upload cut off is not counted as a 503:\n%s", grepLines(m, "_count{"))
	}
}
