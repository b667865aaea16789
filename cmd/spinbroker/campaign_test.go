package main

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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
// for order across all the restarts.
//
// By default it kills 3 times. For a campaign:
//
//	SPINBROKER_CAMPAIGN_KILLS=60 SPINBROKER_CAMPAIGN_SEED=7 SPINBROKER_CAMPAIGN_ADDR=127.0.0.1:19400 \
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
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		addr = fmt.Sprintf("127.0.0.1:%d", port)
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
		go func() { defer wg.Done(); l.agent(ctx, c, r, seed) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); l.claimer(ctx, c, "rc", seed) }()
	wg.Add(1)
	go func() { defer wg.Done(); l.operator(ctx, c, seed) }()

	var violations []string
	backups := 0
	var walBytes int64 // the -wal files the kills left, for the broker to recover
	for k := 0; k < kills; k++ {
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
	}
	cancel()
	wg.Wait()
	violations = append(violations, l.order()...)
	t.Logf("%d kills (leaving %d KiB of WAL in all), %d backups checked, %d acknowledged writes (%d creates, %d adds, %d enqueues, %d results, %d heartbeats, %d cancels, %d deletes, %d retries), %d deliveries, %d violations",
		kills, walBytes>>10, backups, l.n.acked.Load(), l.n.creates.Load(), l.n.adds.Load(), l.n.enqueues.Load(), l.n.results.Load(), l.n.heartbeats.Load(), l.n.cancels.Load(), l.n.deletes.Load(), l.n.retries.Load(), l.n.deliveries.Load(), len(violations))
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
	// What each queue's agent received, in order.
	received map[string][]delivery
	noDeps   map[string]bool // commands created without dependencies
	n        struct {
		acked, creates, adds, enqueues, results, heartbeats, cancels, deletes, retries, deliveries atomic.Int64
	}
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
		received: map[string][]delivery{}, noDeps: map[string]bool{}}
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

func (l *ledger) agent(ctx context.Context, c *client.Client, resource string, seed uint64) {
	r := rand.New(rand.NewPCG(seed, uint64(200+len(resource)+int(resource[1]))))
	for ctx.Err() == nil {
		cmd, err := c.Next(ctx, resource, time.Second, 2*time.Second)
		if err != nil || cmd == nil {
			if err != nil {
				time.Sleep(30 * time.Millisecond)
			}
			continue
		}
		l.n.deliveries.Add(1)
		l.mu.Lock()
		l.received[resource] = append(l.received[resource], delivery{id: cmd.ID, seq: *cmd.Seq, attempts: cmd.Attempts, at: time.Now()})
		l.mu.Unlock()
		if r.IntN(3) == 0 {
			exp, err := c.Heartbeat(ctx, cmd.ID, cmd.Lease.Token, 3*time.Second)
			if err == nil {
				l.mu.Lock()
				l.heartbeat[cmd.ID] = hb{token: cmd.Lease.Token, expires: exp}
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
		err = retry(ctx, func() error { _, err := c.Complete(ctx, cmd.ID, res); return err })
		if err != nil {
			continue // stale: the lease ran out in a crash
		}
		l.n.results.Add(1)
		l.n.acked.Add(1)
		if !res.Retry || ok {
			l.mu.Lock()
			l.final[cmd.ID] = ok
			l.mu.Unlock()
		}
	}
}

func (l *ledger) operator(ctx context.Context, c *client.Client, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 300))
	for ctx.Err() == nil {
		time.Sleep(time.Duration(20+r.IntN(80)) * time.Millisecond)
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
		var prev *delivery
		for i := range ds {
			cur := &ds[i]
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
	return out
}

func ptr[T any](v T) *T { return &v }

// claimer is an agent that claims up to 5 commands at once and completes
// them in one batch.
func (l *ledger) claimer(ctx context.Context, c *client.Client, resource string, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 400))
	for ctx.Err() == nil {
		cmds, err := c.Claim(ctx, resource, 5, time.Second, 2*time.Second)
		if err != nil || len(cmds) == 0 {
			if err != nil {
				time.Sleep(30 * time.Millisecond)
			}
			continue
		}
		l.mu.Lock()
		for _, cmd := range cmds {
			l.received[resource] = append(l.received[resource], delivery{id: cmd.ID, seq: *cmd.Seq, attempts: cmd.Attempts, at: time.Now()})
		}
		l.mu.Unlock()
		l.n.deliveries.Add(int64(len(cmds)))
		results := make([]spinbroker.BatchResult, len(cmds))
		for i, cmd := range cmds {
			ok := r.IntN(10) < 8
			results[i] = spinbroker.BatchResult{ID: cmd.ID, Result: spinbroker.Result{Status: ptr(ok), Lease: cmd.Lease.Token, Retry: !ok && r.IntN(2) == 0}}
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
			}
		}
		l.mu.Unlock()
	}
}
