package httpapi

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/version"
)

// metrics are the broker's Prometheus metrics: those of the broker as a
// whole in reg, and each queue's, labelled by resource, gathered apart
// (queueFamilies), so that an agent's scrape reads its own queue's and no
// other's.
type metrics struct {
	reg      *prometheus.Registry
	st       Store
	agentsOf func(resource string) agents
	requests *prometheus.HistogramVec
	// waitsRefused counts the requests refused for their token's
	// --max-waits-per-token.
	waitsRefused prometheus.Counter
	handler      http.Handler
	counters     sync.Map // resource → *queueCounters, of the queues whose counters exist, at 0 if nothing happened yet
}

// queueCounter is one of the counters each queue has.
type queueCounter int

const (
	enqueued queueCounter = iota
	delivered
	redelivered
	succeeded
	failed
	cancelled
	expired
	nCounters
)

// queueCounterDescs describe each queueCounter, in its order.
var queueCounterDescs = func() [nCounters]*prometheus.Desc {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("spinbroker_"+name, help, []string{"resource"}, nil)
	}
	return [nCounters]*prometheus.Desc{
		enqueued:    d("commands_enqueued_total", "Commands enqueued, by resource."),
		delivered:   d("commands_delivered_total", "Leases handed out by next and claim, by resource."),
		redelivered: d("commands_redelivered_total", "Leases of commands delivered before (an agent's retry or an expired lease; not a person's retry, which starts the attempts again), by resource."),
		succeeded:   d("commands_succeeded_total", "Commands that succeeded, by resource."),
		failed:      d("commands_failed_total", "Commands that failed, by resource."),
		cancelled:   d("commands_cancelled_total", "Commands cancelled by a client or a cascade, by resource."),
		expired:     d("commands_lease_expired_total", "Leases that ran out before their agent reported (it died, hung or lost the broker), by resource; the command went back to ready or, out of attempts, failed."),
	}
}()

// queueCounters are a queue's counters, and when they were made.
type queueCounters struct {
	n       [nCounters]atomic.Uint64
	created time.Time
}

// newMetrics registers the broker's metrics in reg. agentsOf says who asks
// each queue for work; writes, how many state-changing requests hold a
// write turn now; bodyBytes, how many bytes their bodies hold; waits, how
// many requests are held open waiting.
func newMetrics(reg *prometheus.Registry, st Store, agentsOf func(resource string) agents, writes func() int, bodyBytes func() int64, waits func() int64) *metrics {
	m := &metrics{
		reg:      reg,
		st:       st,
		agentsOf: agentsOf,
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "spinbroker", Name: "http_request_duration_seconds",
			Help:    "Time to answer an HTTP request (long-polls include their wait), by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"method", "route", "code"}),
		waitsRefused: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "spinbroker", Name: "http_waits_refused_total",
			Help: "Long-polls and event streams refused 503 because their token held --max-waits-per-token waiting requests already."}),
	}
	// The queues there already (a broker restarted) have their counters
	// at 0 from the start, as a new queue has from its first command: else
	// a queue's first event after a restart, a lease of a dead agent run
	// out say, makes its series at 1, which rate() and increase() read as
	// no change, and the alerts on them miss it. When the queues cannot be
	// read, each queue's series come with its first event, as before.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if qs, err := st.Queues(ctx); err == nil {
		for _, q := range qs {
			m.see(q.Resource)
		}
	}
	if ws, ok := st.(writeStatser); ok {
		reg.MustRegister(
			prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "spinbroker", Name: "store_transactions_total",
				Help: "Write transactions committed; each may hold many requests' writes (group commit)."},
				func() float64 { t, _, _ := ws.WriteStats(); return float64(t) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "spinbroker", Name: "store_writes_total",
				Help: "Write operations committed."},
				func() float64 { _, w, _ := ws.WriteStats(); return float64(w) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "spinbroker", Name: "store_checkpoints_total",
				Help: "WAL checkpoints run beside the writer (SQLite runs the others inside a commit)."},
				func() float64 { _, _, c := ws.WriteStats(); return float64(c) }))
	}
	if sz, ok := st.(sizer); ok {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "spinbroker", Name: "store_bytes",
			Help: "Bytes on disk of the database file and its WAL."},
			func() float64 { n, _ := sz.Size(); return float64(n) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "spinbroker", Name: "store_free_bytes",
				Help: "Bytes of the database file left free by deleted rows: reused for new ones, given back by 'spinbroker compact'."},
				func() float64 { n, _ := sz.FreeBytes(context.Background()); return float64(n) }))
	}
	if wal, ok := st.(walSizer); ok {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "spinbroker", Name: "store_wal_bytes",
			Help: "Bytes on disk of the WAL (counted in store_bytes too): about 32 MiB under load; more means checkpoints are held back (a long reader) or cannot keep up."},
			func() float64 { n, _ := wal.WALSize(); return float64(n) }))
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "spinbroker", Name: "store_writes_failing",
		Help: "1 while writes fail for the database's sake (disk full, I/O error, read-only) or are stuck (a transaction running for over 5s), else 0; /healthz says why."},
		func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			if st.WriteFailure(ctx) != nil {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "spinbroker", Name: "http_writes_in_flight",
			Help: "State-changing requests being served now (next and claim aside); at --max-writes, others wait."},
			func() float64 { return float64(writes()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "spinbroker", Name: "http_body_bytes",
			Help: "Bytes held by the bodies of state-changing requests, read before they take a turn; at --max-writes MiB, others get 503."},
			func() float64 { return float64(bodyBytes()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "spinbroker", Name: "http_waits",
			Help: "Requests held open waiting now: long-polls (next, claim) that block, and event streams; each token may hold --max-waits-per-token."},
			func() float64 { return float64(waits()) }))
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "spinbroker", Name: "build_info",
		Help: "Always 1; its labels say which build of the broker is running."}, []string{"version", "revision", "goversion"})
	v := version.Get()
	build.WithLabelValues(v.Version, v.Revision, v.Go).Set(1)
	reg.MustRegister(build, m.requests, m.waitsRefused,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	queues := prometheus.NewRegistry()
	queues.MustRegister(&queueCollector{m: m})
	m.handler = m.handlerFor(reg, queues)
	return m
}

// handlerFor serves the metrics broker gathers, of the broker as a whole,
// and the per-queue ones queues gathers. A part that fails (the queues' read, when the database does not
// answer) must not take the others with it: the gauge that says writes
// fail, the process's, the build's are wanted most then.
func (m *metrics) handlerFor(broker, queues prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		mfs, err := broker.Gather()
		qfs, qerr := queues.Gather()
		return mergeFamilies(mfs, qfs), errors.Join(err, qerr)
	}), promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// mergeFamilies is a and b, each sorted by name, in one list sorted by
// name, as a registry gathers them.
func mergeFamilies(a, b []*dto.MetricFamily) []*dto.MetricFamily {
	out := make([]*dto.MetricFamily, 0, len(a)+len(b))
	out = append(append(out, a...), b...)
	slices.SortStableFunc(out, func(x, y *dto.MetricFamily) int { return strings.Compare(x.GetName(), y.GetName()) })
	return out
}

// sizer is a store that knows its size on disk, and how much of it deleted
// rows left free.
type sizer interface {
	Size() (int64, error)
	FreeBytes(context.Context) (int64, error)
}

// walSizer is a store that knows the size of its WAL.
type walSizer interface {
	WALSize() (int64, error)
}

// writeStatser is a store that counts its write transactions.
type writeStatser interface {
	WriteStats() (transactions, writes, checkpoints int64)
}

// see makes every counter of resource's queue, at 0, unless it has them,
// and returns them: rate() and alerts on redeliveries or failures need a
// series before the first one happens.
func (m *metrics) see(resource string) *queueCounters {
	if c, ok := m.counters.Load(resource); ok {
		return c.(*queueCounters)
	}
	c, _ := m.counters.LoadOrStore(resource, &queueCounters{created: time.Now()})
	return c.(*queueCounters)
}

// count moves the counters by what a commit did.
func (m *metrics) count(c *spinbroker.Commit) {
	for _, ch := range c.Commands {
		// A change that never touched the queue (a staged command
		// cancelled with its package) is not the queue's: it is never
		// counted, so that the same cancel does not count on a queue with
		// series and not on one without (which it must not make: the
		// queue may have no row, and the sweeper would never forget them).
		if !inQueue(ch.From) && !inQueue(ch.To) {
			continue
		}
		n := &m.see(ch.Resource).n
		switch {
		case ch.From == spinbroker.Staged && ch.To != spinbroker.Cancelled:
			n[enqueued].Add(1)
		case ch.To == spinbroker.Leased:
			n[delivered].Add(1)
			if ch.Attempts > 1 {
				n[redelivered].Add(1)
			}
		case ch.To == spinbroker.Succeeded:
			n[succeeded].Add(1)
		case ch.To == spinbroker.Failed:
			n[failed].Add(1)
		case ch.To == spinbroker.Cancelled:
			n[cancelled].Add(1)
		}
	}
	for _, ch := range c.Expired {
		// Its series are there: the command's change from leased, in
		// Commands, made them.
		m.see(ch.Resource).n[expired].Add(1)
	}
	// A forgotten queue's series go with it, or every resource name ever
	// used would stay in /metrics.
	for _, r := range c.Forgotten {
		m.counters.Delete(r)
	}
}

// inQueue reports whether a command in state st is one of its queue's.
func inQueue(st spinbroker.CommandState) bool {
	return st == spinbroker.Blocked || st == spinbroker.Ready || st == spinbroker.Leased
}

// observe records a request's duration under its route pattern
// ("unmatched" when none matched).
func (m *metrics) observe(method, route string, status int, d time.Duration) {
	m.requests.WithLabelValues(methodLabel(method), route, strconv.Itoa(status)).Observe(d.Seconds())
}

// methodLabel bounds the method label: a client chooses the method it
// sends (any token, up to the header limit), and each new one would be a
// new histogram of 18 series kept until the broker stops.
func methodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return method
	}
	return "other"
}

func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	if s.opts.Auth && !s.opts.MetricsOpen {
		if err := s.allow(r, permRead, identityOf(r).token.Resource); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	if s.opts.Auth && !s.opts.MetricsOpen && isAgent(r) {
		// An agent sees its own queue's series and none of another's:
		// their names and counts are no business of its token. Only its
		// queue's are read, so that its scrape costs what its queue's
		// series cost, not what every queue's do.
		own := identityOf(r).token.Resource
		queue := prometheus.NewRegistry()
		queue.MustRegister(&queueCollector{m: s.metrics, resource: own})
		s.metrics.handlerFor(ownResource(s.metrics.reg, own), queue).ServeHTTP(w, r)
		return
	}
	s.metrics.handler.ServeHTTP(w, r)
}

// ownResource gathers from g the series that have no resource label or
// have resource's.
func ownResource(g prometheus.Gatherer, resource string) prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		mfs, err := g.Gather()
		kept := mfs[:0]
		for _, mf := range mfs {
			ms := mf.Metric[:0]
			for _, m := range mf.Metric {
				if labelOf(m, "resource", resource) == resource {
					ms = append(ms, m)
				}
			}
			if mf.Metric = ms; len(ms) > 0 {
				kept = append(kept, mf)
			}
		}
		return kept, err
	})
}

// labelOf is the value of m's label name, or dflt when it has none.
func labelOf(m *dto.Metric, name, dflt string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return dflt
}

// queueCollector reads every queue's counts (resource's only, when it is
// set) at scrape time, so the gauges are always the database's, never a
// copy that can drift, and gives the queues' counters.
type queueCollector struct {
	m        *metrics
	resource string
}

var (
	queueCommandsDesc = prometheus.NewDesc("spinbroker_queue_commands", "Enqueued, unfinished commands of a queue by state.", []string{"resource", "state"}, nil)
	queueAgeDesc      = prometheus.NewDesc("spinbroker_queue_oldest_ready_age_seconds", "How long the queue's head-of-line ready command has waited.", []string{"resource"}, nil)
	queueConcDesc     = prometheus.NewDesc("spinbroker_queue_concurrency", "A queue's concurrency setting.", []string{"resource"}, nil)
	queuePausedDesc   = prometheus.NewDesc("spinbroker_queue_paused", "1 when the queue is paused.", []string{"resource"}, nil)
	queueWaitingDesc  = prometheus.NewDesc("spinbroker_queue_waiting_polls", "Long-polls (next or claim) waiting on the queue now: agents ready for work.", []string{"resource"}, nil)
	queueAskedDesc    = prometheus.NewDesc("spinbroker_queue_last_poll_timestamp_seconds", "When an agent last asked the queue for work (next or claim), if one did since the broker started.", []string{"resource"}, nil)
)

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range queueCounterDescs {
		ch <- d
	}
	ch <- queueCommandsDesc
	ch <- queueAgeDesc
	ch <- queueConcDesc
	ch <- queuePausedDesc
	ch <- queueWaitingDesc
	ch <- queueAskedDesc
}

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	counters := func(resource string, qc *queueCounters) {
		for i, d := range queueCounterDescs {
			ch <- prometheus.MustNewConstMetricWithCreatedTimestamp(d, prometheus.CounterValue, float64(qc.n[i].Load()), qc.created, resource)
		}
	}
	if c.resource == "" {
		c.m.counters.Range(func(r, qc any) bool {
			counters(r.(string), qc.(*queueCounters))
			return true
		})
	} else if qc, ok := c.m.counters.Load(c.resource); ok {
		counters(c.resource, qc.(*queueCounters))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var qs []spinbroker.Queue
	var err error
	if c.resource == "" {
		qs, err = c.m.st.Queues(ctx)
	} else {
		qs, err = c.m.st.QueuesNamed(ctx, []string{c.resource})
	}
	if err != nil {
		ch <- prometheus.NewInvalidMetric(queueCommandsDesc, err)
		return
	}
	for _, q := range qs {
		ch <- prometheus.MustNewConstMetric(queueCommandsDesc, prometheus.GaugeValue, float64(q.Counts.Blocked), q.Resource, "blocked")
		ch <- prometheus.MustNewConstMetric(queueCommandsDesc, prometheus.GaugeValue, float64(q.Counts.Ready), q.Resource, "ready")
		ch <- prometheus.MustNewConstMetric(queueCommandsDesc, prometheus.GaugeValue, float64(q.Counts.Leased), q.Resource, "leased")
		ch <- prometheus.MustNewConstMetric(queueAgeDesc, prometheus.GaugeValue, q.OldestReadyAgeSeconds, q.Resource)
		ch <- prometheus.MustNewConstMetric(queueConcDesc, prometheus.GaugeValue, float64(q.Concurrency), q.Resource)
		paused := 0.0
		if q.Paused {
			paused = 1
		}
		ch <- prometheus.MustNewConstMetric(queuePausedDesc, prometheus.GaugeValue, paused, q.Resource)
		a := c.m.agentsOf(q.Resource)
		ch <- prometheus.MustNewConstMetric(queueWaitingDesc, prometheus.GaugeValue, float64(a.Waiting), q.Resource)
		if a.Last != nil {
			ch <- prometheus.MustNewConstMetric(queueAskedDesc, prometheus.GaugeValue, float64(a.Last.At.UnixNano())/1e9, q.Resource)
		}
	}
}
