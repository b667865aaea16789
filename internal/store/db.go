// Package store carries spin-broker's semantics on SQLite: every use case
// (create a package, add, enqueue, next, complete, cancel, retry, sweep) is
// one method and one transaction.
//
// Writes go through one goroutine that owns the only write connection.
// Concurrent writes are gathered into one SQLite transaction (group commit),
// each inside its own savepoint, so that one request's failure undoes only its
// own changes; every caller is answered only after the transaction holding
// its change has committed. Reads use a separate pool of query-only
// connections and never wait for the writer (WAL).
package store

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pressly/goose/v3"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/migrations"
)

// Options configure a DB. The zero value is usable.
type Options struct {
	// Sync is "normal" (the default: a commit survives a crash of the
	// process) or "full" (a commit also survives a power loss).
	Sync string
	// Now is the clock; time.Now when nil. Tests move it.
	Now func() time.Time
	// Mono is the monotonic clock Now is checked against: the time since
	// a fixed instant, which no setting of the wall clock moves. When Now
	// moves further or less than Mono, the wall clock stepped, and the
	// leases are shifted with it (see writer.clockStep). The process's own
	// when Now is nil too; with a Now but no Mono, steps go undetected.
	Mono func() time.Duration
	// Logger receives the store's own log lines; slog.Default when nil.
	Logger *slog.Logger
	// ReadConns is the size of the read pool (default 4).
	ReadConns int
	// MaxBatch caps the writes gathered into one transaction (default 256).
	MaxBatch int
	// CacheKiB is SQLite's page cache per connection (default 8 MiB for
	// the writer, a quarter of it for each reader).
	CacheKiB int
	// Exclusive makes Open fail with an *InUseError (ErrInUse) while
	// another process holds the database exclusively, and hold it so until
	// Close: a broker serving it, or a migration. Tools that write beside a
	// running broker (tokens, backups) open it without.
	Exclusive bool

	walQuiet   time.Duration // walQuiet, shortened by tests
	stallAfter time.Duration // writeStall, shortened by tests
	// maxPackageCommands is spinbroker.MaxCommandsPerPackage but in tests,
	// which cannot afford to fill a package of that many.
	maxPackageCommands int
}

// busyTimeout is how long a connection waits for a lock another holds:
// tools writing beside a running broker, a backup, a checkpoint.
const busyTimeout = 10 * time.Second

// writeStall is how long the writer may stay in one transaction before
// WriteFailure says that writes are stuck: a transaction takes
// milliseconds, and only a disk that does not answer, or another process
// holding the lock past the busy timeout's first half, keeps one that long.
const writeStall = 5 * time.Second

// dsn is the driver's name for the database file at path, with the busy
// timeout every connection to it gets and the parameters extra ("&…").
func dsn(path, extra string) string {
	return fmt.Sprintf("file:%s?_pragma=busy_timeout(%d)%s", (&url.URL{Path: path}).EscapedPath(), busyTimeout.Milliseconds(), extra)
}

// DB is spin-broker's database.
type DB struct {
	path   string
	log    *slog.Logger
	now    func() time.Time
	mono   func() time.Duration // nil: clock steps go undetected
	wdb    *sql.DB
	rdb    *sql.DB
	reader *reader

	ops      chan *op
	maxBatch int
	mu       sync.RWMutex // guards closed against sends on ops
	closed   bool
	done     chan struct{}

	listeners   atomic.Pointer[[]func(*spinbroker.Commit)]
	batches     atomic.Int64 // transactions committed by the writer
	written     atomic.Int64 // write operations committed
	checkpoints atomic.Int64 // checkpoints run beside the writer
	busy        atomic.Int64 // nanoseconds the writer has spent on operations
	// writeFailure is the database failure of the last write that failed
	// for one (disk full, I/O error, read-only), cleared by the next commit
	// that changed something, or by WriteFailure's probe.
	writeFailure atomic.Pointer[error]
	// failLog rate-limits the log lines of failing writes: a full disk
	// fails every batch, thousands a second, and each logged a line.
	failLog struct {
		sync.Mutex
		since      time.Time // when writes began to fail; zero while they work
		last       time.Time // the last line logged
		lastCause  string
		suppressed int
	}
	stallAfter time.Duration // see writeStall
	// maxPackageCommands is the most commands a package may hold.
	maxPackageCommands int
	// busySince is when the writer began what it is doing (Unix
	// nanoseconds, wall clock), 0 while it waits for work.
	busySince atomic.Int64
	probeMu   sync.Mutex
	probe     *probe // WriteFailure's write, while one is under way
	ckpt      *checkpointer
	lock      *os.File // the exclusive lock, when Options.Exclusive
	// file is the database file as it was opened. The writer's connection
	// keeps writing to it even once its path names another file or none
	// (moved aside, deleted, replaced by a restore), where every answer it
	// acknowledged would be lost to the next broker; so every commit first
	// checks that the path still names it.
	file os.FileInfo
	// readingBack, in tests, is called with a package's id before the
	// package is read back to answer a write.
	readingBack func(id string)
}

// Open opens (creating if needed) the database at path, applies the
// migrations and starts the writer.
func Open(ctx context.Context, path string, opts Options) (*DB, error) {
	if path == "" || strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("store: database path %q must be a file name without '?' or '#'", path)
	}
	if err := notFolder(path); err != nil {
		return nil, err
	}
	if err := noAccess(path, true); err != nil {
		return nil, err
	}
	if !opts.Exclusive {
		return open(ctx, path, opts)
	}
	lock, err := lockExclusive(path)
	if err != nil {
		return nil, err
	}
	db, err := open(ctx, path, opts)
	if err != nil {
		lock.Close()
		return nil, err
	}
	db.lock = lock
	return db, nil
}

// notFolder refuses a path that names a folder before anything is made
// beside it (its lock file would be "<folder>.lock", in its parent).
func notFolder(path string) error {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return fmt.Errorf("store: %s is a folder, not a database file", path)
	}
	return nil
}

// createPrivate creates the database file, empty, readable by its owner
// only, when it does not exist yet: it holds every parameter in plain text,
// and SQLite would create it (and then its -wal and -shm, which take the
// database file's mode) readable by everyone the umask lets read. An
// existing file keeps the mode its owner gave it, and is not opened: closing
// a descriptor of a database SQLite has open in this process would drop
// SQLite's POSIX locks on it. A symbolic link to a file not made yet makes
// that file (O_EXCL on the link itself would find it there, and leave the
// file to SQLite and the umask).
func createPrivate(path string) error {
	path = resolved(path)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("store: create %s: %w", path, err)
	}
	return f.Close()
}

// SyncPragma is SQLite's synchronous setting for Options.Sync: "normal" (or
// "", the default) or "full", in any case.
func SyncPragma(s string) (string, error) {
	switch strings.ToLower(s) {
	case "", "normal":
		return "NORMAL", nil
	case "full":
		return "FULL", nil
	}
	return "", fmt.Errorf("sync must be normal or full, not %q", s)
}

func open(ctx context.Context, path string, opts Options) (*DB, error) {
	sync, err := SyncPragma(opts.Sync)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if opts.Now == nil {
		opts.Now = time.Now
		if opts.Mono == nil {
			start := time.Now()
			opts.Mono = func() time.Duration { return time.Since(start) }
		}
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.ReadConns <= 0 {
		opts.ReadConns = 4
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 256
	}
	if opts.CacheKiB <= 0 {
		opts.CacheKiB = 8 << 10
	}

	if err := createPrivate(path); err != nil {
		return nil, err
	}
	if _, err := notForeign(ctx, path); err != nil {
		return nil, err
	}
	// Pragmas go in the DSN so that every connection the pool opens gets
	// them, not just the one an Exec happens to reach. mode=rw: the file
	// exists now, and a connection opened after it was moved away or
	// removed must fail, not make a new, empty database at the path.
	base := dsn(path, "&mode=rw&_pragma=foreign_keys(1)")
	// temp_store(memory) keeps statement and savepoint journals (one per
	// group-committed write) in memory: on disk they cost a pwrite for
	// every page a write touches, a quarter of the writer's time.
	wdsn := fmt.Sprintf("%s&_pragma=journal_mode(WAL)&_pragma=synchronous(%s)&_pragma=cache_size(-%d)&_pragma=temp_store(memory)&_pragma=wal_autocheckpoint(%d)&_txlock=immediate", base, sync, opts.CacheKiB, walAutocheckpoint)
	rdsn := fmt.Sprintf("%s&_pragma=query_only(1)&_pragma=cache_size(-%d)", base, opts.CacheKiB/4)

	wdb, err := sql.Open("sqlite", wdsn)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	wdb.SetMaxOpenConns(1)
	wdb.SetMaxIdleConns(1)
	wdb.SetConnMaxLifetime(0)
	wdb.SetConnMaxIdleTime(0)
	if err := migrate(ctx, wdb, opts.Logger); err != nil {
		wdb.Close()
		return nil, err
	}
	rdb, err := sql.Open("sqlite", rdsn)
	if err != nil {
		wdb.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	rdb.SetMaxOpenConns(opts.ReadConns)
	rdb.SetMaxIdleConns(opts.ReadConns)
	rdb.SetConnMaxIdleTime(0)

	conn, err := wdb.Conn(ctx)
	if err != nil {
		wdb.Close()
		rdb.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, interpretError(err))
	}
	if opts.Exclusive {
		if err := canWrite(ctx, conn); err != nil {
			conn.Close()
			wdb.Close()
			rdb.Close()
			return nil, fmt.Errorf("store: %s cannot be written (%v): a broker needs to write its database; look at the file's owner, mode and attributes (lsattr) and at its mount", path, err)
		}
	}
	cdb, err := sql.Open("sqlite", fmt.Sprintf("%s&_pragma=synchronous(%s)", base, sync))
	if err != nil {
		conn.Close()
		wdb.Close()
		rdb.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	cdb.SetMaxOpenConns(1)
	cdb.SetConnMaxIdleTime(0)
	file, err := os.Stat(path)
	if err != nil {
		conn.Close()
		wdb.Close()
		rdb.Close()
		cdb.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	db := &DB{
		file:       file,
		path:       path,
		log:        opts.Logger,
		now:        func() time.Time { return opts.Now().UTC() },
		mono:       opts.Mono,
		wdb:        wdb,
		rdb:        rdb,
		reader:     &reader{db: rdb, stmts: map[string]*sql.Stmt{}},
		ops:        make(chan *op, 4*opts.MaxBatch),
		maxBatch:   opts.MaxBatch,
		done:       make(chan struct{}),
		stallAfter: cmp.Or(opts.stallAfter, writeStall),

		maxPackageCommands: cmp.Or(opts.maxPackageCommands, spinbroker.MaxCommandsPerPackage),
	}
	quiet := opts.walQuiet
	if quiet <= 0 {
		quiet = walQuiet
	}
	db.ckpt = newCheckpointer(db, cdb, quiet)
	w := &writer{db: db, conn: conn, stmts: map[string]*sql.Stmt{}}
	go w.run()
	go db.watchStalls()
	return db, nil
}

// watchStalls logs a write that has run past stallAfter when it is found,
// and again when it ends: WriteFailure reports a stall to /healthz and
// /metrics, but the log, which an incident is read from, said nothing of
// minutes without a write (a disk that does not answer fails nothing).
// It looks a few times per stallAfter, until the writer stops.
func (db *DB) watchStalls() {
	t := time.NewTicker(db.stallAfter / 5)
	defer t.Stop()
	var stalled int64 // the busySince of the stall logged, 0 for none
	for {
		select {
		case <-db.done:
			return
		case <-t.C:
		}
		since := db.busySince.Load()
		if stalled != 0 && since != stalled {
			db.log.Info("stalled write ended", "stalled_for", time.Since(time.Unix(0, stalled)).Round(time.Millisecond))
			stalled = 0
		}
		if since != 0 && stalled == 0 {
			if d := time.Since(time.Unix(0, since)); d > db.stallAfter {
				db.log.Error("write stalled", "running_for", d.Round(time.Second),
					"err", "the disk does not answer, or another process holds the database's lock")
				stalled = since
			}
		}
	}
}

// canWrite reports an error when conn cannot write the database. SQLite
// opens a file it may not write (another user's, immutable, on a read-only
// bind mount of the file) read-only without a word, and an up-to-date
// schema makes no write at start-up: a broker would serve reads and answer
// every write 503. A read-only connection still begins a write transaction
// (in WAL mode); it is refused when it first changes a page: here in a
// transaction rolled back, so nothing reaches the file.
func canWrite(ctx context.Context, conn *sql.Conn) error {
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return err
	}
	_, err := conn.ExecContext(ctx, "CREATE TABLE spinbroker_write_check (x)")
	if _, rerr := conn.ExecContext(ctx, "ROLLBACK"); err == nil {
		err = rerr
	}
	return err
}

// migrate applies the embedded migrations that have not run yet. An
// upgrade of a database made by an older build (not the creation of a new
// one) is logged, from which schema version to which: the log is the
// record of the schema changing under an operator's file.
func migrate(ctx context.Context, db *sql.DB, log *slog.Logger) error {
	p, err := goose.NewProvider(goose.DialectSQLite3, db, migrations.FS)
	if err != nil {
		return fmt.Errorf("store: migrations: %w", err)
	}
	if err := notNewer(ctx, p); err != nil {
		return err
	}
	from, err := p.GetDBVersion(ctx)
	if err != nil {
		return fmt.Errorf("store: read the schema version: %w", interpretError(err))
	}
	start := time.Now()
	res, err := p.Up(ctx)
	if err != nil {
		return fmt.Errorf("store: migrate: %w", interpretError(err))
	}
	if from > 0 && len(res) > 0 {
		names := make([]string, len(res))
		for i, r := range res {
			names[i] = r.Source.Path
		}
		log.Info("migrated the database schema", "from", from, "to", res[len(res)-1].Source.Version,
			"migrations", strings.Join(names, ","), "duration", time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// notForeign refuses a database file that holds tables but not spin-broker's
// migrations table: another program's database, given by mistake, which
// serve or 'migrate up' would otherwise fill with spin-broker's tables (and
// turn to WAL). It reports whether the file has spin-broker's migrations.
// It reads with a connection of its own that sets no pragma.
func notForeign(ctx context.Context, path string) (ours bool, err error) {
	c, err := sql.Open("sqlite", dsn(path, ""))
	if err != nil {
		return false, err
	}
	defer c.Close()
	var tables, migrated int
	if err := c.QueryRowContext(ctx, `SELECT count(*), coalesce(sum(name = 'goose_db_version'), 0) FROM sqlite_master
		WHERE type = 'table' AND name NOT LIKE 'sqlite\_%' ESCAPE '\'`).Scan(&tables, &migrated); err != nil {
		if nerr := unreadable(path, err); nerr != nil {
			return false, nerr
		}
		return false, fmt.Errorf("store: read the schema version of %s: %w", path, interpretError(err))
	}
	if migrated == 0 && tables > 0 {
		return false, fmt.Errorf("store: %s is not a spin-broker database: it has %d table(s) of its own and no spin-broker migrations; give --db a new file or a spin-broker database", path, tables)
	}
	return migrated == 1, nil
}

// unreadable returns the error of a file at path that err, SQLite's answer
// to the first read of it, says is no SQLite database (SQLITE_NOTADB) or a
// damaged one (SQLITE_CORRUPT), and nil for any other err. Either is a
// fault of the file, not of the moment, that no retry clears: without a
// code of its own it is not taken for one ("unavailable"), and its
// sentence says what the file is and what to do.
func unreadable(path string, err error) error {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return nil
	}
	switch se.Code() & 0xff {
	case sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT:
		return &unreadableError{path: path, err: se}
	}
	return nil
}

type unreadableError struct {
	path string
	err  *sqlite.Error
}

func (e *unreadableError) Error() string {
	if e.err.Code()&0xff == sqlite3.SQLITE_CORRUPT {
		return fmt.Sprintf("store: %s is damaged (database disk image is malformed): restore it from a backup (spinbroker backup --help says how)", e.path)
	}
	return fmt.Sprintf("store: %s is not a spin-broker database: it is not an SQLite database at all (another kind of file, or one whose header was overwritten); give --db a spin-broker database", e.path)
}
func (e *unreadableError) Unwrap() error { return e.err }

// ErrNewerSchema is the error (matched with errors.Is) of a database whose
// schema a newer spin-broker has migrated past what this build knows.
var ErrNewerSchema = errors.New("the database's schema is newer than this build")

// notNewer refuses a database migrated past this build's last migration: a
// newer spin-broker upgraded it, and this one would run on a schema it does
// not know (rolling a binary back after an upgrade).
func notNewer(ctx context.Context, p *goose.Provider) error {
	current, err := p.GetDBVersion(ctx)
	if err != nil {
		return fmt.Errorf("store: read the schema version: %w", interpretError(err))
	}
	sources := p.ListSources()
	if latest := sources[len(sources)-1].Version; current > latest {
		return fmt.Errorf("store: %w: a newer spin-broker migrated it to version %d, and this build knows versions up to %d; run that spin-broker, or restore a backup taken before the upgrade", ErrNewerSchema, current, latest)
	}
	return nil
}

// MigrationStatus describes one migration for `spinbroker migrate status`.
type MigrationStatus struct {
	Version   int64
	Name      string
	Applied   bool
	AppliedAt time.Time
}

// Migrations opens the database at path without applying anything and
// reports every migration and whether it has been applied; with up, it
// applies the pending ones first, holding the database exclusively as
// Options.Exclusive does: never under a running broker.
func Migrations(ctx context.Context, path string, up bool) ([]MigrationStatus, error) {
	if err := notFolder(path); err != nil {
		return nil, err
	}
	if err := noAccess(path, up); err != nil {
		return nil, err
	}
	if up {
		lock, err := lockExclusive(path)
		if err != nil {
			return nil, err
		}
		defer lock.Close() // after the database, deferred below
		if err := createPrivate(path); err != nil {
			return nil, err
		}
	} else if _, err := os.Stat(path); err != nil {
		// A status creates nothing.
		return nil, fmt.Errorf("store: %w", err)
	}
	ours, err := notForeign(ctx, path)
	if err != nil {
		return nil, err
	}
	extra := ""
	if up {
		extra = "&_pragma=journal_mode(WAL)&_txlock=immediate"
	}
	db, err := sql.Open("sqlite", dsn(path, extra))
	if err != nil {
		return nil, err
	}
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectSQLite3, db, migrations.FS)
	if err != nil {
		return nil, err
	}
	if !ours && !up {
		// A new, empty file: everything is pending, and a status writes
		// nothing (goose would create its table, and the DSN of 'up' turn
		// the file to WAL).
		var out []MigrationStatus
		for _, src := range p.ListSources() {
			out = append(out, MigrationStatus{Version: src.Version, Name: src.Path})
		}
		return out, nil
	}
	if err := notNewer(ctx, p); err != nil {
		return nil, err
	}
	if up {
		if _, err := p.Up(ctx); err != nil {
			return nil, fmt.Errorf("store: migrate: %w", err)
		}
	}
	st, err := p.Status(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]MigrationStatus, 0, len(st))
	for _, s := range st {
		m := MigrationStatus{Version: s.Source.Version, Name: s.Source.Path, Applied: s.State == goose.StateApplied, AppliedAt: s.AppliedAt}
		out = append(out, m)
	}
	return out, nil
}

// Path is the file the database lives in.
func (db *DB) Path() string { return db.path }

// Size is the database's size on disk: its file and its WAL.
func (db *DB) Size() (int64, error) { return fileSizes(db.path) }

// WALSize returns the size of the database's WAL file: 0 when there is
// none (between connections, or truncated after the last write).
func (db *DB) WALSize() (int64, error) { return walSize(db.path) }

// Listen registers f to be called after every commit that changed something,
// with what it changed. f runs on the writer's goroutine: it must not block
// or call back into the store.
func (db *DB) Listen(f func(*spinbroker.Commit)) {
	for {
		old := db.listeners.Load()
		var next []func(*spinbroker.Commit)
		if old != nil {
			next = append(next, *old...)
		}
		next = append(next, f)
		if db.listeners.CompareAndSwap(old, &next) {
			return
		}
	}
}

// WriteStats reports the writer's counters (for metrics): transactions
// and write operations committed, and checkpoints run beside it.
func (db *DB) WriteStats() (transactions, writes, checkpoints int64) {
	return db.batches.Load(), db.written.Load(), db.checkpoints.Load()
}

// WriterBusy is how long the one writer has spent on operations since the
// database was opened (for metrics): its rate is the share of the time
// the writer is busy, and near 1 writes queue for it.
func (db *DB) WriterBusy() time.Duration {
	return time.Duration(db.busy.Load())
}

// Close stops taking writes, finishes the ones already submitted, and closes
// the database (which checkpoints the WAL into the main file).
func (db *DB) Close() error {
	db.mu.Lock()
	if db.closed {
		db.mu.Unlock()
		<-db.done
		return nil
	}
	db.closed = true
	close(db.ops)
	db.mu.Unlock()
	<-db.done
	db.reader.close()
	// The write connection closes last: SQLite checkpoints the WAL into
	// the main file and removes it when its last connection closes.
	err := errors.Join(db.ckpt.close(), db.rdb.Close(), db.wdb.Close())
	if db.lock != nil {
		// Last: the next broker may start once the files are closed.
		err = errors.Join(err, db.lock.Close())
	}
	return err
}

// pingQuery reads the schema and the first row of each table the broker
// serves from: "SELECT 1" reads no page of the file, and so answered while
// every read of a package or a queue failed (a corrupt file, an I/O error).
const pingQuery = `SELECT (SELECT count(*) FROM sqlite_schema),
	(SELECT count(*) FROM (SELECT 1 FROM packages LIMIT 1)),
	(SELECT count(*) FROM (SELECT 1 FROM commands LIMIT 1)),
	(SELECT count(*) FROM (SELECT 1 FROM command_parameters LIMIT 1)),
	(SELECT count(*) FROM (SELECT 1 FROM queues LIMIT 1)),
	(SELECT count(*) FROM (SELECT 1 FROM counters LIMIT 1))`

// Ping reports whether the database answers a read: of the file, not of
// the pages a connection keeps in its cache (PRAGMA shrink_memory drops
// them first; the OS's cache makes the read cheap).
func (db *DB) Ping(ctx context.Context) error {
	if db.sameFile() != nil {
		// The path names another file, or none: a new connection cannot
		// read the file the broker serves, and WriteFailure says why.
		return nil
	}
	var n [6]int
	err := func() error {
		c, err := db.rdb.Conn(ctx)
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := c.ExecContext(ctx, `PRAGMA shrink_memory`); err != nil {
			return err
		}
		return c.QueryRowContext(ctx, pingQuery).Scan(&n[0], &n[1], &n[2], &n[3], &n[4], &n[5])
	}()
	if err != nil {
		err = interpretError(err)
		return spinbroker.Errorf(spinbroker.EUNAVAILABLE, "the database does not answer: %s", causeText(err))
	}
	return nil
}

// causeText is err's words without the "spinbroker: code:" of an *Error,
// for a message that quotes it: not "…: spinbroker: unavailable: the
// broker is shutting down".
func causeText(err error) string {
	var e *spinbroker.Error
	if errors.As(err, &e) {
		return e.Message
	}
	return err.Error()
}

// WriteFailure reports whether writes fail for the database's sake (a full
// disk, an I/O error, a read-only file): nil unless a write failed so since
// the last commit that changed something, or the path no longer names the
// file the broker opened (then every write will fail).
// A database that reads fine can refuse every write, and nothing else would
// say so once clients stop trying; so when the last write failed,
// WriteFailure has a write tried that changes one row (a page the WAL must
// take): its commit clears the failure once writes work again. One such
// write at a time, however many callers wait for it; each waits no longer
// than its ctx, then reports the last failure.
func (db *DB) WriteFailure(ctx context.Context) error {
	if err := db.sameFile(); err != nil {
		// Every write will fail: say so before a client's write has.
		return err
	}
	if since := db.busySince.Load(); since != 0 {
		// A probe would only queue behind it.
		if d := time.Since(time.Unix(0, since)); d > db.stallAfter {
			return fmt.Errorf("a write transaction has run for %s: the disk does not answer, or another process holds the database's lock", d.Round(time.Second))
		}
	}
	f := db.writeFailure.Load()
	if f == nil {
		return nil
	}
	if db.stillFull(*f) {
		return *f // a write that fits would prove nothing
	}
	p := db.probeWrites()
	select {
	case <-p.done:
		if p.err != nil {
			return p.err
		}
		if f := db.writeFailure.Load(); f != nil {
			return *f
		}
		return nil
	case <-ctx.Done():
		if f := db.writeFailure.Load(); f != nil {
			return *f
		}
		return errors.New("a write did not commit in time")
	}
}

// probe is a write, tried to learn whether the database takes writes
// again.
type probe struct {
	done chan struct{}
	err  error
}

// probeWrites starts a probe, or returns the one under way.
func (db *DB) probeWrites() *probe {
	db.probeMu.Lock()
	defer db.probeMu.Unlock()
	if db.probe != nil {
		return db.probe
	}
	p := &probe{done: make(chan struct{})}
	db.probe = p
	go func() {
		// A row that really changes: SQLite writes nothing for an update
		// that leaves a row's bytes as they were. The commit changes no
		// package, command or queue, so the writer leaves the failure to be
		// cleared here.
		p.err = db.write(context.Background(), func(tx *Tx) error {
			_, err := tx.exec(`INSERT INTO counters (name, value) VALUES ('write_probe', 1)
				ON CONFLICT (name) DO UPDATE SET value = value + 1`)
			return err
		})
		if p.err == nil {
			db.writesWork()
		}
		db.probeMu.Lock()
		db.probe = nil
		db.probeMu.Unlock()
		close(p.done)
	}()
	return p
}

// errClosed answers writes submitted after Close.
var errClosed = spinbroker.Errorf(spinbroker.EUNAVAILABLE, "the broker is shutting down")

// op is one write operation waiting for the writer.
type op struct {
	ctx    context.Context
	fn     func(*Tx) error
	raw    func(*sql.Conn) error // maintenance, run outside any transaction
	alone  bool                  // writeAlone's: never shares a transaction
	err    error
	commit spinbroker.Commit
	done   chan struct{}
}

// write runs fn in a write transaction shared with other concurrent writes,
// and returns once that transaction has committed (or fn failed). fn must be
// quick and must not block: it holds every other writer up.
func (db *DB) write(ctx context.Context, fn func(*Tx) error) error {
	return db.submit(&op{ctx: ctx, fn: fn, done: make(chan struct{})})
}

// writeAlone is write for a background batch (the sweeper's): fn runs in a
// transaction of its own, which takes in no other write. A write that
// shared it waited for the whole batch: an agent's heartbeat queued behind
// one sweep batch waited for the next one too.
func (db *DB) writeAlone(ctx context.Context, fn func(*Tx) error) error {
	return db.submit(&op{ctx: ctx, fn: fn, alone: true, done: make(chan struct{})})
}

// maintain runs fn on the write connection between transactions (pragmas,
// checkpoints: statements that cannot run inside one).
func (db *DB) maintain(ctx context.Context, fn func(*sql.Conn) error) error {
	return db.submit(&op{ctx: ctx, raw: fn, done: make(chan struct{})})
}

// submit hands an operation to the writer and waits for it.
func (db *DB) submit(o *op) error {
	db.mu.RLock()
	if db.closed {
		db.mu.RUnlock()
		return errClosed
	}
	db.ops <- o
	db.mu.RUnlock()
	// Wait for the commit even if ctx ends: the change may already be in
	// the transaction, and the caller must not report a failure for a write
	// that then commits.
	<-o.done
	return o.err
}

// writer owns the write connection and runs the group commits.
type writer struct {
	db    *DB
	conn  *sql.Conn
	stmts map[string]*sql.Stmt
	held  *op // a maintenance op met while gathering, run next
	// wall and mono are the two clocks' readings at the start of the last
	// transaction (clocked: there was one; one that shifted the leases
	// counts once it committed), against which clockStep measures a step
	// of the wall clock.
	wall    time.Time
	mono    time.Duration
	clocked bool
}

// stepTolerance is the most that the wall clock may drift from the
// monotonic one between two transactions before the writer takes it for a
// step and shifts the leases: NTP slews by at most 0.5 ms a second, and a
// broker writes at least every sweep interval (up to an hour: 1.8s).
const stepTolerance = 2 * time.Second

// qShiftLeases moves every lease by ?1 nanoseconds, through commands_leased.
const qShiftLeases = `UPDATE commands SET lease_expires_at = lease_expires_at + ?1 WHERE state = 'leased'`

// clockStep reads both clocks, and when the wall clock moved by more than
// stepTolerance further or less than the monotonic one since the last
// transaction, shifts every lease by the difference: a lease lasts its
// duration as the broker counts time, whatever its wall clock does. A step
// forward of an hour expired every lease at once (live agents lost their
// commands and an attempt), a step back kept a dead agent's an hour longer.
// Calendar times (not_before, retention) are not shifted, and a back-off
// takes care of itself (backoffLeft). It answers the drift it made up for
// (0 if none) and the readings, for the caller to keep once the
// transaction commits: rolled back, the shift is to be made again.
func (w *writer) clockStep() (wall time.Time, mono, drift time.Duration, n int64, err error) {
	if w.db.mono == nil {
		return wall, 0, 0, 0, nil
	}
	wall, mono = w.db.now(), w.db.mono()
	if w.clocked {
		drift = wall.Sub(w.wall) - (mono - w.mono)
	}
	if drift >= -stepTolerance && drift <= stepTolerance {
		w.wall, w.mono, w.clocked = wall, mono, true
		return wall, mono, 0, 0, nil
	}
	r, err := w.exec(qShiftLeases, int64(drift))
	if err != nil {
		return wall, mono, 0, 0, err
	}
	n, _ = r.RowsAffected()
	return wall, mono, drift, n, nil
}

func (w *writer) run() {
	defer close(w.db.done)
	defer func() {
		for _, s := range w.stmts {
			s.Close()
		}
		w.conn.Close()
	}()
	batch := make([]*op, 0, w.db.maxBatch)
	for {
		first := w.held
		w.held = nil
		if first == nil {
			if len(w.db.ops) == 0 {
				w.db.ckpt.poke()
			}
			var ok bool
			if first, ok = <-w.db.ops; !ok {
				return
			}
		}
		start := time.Now()
		w.db.busySince.Store(start.UnixNano())
		if first.raw != nil {
			first.err = first.raw(w.conn)
			close(first.done)
		} else {
			batch = append(batch[:0], first)
			w.commit(batch)
		}
		w.db.busySince.Store(0)
		w.db.busy.Add(int64(time.Since(start)))
	}
}

// absorbFor bounds how long a transaction keeps taking in operations that
// arrive while it runs, so that the first of them is not held up for long.
const absorbFor = time.Millisecond

// gather adds to batch the operations already waiting. It never waits for
// more: agents are latency-bound, and a writer that lingers to fill its
// batch lowers their throughput (measured: 100µs of lingering cost a third).
func (w *writer) gather(batch *[]*op) {
	for w.held == nil && len(*batch) < w.db.maxBatch {
		select {
		case o, ok := <-w.db.ops:
			if !ok {
				return
			}
			if o.raw != nil || o.alone {
				w.held = o
				return
			}
			*batch = append(*batch, o)
		default:
			return
		}
	}
}

// commit runs a batch of operations in one transaction, each in a savepoint
// when there are several, and answers each after the commit.
func (w *writer) commit(batch []*op) {
	fail := func(err error) {
		if ue := (*unavailableError)(nil); errors.As(err, &ue) { // a statement's
			w.db.writeFailure.Store(&err)
		}
		for _, o := range batch {
			if o.err == nil {
				o.err = err
			}
			close(o.done)
		}
	}
	// An operation whose request was abandoned before the writer came to
	// it (its client gone, or cut off by a stop) is answered so before any
	// transaction: while another process holds the lock, each BEGIN waits
	// the busy timeout, and a stop that cut off the requests queued behind
	// a stalled write waited that long for each of them in turn.
	live := batch[:0]
	for _, o := range batch {
		if o.ctx.Err() != nil {
			o.err = abandoned()
			close(o.done)
			continue
		}
		live = append(live, o)
	}
	if batch = live; len(batch) == 0 {
		return
	}
	if _, err := w.exec("BEGIN IMMEDIATE"); err != nil {
		fail(w.db.unavailable("begin", err))
		return
	}
	wall, mono, drift, shifted, err := w.clockStep()
	if err != nil {
		w.rollback()
		fail(w.db.unavailable("shift leases", err))
		return
	}
	ran := 0
	started := time.Now()
	for i := 0; ; i++ {
		// Take in the operations that arrived while the earlier ones ran:
		// they share this commit instead of waiting for the next, and
		// nothing waits for them. A background batch takes in none.
		if i == len(batch) && !batch[0].alone && time.Since(started) < absorbFor {
			w.gather(&batch)
		}
		if i == len(batch) {
			break
		}
		o := batch[i]
		// The first operation runs without a savepoint: if it fails, it is
		// alone in the transaction, and the whole of it rolls back.
		single := i == 0
		if o.ctx.Err() != nil {
			o.err = abandoned()
			continue
		}
		if !single {
			if _, err := w.exec("SAVEPOINT op"); err != nil {
				w.rollback()
				fail(w.db.unavailable("savepoint", err))
				return
			}
		}
		tx := &Tx{w: w, now: w.db.now(), commit: &o.commit}
		o.err = tx.run(o.fn)
		if o.err != nil {
			o.commit = spinbroker.Commit{}
			if single {
				w.rollback()
				fail(o.err)
				return
			}
			if _, err := w.exec("ROLLBACK TO op"); err != nil {
				// SQLite rolled the whole transaction back (disk full, I/O
				// error): nothing in this batch was written.
				w.rollback()
				fail(w.db.unavailable("rollback to savepoint", err))
				return
			}
		}
		if !single {
			if _, err := w.exec("RELEASE op"); err != nil {
				w.rollback()
				fail(w.db.unavailable("release savepoint", err))
				return
			}
		}
		if o.err == nil {
			ran++
		}
	}
	if err := w.db.sameFile(); err != nil {
		w.rollback()
		for _, o := range batch {
			o.commit = spinbroker.Commit{}
		}
		fail(w.db.unavailable("commit", err))
		return
	}
	if _, err := w.exec("COMMIT"); err != nil {
		w.rollback()
		for _, o := range batch {
			o.commit = spinbroker.Commit{}
		}
		fail(w.db.unavailable("commit", err))
		return
	}
	if drift != 0 {
		w.wall, w.mono = wall, mono
		w.db.log.Warn("the clock stepped", "drift", drift.Round(time.Millisecond), "leases_shifted", shifted)
	}
	// A commit that changed rows reached the disk: writes work. One that
	// changed nothing (a sweep with nothing to do) wrote no page and proves
	// nothing; the probe clears the failure itself.
	for _, o := range batch {
		if o.err == nil && !o.commit.Empty() {
			w.db.writesWork()
			break
		}
	}
	if w.db.batches.Add(1)%checkpointAfter == 0 {
		w.db.ckpt.poke() // a busy writer never drains its queue to say so
	}
	w.db.written.Add(int64(ran))
	var ls []func(*spinbroker.Commit)
	if p := w.db.listeners.Load(); p != nil {
		ls = *p
	}
	for _, o := range batch {
		if o.err == nil && !o.commit.Empty() {
			for _, f := range ls {
				f(&o.commit)
			}
		}
		close(o.done)
	}
}

// abandoned answers an operation whose request ended before the writer ran
// it: nothing of it was written.
func abandoned() error {
	return spinbroker.Errorf(spinbroker.EUNAVAILABLE, "the request was abandoned before it ran")
}

func (w *writer) rollback() {
	// A failed ROLLBACK means there was no transaction left to undo.
	w.conn.ExecContext(context.Background(), "ROLLBACK") //nolint:errcheck
}

// stmt returns the prepared statement for q on the write connection; parsing
// SQL costs more than running most of these statements.
func (w *writer) stmt(q string) (*sql.Stmt, error) {
	if s, ok := w.stmts[q]; ok {
		return s, nil
	}
	s, err := w.conn.PrepareContext(context.Background(), q)
	if err != nil {
		return nil, err
	}
	w.stmts[q] = s
	return s, nil
}

func (w *writer) exec(q string, args ...any) (sql.Result, error) {
	s, err := w.stmt(q)
	if err != nil {
		return nil, err
	}
	return s.ExecContext(context.Background(), args...)
}

// errReplaced is the failure of a database whose path no longer names the
// file the broker opened.
type errReplaced struct {
	path  string
	cause error
}

func (e *errReplaced) Error() string {
	how := "replaced by another file"
	if e.cause != nil {
		how = "removed"
	}
	return fmt.Sprintf("the database file %s was %s while the broker ran: nothing written now would be seen after a restart; restart the broker (on the file you mean)", e.path, how)
}

// As answers 503 with the same sentence.
func (e *errReplaced) As(target any) bool {
	if p, ok := target.(**spinbroker.Error); ok {
		*p = spinbroker.Errorf(spinbroker.EUNAVAILABLE, "%s", e.Error())
		return true
	}
	return false
}

// sameFile reports an error unless the database's path still names the file
// that was opened.
func (db *DB) sameFile() error {
	fi, err := os.Stat(db.path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return &errReplaced{path: db.path, cause: err}
		}
		return nil // cannot tell (a permission change): SQLite will say
	}
	if !os.SameFile(fi, db.file) {
		return &errReplaced{path: db.path}
	}
	return nil
}

// unavailable logs a database failure and turns it into the error every
// caller of the batch gets; WriteFailure reports it until a commit that
// changed something succeeds. While writes keep failing for the same cause,
// a line is logged at most every failLogEvery, saying how many failed since.
func (db *DB) unavailable(what string, err error) error {
	err = interpretError(err)
	if spinbroker.ErrorCode(err) == spinbroker.EUNAVAILABLE {
		db.logFailure("database unavailable", what, err)
		db.writeFailure.Store(&err)
		return err
	}
	db.logFailure("database error", what, err)
	err = spinbroker.Errorf(spinbroker.EUNAVAILABLE, "the database is unavailable")
	db.writeFailure.Store(&err)
	return err
}

// failLogEvery is how often a write failure that goes on is logged again.
const failLogEvery = 10 * time.Second

func (db *DB) logFailure(msg, what string, err error) {
	f := &db.failLog
	f.Lock()
	defer f.Unlock()
	now := time.Now()
	cause := err.Error()
	if !f.since.IsZero() && cause == f.lastCause && now.Sub(f.last) < failLogEvery {
		f.suppressed++
		return
	}
	if f.since.IsZero() {
		f.since = now
	}
	attrs := []any{"step", what, "err", err}
	if f.suppressed > 0 {
		attrs = append(attrs, "failed_since_last_line", f.suppressed, "failing_for", now.Sub(f.since).Round(time.Second))
	}
	db.log.Error(msg, attrs...)
	f.last, f.lastCause, f.suppressed = now, cause, 0
}

// writesWork clears the write failure once a commit went through (after a
// full disk, once it has room again too), and says so in the log when
// writes had been failing.
func (db *DB) writesWork() {
	if failed := db.writeFailure.Load(); failed == nil || db.stillFull(*failed) ||
		!db.writeFailure.CompareAndSwap(failed, nil) {
		return
	}
	f := &db.failLog
	f.Lock()
	defer f.Unlock()
	if !f.since.IsZero() {
		db.log.Info("database takes writes again", "failing_for", time.Since(f.since).Round(time.Millisecond),
			"failed_since_last_line", f.suppressed)
	}
	f.since, f.last, f.lastCause, f.suppressed = time.Time{}, time.Time{}, "", 0
}

// Tx is one write operation's view of the shared transaction.
type Tx struct {
	w      *writer
	now    time.Time
	commit *spinbroker.Commit
	added  []added // commands inserted since the counts were last flushed
	// flushed is how many of commit.Commands the counts already include.
	flushed int
	// plan is a create's plan of the package it is making, while it
	// runs: errors must not name an id that the failed request leaves
	// behind nowhere.
	plan *createPlan
	// statements counts the statements run through t, for tests that
	// hold an operation to a number of them whatever its graph's size.
	statements int
}

// planOf is the plan of the commands a create is adding to package pkgID,
// or nil when t is not creating it.
func (t *Tx) planOf(pkgID string) *createPlan {
	if t.plan == nil || t.plan.pkg != pkgID {
		return nil
	}
	return t.plan
}

// requestsPackage is how an error names the package a create makes.
const requestsPackage = "the package this request creates"

// pkgName is how an error names package id: by its id, or as the request's
// own while the request creates it.
func (t *Tx) pkgName(id string) string {
	if t.planOf(id) != nil {
		return requestsPackage
	}
	return "package " + id
}

// run calls fn, then brings the counts up to date with what it changed. It
// turns a panic into an error, so that a bug in one request cannot take the
// writer (and with it the broker) down.
func (t *Tx) run(fn func(*Tx) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			t.w.db.log.Error("panic in a write", "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("store: panic: %v", r)
		}
	}()
	if err := fn(t); err != nil {
		return err
	}
	return t.flushCounts()
}

func (t *Tx) exec(q string, args ...any) (sql.Result, error) {
	t.statements++
	r, err := t.w.exec(q, args...)
	if err != nil {
		return nil, interpretError(err)
	}
	return r, nil
}

func (t *Tx) query(q string, args ...any) (*sql.Rows, error) {
	t.statements++
	s, err := t.w.stmt(q)
	if err != nil {
		return nil, interpretError(err)
	}
	rows, err := s.QueryContext(context.Background(), args...)
	if err != nil {
		return nil, interpretError(err)
	}
	return rows, nil
}

func (t *Tx) queryRow(q string, args ...any) *row {
	t.statements++
	s, err := t.w.stmt(q)
	if err != nil {
		return &row{err: err}
	}
	return &row{r: s.QueryRowContext(context.Background(), args...)}
}

// reader runs queries on the read pool with prepared statements.
type reader struct {
	db    *sql.DB
	mu    sync.Mutex
	stmts map[string]*sql.Stmt
}

func (r *reader) stmt(q string) (*sql.Stmt, error) {
	if s := r.cached(q); s != nil {
		return s, nil
	}
	// Prepared without the lock held: Prepare waits for a free connection,
	// and with every connection in a read transaction whose owner waits
	// for this lock, none would come.
	s, err := r.db.Prepare(q)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if had, ok := r.stmts[q]; ok {
		s.Close()
		return had, nil
	}
	r.stmts[q] = s
	return s, nil
}

// cached returns the prepared statement for q, or nil when it has not been
// prepared yet.
func (r *reader) cached(q string) *sql.Stmt {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stmts[q]
}

func (r *reader) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.stmts {
		s.Close()
	}
}

func (r *reader) query(q string, args ...any) (*sql.Rows, error) {
	return queryOn(r, q, args...)
}

// queryIDs runs q, whose one parameter is a JSON array of ids (one
// prepared statement for any number of them), with ids.
func (r *reader) queryIDs(q string, ids []string) (*sql.Rows, error) {
	arg, err := json.Marshal(ids)
	if err != nil {
		return nil, err
	}
	return r.query(q, string(arg))
}

func (r *reader) queryRow(q string, args ...any) *row {
	return queryRowOn(r, q, args...)
}

// snapshot runs fn on one read transaction, so that an answer read by
// several statements (a package's counts and its commands, a queue's counts
// and its list) is of one moment: on the pool, each statement may run on
// another connection and see another commit.
func (db *DB) snapshot(ctx context.Context, fn func(q querier) error) error {
	tx, err := db.reader.db.BeginTx(ctx, nil)
	if err != nil {
		return interpretError(err)
	}
	t := &readTx{r: db.reader, tx: tx, stmts: map[string]*sql.Stmt{}}
	err = fn(t)
	tx.Rollback() //nolint:errcheck // a read: there is nothing to keep
	// The statements it had to prepare on its own connection are
	// prepared for the pool now, with no connection held, for next time.
	for _, q := range t.missed {
		db.reader.stmt(q) //nolint:errcheck // it failed in the transaction already, or will say so then
	}
	return err
}

// readTx runs the reader's statements in a read transaction. It never asks
// the pool for a second connection (to prepare a statement the pool has
// not seen yet): with every connection held by a read transaction doing
// so, none would come, and every read would wait for ever.
type readTx struct {
	r      *reader
	tx     *sql.Tx
	stmts  map[string]*sql.Stmt // this transaction's, by query
	missed []string             // queries the pool had not prepared
}

func (t *readTx) stmt(q string) (*sql.Stmt, error) {
	if s, ok := t.stmts[q]; ok {
		return s, nil
	}
	var s *sql.Stmt
	if ps := t.r.cached(q); ps != nil {
		s = t.tx.Stmt(ps) // on this transaction's connection
	} else {
		var err error
		if s, err = t.tx.Prepare(q); err != nil {
			return nil, err
		}
		t.missed = append(t.missed, q)
	}
	t.stmts[q] = s
	return s, nil
}

func (t *readTx) query(q string, args ...any) (*sql.Rows, error) {
	return queryOn(t, q, args...)
}

func (t *readTx) queryRow(q string, args ...any) *row {
	return queryRowOn(t, q, args...)
}

// preparer gives the statement prepared for a query: the read pool's, or
// a read transaction's.
type preparer interface {
	stmt(q string) (*sql.Stmt, error)
}

// queryOn runs q with the statement src prepared for it.
func queryOn(src preparer, q string, args ...any) (*sql.Rows, error) {
	s, err := src.stmt(q)
	if err != nil {
		return nil, interpretError(err)
	}
	rows, err := s.Query(args...)
	if err != nil {
		return nil, interpretError(err)
	}
	return rows, nil
}

// queryRowOn is queryOn for one row.
func queryRowOn(src preparer, q string, args ...any) *row {
	s, err := src.stmt(q)
	if err != nil {
		return &row{err: err}
	}
	return &row{r: s.QueryRow(args...)}
}

// querier is what the read helpers need: the write transaction or the read
// pool, so that a write can answer with what it just wrote.
type querier interface {
	query(q string, args ...any) (*sql.Rows, error)
	queryRow(q string, args ...any) *row
}

// row is a *sql.Row whose Scan maps driver errors.
type row struct {
	r   *sql.Row
	err error
}

func (r *row) Scan(dest ...any) error {
	if r.err != nil {
		return interpretError(r.err)
	}
	return interpretError(r.r.Scan(dest...))
}

// interpretError maps driver errors to spin-broker's codes at this boundary.
// Constraint and resource errors are told apart by their SQLite code, never
// by their message.
func interpretError(err error) error {
	if err == nil {
		return nil
	}
	var se *sqlite.Error
	if !errors.As(err, &se) {
		// A read after Close (the last moment of a stop): database/sql
		// keeps these errors unexported, so only their text tells them.
		if msg := err.Error(); msg == "sql: database is closed" || msg == "sql: statement is closed" {
			return errClosed
		}
		return err
	}
	switch se.Code() {
	case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_UNIQUE:
		return &constraintError{err: err}
	case sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN,
		sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB:
		return &unavailableError{err: err}
	}
	switch se.Code() & 0xff {
	case sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN,
		sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_CORRUPT:
		return &unavailableError{err: err}
	}
	return err
}

// constraintError is a unique or primary key violation; the use case that
// hit it knows which conflict it means.
type constraintError struct{ err error }

func (e *constraintError) Error() string { return e.err.Error() }
func (e *constraintError) Unwrap() error { return e.err }

func isConstraint(err error) bool {
	var ce *constraintError
	return errors.As(err, &ce)
}

// unavailableError is a database that cannot take the request now: disk
// full, read-only, locked by another process. It answers 503.
type unavailableError struct{ err error }

func (e *unavailableError) Error() string { return e.err.Error() }
func (e *unavailableError) Unwrap() error {
	return e.err
}

// As lets errors.As find a *spinbroker.Error with code EUNAVAILABLE, so the
// HTTP layer answers 503 while the log keeps the driver's message.
func (e *unavailableError) As(target any) bool {
	if p, ok := target.(**spinbroker.Error); ok {
		*p = spinbroker.Errorf(spinbroker.EUNAVAILABLE, "the database is unavailable: %s", sqliteCodeName(e.err))
		return true
	}
	return false
}

func sqliteCodeName(err error) string {
	var se *sqlite.Error
	if errors.As(err, &se) {
		if s, ok := sqlite.ErrorCodeString[se.Code()]; ok {
			return s
		}
		if s, ok := sqlite.ErrorCodeString[se.Code()&0xff]; ok {
			return s
		}
	}
	return "error"
}
