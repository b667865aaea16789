package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/client"
)

// TestCrashCampaign kills the real broker with SIGKILL at random moments
// under a mixed load (creates with dependencies across packages, staged
// adds and enqueues, next, heartbeats, completions that succeed, fail or
// ask for a retry, cancels, deletes, and `spinbroker backup` running
// beside it), restarts it on the same file each time, and after each kill,
// with the broker stopped, reads the file with SQL and checks that:
// every write answered 2xx is there; every command's state is legal given
// what was acknowledged and given its dependencies; packages' and queues'
// counts equal a recount of the commands; no command is leased without a
// token and an expiry; and a backup taken under load passes
// integrity_check and the same recount. Each queue's deliveries are checked
// for order across all the restarts, commands with dependencies included
// once the agents had seen all their dependencies succeed; and the agents'
// own records (a lease from its grant to its result's sending or its
// expiry) must never show more than the queue's concurrency live at once.
// Agents leave a lease to run out now and then, so that leases outlive
// kills and restarts; r0 has two agents.
//
// Every fourth kill is aimed at a checkpoint: it waits for the database
// file to be written (only a checkpoint writes it in WAL mode), or, every
// other time, for spinbroker_store_checkpoints_total on /metrics to move,
// and kills at once. With SPINBROKER_CAMPAIGN_QUIET=N every Nth kill stops
// the producers and the operator, lets the agents drain, and kills when the
// checkpointer truncates the WAL after its quiet spell (10 to 20 s).
//
// By default it kills 3 times. For a campaign:
//
//	SPINBROKER_CAMPAIGN_KILLS=60 SPINBROKER_CAMPAIGN_QUIET=10 SPINBROKER_CAMPAIGN_SEED=7 SPINBROKER_CAMPAIGN_ADDR=127.0.0.1:19400 \
//	  go test -race -count=1 -run 'TestCrashCampaign$' -timeout 60m ./cmd/spinbroker/
func TestCrashCampaign(t *testing.T) {
	kills := 3
	if s := os.Getenv("SPINBROKER_CAMPAIGN_KILLS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		kills = n
	}
	quietEvery := 0
	if s := os.Getenv("SPINBROKER_CAMPAIGN_QUIET"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		quietEvery = n
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("SPINBROKER_CAMPAIGN_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		seed = n
	}
	t.Logf("seed %d (SPINBROKER_CAMPAIGN_SEED=%d runs it again)", seed, seed)
	rnd := rand.New(rand.NewPCG(seed, 1))
	addr := os.Getenv("SPINBROKER_CAMPAIGN_ADDR")
	if addr == "" {
		addr = loopbackAddr(t)
	}
	dir := t.TempDir()
	db := filepath.Join(dir, "campaign.db")
	c, err := client.New("http://" + addr)
	if err != nil {
		t.Fatal(err)
	}
	b := startBroker(t, db, "--addr", addr)

	l := newLedger()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	resources := []string{"r0", "r1", "r2", "rc"}
	// rc is served by claims of up to 5 at concurrency 4, with batched
	// completions.
	if err := retry(ctx, func() error {
		_, err := c.SetQueue(ctx, "rc", spinbroker.QueueSettings{Concurrency: ptr(4)})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for p := 0; p < 2; p++ {
		wg.Add(1)
		go func() { defer wg.Done(); l.produce(ctx, c, p, seed, resources) }()
	}
	for _, r := range resources[:3] {
		wg.Add(1)
		go func() { defer wg.Done(); l.agent(ctx, c, r, seed, 0) }()
	}
	// A second agent on r0: two asking at once at concurrency 1.
	wg.Add(1)
	go func() { defer wg.Done(); l.agent(ctx, c, "r0", seed, 1) }()
	wg.Add(1)
	go func() { defer wg.Done(); l.claimer(ctx, c, "rc", seed) }()
	wg.Add(1)
	go func() { defer wg.Done(); l.operator(ctx, c, seed) }()

	var violations []string
	backups := 0
	var walBytes int64 // the -wal files the kills left, for the broker to recover
	var aimed struct{ file, metric, truncate, missed int }
	for k := 0; k < kills; k++ {
		quiet := quietEvery > 0 && k%quietEvery == quietEvery-1
		if quiet {
			l.paused.Store(true)
		}
		if k%5 == 4 {
			// Soon after the start: clients still reconnecting, leases
			// of the last crash being settled.
			time.Sleep(time.Duration(rnd.IntN(100)) * time.Millisecond)
		} else {
			time.Sleep(time.Duration(300+rnd.IntN(1500)) * time.Millisecond)
		}
		// Every third kill lands while a backup runs.
		var bk *exec.Cmd
		var bkDone chan error
		bkPath := filepath.Join(dir, fmt.Sprintf("backup-%d.db", k))
		if k%3 == 0 {
			bk = exec.Command(serveBinary(t), "backup", "--db", db, "--to", bkPath)
			bk.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
			bkDone = make(chan error, 1)
			if err := bk.Start(); err != nil {
				t.Fatal(err)
			}
			go func() { bkDone <- bk.Wait() }()
			time.Sleep(time.Duration(rnd.IntN(50)) * time.Millisecond)
		}
		switch {
		case quiet:
			if waitTruncate(db, 45*time.Second) {
				aimed.truncate++
			} else {
				aimed.missed++
			}
		case k%8 == 1:
			if waitFileWrite(db, 3*time.Second) {
				aimed.file++
			} else {
				aimed.missed++
			}
		case k%8 == 5:
			if waitCheckpointMetric(ctx, "http://"+addr+"/metrics", 3*time.Second) {
				aimed.metric++
			} else {
				aimed.missed++
			}
		}
		if err := b.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-b.done
		// Let answers already received be recorded.
		time.Sleep(100 * time.Millisecond)
		if fi, err := os.Stat(db + "-wal"); err == nil {
			walBytes += fi.Size()
		}
		for _, v := range l.check(t, db, true) {
			violations = append(violations, fmt.Sprintf("kill %d: %s", k, v))
		}
		if bk != nil {
			if err := <-bkDone; err != nil {
				violations = append(violations, fmt.Sprintf("kill %d: backup during the kill: %v", k, err))
			} else {
				backups++
				for _, v := range l.check(t, bkPath, false) {
					violations = append(violations, fmt.Sprintf("kill %d: backup: %s", k, v))
				}
			}
		}
		b = startBroker(t, db, "--addr", addr)
		l.paused.Store(false)
	}
	cancel()
	wg.Wait()
	violations = append(violations, l.order()...)
	conc, full := l.concurrency(map[string]int{"r0": 1, "r1": 1, "r2": 1, "rc": 4})
	violations = append(violations, conc...)
	t.Logf("%d kills (%d while the database file was written by a checkpoint, %d right after the checkpoint counter moved, %d as the WAL was truncated after a quiet spell, %d aimed but missed), leaving %d KiB of WAL in all; %d backups checked; %d acknowledged writes (%d creates, %d adds, %d enqueues, %d results, %d heartbeats, %d cancels, %d deletes, %d retries); %d deliveries, %d leases left to run out, %d deliveries of commands with dependencies checked for order, %d moments with a queue's leases at its concurrency; %d violations",
		kills, aimed.file, aimed.metric, aimed.truncate, aimed.missed, walBytes>>10, backups, l.n.acked.Load(), l.n.creates.Load(), l.n.adds.Load(), l.n.enqueues.Load(), l.n.results.Load(), l.n.heartbeats.Load(), l.n.cancels.Load(), l.n.deletes.Load(), l.n.retries.Load(), l.n.deliveries.Load(), l.n.abandoned.Load(), l.n.depOrder.Load(), full, len(violations))
	for i, v := range violations {
		if i == 50 {
			t.Errorf("and %d more", len(violations)-50)
			break
		}
		t.Error(v)
	}
}

// ledger is everything the clients were told.
type ledger struct {
	mu sync.Mutex
	// Packages acknowledged, with their commands as acknowledged.
	pkgs      map[string]*ackPkg
	pkgOrder  []string
	cmdPkg    map[string]string
	final     map[string]bool // command → the final status acknowledged
	heartbeat map[string]hb   // command → the last heartbeat acknowledged
	// Writes sent, whether or not answered: a lost answer may have committed.
	deleteSent map[string]bool
	cancelSent map[string]bool
	retrySent  map[string]bool // commands an operator's retry was sent for
	// What each queue's agents received, in order.
	received map[string][]*lease
	noDeps   map[string]bool      // commands created without dependencies
	succAt   map[string]time.Time // command → when its success was acknowledged
	batches  int                  // nexts and claims answered, to tell them apart
	paused   atomic.Bool          // producers and operator wait: a quiet spell
	n        struct {
		acked, creates, adds, enqueues, results, heartbeats, cancels, deletes, retries, deliveries, abandoned, depOrder atomic.Int64
	}
}

// lease is a delivery as its agent saw it.
type lease struct {
	delivery
	batch   int       // the next or claim that handed it out
	sent    time.Time // when that next or claim was sent
	deps    []string
	expires time.Time // as acknowledged, by the grant or the last heartbeat
	done    time.Time // when its result was first sent; zero if never
}

type ackPkg struct {
	enqueued  bool
	enqSent   bool // an enqueue was sent, answered or not
	cancelled bool
	cmds      []string
}

type hb struct {
	token   string
	expires time.Time
}

func newLedger() *ledger {
	return &ledger{pkgs: map[string]*ackPkg{}, cmdPkg: map[string]string{}, final: map[string]bool{},
		heartbeat: map[string]hb{}, deleteSent: map[string]bool{}, cancelSent: map[string]bool{}, retrySent: map[string]bool{},
		received: map[string][]*lease{}, noDeps: map[string]bool{}, succAt: map[string]time.Time{}}
}

// pickCommand is a random acknowledged command, for a dependency across packages.
func (l *ledger) pickCommand(r *rand.Rand) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.pkgOrder) == 0 {
		return ""
	}
	// Recent ones, so that some are still unfinished.
	n := len(l.pkgOrder)
	p := l.pkgs[l.pkgOrder[n-1-r.IntN(min(n, 20))]]
	if !p.enqueued || len(p.cmds) == 0 {
		return ""
	}
	return p.cmds[r.IntN(len(p.cmds))]
}

func (l *ledger) pickPackage(r *rand.Rand) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.pkgOrder) == 0 {
		return ""
	}
	return l.pkgOrder[r.IntN(len(l.pkgOrder))]
}

// retry calls f until it succeeds, fails for good, or ctx ends; it sleeps
// with a short back-off while the broker is down.
func retry(ctx context.Context, f func() error) error {
	for {
		err := f()
		if err == nil || !client.Temporary(err) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(30 * time.Millisecond):
		}
	}
}

func (l *ledger) produce(ctx context.Context, c *client.Client, p int, seed uint64, resources []string) {
	r := rand.New(rand.NewPCG(seed, uint64(100+p)))
	for i := 0; ctx.Err() == nil; i++ {
		time.Sleep(time.Duration(r.IntN(30)) * time.Millisecond)
		if l.paused.Load() {
			i--
			continue
		}
		n := 1 + r.IntN(4)
		cmds := make([]spinbroker.NewCommand, n)
		for j := range cmds {
			cmds[j] = spinbroker.NewCommand{Key: fmt.Sprintf("k%d", j), Resource: resources[r.IntN(len(resources))], Action: "do",
				Parameters: []byte(fmt.Sprintf(`{"p":%d,"i":%d,"j":%d}`, p, i, j))}
			if j > 0 && r.IntN(2) == 0 {
				cmds[j].Dependencies = append(cmds[j].Dependencies, fmt.Sprintf("k%d", r.IntN(j)))
			}
			if r.IntN(4) == 0 {
				if id := l.pickCommand(r); id != "" {
					cmds[j].Dependencies = append(cmds[j].Dependencies, id)
				}
			}
		}
		key := fmt.Sprintf("campaign-%d-%d", p, i)
		if r.IntN(2) == 0 {
			var pkg *spinbroker.Package
			err := retry(ctx, func() (err error) {
				pkg, err = c.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: cmds}, client.IdempotencyKey(key))
				return err
			})
			if err != nil {
				continue // a dependency deleted meanwhile, say
			}
			l.mu.Lock()
			a := &ackPkg{enqueued: true}
			for j, cmd := range pkg.Commands {
				a.cmds = append(a.cmds, cmd.ID)
				l.cmdPkg[cmd.ID] = pkg.ID
				if len(cmds[j].Dependencies) == 0 {
					l.noDeps[cmd.ID] = true
				}
			}
			l.pkgs[pkg.ID] = a
			l.pkgOrder = append(l.pkgOrder, pkg.ID)
			l.mu.Unlock()
			l.n.creates.Add(1)
			l.n.acked.Add(1)
			continue
		}
		// The seed's protocol: new, add each, enqueue.
		var pkg *spinbroker.Package
		if err := retry(ctx, func() (err error) {
			pkg, err = c.CreatePackage(ctx, spinbroker.NewPackage{}, client.IdempotencyKey(key))
			return err
		}); err != nil {
			continue
		}
		l.mu.Lock()
		a := &ackPkg{}
		l.pkgs[pkg.ID] = a
		l.pkgOrder = append(l.pkgOrder, pkg.ID)
		l.mu.Unlock()
		l.n.creates.Add(1)
		l.n.acked.Add(1)
		ok := true
		for j, in := range cmds {
			var cmd *spinbroker.Command
			if err := retry(ctx, func() (err error) {
				cmd, err = c.AddCommand(ctx, pkg.ID, in, client.IdempotencyKey(fmt.Sprintf("%s-%d", key, j)))
				return err
			}); err != nil {
				ok = false // cancelled or deleted by the operator, or a dependency gone
				break
			}
			l.mu.Lock()
			a.cmds = append(a.cmds, cmd.ID)
			l.cmdPkg[cmd.ID] = pkg.ID
			if len(in.Dependencies) == 0 {
				l.noDeps[cmd.ID] = true
			}
			l.mu.Unlock()
			l.n.adds.Add(1)
			l.n.acked.Add(1)
		}
		if !ok || r.IntN(10) == 0 {
			continue // left in staging
		}
		l.mu.Lock()
		a.enqSent = true
		l.mu.Unlock()
		if err := retry(ctx, func() error { _, err := c.Enqueue(ctx, pkg.ID); return err }); err != nil {
			continue
		}
		l.mu.Lock()
		a.enqueued = true
		l.mu.Unlock()
		l.n.enqueues.Add(1)
		l.n.acked.Add(1)
	}
}

// receive records what a next or claim sent at sent handed out.
func (l *ledger) receive(resource string, sent time.Time, cmds []spinbroker.Command) []*lease {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.batches++
	var out []*lease
	for _, cmd := range cmds {
		d := &lease{delivery: delivery{id: cmd.ID, seq: *cmd.Seq, attempts: cmd.Attempts, at: now},
			batch: l.batches, sent: sent, deps: cmd.Dependencies, expires: cmd.Lease.ExpiresAt}
		l.received[resource] = append(l.received[resource], d)
		out = append(out, d)
	}
	l.n.deliveries.Add(int64(len(cmds)))
	return out
}

// sending records that d's result is about to be sent: its lease ends no
// earlier.
func (l *ledger) sending(d *lease) {
	l.mu.Lock()
	if d.done.IsZero() {
		d.done = time.Now()
	}
	l.mu.Unlock()
}

func (l *ledger) agent(ctx context.Context, c *client.Client, resource string, seed uint64, n int) {
	r := rand.New(rand.NewPCG(seed, uint64(200+len(resource)+int(resource[1])+1000*n)))
	for ctx.Err() == nil {
		sent := time.Now()
		cmd, err := c.Next(ctx, resource, time.Second, 2*time.Second)
		if err != nil || cmd == nil {
			if err != nil {
				time.Sleep(30 * time.Millisecond)
			}
			continue
		}
		d := l.receive(resource, sent, []spinbroker.Command{*cmd})[0]
		if r.IntN(25) == 0 {
			l.n.abandoned.Add(1) // its lease runs out; it is delivered again
			continue
		}
		if r.IntN(3) == 0 {
			exp, err := c.Heartbeat(ctx, cmd.ID, cmd.Lease.Token, 3*time.Second)
			if err == nil {
				l.mu.Lock()
				l.heartbeat[cmd.ID] = hb{token: cmd.Lease.Token, expires: exp}
				d.expires = exp
				l.mu.Unlock()
				l.n.heartbeats.Add(1)
				l.n.acked.Add(1)
			}
		}
		res := spinbroker.Result{Lease: cmd.Lease.Token}
		ok := true
		switch x := r.IntN(20); {
		case x < 16:
		case x < 18:
			ok = false
			reason := "broken"
			res.Reason = &reason
		default:
			ok = false
			res.Retry = true
		}
		res.Status = &ok
		l.sending(d)
		err = retry(ctx, func() error { _, err := c.Complete(ctx, cmd.ID, res); return err })
		if err != nil {
			continue // stale: the lease ran out in a crash
		}
		l.n.results.Add(1)
		l.n.acked.Add(1)
		if !res.Retry || ok {
			l.mu.Lock()
			l.final[cmd.ID] = ok
			if ok {
				l.succAt[cmd.ID] = time.Now()
			}
			l.mu.Unlock()
		}
	}
}

func (l *ledger) operator(ctx context.Context, c *client.Client, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 300))
	for ctx.Err() == nil {
		time.Sleep(time.Duration(20+r.IntN(80)) * time.Millisecond)
		if l.paused.Load() {
			continue
		}
		id := l.pickPackage(r)
		if id == "" {
			continue
		}
		if r.IntN(4) == 0 {
			// An operator's "run it again" of a failed command, and so of
			// what its failure cancelled (in other packages too).
			p, err := c.Package(ctx, id)
			if err != nil || p.Causer == nil {
				continue
			}
			l.mu.Lock()
			l.retrySent[*p.Causer] = true
			l.mu.Unlock()
			if retry(ctx, func() error { _, err := c.Retry(ctx, *p.Causer); return err }) == nil {
				l.n.retries.Add(1)
				l.n.acked.Add(1)
			}
			continue
		}
		if r.IntN(3) == 0 {
			l.mu.Lock()
			l.cancelSent[id] = true
			l.mu.Unlock()
			var p *spinbroker.Package
			if retry(ctx, func() (err error) { p, err = c.CancelPackage(ctx, id); return err }) == nil {
				l.mu.Lock()
				// A finished package stays as it was (200, no change).
				l.pkgs[id].cancelled = p.State == spinbroker.PackageCancelled
				l.mu.Unlock()
				l.n.cancels.Add(1)
				l.n.acked.Add(1)
			}
			continue
		}
		p, err := c.Package(ctx, id)
		if err != nil || (p.State != spinbroker.PackageSucceeded && p.State != spinbroker.PackageFailed && p.State != spinbroker.PackageCancelled) {
			continue
		}
		if p.State == spinbroker.PackageCancelled && p.Counts.Leased > 0 {
			continue
		}
		l.mu.Lock()
		l.deleteSent[id] = true
		l.mu.Unlock()
		err = retry(ctx, func() error { return c.DeletePackage(ctx, id) })
		if err == nil || spinbroker.ErrorCode(err) == spinbroker.ENOTFOUND {
			l.n.deletes.Add(1)
			l.n.acked.Add(1)
		}
	}
}

// check reads the database file (the broker stopped) and returns what is
// wrong in it. With acked, it also holds the file to the ledger.
func (l *ledger) check(t *testing.T, path string, acked bool) []string {
	t.Helper()
	conn, err := sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath()+"?mode=ro&_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetMaxOpenConns(1)
	// Read only: closing it leaves the -wal file the kill left, for the
	// broker's own recovery at its restart.
	var out []string
	bad := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	var ic string
	if err := conn.QueryRow(`PRAGMA integrity_check`).Scan(&ic); err != nil || ic != "ok" {
		bad("integrity_check: %q %v", ic, err)
	}
	queries := map[string]string{
		"package counts differ from a recount": `SELECT p.id || ': ' || p.total || ' ' || p.n_staged || ' ' || p.n_blocked || ' ' || p.n_ready || ' ' || p.n_leased || ' ' || p.n_succeeded || ' ' || p.n_failed || ' ' || p.n_cancelled
			|| ' vs ' || count(c.id) || ' ' || total(c.state = 'staged') || ' ' || total(c.state = 'blocked') || ' ' || total(c.state = 'ready') || ' ' || total(c.state = 'leased') || ' ' || total(c.state = 'succeeded') || ' ' || total(c.state = 'failed') || ' ' || total(c.state = 'cancelled')
			FROM packages p LEFT JOIN commands c ON c.package_id = p.id GROUP BY p.id
			HAVING p.total <> count(c.id) OR p.n_staged <> total(c.state = 'staged') OR p.n_blocked <> total(c.state = 'blocked')
			OR p.n_ready <> total(c.state = 'ready') OR p.n_leased <> total(c.state = 'leased') OR p.n_succeeded <> total(c.state = 'succeeded')
			OR p.n_failed <> total(c.state = 'failed') OR p.n_cancelled <> total(c.state = 'cancelled')`,
		"queue counts differ from a recount": `SELECT r || ': ' || qb || ' ' || qr || ' ' || ql || ' vs ' || cb || ' ' || cr || ' ' || cl FROM (
			SELECT r, coalesce(q.n_blocked, 0) qb, coalesce(q.n_ready, 0) qr, coalesce(q.n_leased, 0) ql,
				(SELECT count(*) FROM commands WHERE resource = r AND state = 'blocked') cb,
				(SELECT count(*) FROM commands WHERE resource = r AND state = 'ready') cr,
				(SELECT count(*) FROM commands WHERE resource = r AND state = 'leased') cl
			FROM (SELECT resource r FROM queues UNION SELECT DISTINCT resource FROM commands) LEFT JOIN queues q ON q.resource = r)
			WHERE qb <> cb OR qr <> cr OR ql <> cl`,
		"leased without a token or expiry": `SELECT id FROM commands WHERE state = 'leased' AND (lease_token IS NULL OR lease_expires_at IS NULL OR started_at IS NULL)`,
		"a token on a command not leased":  `SELECT id || ' ' || state FROM commands WHERE state <> 'leased' AND lease_token IS NOT NULL`,
		"delivered or done before a dependency succeeded": `SELECT c.id || ' ' || c.state || ' but ' || x.id || ' ' || x.state FROM commands c JOIN command_deps d ON d.command_id = c.id JOIN commands x ON x.id = d.depends_on
			WHERE c.state IN ('ready', 'leased', 'succeeded') AND x.state <> 'succeeded'`,
		"not cancelled though a dependency failed": `SELECT c.id || ' ' || c.state || ' but ' || x.id || ' ' || x.state FROM commands c JOIN command_deps d ON d.command_id = c.id JOIN commands x ON x.id = d.depends_on
			WHERE c.state IN ('blocked', 'ready', 'leased') AND x.state IN ('failed', 'cancelled')`,
		"pending_deps differs from its dependencies": `SELECT c.id || ' ' || c.pending_deps || ' vs ' || (SELECT count(*) FROM command_deps d JOIN commands x ON x.id = d.depends_on WHERE d.command_id = c.id AND x.state <> 'succeeded')
			FROM commands c WHERE c.state = 'blocked' AND c.pending_deps <> (SELECT count(*) FROM command_deps d JOIN commands x ON x.id = d.depends_on WHERE d.command_id = c.id AND x.state <> 'succeeded')`,
		"finished_at disagrees with the state":       `SELECT id || ' ' || state FROM commands WHERE (state IN ('succeeded', 'failed', 'cancelled')) <> (finished_at IS NOT NULL)`,
		"enqueued without a seq, or staged with one": `SELECT c.id || ' ' || c.state FROM commands c WHERE (c.state = 'staged' AND c.seq IS NOT NULL) OR (c.state NOT IN ('staged', 'cancelled') AND c.seq IS NULL)`,
		"seq counter behind a command's seq":         `SELECT 'counter ' || value || ' < ' || (SELECT max(seq) FROM commands) FROM counters WHERE name = 'seq' AND value < (SELECT coalesce(max(seq), 0) FROM commands)`,
		"attempts out of range":                      `SELECT id || ' ' || attempts || '/' || max_attempts FROM commands WHERE attempts > max_attempts OR (state = 'leased' AND attempts < 1)`,
	}
	for what, q := range queries {
		rows, err := conn.Query(q)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			bad("%s: %s", what, s)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		rows.Close()
	}
	if !acked {
		return out
	}
	// Every acknowledged write is there.
	var conc int
	if err := conn.QueryRow(`SELECT concurrency FROM queues WHERE resource = 'rc'`).Scan(&conc); err != nil || conc != 4 {
		bad("queue rc's acknowledged concurrency 4 is %d (%v)", conc, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	type row struct {
		pkg, state string
		hbToken    sql.NullString
		hbExpires  sql.NullInt64
	}
	cmds := map[string]row{}
	rows, err := conn.Query(`SELECT id, package_id, state, lease_token, lease_expires_at FROM commands`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		var r row
		if err := rows.Scan(&id, &r.pkg, &r.state, &r.hbToken, &r.hbExpires); err != nil {
			t.Fatal(err)
		}
		cmds[id] = r
	}
	rows.Close()
	pstate := map[string]string{}
	rows, err = conn.Query(`SELECT id, state FROM packages`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id, s string
		if err := rows.Scan(&id, &s); err != nil {
			t.Fatal(err)
		}
		pstate[id] = s
	}
	rows.Close()
	// A create whose answer was lost is sent again with its
	// Idempotency-Key, and answers the first package: the only packages no
	// client was told of are those whose create was in flight at the kill.
	unknown := 0
	for id := range pstate {
		if l.pkgs[id] == nil {
			unknown++
		}
	}
	if unknown > 2 {
		bad("%d packages no client was told of, for 2 producers", unknown)
	}
	for id, a := range l.pkgs {
		if l.deleteSent[id] {
			continue
		}
		s, ok := pstate[id]
		if !ok {
			bad("acknowledged package %s lost", id)
			continue
		}
		if a.cancelled && s != "cancelled" {
			bad("package %s acknowledged cancelled is %s", id, s)
		}
		if a.enqueued && s == "staging" {
			bad("package %s acknowledged enqueued is in staging", id)
		}
		for _, cid := range a.cmds {
			r, ok := cmds[cid]
			switch {
			case !ok:
				bad("acknowledged command %s of %s lost", cid, id)
			case r.pkg != id:
				bad("command %s is in %s, not %s", cid, r.pkg, id)
			case a.enqueued && r.state == "staged":
				bad("command %s of enqueued package %s is staged", cid, id)
			case !a.enqueued && !a.enqSent && r.state != "staged" && r.state != "cancelled":
				bad("command %s of package %s in staging is %s", cid, id, r.state)
			}
		}
	}
	for cid, ok := range l.final {
		if l.deleteSent[l.cmdPkg[cid]] || !ok && l.retrySent[cid] {
			continue
		}
		r, found := cmds[cid]
		want := map[bool]string{true: "succeeded", false: "failed"}[ok]
		if !found {
			bad("command %s with an acknowledged result lost", cid)
		} else if r.state != want && !(!ok && r.state == "cancelled") {
			// (A failure sent for a command cancelled meanwhile, its lease
			// run out in a crash and its package cancelled, is the same
			// result: 200.)
			bad("command %s acknowledged %s is %s", cid, want, r.state)
		}
	}
	for cid, h := range l.heartbeat {
		r := cmds[cid]
		if r.state == "leased" && r.hbToken.String == h.token && r.hbExpires.Int64 < h.expires.UnixNano() {
			bad("command %s's lease expires %v, before the heartbeat's acknowledged %v", cid, time.Unix(0, r.hbExpires.Int64).UTC(), h.expires)
		}
	}
	return out
}

// order checks each queue's deliveries: among commands created without
// dependencies (and not retried by an operator), sequence numbers never go
// back, and a repeat is a redelivery with more attempts; at a concurrency
// above 1, first deliveries never go back.
func (l *ledger) order() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for q, ds := range l.received {
		if q == "rc" {
			// At concurrency 4 a redelivery may come after later
			// commands; first deliveries never do.
			var last int64 = -1
			for _, d := range ds {
				if d.attempts == 1 && l.noDeps[d.id] && !l.retrySent[d.id] {
					if d.seq <= last {
						out = append(out, fmt.Sprintf("%s delivered seq %d (%s) for the first time after %d", q, d.seq, d.id, last))
					}
					last = d.seq
				}
			}
			continue
		}
		var prev *lease
		for _, cur := range ds {
			if !l.noDeps[cur.id] || l.retrySent[cur.id] {
				continue // an operator's retry puts it back at its old place
			}
			if prev != nil {
				switch {
				case cur.seq < prev.seq:
					out = append(out, fmt.Sprintf("%s delivered seq %d (%s) after %d (%s)", q, cur.seq, cur.id, prev.seq, prev.id))
				case cur.seq == prev.seq && cur.attempts <= prev.attempts:
					out = append(out, fmt.Sprintf("%s delivered %s twice with attempts %d", q, cur.id, cur.attempts))
				}
			}
			prev = cur
		}
	}
	return append(out, l.depOrder()...)
}

// depOrder widens the order check to every command once its agents had
// seen all its dependencies succeed: a command Y handed out for the first
// time after a command X of the same queue with a higher seq, by a later
// next or claim, breaks the rules if Y's last dependency's success was
// acknowledged before the call that got X was sent. Y was then enqueued
// (its seq is lower), not blocked, not finished (it is handed out later),
// not leased (it is handed out for the first time), so waiting: "never
// hands out a command while an earlier command of the same queue that has
// no outstanding dependency is still waiting", at any concurrency. Called
// with l.mu held.
func (l *ledger) depOrder() []string {
	var out []string
	for q, ds := range l.received {
		seen := map[string]bool{}
		for j, y := range ds {
			first := !seen[y.id]
			seen[y.id] = true
			if !first || y.attempts != 1 || l.retrySent[y.id] {
				continue
			}
			var ready time.Time // zero: no dependency
			known := true
			for _, dep := range y.deps {
				at, ok := l.succAt[dep]
				if !ok {
					known = false
					break
				}
				if at.After(ready) {
					ready = at
				}
			}
			if !known {
				continue
			}
			if len(y.deps) > 0 {
				l.n.depOrder.Add(1)
			}
			for _, x := range ds[:j] {
				if x.batch != y.batch && x.seq > y.seq && !x.sent.Before(ready) {
					out = append(out, fmt.Sprintf("%s delivered seq %d (%s, dependencies %v, the last acknowledged succeeded at %s) after seq %d (%s), asked for at %s",
						q, y.seq, y.id, y.deps, ready.Format(time.StampMicro), x.seq, x.id, x.sent.Format(time.StampMicro)))
					break
				}
			}
		}
	}
	return out
}

// concurrency checks, from the agents' records, that no queue ever had
// more leases live than its concurrency: a lease is live from when its
// agent received it (the grant was committed before) until its result was
// first sent or, if earlier, its acknowledged expiry (the broker ends it no
// sooner). It also counts the moments a queue was at its concurrency.
func (l *ledger) concurrency(limit map[string]int) (out []string, full int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	type event struct {
		at    time.Time
		delta int
		d     *lease
	}
	for q, ds := range l.received {
		var evs []event
		for _, d := range ds {
			end := d.expires
			if !d.done.IsZero() && d.done.Before(end) {
				end = d.done
			}
			if !end.After(d.at) {
				continue
			}
			evs = append(evs, event{d.at, 1, d}, event{end, -1, d})
		}
		// Ends before starts at the same moment.
		sort.Slice(evs, func(i, j int) bool {
			if !evs[i].at.Equal(evs[j].at) {
				return evs[i].at.Before(evs[j].at)
			}
			return evs[i].delta < evs[j].delta
		})
		live := map[*lease]bool{}
		reported := 0
		for _, e := range evs {
			if e.delta < 0 {
				delete(live, e.d)
				continue
			}
			live[e.d] = true
			if len(live) == limit[q] {
				full++
			}
			if len(live) > limit[q] && reported < 5 {
				reported++
				var ids []string
				for d := range live {
					sent := "never"
					if !d.done.IsZero() {
						sent = d.done.Format(time.StampMicro)
					}
					ids = append(ids, fmt.Sprintf("%s (seq %d, attempt %d, received %s, lease to %s, result sent %s)", d.id, d.seq, d.attempts,
						d.at.Format(time.StampMicro), d.expires.Format(time.StampMicro), sent))
				}
				sort.Strings(ids)
				out = append(out, fmt.Sprintf("%s had %d leases live at %s, for a concurrency of %d: %v", q, len(live), e.at.Format(time.StampMicro), limit[q], ids))
			}
		}
	}
	return out, full
}

// waitFileWrite waits until the database file is written, which in WAL
// mode only a checkpoint does, and reports whether it was before timeout.
func waitFileWrite(db string, timeout time.Duration) bool {
	fi, err := os.Stat(db)
	if err != nil {
		return false
	}
	for end := time.Now().Add(timeout); time.Now().Before(end); time.Sleep(100 * time.Microsecond) {
		now, err := os.Stat(db)
		if err == nil && (!now.ModTime().Equal(fi.ModTime()) || now.Size() != fi.Size()) {
			return true
		}
	}
	return false
}

// waitTruncate waits until the -wal file shrinks: the checkpointer's
// truncation after a quiet spell.
func waitTruncate(db string, timeout time.Duration) bool {
	last := int64(-1)
	for end := time.Now().Add(timeout); time.Now().Before(end); time.Sleep(100 * time.Microsecond) {
		fi, err := os.Stat(db + "-wal")
		if err != nil {
			continue
		}
		if fi.Size() < last {
			return true
		}
		last = fi.Size()
	}
	return false
}

// waitCheckpointMetric waits until spinbroker_store_checkpoints_total on
// /metrics moves.
func waitCheckpointMetric(ctx context.Context, metrics string, timeout time.Duration) bool {
	read := func() string {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, metrics, nil)
		if err != nil {
			return ""
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		for line := range strings.SplitSeq(string(body), "\n") {
			if v, ok := strings.CutPrefix(line, "spinbroker_store_checkpoints_total "); ok {
				return v
			}
		}
		return ""
	}
	first := read()
	for end := time.Now().Add(timeout); first != "" && time.Now().Before(end); {
		if v := read(); v != "" && v != first {
			return true
		}
	}
	return false
}

func ptr[T any](v T) *T { return &v }

// claimer is an agent that claims up to 5 commands at once and completes
// them in one batch.
func (l *ledger) claimer(ctx context.Context, c *client.Client, resource string, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 400))
	for ctx.Err() == nil {
		sent := time.Now()
		cmds, err := c.Claim(ctx, resource, 5, time.Second, 2*time.Second)
		if err != nil || len(cmds) == 0 {
			if err != nil {
				time.Sleep(30 * time.Millisecond)
			}
			continue
		}
		ds := l.receive(resource, sent, cmds)
		var results []spinbroker.BatchResult
		for i, cmd := range cmds {
			if r.IntN(15) == 0 {
				l.n.abandoned.Add(1) // its lease runs out; it is delivered again
				continue
			}
			ok := r.IntN(10) < 8
			results = append(results, spinbroker.BatchResult{ID: cmd.ID, Result: spinbroker.Result{Status: ptr(ok), Lease: cmd.Lease.Token, Retry: !ok && r.IntN(2) == 0}})
			l.sending(ds[i])
		}
		if len(results) == 0 {
			continue
		}
		var outs []spinbroker.BatchOutcome
		if retry(ctx, func() (err error) { outs, err = c.CompleteBatch(ctx, results); return err }) != nil {
			continue
		}
		l.mu.Lock()
		for i, o := range outs {
			if o.HTTPStatus != 200 {
				continue
			}
			l.n.results.Add(1)
			l.n.acked.Add(1)
			if res := results[i].Result; !res.Retry {
				l.final[o.ID] = *res.Status
				if *res.Status {
					l.succAt[o.ID] = time.Now()
				}
			}
		}
		l.mu.Unlock()
	}
}
