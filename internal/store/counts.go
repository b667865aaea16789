package store

import (
	"fmt"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
)

// The per-state counts on packages and queues, the packages' last finish
// time and the completions per minute are kept here rather than by
// triggers: each operation applies its transitions as one update per
// package and per queue it touched, where a trigger would update the same
// row once per command (a claim of 100 commands: 200 updates instead of a
// handful). The transitions come from the operation's change list, which
// already names every command that moved and from which state, plus the
// commands it inserted. The model test holds the counts equal to the rows
// after every step.

// added records a command inserted by this operation (as staged: when it is
// inserted in another state, a change from staged follows it).
type added struct{ pkg string }

// addedCommand counts a command inserted in pkg.
func (t *Tx) addedCommand(pkg string) { t.added = append(t.added, added{pkg: pkg}) }

// pkgDelta is what an operation changed in one package's counts.
type pkgDelta struct {
	total    int
	counts   spinbroker.Counts
	finished bool // a command reached a final state
}

const (
	qCountPackage = `UPDATE packages SET
		total       = total       + ?1,
		n_staged    = n_staged    + ?2,
		n_blocked   = n_blocked   + ?3,
		n_ready     = n_ready     + ?4,
		n_leased    = n_leased    + ?5,
		n_succeeded = n_succeeded + ?6,
		n_failed    = n_failed    + ?7,
		n_cancelled = n_cancelled + ?8,
		last_finished_at = CASE WHEN ?9 > coalesce(last_finished_at, 0) THEN ?9 ELSE last_finished_at END
	WHERE id = ?10`
	// An upsert: a queue the sweeper forgot comes back when a command of
	// it moves again (a retry of one of its failed commands, say).
	qCountQueue = `INSERT INTO queues (resource, n_blocked, n_ready, n_leased, last_active_at)
	VALUES (?4, ?1, ?2, ?3, ?5)
	ON CONFLICT (resource) DO UPDATE SET
		n_blocked = n_blocked + excluded.n_blocked,
		n_ready   = n_ready   + excluded.n_ready,
		n_leased  = n_leased  + excluded.n_leased,
		last_active_at = excluded.last_active_at`
	qCountCompletions = `INSERT INTO completions (minute, succeeded, failed, cancelled) VALUES (?1, ?2, ?3, ?4)
	ON CONFLICT (minute) DO UPDATE SET
		succeeded = succeeded + excluded.succeeded,
		failed    = failed + excluded.failed,
		cancelled = cancelled + excluded.cancelled`
)

// flushCounts applies the transitions recorded since the last flush to the
// counts. The writer calls it when an operation ends; an operation calls it
// itself before it reads counts it has changed.
func (t *Tx) flushCounts() error {
	changes := t.commit.Commands
	if len(changes) < t.flushed {
		return fmt.Errorf("store: changes were rolled back after their counts were applied")
	}
	changes = changes[t.flushed:]
	if len(changes) == 0 && len(t.added) == 0 {
		return nil
	}
	pkgs := make(map[string]*pkgDelta, 4)
	var pkgOrder []string
	pkg := func(id string) *pkgDelta {
		d, ok := pkgs[id]
		if !ok {
			d = &pkgDelta{}
			pkgs[id] = d
			pkgOrder = append(pkgOrder, id)
		}
		return d
	}
	// A queue counts only its blocked, ready and leased commands.
	queues := make(map[string]*spinbroker.Counts, 2)
	var queueOrder []string
	var done spinbroker.Counts // the final states reached, for completions
	for _, a := range t.added {
		d := pkg(a.pkg)
		d.total++
		d.counts.Staged++
	}
	for i := range changes {
		c := &changes[i]
		if !c.From.Valid() || !c.To.Valid() {
			return fmt.Errorf("store: change of command %s from %q to %q", c.CommandID, c.From, c.To)
		}
		if c.From == c.To {
			continue
		}
		d := pkg(c.PackageID)
		d.counts.Add(c.From, -1)
		d.counts.Add(c.To, 1)
		if c.To.Terminal() {
			d.finished = true
			done.Add(c.To, 1)
		}
		q, ok := queues[c.Resource]
		if !ok {
			q = &spinbroker.Counts{}
			queues[c.Resource] = q
			queueOrder = append(queueOrder, c.Resource)
		}
		q.Add(c.From, -1)
		q.Add(c.To, 1)
	}
	now := nanos(t.now)
	for _, id := range pkgOrder {
		d := pkgs[id]
		var finished any
		if d.finished {
			finished = now
		}
		c := &d.counts
		if _, err := t.exec(qCountPackage, d.total, c.Staged, c.Blocked, c.Ready, c.Leased, c.Succeeded, c.Failed, c.Cancelled, finished, id); err != nil {
			return err
		}
	}
	for _, r := range queueOrder {
		if q := queues[r]; q.Blocked != 0 || q.Ready != 0 || q.Leased != 0 {
			if _, err := t.exec(qCountQueue, q.Blocked, q.Ready, q.Leased, r, now); err != nil {
				return err
			}
		}
	}
	if done.Done() > 0 {
		if _, err := t.exec(qCountCompletions, now/int64(time.Minute), done.Succeeded, done.Failed, done.Cancelled); err != nil {
			return err
		}
	}
	t.added = t.added[:0]
	t.flushed = len(t.commit.Commands)
	return nil
}

// readPackage reads a package with its commands as this operation leaves
// it, counts included.
func (t *Tx) readPackage(id string) (*spinbroker.Package, error) {
	if err := t.flushCounts(); err != nil {
		return nil, err
	}
	return getPackage(t, id, true)
}
