package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	spinbroker "github.com/spin-broker/spinbroker"
)

// routes is every route of the API, top to bottom.
func (s *Server) routes() chi.Router {
	r := chi.NewRouter()
	// logRequests outermost: a panic that recoverer turns into a 500 is
	// logged with its request's id, and so is the request's own line.
	r.Use(canonicalPath, s.logRequests, s.recoverer, s.localHost, s.crossOrigin, s.authenticate)
	r.NotFound(s.handleNotFound)
	r.MethodNotAllowed(s.handleMethodNotAllowed(r))

	// Reads answer HEAD too (RFC 9110: wherever GET works); net/http sends
	// the headers of what GET would answer, without its body. Not /events,
	// a stream that never ends.
	get := func(pattern string, h http.HandlerFunc) {
		r.Get(pattern, h)
		r.Head(pattern, h)
	}
	get("/healthz", s.handleHealth) // load balancers probe with HEAD
	get("/metrics", s.handleMetrics)
	r.Get("/events", s.handleEvents)

	// Flat routes, not sub-routers: the 405 handler asks the tree which
	// methods a path allows, and a mounted sub-router claims them all.
	// Writes take a turn (limitWrites); next and claim wait on their queue.
	w := r.With(s.limitWrites)
	get("/packages", s.handlePackageList)
	w.Post("/packages", s.handlePackageCreate)
	get("/packages/{id}", s.handlePackageGet)
	w.Delete("/packages/{id}", s.handlePackageDelete)
	w.Post("/packages/{id}/commands", s.handleCommandAdd)
	w.Post("/packages/{id}/enqueue", s.handlePackageEnqueue)
	w.Post("/packages/{id}/cancel", s.handlePackageCancel)

	w.Post(batchCompletePath, s.handleCommandCompleteBatch)
	get(batchCompletePath, s.handleMethodNotAllowed(r)) // not GET /commands/{id} of an id "complete"
	get("/commands/{id}", s.handleCommandGet)
	w.Post("/commands/{id}/heartbeat", s.handleCommandHeartbeat)
	w.Post("/commands/{id}/complete", s.handleCommandComplete)
	w.Post("/commands/{id}/retry", s.handleCommandRetry)

	get("/queues", s.handleQueueList)
	get("/queues/{resource}", s.handleQueueGet)
	w.Patch("/queues/{resource}", s.handleQueueSet)
	r.Post("/queues/{resource}/next", s.handleQueueNext)
	r.Post("/queues/{resource}/claim", s.handleQueueClaim)
	s.mountUI(r)
	return r
}

// canonicalPath undoes the escaping of unreserved characters in the path
// (/%70ackages is /packages, RFC 3986, 6.2.2.2) before chi routes it. chi
// matches on the escaped path whenever it differs from Go's own escaping
// of the decoded one, so such a path reached no route, or another one:
// POST /commands/%63omplete was GET /commands/{id}'s 405. Other escapes
// stay: %2F is a slash inside a segment, not a separator.
func canonicalPath(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if raw := r.URL.RawPath; raw != "" {
			u := *r.URL
			u.RawPath = unescapeUnreserved(raw)
			if (&url.URL{Path: u.Path}).EscapedPath() == u.RawPath {
				u.RawPath = "" // what Go's parser leaves for a path it escapes itself
			}
			r2 := *r
			r2.URL = &u
			r = &r2
		}
		next.ServeHTTP(w, r)
	})
}

// unescapeUnreserved decodes the escapes in raw of ALPHA, DIGIT, "-", ".",
// "_" and "~", leaving every other escape as written.
func unescapeUnreserved(raw string) string {
	if !strings.Contains(raw, "%") {
		return raw
	}
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		if raw[i] == '%' && i+2 < len(raw) {
			if c, err := strconv.ParseUint(raw[i+1:i+3], 16, 8); err == nil && unreserved(byte(c)) {
				b.WriteByte(byte(c))
				i += 2
				continue
			}
		}
		b.WriteByte(raw[i])
	}
	return b.String()
}

func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

// routedPath is the path chi routes r by: the escaped one when it is not
// Go's own escaping of the decoded one (an escaped slash in a segment).
func routedPath(r *http.Request) string {
	if r.URL.RawPath != "" {
		return r.URL.RawPath
	}
	return r.URL.Path
}

func (s *Server) handleNotFound(w http.ResponseWriter, r *http.Request) {
	if what := s.missingParam(r); what != "" {
		s.writeError(w, r, errNoPathParam(r, what))
		return
	}
	s.writeError(w, r, errorf(spinbroker.ENOTFOUND, "no route %s %s", r.Method, spinbroker.Truncate(r.URL.Path, 200)))
}

// missingParam names what a path ending in a slash lacks when a route of
// its method takes an id or a resource there (GET /packages/: "package
// id"), else "". chi matches no empty last segment, so without it such a
// path would be a bare "no route".
func (s *Server) missingParam(r *http.Request) string {
	path := routedPath(r)
	if !strings.HasSuffix(path, "/") || strings.HasPrefix(path, "/ui/") {
		return ""
	}
	rctx := chi.NewRouteContext()
	if !s.router.Match(rctx, r.Method, path+"x") {
		return ""
	}
	for i, k := range rctx.URLParams.Keys {
		if rctx.URLParams.Values[i] != "x" {
			continue
		}
		switch {
		case k == "resource":
			return "resource"
		case k == "id" && strings.HasPrefix(path, "/packages/"):
			return "package id"
		case k == "id" && strings.HasPrefix(path, "/commands/"):
			return "command id"
		}
	}
	return ""
}

// batchCompletePath is the one literal path that a pattern with a
// parameter (GET /commands/{id}) also matches; it takes POST only.
const batchCompletePath = "/commands/complete"

// handleMethodNotAllowed answers 405 with the Allow header that chi only
// sets when its own handler is used.
func (s *Server) handleMethodNotAllowed(mux chi.Routes) http.HandlerFunc {
	methods := []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}
	return func(w http.ResponseWriter, r *http.Request) {
		var allow []string
		for _, m := range methods {
			if mux.Match(chi.NewRouteContext(), m, routedPath(r)) {
				allow = append(allow, m)
			}
		}
		if r.URL.Path == batchCompletePath {
			allow = []string{http.MethodPost}
		}
		if len(allow) == 0 {
			// A method chi does not know (FOO) lands here for every path;
			// a path that no route has is not found, whatever the method.
			s.handleNotFound(w, r)
			return
		}
		w.Header().Set("Allow", strings.Join(allow, ", "))
		s.writeError(w, r, errorf(spinbroker.EMETHOD, "%s is not allowed on %s; use %s", r.Method, spinbroker.Truncate(r.URL.Path, 200), strings.Join(allow, " or ")))
	}
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		if spinbroker.ErrorCode(err) != spinbroker.EUNAVAILABLE {
			err = errNoAnswer
		}
		// The database cannot be asked about a token now: it just failed.
		if !s.trusted(ctx, r, false) {
			err = withheldCause{err}
		}
		s.writeError(w, r, err)
		return
	}
	// A broker whose writes fail (a full disk) still answers reads and
	// answers each write 503 with the cause; it is the only broker of its
	// database, so a balancer or an orchestrator that took it out or
	// restarted it would only make things worse. It says so here, and in
	// spinbroker_store_writes_failing, for monitors.
	// The cause (the database file's path, SQLite's own words) is for the
	// broker's own; anyone who reaches the port can poll /healthz.
	if err := s.store.WriteFailure(ctx); err != nil {
		writes := "failing"
		if s.trusted(ctx, r, true) {
			writes += ": " + err.Error()
		}
		writeJSON(w, http.StatusOK, spinbroker.Health{Status: "degraded", Writes: writes})
		return
	}
	writeJSON(w, http.StatusOK, spinbroker.Health{Status: "ok"})
}

// errNoAnswer is /healthz's 503 when the database does not answer a read
// and the error says no more, or says it to no one but the broker's own.
var errNoAnswer = errorf(spinbroker.EUNAVAILABLE, "the database does not answer")

// withheldCause answers a 503 to a request without a token that works (of
// /healthz, or of any path when its token could not be checked): the client
// is told only that the database does not answer, while the log (which
// takes Error's text) keeps the cause.
type withheldCause struct{ err error }

func (e withheldCause) Error() string { return e.err.Error() }
func (e withheldCause) Unwrap() error { return e.err }

// As comes before Unwrap in errors.As: the cause's own *spinbroker.Error
// is never found.
func (e withheldCause) As(target any) bool {
	if p, ok := target.(**spinbroker.Error); ok {
		*p = errNoAnswer
		return true
	}
	return false
}

// recoverer turns a panic in a handler into a 500 in the API's shape and one
// log line with the stack.
func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("panic", logAttrs(r, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))...)
				s.writeError(w, r, fmt.Errorf("panic: %v", v))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// statusWriter records the status and size of an answer, and the token
// that authenticate found, for the log.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int  // of body sent: none to a HEAD, whatever the handler wrote
	head   bool // a HEAD request, whose body Go's server eats
	token  *spinbroker.Token
	code   string // the error code answered, if any (judge)
	quiet  bool   // an agent's call that changed nothing worth a line (noteQuiet)
	auth   string // why the token was refused, for a 401 (refusal)
}

// noteCode gives the request's log line the error code of its answer, so
// that a stale lease and a conflict, both 409, can be told apart there.
func noteCode(w http.ResponseWriter, code string) {
	if sw := statusWriterOf(w); sw != nil {
		sw.code = code
	}
}

// noteQuiet logs the request at debug, not info: a long-poll that found
// nothing, a heartbeat that extended its lease. Agents repeat them while
// nothing happens (an idle agent twice a minute, a running command every
// third of its lease), and a hundred agents wrote hundreds of such lines a
// minute at info, burying the ones that say something.
func noteQuiet(w http.ResponseWriter) {
	if sw := statusWriterOf(w); sw != nil {
		sw.quiet = true
	}
}

// noteRefusal gives the request's log line why its token was refused.
func noteRefusal(w http.ResponseWriter, err error) {
	if sw := statusWriterOf(w); sw != nil {
		sw.auth = refusal(err)
	}
}

// statusWriterOf finds logRequests' writer under w; nil outside it.
func statusWriterOf(w http.ResponseWriter) *statusWriter {
	for {
		if sw, ok := w.(*statusWriter); ok {
			return sw
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return nil
		}
		w = u.Unwrap()
	}
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	if !w.head {
		w.bytes += n
	}
	return n, err
}

// Unwrap lets http.ResponseController reach the connection (flush, write
// deadlines).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush sends buffered data to the client (event streams).
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// statusClientClosed is nginx's "client closed request": the status a
// request is logged and counted under when its client went away before it
// was answered.
const statusClientClosed = 499

// defaultWriteTimeout bounds how long writing an ordinary answer may take,
// from the request's headers, or from its body once that is read
// (readBody); long-polls and event streams set their own deadlines. A
// variable for tests.
var defaultWriteTimeout = 30 * time.Second

// routeOf is the pattern of the route that r's method and path match, for
// a request answered before the router saw it (a token refused 401): its
// line and its histogram name the route it was for, as any other
// request's do. "unmatched" is for a request that no route matches.
func (s *Server) routeOf(r *http.Request) string {
	rctx := chi.NewRouteContext()
	if s.router.Match(rctx, r.Method, routedPath(r)) {
		if route := rctx.RoutePattern(); route != "" {
			return route
		}
	}
	return "unmatched"
}

// logRequests writes one log line per request with its status, duration and,
// with auth on, the token that made it; and sets the write deadline of
// ordinary requests.
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := requestID(r.Header.Get("X-Request-Id"))
		w.Header().Set("X-Request-Id", id)
		r = r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id))
		sw := &statusWriter{ResponseWriter: w, head: r.Method == http.MethodHead}
		http.NewResponseController(w).SetWriteDeadline(start.Add(defaultWriteTimeout)) //nolint:errcheck // not every writer supports deadlines
		aborted := serveAbortable(next, sw, r)
		if aborted {
			// A handler cut its answer short (a streamed package whose
			// read or write failed part way): logged and counted as the
			// 500 it would have been, or the 499 of a client gone, then
			// the connection is cut.
			defer panic(http.ErrAbortHandler)
			sw.status = http.StatusInternalServerError
			if r.Context().Err() != nil {
				sw.status = statusClientClosed
			}
		}
		d := time.Since(start)
		cut := s.cut.Load()
		if cut {
			// Still running when the stop cut it off: its client had no
			// answer, whatever the handler wrote to the closed connection
			// (a 400 for a body that never came whole).
			sw.status, sw.code = http.StatusServiceUnavailable, spinbroker.EUNAVAILABLE
		}
		if sw.status == 0 {
			// Nothing was written: the client went away before its answer
			// (an agent stopped during a long-poll), logged and counted as
			// nginx's 499; else Go's server answers 200 now.
			sw.status = http.StatusOK
			if r.Context().Err() != nil {
				sw.status = statusClientClosed
			}
		}
		route := chi.RouteContext(r.Context()).RoutePattern()
		if route == "" {
			route = s.routeOf(r)
		}
		s.metrics.observe(r.Method, route, sw.status, d)
		// Failures stand out, so that --log-level warn keeps them and drops
		// the line of every request that went well.
		level := slog.LevelInfo
		switch {
		case sw.status >= 500 && sw.status != http.StatusServiceUnavailable:
			level = slog.LevelError
		case sw.status == http.StatusServiceUnavailable && !s.stopping():
			level = slog.LevelWarn
		case r.URL.Path == "/healthz" || r.URL.Path == "/metrics", sw.quiet && sw.status < 300:
			level = slog.LevelDebug
		}
		if !s.log.Enabled(r.Context(), level) {
			return
		}
		attrs := []any{"method", r.Method, "path", r.URL.Path, "status", sw.status,
			"duration", d.Round(time.Microsecond), "bytes", sw.bytes, "remote", r.RemoteAddr, "request_id", id, "route", route}
		if sw.code != "" {
			attrs = append(attrs, "code", sw.code)
		}
		if sw.auth != "" {
			attrs = append(attrs, "auth", sw.auth)
		}
		if cut {
			attrs = append(attrs, "cut_off", true)
		}
		if sw.token != nil {
			// Who did it, for an audit: the token's name and id, never its secret.
			attrs = append(attrs, "token", sw.token.Name, "token_id", sw.token.ID)
		}
		s.log.Log(r.Context(), level, "request", attrs...)
	})
}

// serveAbortable serves r, reporting whether the handler aborted with
// http.ErrAbortHandler (which logRequests panics again once it has logged
// the request); any other panic goes on up.
func serveAbortable(next http.Handler, w http.ResponseWriter, r *http.Request) (aborted bool) {
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				panic(v)
			}
			aborted = true
		}
	}()
	next.ServeHTTP(w, r)
	return false
}

// requestIDKey is the context key of a request's id, for the log lines
// that give a cause (logAttrs).
type requestIDKey struct{}

// requestID is the id a request is logged and answered under
// (X-Request-Id): the client's, when it sent a short printable one, so that
// a proxy's or a client's id finds the broker's log line; else a new one.
func requestID(given string) string {
	if given != "" && len(given) <= 64 && !strings.ContainsFunc(given, func(r rune) bool { return r <= ' ' || r > '~' }) {
		return given
	}
	var b [8]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// localHost refuses, with Options.LocalHostOnly, a request whose Host does
// not name this machine.
func (s *Server) localHost(next http.Handler) http.Handler {
	if !s.opts.LocalHostOnly {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !LocalHost(r.Host) {
			s.writeError(w, r, errorf(spinbroker.EFORBIDDEN, "the Host %q is not this machine: a broker without --auth answers only localhost and loopback addresses", spinbroker.Truncate(r.Host, 100)))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// LocalHost reports whether a request's Host header (host, or host:port)
// names this machine: localhost, a name under .localhost, or a loopback
// address.
func LocalHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return err == nil && ip.IsLoopback()
}

// crossOrigin refuses state-changing requests that a browser sends on behalf
// of another site (a page on evil.example posting to localhost:8080), using
// Fetch metadata and Origin. curl and programs send neither and pass.
func (s *Server) crossOrigin(next http.Handler) http.Handler {
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, errorf(spinbroker.EFORBIDDEN, "cross-origin request refused"))
	}))
	return cop.Handler(next)
}
