package httpapi_test

import (
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/httpapi"
	"github.com/spin-broker/spinbroker/internal/store"
	"github.com/spin-broker/spinbroker/internal/syncbuf"
)

// scrape reads the broker's /metrics into its series, each keyed by its
// name and labels as written ("name{a=\"b\"}").
func (e *env) scrape() map[string]float64 {
	e.t.Helper()
	r := e.do("GET", "/metrics", "")
	if r.status != 200 {
		e.t.Fatalf("/metrics: %d %s", r.status, r.body)
	}
	m := map[string]float64{}
	for _, l := range strings.Split(string(r.body), "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			e.t.Fatalf("line %q: %v", l, err)
		}
		m[l[:i]] = v
	}
	return m
}

// TestMetrics_GaugesAreQueues: after a scenario with blocked, ready and
// leased commands on two queues, one of them with a setting, each queue's
// gauges in /metrics are what GET /queues says, which a dashboard puts
// side by side.
func TestMetrics_GaugesAreQueues(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	e.createPackage(`[{"key": "a", "resource": "g1", "action": "x"}, {"resource": "g2", "action": "y", "dependencies": ["a"]}, {"resource": "g1", "action": "z"}]`, true)
	e.createPackage(`[{"resource": "g2", "action": "x"}, {"resource": "g2", "action": "x"}]`, true)
	e.want(e.do("PATCH", "/queues/g2", `{"concurrency": 3}`), 200, "")
	e.next("g1")
	e.next("g2")
	e.clock.Add(7 * time.Second)
	var qs struct{ Queues []spinbroker.Queue }
	e.do("GET", "/queues", "").decode(t, &qs)
	if len(qs.Queues) != 2 || qs.Queues[0].OldestReadyAgeSeconds != 7 {
		t.Fatalf("GET /queues: %+v", qs.Queues)
	}
	m := e.scrape()
	check := func(k string, want float64) {
		t.Helper()
		if got, ok := m[k]; !ok || got != want {
			t.Errorf("%s = %v (there: %v), GET /queues says %v", k, got, ok, want)
		}
	}
	for _, q := range qs.Queues {
		for state, n := range map[string]int{"blocked": q.Counts.Blocked, "ready": q.Counts.Ready, "leased": q.Counts.Leased} {
			check(fmt.Sprintf(`spinbroker_queue_commands{resource=%q,state=%q}`, q.Resource, state), float64(n))
		}
		check(fmt.Sprintf(`spinbroker_queue_oldest_ready_age_seconds{resource=%q}`, q.Resource), q.OldestReadyAgeSeconds)
		check(fmt.Sprintf(`spinbroker_queue_concurrency{resource=%q}`, q.Resource), float64(q.Concurrency))
	}
}

// TestMetrics_WaitingPolls: spinbroker_queue_waiting_polls and
// spinbroker_http_waits count the agents waiting now: three, then two once
// one disconnects mid-wait, one once another is given work, and none once
// the rest leave.
func TestMetrics_WaitingPolls(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	e.createPackage(`[{"resource": "w", "action": "x"}]`, true)
	e.want(e.complete(e.next("w"), true), 200, "")
	var ws []*waiter
	for range 3 {
		ws = append(ws, e.hold("", "POST", "/queues/w/next?wait=60s", "", false))
	}
	const k = `spinbroker_queue_waiting_polls{resource="w"}`
	waitSeries := func(want float64) {
		deadline := time.Now().Add(10 * time.Second)
		for {
			m := e.scrape()
			if m[k] == want && m["spinbroker_http_waits"] == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s = %v, http_waits = %v, want %v", k, m[k], m["spinbroker_http_waits"], want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitSeries(3)
	ws[0].cancel()
	<-ws[0].done
	waitSeries(2)
	// A command arrives: one of them takes it, the other waits on.
	e.createPackage(`[{"resource": "w", "action": "y"}]`, true)
	waitSeries(1)
	ws[1].cancel()
	ws[2].cancel()
	waitSeries(0)
}

// TestMetrics_CountersCountOnce: each event moves its counter once: a
// failure's cascade of three counts three cancelled, on their own queues;
// a package cancel, each command it cancels; a lease that runs out, once
// whether the sweeper or the queue's next settles it; every lease after
// the first (expiries and a retry) is a redelivery.
func TestMetrics_CountersCountOnce(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	// A package whose first command fails: a cascade of 3.
	e.createPackage(`[{"key": "a", "resource": "c", "action": "x", "max_attempts": 1}, {"key": "b", "resource": "c", "action": "y", "dependencies": ["a"]}, {"key": "d", "resource": "c", "action": "y", "dependencies": ["b"]}, {"resource": "c2", "action": "y", "dependencies": ["d"]}]`, true)
	e.want(e.complete(e.next("c"), false), 200, "")
	m := e.scrape()
	want := map[string]float64{
		`spinbroker_commands_enqueued_total{resource="c"}`:   3,
		`spinbroker_commands_enqueued_total{resource="c2"}`:  1,
		`spinbroker_commands_delivered_total{resource="c"}`:  1,
		`spinbroker_commands_failed_total{resource="c"}`:     1,
		`spinbroker_commands_cancelled_total{resource="c"}`:  2,
		`spinbroker_commands_cancelled_total{resource="c2"}`: 1,
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("cascade: %s = %v, want %v", k, m[k], v)
		}
	}
	// A queued package cancelled: its 2 ready commands.
	p := e.createPackage(`[{"resource": "c3", "action": "x"}, {"resource": "c3", "action": "x"}]`, true)
	e.want(e.do("POST", "/packages/"+p.ID+"/cancel", ""), 200, "")
	if got := e.scrape()[`spinbroker_commands_cancelled_total{resource="c3"}`]; got != 2 {
		t.Errorf("queued package cancelled: %v, want 2", got)
	}
	// Lease expiries: one by the sweeper, one by next.
	e.createPackage(`[{"resource": "x", "action": "x", "max_attempts": 5}]`, true)
	e.want(e.do("POST", "/queues/x/next?lease=1s", ""), 200, "")
	e.clock.Add(2 * time.Second)
	if _, err := e.db.Sweep(ctx, store.SweepOptions{}); err != nil {
		t.Fatal(err)
	}
	e.want(e.do("POST", "/queues/x/next?lease=1s", ""), 200, "")
	e.clock.Add(2 * time.Second)
	c := e.next("x") // settles the expired lease, then leases again
	if c == nil {
		t.Fatal("nothing after the lease ran out")
	}
	// And a retry the agent asks for.
	e.want(e.do("POST", "/commands/"+c.ID+"/complete", `{"status": false, "retry": true, "lease": "`+c.Lease.Token+`"}`), 200, "")
	e.clock.Add(10 * time.Second)
	c = e.next("x")
	e.want(e.complete(c, true), 200, "")
	if _, err := e.db.Sweep(ctx, store.SweepOptions{}); err != nil {
		t.Fatal(err)
	}
	m = e.scrape()
	want = map[string]float64{
		`spinbroker_commands_enqueued_total{resource="x"}`:      1,
		`spinbroker_commands_delivered_total{resource="x"}`:     4,
		`spinbroker_commands_redelivered_total{resource="x"}`:   3,
		`spinbroker_commands_lease_expired_total{resource="x"}`: 2,
		`spinbroker_commands_succeeded_total{resource="x"}`:     1,
		`spinbroker_commands_failed_total{resource="x"}`:        0,
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v", k, m[k], v)
		}
	}
}

// TestMetrics_RouteLabelIsPattern: the histogram's route label is the
// route's pattern: distinct ids and resources, paths no route has, methods
// no route takes and refused tokens make no label of their own, or a
// thousand packages would make a thousand histograms.
func TestMetrics_RouteLabelIsPattern(t *testing.T) {
	for _, auth := range []bool{false, true} {
		e := newEnv(t, httpapi.Options{Auth: auth, MetricsOpen: true})
		if auth {
			e.token = e.secret("admin", "", "a")
		}
		for i := range 40 {
			id := fmt.Sprintf("0190a000-0000-7000-8000-%012d", i)
			for _, p := range []string{"/packages/" + id, "/packages/" + id + "/cancel", "/packages/" + id + "/", "/commands/" + id, "/commands/" + id + "/complete",
				"/queues/q" + strconv.Itoa(i), "/queues/q" + strconv.Itoa(i) + "/next", "/ui/packages/" + id, "/ui/commands/" + id, "/ui/queues/q" + strconv.Itoa(i),
				"/ui/static/x" + strconv.Itoa(i), "/nowhere/" + id, "/packages/" + id + "/x/y", "//packages/" + id, "/packages//" + id} {
				for _, m := range []string{"GET", "POST", "PUT", "DELETE", "PATCH", "FOO"} {
					e.do(m, p, "")
				}
			}
			if auth {
				saved := e.token
				e.token = "bad"
				e.do("GET", "/packages/"+id, "")
				e.token = saved
			}
		}
		routes := map[string]bool{}
		for k := range e.scrape() {
			if !strings.HasPrefix(k, "spinbroker_http_request_duration_seconds_count") {
				continue
			}
			i := strings.Index(k, `route="`)
			r := k[i+7:]
			routes[r[:strings.IndexByte(r, '"')]] = true
		}
		for r := range routes {
			if strings.Contains(r, "0190a000") || strings.Contains(r, "q1") || strings.Contains(r, "x1") {
				t.Errorf("auth %v: route label %q", auth, r)
			}
		}
		if !routes["/packages/{id}"] || !routes["/ui/queues/{resource}"] || !routes["unmatched"] {
			t.Errorf("auth %v: route labels %v", auth, routes)
		}
	}
}

// TestMetrics_Auth: with auth on, /metrics wants a token (a scraper sent
// none or a bad one is answered 401 in the API's shape); an agent's
// scrape holds its own queue's series only; with --metrics-open anyone
// reads it, a bad token aside.
func TestMetrics_Auth(t *testing.T) {
	e := newEnv(t, httpapi.Options{Auth: true})
	admin := e.secret("admin", "", "a")
	e.token = admin
	e.createPackage(`[{"resource": "mine", "action": "x"}, {"resource": "theirs", "action": "x"}]`, true)
	for _, tok := range []string{"", "bad", "Bearer", strings.Repeat("x", 5000)} {
		e.token = tok
		e.want(e.do("GET", "/metrics", ""), 401, spinbroker.EUNAUTHORIZED)
	}
	e.token = e.secret("agent", "mine", "ag")
	r := e.do("GET", "/metrics", "")
	if strings.Contains(string(r.body), "theirs") || !strings.Contains(string(r.body), `resource="mine"`) {
		t.Errorf("agent's scrape:\n%s", grepLines(string(r.body), "resource="))
	}
	o := newEnv(t, httpapi.Options{Auth: true, MetricsOpen: true})
	o.token = "bad"
	if r := o.do("GET", "/metrics", ""); r.status != 200 || !strings.Contains(string(r.body), "spinbroker_build_info") {
		t.Errorf("--metrics-open, a bad token: %d", r.status)
	}
}

// TestMetrics_NotStored: a scrape is answered no-store, as every other
// answer to a token is: what it holds depends on the token (an agent's
// holds its own queue's series only; the dashboard's cookie reaches it
// too), and a cache in between must neither keep an admin's scrape nor
// answer it to another.
func TestMetrics_NotStored(t *testing.T) {
	e := newEnv(t, httpapi.Options{Auth: true})
	for _, tok := range []string{e.secret("admin", "", "a"), e.secret("agent", "mine", "ag")} {
		e.token = tok
		r := e.do("GET", "/metrics", "")
		if r.status != 200 || r.header.Get("Cache-Control") != "no-store" {
			t.Errorf("a scrape: %d, Cache-Control %q, want no-store", r.status, r.header.Get("Cache-Control"))
		}
	}
}

// TestMetrics_RestartSeriesAtZero: a restarted broker has the counters of
// the queues already there at 0 before their first event, and each event
// then counts once: the first after a restart (here a lease of an agent
// that died with the old broker, run out) made its series at 1, which
// rate() and increase() read as no change, so the README's alert on
// expiries missed it.
func TestMetrics_RestartSeriesAtZero(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	e.createPackage(`[{"resource": "exp", "action": "x"}]`, true)
	e.want(e.do("POST", "/queues/exp/next?lease=1s", ""), 200, "")
	// The broker restarts: a new server, with new metrics, on the database.
	api := httpapi.New(e.db, slog.New(slog.DiscardHandler), httpapi.Options{Now: e.clock.Now})
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(func() { api.Shutdown(); srv.Close() })
	e.srv = srv
	const k = `spinbroker_commands_lease_expired_total{resource="exp"}`
	m := e.scrape()
	for _, k := range []string{k, `spinbroker_commands_enqueued_total{resource="exp"}`, `spinbroker_commands_failed_total{resource="exp"}`} {
		if v, ok := m[k]; !ok || v != 0 {
			t.Errorf("after a restart, before the lease ran out: %s = %v (there: %v)", k, v, ok)
		}
	}
	e.clock.Add(2 * time.Second)
	if _, err := e.db.Sweep(ctx, store.SweepOptions{}); err != nil {
		t.Fatal(err)
	}
	if v := e.scrape()[k]; v != 1 {
		t.Errorf("after the lease ran out: %s = %v", k, v)
	}
}

// TestMetrics_RefusedTokenRoute: a request refused 401 before it was
// routed is counted and logged under the route its path and method
// match, as any other request: "unmatched" is for paths no route has.
func TestMetrics_RefusedTokenRoute(t *testing.T) {
	var log syncbuf.Buffer
	e := newEnvLogging(t, httpapi.Options{Auth: true, MetricsOpen: true}, &log)
	const id = "0190a000-0000-7000-8000-000000000001"
	e.token = "bad"
	e.want(e.do("GET", "/packages/"+id, ""), 401, spinbroker.EUNAUTHORIZED)
	e.want(e.do("POST", "/queues/q/next", ""), 401, spinbroker.EUNAUTHORIZED)
	e.want(e.do("GET", "/nowhere", ""), 401, spinbroker.EUNAUTHORIZED)
	m := e.scrape()
	for _, k := range []string{`spinbroker_http_request_duration_seconds_count{code="401",method="GET",route="/packages/{id}"}`,
		`spinbroker_http_request_duration_seconds_count{code="401",method="POST",route="/queues/{resource}/next"}`,
		`spinbroker_http_request_duration_seconds_count{code="401",method="GET",route="unmatched"}`} {
		if m[k] != 1 {
			t.Errorf("%s = %v, want 1", k, m[k])
		}
	}
	wantRequestLines(t, &log, "route", map[string]any{"/packages/" + id: "/packages/{id}", "/nowhere": "unmatched"})
}

// TestMetrics_OperatorRetryIsNoRedelivery: a person's retry of a failed
// command starts its attempts again (API.md), and its next lease is a
// delivery, not a redelivery: spinbroker_commands_redelivered_total counts
// the at-least-once kind, an agent's retry or a lease run out.
func TestMetrics_OperatorRetryIsNoRedelivery(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	e.createPackage(`[{"resource": "r", "action": "x", "max_attempts": 1}]`, true)
	c := e.next("r")
	e.want(e.complete(c, false), 200, "")
	e.want(e.do("POST", "/commands/"+c.ID+"/retry", ""), 200, "")
	if c = e.next("r"); c == nil || c.Attempts != 1 {
		t.Fatalf("after a person's retry: %+v", c)
	}
	m := e.scrape()
	if d, r := m[`spinbroker_commands_delivered_total{resource="r"}`], m[`spinbroker_commands_redelivered_total{resource="r"}`]; d != 2 || r != 0 {
		t.Errorf("delivered %v, redelivered %v; want 2, 0", d, r)
	}
}
