package httpapi

import (
	"context"
	"errors"
	"fmt"
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
	"google.golang.org/protobuf/types/known/timestamppb"

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

// queueCounterFamilies are each queueCounter's family, in its order.
var queueCounterFamilies = func() [nCounters]queueFamily {
	f := func(name, help string) queueFamily {
		return queueFamily{"spinbroker_" + name, help, dto.MetricType_COUNTER}
	}
	return [nCounters]queueFamily{
		enqueued:    f("commands_enqueued_total", "Commands enqueued, by resource."),
		delivered:   f("commands_delivered_total", "Leases handed out by next and claim, by resource."),
		redelivered: f("commands_redelivered_total", "Leases of commands delivered before (an agent's retry or an expired lease; not a person's retry, which starts the attempts again), by resource."),
		succeeded:   f("commands_succeeded_total", "Commands that succeeded, by resource."),
		failed:      f("commands_failed_total", "Commands that failed, by resource."),
		cancelled:   f("commands_cancelled_total", "Commands cancelled by a client or a cascade, by resource."),
		expired:     f("commands_lease_expired_total", "Leases that ran out before their agent reported (it died, hung or lost the broker), by resource; the command went back to ready or, out of attempts, failed."),
	}
}()

// queueCounters are a queue's counters, the label of their series and
// when they were made.
type queueCounters struct {
	n         [nCounters]atomic.Uint64
	label     []*dto.LabelPair
	createdTS *timestamppb.Timestamp
}

// newMetrics registers the broker's own metrics in reg (the per-queue ones
// are gathered apart, by queueFamilies). agentsOf says who asks
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
				func() float64 { _, _, c := ws.WriteStats(); return float64(c) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "spinbroker", Name: "store_writer_busy_seconds_total",
				Help: "Seconds the one writer has spent running write transactions: its rate is the share of the time it is busy; near 1, writes queue for it and the broker is at its capacity."},
				func() float64 { return ws.WriterBusy().Seconds() }))
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
	m.handler = m.handlerFor(reg, "")
	return m
}

// handlerFor serves the metrics broker gathers, of the broker as a whole,
// and the per-queue ones of resource's queue (every queue's when it is
// empty). A part that fails (the queues' read, when the database does not
// answer) must not take the others with it: the gauge that says writes
// fail, the process's, the build's are wanted most then.
func (m *metrics) handlerFor(broker prometheus.Gatherer, resource string) http.Handler {
	return promhttp.HandlerFor(prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		mfs, err := broker.Gather()
		qfs, qerr := m.queueFamilies(resource)
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
	WriterBusy() time.Duration
}

// see makes every counter of resource's queue, at 0, unless it has them,
// and returns them: rate() and alerts on redeliveries or failures need a
// series before the first one happens.
func (m *metrics) see(resource string) *queueCounters {
	if c, ok := m.counters.Load(resource); ok {
		return c.(*queueCounters)
	}
	c, _ := m.counters.LoadOrStore(resource, &queueCounters{
		label:     []*dto.LabelPair{{Name: &resourceLabel, Value: &resource}},
		createdTS: timestamppb.Now(),
	})
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
	// What a scrape holds depends on its token (an agent's, its own
	// queue's series), as every other answer to a token does: no cache in
	// between keeps it, nor answers it to another.
	w.Header().Set("Cache-Control", "no-store")
	if s.opts.Auth && !s.opts.MetricsOpen && isAgent(r) {
		// An agent sees its own queue's series and none of another's:
		// their names and counts are no business of its token. Only its
		// queue's are read, so that its scrape costs what its queue's
		// series cost, not what every queue's do.
		own := identityOf(r).token.Resource
		s.metrics.handlerFor(ownResource(s.metrics.reg, own), own).ServeHTTP(w, r)
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

// The per-queue families: their names and help.
var (
	queueCommandsFamily = queueFamily{"spinbroker_queue_commands", "Enqueued, unfinished commands of a queue by state.", dto.MetricType_GAUGE}
	queueAgeFamily      = queueFamily{"spinbroker_queue_oldest_ready_age_seconds", "How long the queue's head-of-line ready command has waited.", dto.MetricType_GAUGE}
	queueConcFamily     = queueFamily{"spinbroker_queue_concurrency", "A queue's concurrency setting.", dto.MetricType_GAUGE}
	queuePausedFamily   = queueFamily{"spinbroker_queue_paused", "1 when the queue is paused.", dto.MetricType_GAUGE}
	queueWaitingFamily  = queueFamily{"spinbroker_queue_waiting_polls", "Long-polls (next or claim) waiting on the queue now: agents ready for work.", dto.MetricType_GAUGE}
	queueAskedFamily    = queueFamily{"spinbroker_queue_last_poll_timestamp_seconds", "When an agent last asked the queue for work (next or claim), if one did since the broker started.", dto.MetricType_GAUGE}
)

// queueFamily is a per-queue metric family.
type queueFamily struct {
	name, help string
	typ        dto.MetricType
}

// series makes f's family with room for n series, and returns it with a
// function that adds one (after those before it: the caller adds them in
// the order of their labels' values, as a registry sorts them). The
// family's series, their values and counters are each made in one
// allocation, not one each: a scrape of 20,000 queues has 300,000 series.
func (f queueFamily) series(n int) (*dto.MetricFamily, func(labels []*dto.LabelPair, v float64) *dto.Metric) {
	mf := &dto.MetricFamily{Name: &f.name, Help: &f.help, Type: f.typ.Enum(), Metric: make([]*dto.Metric, 0, n)}
	ms := make([]dto.Metric, n)
	vs := make([]float64, n)
	var gs []dto.Gauge
	var cs []dto.Counter
	if f.typ == dto.MetricType_COUNTER {
		cs = make([]dto.Counter, n)
	} else {
		gs = make([]dto.Gauge, n)
	}
	return mf, func(labels []*dto.LabelPair, v float64) *dto.Metric {
		i := len(mf.Metric)
		m := &ms[i]
		m.Label = labels
		vs[i] = v
		if cs != nil {
			m.Counter = &cs[i]
			m.Counter.Value = &vs[i]
		} else {
			m.Gauge = &gs[i]
			m.Gauge.Value = &vs[i]
		}
		mf.Metric = append(mf.Metric, m)
		return m
	}
}

var (
	resourceLabel = "resource"
	stateLabel    = "state"
	// statePairs label spinbroker_queue_commands, in the order of their
	// values.
	statePairs = func() []*dto.LabelPair {
		var ps []*dto.LabelPair
		for _, st := range []string{"blocked", "leased", "ready"} {
			ps = append(ps, &dto.LabelPair{Name: &stateLabel, Value: &st})
		}
		return ps
	}()
)

// queueFamilies gathers the per-queue series: every queue's or, when
// resource is set, its only. It makes their metric families itself rather
// than through a registry, which would make a metric of each series, write
// it out, check it against the others and sort them: most of a scrape's
// time and memory at many queues. The series are those a registry would
// gather, labelled and sorted the same.
func (m *metrics) queueFamilies(resource string) ([]*dto.MetricFamily, error) {
	type named struct {
		resource string
		c        *queueCounters
	}
	var cs []named
	if resource == "" {
		m.counters.Range(func(r, c any) bool {
			cs = append(cs, named{r.(string), c.(*queueCounters)})
			return true
		})
		slices.SortFunc(cs, func(a, b named) int { return strings.Compare(a.resource, b.resource) })
	} else if c, ok := m.counters.Load(resource); ok {
		cs = append(cs, named{resource, c.(*queueCounters)})
	}
	var out []*dto.MetricFamily
	if len(cs) > 0 {
		for i, f := range queueCounterFamilies {
			mf, add := f.series(len(cs))
			for _, c := range cs {
				add(c.c.label, float64(c.c.n[i].Load())).Counter.CreatedTimestamp = c.c.createdTS
			}
			out = append(out, mf)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var qs []spinbroker.Queue
	var err error
	if resource == "" {
		qs, err = m.st.Queues(ctx)
	} else {
		qs, err = m.st.QueuesNamed(ctx, []string{resource})
	}
	if err != nil {
		return out, fmt.Errorf("reading the queues: %w", err)
	}
	if len(qs) == 0 {
		return out, nil
	}
	// SQLite's order by resource is Go's (bytes), the registry's; this
	// costs nothing when it is.
	slices.SortStableFunc(qs, func(a, b spinbroker.Queue) int { return strings.Compare(a.Resource, b.Resource) })
	n := len(qs)
	commands, addCommands := queueCommandsFamily.series(3 * n)
	age, addAge := queueAgeFamily.series(n)
	conc, addConc := queueConcFamily.series(n)
	paused, addPaused := queuePausedFamily.series(n)
	waiting, addWaiting := queueWaitingFamily.series(n)
	asked, addAsked := queueAskedFamily.series(n)
	pairs := make([]dto.LabelPair, n)
	labels := make([]*dto.LabelPair, 7*n) // for each queue, its resource's, then with each state's
	for i := range qs {
		q := &qs[i]
		pairs[i] = dto.LabelPair{Name: &resourceLabel, Value: &q.Resource}
		l := labels[7*i : 7*i+7 : 7*i+7]
		l[0] = &pairs[i]
		own := l[0:1:1]
		for j, s := range statePairs {
			l[1+2*j], l[2+2*j] = &pairs[i], s
		}
		addCommands(l[1:3:3], float64(q.Counts.Blocked))
		addCommands(l[3:5:5], float64(q.Counts.Leased))
		addCommands(l[5:7:7], float64(q.Counts.Ready))
		addAge(own, q.OldestReadyAgeSeconds)
		addConc(own, float64(q.Concurrency))
		addPaused(own, float64(btoi(q.Paused)))
		a := m.agentsOf(q.Resource)
		addWaiting(own, float64(a.Waiting))
		if a.Last != nil {
			addAsked(own, float64(a.Last.At.UnixNano())/1e9)
		}
	}
	out = append(out, commands, age, conc, paused, waiting)
	if len(asked.Metric) > 0 {
		out = append(out, asked)
	}
	slices.SortFunc(out, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
	return out, nil
}

// btoi is 1 for true, 0 for false.
func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
