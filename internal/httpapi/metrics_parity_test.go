package httpapi_test

import (
	"bytes"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/spin-broker/spinbroker/internal/httpapi"
	"github.com/spin-broker/spinbroker/internal/store"
)

// metricsWorld gives e (auth on, e.token an admin's) queues with every
// kind of per-queue series: blocked, ready and leased commands, work
// waiting for a while, successes, failures and their cascade, a cancelled
// package, an expired lease and a retry, settings (a queue paused, one
// with a concurrency and no command at all), agents that asked at
// different times. It returns the resources.
func metricsWorld(t *testing.T, e *env) []string {
	t.Helper()
	e.createPackage(`[{"key": "a", "resource": "alpha", "action": "x", "max_attempts": 1}, {"key": "b", "resource": "beta", "action": "y", "dependencies": ["a"]}, {"resource": "gamma", "action": "z", "dependencies": ["b"]}]`, true)
	e.createPackage(`[{"key": "a", "resource": "alpha", "action": "x"}, {"resource": "beta", "action": "y", "dependencies": ["a"]}, {"resource": "alpha", "action": "z"}]`, true)
	e.createPackage(`[{"resource": "beta", "action": "x", "max_attempts": 3}, {"resource": "beta", "action": "x"}, {"resource": "gamma", "action": "x"}]`, true)
	p := e.createPackage(`[{"resource": "delta", "action": "x"}, {"resource": "delta", "action": "x"}]`, true)
	e.want(e.do("POST", "/packages/"+p.ID+"/cancel", ""), 200, "")
	e.createPackage(`[{"resource": "delta", "action": "x"}]`, true)
	e.want(e.do("PATCH", "/queues/gamma", `{"concurrency": 4, "paused": true}`), 200, "")
	e.want(e.do("PATCH", "/queues/settings-only", `{"concurrency": 7}`), 200, "")
	e.clock.Add(3 * time.Second)
	e.want(e.complete(e.next("alpha"), false), 200, "") // fails: beta's and gamma's cancelled
	e.clock.Add(2 * time.Second)
	e.want(e.complete(e.next("alpha"), true), 200, "")
	e.want(e.do("POST", "/queues/beta/next?lease=1s", ""), 200, "")
	e.clock.Add(5 * time.Second)
	if _, err := e.db.Sweep(ctx, store.SweepOptions{}); err != nil {
		t.Fatal(err)
	}
	c := e.next("beta") // the expired one, again
	e.want(e.do("POST", "/commands/"+c.ID+"/complete", `{"status": false, "retry": true, "lease": "`+c.Lease.Token+`"}`), 200, "")
	e.next("delta")
	e.next("epsilon") // nothing there: asked, no queue
	e.clock.Add(1500 * time.Millisecond)
	return []string{"alpha", "beta", "gamma", "delta", "settings-only", "epsilon"}
}

// family is one metric family of a text scrape: its HELP and TYPE lines
// and its samples.
type family struct {
	name    string
	header  []string
	samples []string
}

// families splits a scrape in Prometheus's text format into its families.
func families(t *testing.T, body []byte) []family {
	t.Helper()
	var fs []family
	for _, l := range strings.Split(strings.TrimSuffix(string(body), "\n"), "\n") {
		if name, ok := strings.CutPrefix(l, "# HELP "); ok {
			fs = append(fs, family{name: strings.Fields(name)[0], header: []string{l}})
			continue
		}
		if len(fs) == 0 {
			t.Fatalf("line %q before any # HELP", l)
		}
		f := &fs[len(fs)-1]
		if strings.HasPrefix(l, "#") {
			f.header = append(f.header, l)
		} else {
			f.samples = append(f.samples, l)
		}
	}
	return fs
}

// perQueue reports whether f's series are a queue's (labelled by resource).
func (f family) perQueue() bool {
	return slices.ContainsFunc(f.samples, func(s string) bool { return strings.Contains(s, `resource="`) })
}

// text writes fs back in the text format.
func text(fs []family) string {
	var b strings.Builder
	for _, f := range fs {
		for _, l := range append(append([]string{}, f.header...), f.samples...) {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// own is the per-queue families of fs with only resource's series, those
// left with none dropped: what an agent of resource may see of them.
func own(fs []family, resource string) []family {
	var out []family
	for _, f := range fs {
		if !f.perQueue() {
			continue
		}
		var samples []string
		for _, s := range f.samples {
			if strings.Contains(s, `resource="`+resource+`"`) {
				samples = append(samples, s)
			}
		}
		if len(samples) > 0 {
			out = append(out, family{name: f.name, header: f.header, samples: samples})
		}
	}
	return out
}

// TestMetrics_PerQueueGolden: the per-queue series of a scrape of a fixed
// world (every family labelled by resource, with HELP and TYPE) are
// testdata/golden/metrics.txt, so that a change to how they are gathered
// cannot change what a scraper reads unseen. Run with -update after an
// intended change.
func TestMetrics_PerQueueGolden(t *testing.T) {
	e := newEnv(t, httpapi.Options{Auth: true})
	e.token = e.secret("admin", "", "a")
	metricsWorld(t, e)
	r := e.do("GET", "/metrics", "")
	e.want(r, 200, "")
	var perQueue []family
	for _, f := range families(t, r.body) {
		if f.perQueue() {
			perQueue = append(perQueue, f)
		}
	}
	golden(t, "the scrape's per-queue series", filepath.Join("testdata", "golden", "metrics.txt"), []byte(text(perQueue)))
}

// TestMetrics_AgentScrapeIsOwnPart: an agent token's scrape holds, of the
// per-queue families, exactly the full scrape's series of its own
// resource, with the same HELP and TYPE and values (for each queue of a
// world with traffic, for one with settings only; none for a resource an
// agent asked that has no queue, nor one never used), none of another
// queue's, and every family of
// the broker's own (build, store, HTTP, Go, process) the full scrape has.
func TestMetrics_AgentScrapeIsOwnPart(t *testing.T) {
	e := newEnv(t, httpapi.Options{Auth: true})
	admin := e.secret("admin", "", "a")
	e.token = admin
	resources := metricsWorld(t, e)
	for _, resource := range append(resources, "never-used") {
		t.Run(resource, func(t *testing.T) {
			e.token = admin
			full := families(t, e.want200("/metrics"))
			e.token = e.secret("agent", resource, "agent-"+resource)
			mine := families(t, e.want200("/metrics"))
			var mineQueue []family
			var globalFull, globalMine []string
			for _, f := range mine {
				if f.perQueue() {
					mineQueue = append(mineQueue, f)
				} else {
					globalMine = append(globalMine, f.name)
				}
			}
			for _, f := range full {
				if !f.perQueue() {
					globalFull = append(globalFull, f.name)
				}
			}
			if got, want := text(mineQueue), text(own(full, resource)); got != want {
				t.Errorf("agent's per-queue series:\n%s\nthe full scrape's of %s:\n%s", got, resource, want)
			}
			if resource != "never-used" && resource != "epsilon" && len(mineQueue) == 0 {
				t.Errorf("no series of %s in its agent's scrape", resource)
			}
			if !slices.Equal(globalMine, globalFull) {
				t.Errorf("agent's other families %v, full scrape's %v", globalMine, globalFull)
			}
		})
	}
}

// want200 GETs path, wants a 200, and returns its body.
func (e *env) want200(path string) []byte {
	e.t.Helper()
	r := e.do("GET", path, "")
	e.want(r, 200, "")
	return r.body
}

// scrapeAllocs is how many allocations a scrape of e's /metrics with
// token makes, served in this process; it wants a 200 holding want.
func scrapeAllocs(t *testing.T, e *env, token, want string) float64 {
	t.Helper()
	return testing.AllocsPerRun(3, func() {
		req := httptest.NewRequest("GET", "/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		w := httptest.NewRecorder()
		e.api.Handler().ServeHTTP(w, req)
		if w.Code != 200 || !strings.Contains(w.Body.String(), want) {
			t.Fatalf("scrape: %d\n%.2000s", w.Code, w.Body)
		}
	})
}

// TestMetrics_AgentScrapeCostsItsQueue: an agent token's scrape costs what
// its own queue's series cost, whatever the other queues: with 2,000
// queues it allocates about what it does with 10 (before, it gathered
// every queue's series and filtered them, so each agent's scrape cost a
// full one and 2,000 agents a thousand times that).
func TestMetrics_AgentScrapeCostsItsQueue(t *testing.T) {
	e := newEnv(t, httpapi.Options{Auth: true})
	loadQueues(t, e, 0, 10)
	agent := e.secret("agent", queueName(5), "agent")
	want := `resource="` + queueName(5) + `"`
	few := scrapeAllocs(t, e, agent, want)
	loadQueues(t, e, 10, 2_000)
	if many := scrapeAllocs(t, e, agent, want); many > 2*few {
		t.Errorf("an agent's scrape allocates %.0f times with 2,000 queues, %.0f with 10", many, few)
	}
}

// TestMetrics_FullScrapeAllocsPerQueue: a full scrape makes a few
// allocations per queue (its row's, its label's; each family's series are
// made at once), not one or more per series: before, a registry made 120
// per queue (a metric per series, its labels, its copy, its check), which
// at 50,000 queues was 450 MB per scrape.
func TestMetrics_FullScrapeAllocsPerQueue(t *testing.T) {
	e := newEnv(t, httpapi.Options{Auth: true})
	admin := e.secret("admin", "", "admin")
	loadQueues(t, e, 0, 10)
	few := scrapeAllocs(t, e, admin, `resource="`+queueName(9)+`"`)
	loadQueues(t, e, 10, 2_000)
	many := scrapeAllocs(t, e, admin, `resource="`+queueName(1999)+`"`)
	if perQueue := (many - few) / 1990; perQueue > 20 {
		t.Errorf("a full scrape allocates %.1f times per queue (%.0f with 2,000 queues, %.0f with 10)", perQueue, many, few)
	}
}

// TestMetrics_PerQueueProtobuf: a scraper that asks for the protobuf
// format gets the same per-queue series as the text format's
// (testdata/golden/metrics.txt), the counters with when they were made.
func TestMetrics_PerQueueProtobuf(t *testing.T) {
	e := newEnv(t, httpapi.Options{Auth: true})
	e.token = e.secret("admin", "", "a")
	metricsWorld(t, e)
	format := expfmt.NewFormat(expfmt.TypeProtoDelim)
	r := e.do("GET", "/metrics", "", "Accept", string(format))
	e.want(r, 200, "")
	dec := expfmt.NewDecoder(bytes.NewReader(r.body), format)
	var got bytes.Buffer
	for {
		var mf dto.MetricFamily
		if err := dec.Decode(&mf); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(mf.GetName(), "spinbroker_queue_") && !strings.HasPrefix(mf.GetName(), "spinbroker_commands_") {
			continue
		}
		for _, m := range mf.Metric {
			if mf.GetType() == dto.MetricType_COUNTER && m.GetCounter().GetCreatedTimestamp() == nil {
				t.Errorf("%s %v: no created timestamp", mf.GetName(), m.Label)
			}
		}
		if _, err := expfmt.MetricFamilyToText(&got, &mf); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(filepath.Join("testdata", "golden", "metrics.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Errorf("protobuf scrape's per-queue series differ from the golden text.\n%s", firstDiff(want, got.Bytes()))
	}
}
