package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	stdlog "log"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/spin-broker/spinbroker/cmd/internal/logging"
	"github.com/spin-broker/spinbroker/internal/httpapi"
	"github.com/spin-broker/spinbroker/internal/store"
	"github.com/spin-broker/spinbroker/internal/version"
)

// serveConfig is everything `spinbroker serve` is told.
type serveConfig struct {
	addr            string
	db              string
	sync            string
	auth            bool
	insecure        bool
	metricsOpen     bool
	logFormat       string
	logLevel        string
	tlsCert         string
	tlsKey          string
	stagingTTL      time.Duration
	retain          time.Duration
	sweepEvery      time.Duration
	shutdownTimeout time.Duration
	check           bool
	pprofAddr       string
	headerTimeout   time.Duration
	readTimeout     time.Duration
	maxWrites       int
	maxWaits        int   // per token: long-polls that block and event streams
	authEnvErr      error // SPINBROKER_AUTH set to something not a boolean
}

// defaultGCPercent is the GOGC serve runs with when none is set: about 5
// MiB more at peak than Go's 100 under load, for 5-14% more throughput
// (BENCHMARKS.md).
const defaultGCPercent = 200

func (a *app) serveCommand() *cobra.Command {
	var c serveConfig
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the broker",
		Long: `serve runs the broker: the HTTP API, the dashboard, and a sweeper that settles
expired leases and deletes expired packages, on an embedded SQLite database
that it creates and migrates as needed.

Without --auth it listens only on a loopback address (localhost, 127.0.0.1,
::1); anything else needs --auth, or --insecure to say you mean it.
SIGINT or SIGTERM stop it gracefully: waiting long-polls are answered 503
(unavailable, so that agents back off), requests in flight finish, the
database is closed cleanly. With --tls-cert, the certificate is loaded again
when its files change (a renewal) or on SIGHUP; a pair that does not load is
logged and the one before it kept.

One broker serves a database at a time: serve holds an advisory lock on
<db>.lock (which names its pid) and refuses to start while another process
holds it; a path through a symlink is the same database, and a database file
with another hard link is refused, since a broker through the other name would
lock that name instead. 'spinbroker token create' and 'backup' work beside a
running broker; 'migrate up' refuses to run while it does.

Go's collector runs when the heap has grown by 200% (GOGC=200) unless the
GOGC environment variable says otherwise.`,
		Example: `  spinbroker serve
  spinbroker serve --addr localhost:9090 --db /var/lib/spinbroker/broker.db --sync full
  spinbroker serve --addr :8443 --auth --tls-cert cert.pem --tls-key key.pem --retain 168h`,
		Args: args(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.logFatal(c, namedEnv(cmd, a.serve(cmd.Context(), c)))
		},
	}
	f := cmd.Flags()
	f.StringVar(&c.addr, "addr", envOr("SPINBROKER_ADDR", "localhost:8080"), "address to listen on (env SPINBROKER_ADDR)")
	f.StringVar(&c.db, "db", envOr("SPINBROKER_DB", "spinbroker.db"), "SQLite database file, created if missing (env SPINBROKER_DB)")
	f.StringVar(&c.sync, "sync", envOr("SPINBROKER_SYNC", "normal"), "normal: a commit survives a crash of the process; full: also a power loss (env SPINBROKER_SYNC)")
	var authEnv bool
	if v := os.Getenv("SPINBROKER_AUTH"); v != "" {
		if authEnv, c.authEnvErr = strconv.ParseBool(v); c.authEnvErr != nil {
			c.authEnvErr = fmt.Errorf("SPINBROKER_AUTH must be 1, true, 0 or false, not %q", v)
		}
	}
	f.BoolVar(&c.auth, "auth", authEnv, "require API tokens (see 'spinbroker token create') (env SPINBROKER_AUTH=1)")
	f.BoolVar(&c.insecure, "insecure", false, "allow a non-loopback address without --auth")
	f.BoolVar(&c.metricsOpen, "metrics-open", false, "serve /metrics without a token when --auth is on")
	f.StringVar(&c.logFormat, "log-format", envOr("SPINBROKER_LOG_FORMAT", "text"), "log format: text or json (env SPINBROKER_LOG_FORMAT)")
	f.StringVar(&c.logLevel, "log-level", envOr("SPINBROKER_LOG_LEVEL", "info"), "log level: debug, info, warn or error (env SPINBROKER_LOG_LEVEL)")
	f.StringVar(&c.tlsCert, "tls-cert", "", "TLS certificate file (PEM); with --tls-key, serve HTTPS")
	f.StringVar(&c.tlsKey, "tls-key", "", "TLS private key file (PEM)")
	f.DurationVar(&c.stagingTTL, "staging-ttl", 24*time.Hour, "delete packages left in staging this long, 10m or more (0 keeps them)")
	f.DurationVar(&c.retain, "retain", 0, "delete finished packages this long after they finished, and forget queues idle this long with default settings (0 keeps both)")
	f.DurationVar(&c.sweepEvery, "sweep-interval", 10*time.Second, "how often the sweeper settles expired leases and deletes expired packages, from 10ms to 1h")
	f.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 10*time.Second, "how long a graceful stop (SIGINT or SIGTERM) may take: requests still running then are cut off; a second signal ends the process at once")
	f.BoolVar(&c.check, "check", false, "check the database before serving: SQLite's integrity check, then the counts of packages and queues against their commands; wrong counts stop the start (exit 1) naming 'spinbroker check --repair', rows whose package is gone, and commands whose parameters are lost, are logged at warn")
	f.DurationVar(&c.headerTimeout, "header-timeout", 10*time.Second, "how long a client may take to send its request headers (slow clients are cut off)")
	f.DurationVar(&c.readTimeout, "read-timeout", 60*time.Second, "how long a client may take to send a whole request, body included (a slower upload is cut off)")
	f.IntVar(&c.maxWrites, "max-writes", 256, "state-changing requests served at once (next and claim aside), from 1 to 4096; others wait up to 10s for a turn, then get 503, and their bodies may hold as many MiB")
	f.IntVar(&c.maxWaits, "max-waits-per-token", 1000, "requests one token may hold open waiting at once (long-polls that block, event streams); past it they get 503 at once; 0 for no cap (without --auth there is no token, and no cap)")
	f.StringVar(&c.pprofAddr, "pprof-addr", "", "serve Go's profiler (net/http/pprof), which has no authentication, on this loopback address, e.g. localhost:6060 (another address needs --insecure)")
	return cmd
}

// Bounds of settings that work but that no one means past them: a sweeper
// every nanosecond is a busy loop of write transactions, one that waits a
// day leaves expired leases for the agents' own asking; --max-writes is
// also how many MiB the bodies waiting for a turn may hold.
const (
	minSweepEvery = 10 * time.Millisecond
	maxSweepEvery = time.Hour
	maxMaxWrites  = 4096
	// minStagingTTL leaves a package built by hand, or by a script that
	// waits on something between its steps, the time to be enqueued: it
	// is made in staging by several requests (new, add, …, enqueue), and
	// the sweeper deletes it by the age of its creation.
	minStagingTTL = 10 * time.Minute
)

// validate refuses settings that cannot work: a ticker needs a positive
// interval, and a negative duration means nothing here.
func (c *serveConfig) validate() error {
	switch {
	case c.maxWrites < 1:
		return fmt.Errorf("--max-writes must be at least 1, not %d", c.maxWrites)
	case c.maxWrites > maxMaxWrites:
		return fmt.Errorf("--max-writes must be from 1 to %d, not %d: bodies waiting for a turn may hold as many MiB of memory", maxMaxWrites, c.maxWrites)
	case c.maxWaits < 0:
		return fmt.Errorf("--max-waits-per-token must be 0 (no cap) or more, not %d", c.maxWaits)
	case c.sweepEvery < minSweepEvery || c.sweepEvery > maxSweepEvery:
		return fmt.Errorf("--sweep-interval must be from %s to %s, not %s: shorter keeps the sweeper's writes busy without rest, longer leaves expired leases and retention unswept for hours", minSweepEvery, maxSweepEvery, c.sweepEvery)
	case c.headerTimeout <= 0:
		return fmt.Errorf("--header-timeout must be more than 0, not %s (it cuts off clients that send their headers too slowly)", c.headerTimeout)
	case c.readTimeout < c.headerTimeout:
		return fmt.Errorf("--read-timeout must be at least --header-timeout (%s), not %s: it bounds the whole request, headers included", c.headerTimeout, c.readTimeout)
	case c.shutdownTimeout <= 0:
		return fmt.Errorf("--shutdown-timeout must be more than 0, not %s", c.shutdownTimeout)
	case c.retain < 0:
		return fmt.Errorf("--retain must not be negative (0 keeps finished packages), not %s", c.retain)
	case c.stagingTTL < 0:
		return fmt.Errorf("--staging-ttl must not be negative (0 keeps packages in staging), not %s", c.stagingTTL)
	case c.stagingTTL > 0 && c.stagingTTL < minStagingTTL:
		return fmt.Errorf("--staging-ttl must be 0 (keep them) or from %s, not %s: a package is built in staging by several requests (new, add, …, enqueue), and a shorter one deletes it before it is enqueued", minStagingTTL, c.stagingTTL)
	}
	if _, err := store.SyncPragma(c.sync); err != nil {
		return fmt.Errorf("--%w", err)
	}
	if c.pprofAddr != "" {
		local, err := loopback(c.pprofAddr)
		if err != nil {
			return fmt.Errorf("--pprof-addr: %w", err)
		}
		if !local && !c.insecure {
			return fmt.Errorf("refusing to serve the profiler on %s: it has no authentication and shows the broker's memory; use a loopback address such as localhost:6060, or --insecure if the network is yours alone", c.pprofAddr)
		}
	}
	return nil
}

// warnNoTokens says so when auth is on and the database holds no token
// that works (none, or all revoked or expired): every request but /healthz
// would be refused, most often because the tokens were made on another
// database file.
func warnNoTokens(ctx context.Context, db *store.DB, log *slog.Logger, path string) {
	toks, err := db.Tokens(ctx)
	if err != nil {
		return
	}
	now := time.Now()
	for _, t := range toks {
		if t.RevokedAt == nil && !t.Expired(now) {
			return
		}
	}
	log.Warn("--auth is on but this database has no token that works: every request will be refused; make one on this file with 'spinbroker token create --db "+path+" --role admin --name ops'", "db", path)
}

// warnReadableByOthers says so when users other than its owner may read
// the database file, which holds every parameter in plain text: the
// broker makes it 0600, but one made by an older build, copied or restored
// keeps the mode it had, and its -wal and -shm take that mode. It only
// says so: the mode is its owner's to choose.
func warnReadableByOthers(log *slog.Logger, path string) {
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm()&0o044 == 0 {
		return
	}
	log.Warn("the database file is readable by other users: it holds every parameter in plain text; 'chmod 600 "+path+"' keeps it to its owner",
		"db", path, "mode", fi.Mode().Perm().String())
}

// newLogger builds the structured logger the flags ask for: the agents'
// shape, with serve's spelling of the flags in its errors.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	log, err := logging.New(w, format, level)
	if err != nil {
		return nil, fmt.Errorf("--%w", err)
	}
	return log, nil
}

// openSentence says why serve could not open (or create) the database at
// db in one sentence that names it once, as the other database commands
// say the store's errors (storeSentence): "open the database x.db: store:
// x.db is not a spin-broker database" named it twice and spoke Go. A
// folder that does not exist is the whole of the cause.
func openSentence(db string, err error) string {
	if ferr := missingFolder(db, "create it, or give --db a file in one that does"); ferr != nil {
		return ferr.Error()
	}
	msg := storeSentence(err).Error()
	if !strings.Contains(msg, db) {
		msg = fmt.Sprintf("cannot open the database %s: %s", db, msg)
	}
	return msg + writableHint(db)
}

// missingFolder is the error of a database to be made at db in a folder
// that does not exist, with todo, what to do about it; nil when the folder
// is there (or cannot be looked at: opening says why).
func missingFolder(db, todo string) error {
	dir := filepath.Dir(db)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("cannot create a database at %s: its folder %s does not exist (%s)", db, dir, todo)
	}
	return nil
}

// writableHint explains a database that cannot be opened when the reason is
// that its directory cannot be written (SQLite needs to create its WAL), or
// that its file system is full. It names the cause, not the probe file it
// tried. A directory that does not exist is openSentence's to say.
func writableHint(db string) string {
	dir := filepath.Dir(db)
	f, err := os.CreateTemp(dir, ".spinbroker-probe-*")
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Sprintf(" (its directory %s cannot be written: %v)", dir, err)
	}
	f.Close()
	os.Remove(f.Name())
	if free, full := store.NoRoom(db); full {
		// SQLite says "disk I/O error" when it cannot make its -shm.
		return fmt.Sprintf(" (the file system of %s is full: %d bytes free)", dir, free)
	}
	return ""
}

// serverErrorLog is the ErrorLog of an http.Server: what Go's server says
// goes to log at warn, but for a connection closed before its TLS handshake
// began (a load balancer's TCP health check, a port scan), at debug: one
// warning per probe buried those that --log-level warn is kept for.
func serverErrorLog(log *slog.Logger) *stdlog.Logger {
	return stdlog.New(serverErrorWriter{log}, "", 0)
}

type serverErrorWriter struct{ log *slog.Logger }

func (w serverErrorWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSuffix(string(p), "\n")
	level := slog.LevelWarn
	if strings.HasPrefix(msg, "http: TLS handshake error") &&
		(strings.HasSuffix(msg, ": EOF") || strings.HasSuffix(msg, ": connection reset by peer")) {
		level = slog.LevelDebug
	}
	w.log.Log(context.Background(), level, msg)
	return len(p), nil
}

// loopback reports whether addr listens only on a loopback interface.
func loopback(addr string) (bool, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false, fmt.Errorf("--addr %q: %w", addr, err)
	}
	if strings.EqualFold(host, "localhost") {
		return true, nil
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback(), nil
}

func (a *app) serve(ctx context.Context, c serveConfig) error {
	log, err := newLogger(a.stderr, c.logFormat, c.logLevel)
	if err != nil {
		return &usageError{cmd: "spinbroker serve", err: err}
	}
	local, err := loopback(c.addr)
	if err != nil {
		return &usageError{cmd: "spinbroker serve", err: err}
	}
	if c.authEnvErr != nil {
		return &usageError{cmd: "spinbroker serve", err: c.authEnvErr}
	}
	if !local && !c.auth && !c.insecure {
		return &usageError{cmd: "spinbroker serve", err: fmt.Errorf(
			"refusing to listen on %s without --auth: --addr is not a loopback address, and anyone who can reach it could run commands; add --auth (and create tokens with 'spinbroker token create'), or --insecure if the network is yours alone", c.addr)}
	}
	if os.Getenv("GOGC") == "" {
		// The broker's Go heap is small (SQLite's page cache lives outside
		// it), so with Go's default of collecting whenever it doubles the
		// collector ran dozens of times a second under load.
		debug.SetGCPercent(defaultGCPercent)
	}
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return &usageError{cmd: "spinbroker serve", err: errors.New("--tls-cert and --tls-key go together")}
	}
	if err := c.validate(); err != nil {
		return &usageError{cmd: "spinbroker serve", err: err}
	}

	var certs *certReloader
	if c.tlsCert != "" {
		// Loaded before listening, so that a wrong file stops the start
		// instead of the first connection, and before the database is
		// opened, so that it creates no database for nothing either.
		if certs, err = newCertReloader(c.tlsCert, c.tlsKey, log); err != nil {
			return fmt.Errorf("load the TLS certificate: %w", err)
		}
	}

	// Listen first: a port taken by another program stops the start before
	// a database is created or migrated for nothing.
	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		// Not a network error of a client: said as it is.
		msg := fmt.Sprintf("cannot listen on %s: %v", c.addr, err)
		if errors.Is(err, syscall.EADDRINUSE) {
			msg += "; is a broker running there already? Give another with --addr (make run ADDR=localhost:8081)"
		}
		return &exitError{code: 1, msg: msg}
	}
	defer ln.Close() // for the returns before Serve, which closes it itself
	var pln net.Listener
	if c.pprofAddr != "" {
		// The same for the profiler: asked for, it is there or the start
		// stops, rather than a warning in a log no one reads until the
		// profile is needed.
		if pln, err = net.Listen("tcp", c.pprofAddr); err != nil {
			return &exitError{code: 1, msg: fmt.Sprintf("cannot listen on --pprof-addr %s: %v", c.pprofAddr, err)}
		}
		defer pln.Close()
	}

	db, err := store.Open(ctx, c.db, store.Options{Sync: c.sync, Logger: log, Exclusive: true})
	if errors.Is(err, store.ErrInUse) {
		return fmt.Errorf("%w: one broker serves a database at a time; stop that one, or give this one another --db", err)
	} else if err != nil && ctx.Err() != nil {
		// Told to stop while it opened (a long migration): a stop.
		log.Info("stopped while opening the database, before serving", "cause", context.Cause(ctx).Error(), "db", c.db)
		return nil
	} else if err != nil {
		return errors.New(openSentence(c.db, err))
	}
	// stopping is when a graceful stop began; its last line, "stopped",
	// comes once the database is closed (its WAL copied back), part of
	// the stop and of its duration.
	var stopping time.Time
	defer func() {
		if err := db.Close(); err != nil {
			log.Error("could not close the database cleanly", "err", err)
		} else {
			log.Info("database closed", "db", c.db)
		}
		if !stopping.IsZero() {
			log.Info("stopped", "duration", time.Since(stopping).Round(time.Millisecond))
		}
	}()
	warnReadableByOthers(log, c.db)
	if c.auth {
		warnNoTokens(ctx, db, log, c.db)
	}
	if c.check {
		if err := checkAtStart(ctx, db, c.db, log); errors.Is(err, errStoppedBeforeServing) {
			return nil // said so; the deferred close logs the rest
		} else if err != nil {
			return err
		}
	}

	reg := prometheus.NewRegistry()
	if certs != nil {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "spinbroker", Name: "tls_certificate_expiry_timestamp_seconds",
			Help: "When the TLS certificate being served expires (Unix seconds); it is loaded again when its files change or on SIGHUP."},
			func() float64 { return float64(certs.NotAfter().Unix()) }))
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer func() { signal.Stop(hup); close(hup) }()
	go func() {
		for range hup {
			if certs == nil {
				log.Info("SIGHUP: nothing to reload (no --tls-cert)")
			} else {
				certs.Reload()
			}
		}
	}()

	// Without auth on a loopback address, only requests that name this
	// machine are answered: DNS rebinding would make any web page an admin.
	api := httpapi.New(db, log, httpapi.Options{Auth: c.auth, MetricsOpen: c.metricsOpen, MaxWrites: c.maxWrites, Registry: reg,
		MaxWaitsPerToken: c.maxWaits, LocalHostOnly: !c.auth && local})
	// running counts the requests being served, so that a stop cut short
	// by --shutdown-timeout can say how many it cut off.
	var running atomic.Int64
	handler := api.Handler()
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			running.Add(1)
			defer running.Add(-1)
			handler.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: c.headerTimeout, // slow headers (slowloris) are cut off
		ReadTimeout:       c.readTimeout,   // and so are slow bodies
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          serverErrorLog(log),
		// No WriteTimeout: each handler sets its own write deadline, so
		// long-polls and event streams are not cut at a fixed time.
	}
	if certs != nil {
		srv.TLSConfig = &tls.Config{GetCertificate: certs.GetCertificate, MinVersion: tls.VersionTLS12}
	}
	scheme := "http"
	if c.tlsCert != "" {
		scheme = "https"
	}
	baseURL := fmt.Sprintf("%s://%s", scheme, ln.Addr())
	gogc := os.Getenv("GOGC")
	if gogc == "" {
		gogc = strconv.Itoa(defaultGCPercent)
	}
	// Every setting that explains what the log shows next (never a secret:
	// the TLS key's path at most), so that an incident's log says how the
	// broker ran without its command line.
	log.Info("spin-broker listening", "url", baseURL, "version", version.Get().String(), "db", c.db,
		"sync", c.sync, "auth", c.auth, "insecure", c.insecure, "tls", certs != nil, "metrics_open", c.metricsOpen,
		"retain", c.retain, "staging_ttl", c.stagingTTL, "sweep_interval", c.sweepEvery, "max_writes", c.maxWrites,
		"max_waits_per_token", c.maxWaits, "header_timeout", c.headerTimeout, "read_timeout", c.readTimeout, "shutdown_timeout", c.shutdownTimeout,
		"log_level", c.logLevel, "pprof_addr", c.pprofAddr, "gogc", gogc)
	if !local && !c.auth {
		log.Warn("serving without authentication beyond loopback (--insecure): anyone who can reach this address can run commands", "addr", c.addr)
	}
	if err := sdNotify("READY=1\nSTATUS=serving " + baseURL); err != nil {
		log.Warn("could not tell systemd the broker is ready", "err", err)
	}

	// The profiler's server, shut down with the API's: a profile being
	// taken finishes within the same timeout, or is cut off with a line.
	var psrv *http.Server
	if pln != nil {
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		var h http.Handler = mux
		if local, _ := loopback(c.pprofAddr); local {
			// It has no auth: DNS rebinding must not reach it either.
			h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if !httpapi.LocalHost(r.Host) {
					http.Error(w, "the Host is not this machine", http.StatusForbidden)
					return
				}
				mux.ServeHTTP(w, r)
			})
		}
		// Its server's errors (accept failures: out of file descriptors)
		// are the broker's log records too, told apart from the API
		// server's by their server attribute.
		psrv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second,
			ErrorLog: serverErrorLog(log.With("server", "profiler"))}
		log.Info("profiler listening", "addr", pln.Addr().String())
		go func() {
			if err := psrv.Serve(pln); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, http.ErrServerClosed) {
				log.Warn("profiler stopped", "err", err)
			}
		}()
	}

	sweepCtx, stopSweep := context.WithCancel(context.Background())
	swept := make(chan struct{})
	go func() {
		defer close(swept)
		sweep(sweepCtx, db, log, c)
	}()

	served := make(chan error, 1)
	go func() {
		var err error
		if c.tlsCert != "" {
			err = srv.ServeTLS(ln, "", "") // the certificate is in srv.TLSConfig
		} else {
			err = srv.Serve(ln)
		}
		served <- err
	}()

	select {
	case err := <-served:
		stopSweep()
		<-swept
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	stopping = time.Now()
	// The cause names the signal (SIGTERM).
	log.Info("shutting down", "cause", context.Cause(ctx).Error(), "timeout", c.shutdownTimeout)
	if err := sdNotify("STOPPING=1"); err != nil {
		log.Warn("could not tell systemd the broker is stopping", "err", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), c.shutdownTimeout)
	defer cancel()
	api.Shutdown() // waiting long-polls answer 503 now, event streams end
	profilerDone := make(chan struct{})
	go func() {
		defer close(profilerDone)
		if psrv == nil {
			return
		}
		if err := psrv.Shutdown(sctx); err != nil {
			log.Warn("profiles still being taken at the shutdown timeout were cut off", "err", err)
			psrv.Close()
		}
		log.Info("profiler stopped")
	}()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("requests still running at the shutdown timeout were cut off", "requests", running.Load(), "timeout", c.shutdownTimeout)
		// Each is logged too, as cut off (503, cut_off=true), when its
		// handler returns: Close does not wait for that, so wait a
		// little, that their lines come before "stopped" and none of
		// them meets a closed database.
		api.CutOff()
		srv.Close()
		if !waitIdle(&running, cutOffGrace) {
			log.Warn("requests cut off have not returned: their lines may come after stopped, or never", "requests", running.Load(), "waited", cutOffGrace)
		}
	}
	<-profilerDone
	stopSweep()
	<-swept
	return nil // the deferred close logs "stopped"
}

// cutOffGrace bounds how long a stop that cut requests off waits for their
// handlers to return: one reading a body returns as soon as its connection
// is closed.
const cutOffGrace = time.Second

// waitIdle waits until running is 0, for at most d, and reports whether it
// got there.
func waitIdle(running *atomic.Int64, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for running.Load() > 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// logFatal turns the error that stops serve into one log record at error,
// with the sentence run would print and the same exit code, when the logs
// are JSON: a plain "spinbroker: …" line among them was the one line of a
// crash that a log pipeline could not parse. In text, run prints it as
// before; and so it does when the log flags themselves are wrong.
func (a *app) logFatal(c serveConfig, err error) error {
	if err == nil || c.logFormat != "json" {
		return err
	}
	log, lerr := newLogger(a.stderr, c.logFormat, c.logLevel)
	if lerr != nil {
		return err
	}
	code, msg := 1, ""
	var ee *exitError
	var ue *usageError
	switch {
	case errors.As(err, &ee):
		code, msg = ee.code, ee.msg
	case errors.As(err, &ue):
		code, msg = 2, ue.err.Error()
	default:
		msg = describe(err)
	}
	if msg == "" {
		return err
	}
	log.Error(msg, "exit_code", code)
	return &exitError{code: code}
}

// serveEnv is the environment variable of each serve flag that has one.
var serveEnv = map[string]string{
	"addr": "SPINBROKER_ADDR", "db": "SPINBROKER_DB", "sync": "SPINBROKER_SYNC",
	"log-format": "SPINBROKER_LOG_FORMAT", "log-level": "SPINBROKER_LOG_LEVEL",
}

// namedEnv adds to a usage error about a flag that was not given, but set
// by its environment variable, which variable set it: "--sync must be …"
// would otherwise send a person looking for a flag they never typed.
func namedEnv(cmd *cobra.Command, err error) error {
	var ue *usageError
	if !errors.As(err, &ue) {
		return err
	}
	for name, env := range serveEnv {
		f := cmd.Flags().Lookup(name)
		if f == nil || f.Changed || os.Getenv(env) == "" || !strings.Contains(ue.err.Error(), "--"+name+" ") {
			continue
		}
		ue.err = fmt.Errorf("%w (--%s comes from %s)", ue.err, name, env)
	}
	return err
}

// sweep runs the store's sweeper every c.sweepEvery until ctx ends.
func sweep(ctx context.Context, db *store.DB, log *slog.Logger, c serveConfig) {
	t := time.NewTicker(c.sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		staging := c.stagingTTL
		if staging == 0 {
			staging = -1 // the store's "never"; its 0 is the default
		}
		start := time.Now()
		res, err := db.Sweep(ctx, store.SweepOptions{StagingTTL: staging, Retain: c.retain})
		took := time.Since(start).Round(time.Millisecond)
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("sweep failed", "err", err, "duration", took)
		case res != (store.SweepResult{}):
			log.Info("swept", "leases_settled", res.LeasesSettled, "staging_deleted", res.StagingDeleted,
				"retained_deleted", res.RetainedDeleted, "queues_forgotten", res.QueuesForgotten, "idempotency_keys_deleted", res.KeysDeleted, "duration", took)
		}
	}
}

// errStoppedBeforeServing is checkAtStart's word that a stop came while it
// checked: serve ends there, with exit 0, and never listens.
var errStoppedBeforeServing = errors.New("stopped before serving")

// checkAtStart is serve --check: SQLite's integrity check, its foreign key
// check and a recount of every package's and queue's counts from the
// commands, in one read. A damaged file stops the start; so do wrong
// counts, with the command that mends them: serving them would show
// packages in states they are not in, and hold queues that have room. Rows
// whose package is gone are logged: they hold up no one's work, and only a
// person can say what they were; so are commands whose parameters are lost.
func checkAtStart(ctx context.Context, db *store.DB, path string, log *slog.Logger) error {
	start := time.Now()
	// A check reads the whole file, minutes for a large one: said when it
	// begins, so that a start that shows nothing is not taken for a hang.
	log.Info("checking the database", "db", path)
	c, err := db.CheckConsistency(ctx)
	switch {
	case err != nil && ctx.Err() != nil:
		// Told to stop while it checked: a stop, not a failure
		// ("context canceled", exit 1, before), and not a start either.
		log.Info("stopped during the integrity check, before serving", "cause", context.Cause(ctx).Error(), "checked_for", time.Since(start).Round(time.Millisecond))
		return errStoppedBeforeServing
	case err != nil:
		return fmt.Errorf("integrity check of %s: %w", path, err)
	case len(c.Integrity) > 0:
		return fmt.Errorf("integrity check of %s failed: %s", path, strings.Join(c.Integrity, "; "))
	}
	log.Info("integrity check passed", "db", path, "duration", time.Since(start).Round(time.Millisecond))
	if len(c.Miscounts) > 0 {
		return fmt.Errorf("the counts of %s in %s differ from their commands, so their states and deliveries would be wrong (%s): run 'spinbroker check --db %s --repair', then start the broker again",
			plural(len(c.Miscounts), "package or queue", "packages and queues"), path, countsSummary(c.Miscounts), path)
	}
	if len(c.ForeignKeys) > 0 {
		log.Warn("rows name a package or command that is gone", "db", path, "rows", len(c.ForeignKeys),
			"hint", "spinbroker check --db "+path+" lists them")
	}
	if len(c.LostParameters) > 0 {
		log.Warn("commands lost their parameters: they would be handed out with none", "db", path, "commands", len(c.LostParameters),
			"hint", "spinbroker check --db "+path+" lists them")
	}
	log.Info("counts check passed", "db", path, "packages", c.Packages, "queues", c.Queues, "commands", c.Commands)
	return nil
}
