package store

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/jsonenc"
)

// CreatePackage creates a package, with the given commands, and enqueues it
// when asked, all in one transaction. With idem set and a matching earlier
// request, it creates nothing and returns that request's response body.
func (db *DB) CreatePackage(ctx context.Context, in spinbroker.NewPackage, idem *spinbroker.Idempotency) (pkg *spinbroker.Package, replay []byte, err error) {
	if in.ID != "" {
		if in.ID, err = spinbroker.CheckID("package id", in.ID); err != nil {
			return nil, nil, err
		}
	}
	if len(in.Commands) > spinbroker.MaxCommandsPerBatch {
		return nil, nil, spinbroker.Errorf(spinbroker.EINVALID, "a request may add at most %d commands", spinbroker.MaxCommandsPerBatch)
	}
	if len(in.Commands) > db.maxPackageCommands {
		return nil, nil, spinbroker.Errorf(spinbroker.EINVALID, "a package holds at most %d commands, not %d", db.maxPackageCommands, len(in.Commands))
	}
	for i := range in.Commands {
		if err := in.Commands[i].ValidateItem(i); err != nil {
			return nil, nil, err
		}
	}
	err = db.write(ctx, func(t *Tx) error {
		var reused error
		if replay, reused, err = t.idempotent(idem); replay != nil || err != nil {
			return err
		}
		id := in.ID
		if id == "" {
			id = newID()
		}
		if pkg, err = t.createPackage(id, in); err != nil {
			// A bad dependency or an empty enqueue is a 400, and a 400
			// wins over the 409 of an id that exists (API.md, Errors).
			err = t.badDepsFirst(err, id, in.Commands, false)
			if spinbroker.ErrorCode(err) == spinbroker.ECONFLICT && in.Enqueue && len(in.Commands) == 0 {
				err = spinbroker.Errorf(spinbroker.EEMPTY, "%s has no commands to enqueue", requestsPackage)
			}
			return keyConflictLast(reused, err)
		}
		if reused != nil {
			return reused // the transaction is rolled back: nothing is created
		}
		return t.remember(idem, pkg)
	})
	if err != nil || replay != nil {
		return nil, replay, err
	}
	return pkg, nil, nil
}

// keyConflictLast is the error of a create whose Idempotency-Key was used
// with another request (reused, a 409, or nil) and that failed with err:
// the request is judged as if it were new, and a 400 of its own wins over
// the key's 409 (API.md, Errors), as it wins over a reused id's; else the
// key's conflict is what the client needs to hear.
func keyConflictLast(reused, err error) error {
	if reused == nil {
		return err
	}
	switch spinbroker.ErrorCode(err) {
	case spinbroker.EINVALID, spinbroker.EUNKNOWNDEP, spinbroker.EEMPTY, spinbroker.EINTERNAL, spinbroker.EUNAVAILABLE:
		return err
	}
	return reused
}

// createPackage creates package id with in's commands, enqueued if asked.
func (t *Tx) createPackage(id string, in spinbroker.NewPackage) (pkg *spinbroker.Package, err error) {
	t.plan = newCreatePlan(id, in.Commands)
	defer func() { t.plan = nil }()
	direct, err := t.canEnqueueDirectly(in)
	if err != nil {
		return nil, err
	}
	var enq *enqueueAt
	if direct {
		// Created enqueued: each command goes straight into its final
		// state, sparing the staged→ready updates.
		if enq, err = t.reserveSeqs(len(in.Commands)); err != nil {
			return nil, err
		}
	}
	if _, err := t.exec(`INSERT INTO packages (id, created_at, enqueued_at) VALUES (?, ?, ?)`, id, nanos(t.now), enq.enqueuedAt()); err != nil {
		if isConstraint(err) {
			return nil, spinbroker.Errorf(spinbroker.ECONFLICT, "package %s already exists", id)
		}
		return nil, err
	}
	t.commit.Packages = append(t.commit.Packages, id)
	cmds := make([]spinbroker.Command, len(in.Commands))
	for i := range in.Commands {
		if cmds[i], err = t.addCommand(id, i, &in.Commands[i], enq); err != nil {
			return nil, err
		}
	}
	if err := t.plan.countOutside(t); err != nil {
		return nil, err
	}
	if in.Enqueue && !direct {
		// The general enqueue may cancel some commands: read the result.
		if err := t.enqueue(id); err != nil {
			return nil, err
		}
		if pkg, err = t.readPackage(id); err != nil {
			return nil, err
		}
	} else {
		pkg = createdPackage(id, cmds, enq, t.now)
	}
	return pkg, nil
}

// AddCommand adds a command to a package in staging.
func (db *DB) AddCommand(ctx context.Context, pkgID string, in spinbroker.NewCommand, idem *spinbroker.Idempotency) (cmd *spinbroker.Command, replay []byte, err error) {
	if err := in.Validate(); err != nil {
		// The package in the path comes first (API.md, Errors).
		if _, perr := db.PackageInfo(ctx, pkgID); perr != nil {
			return nil, nil, perr
		}
		return nil, nil, err
	}
	err = db.write(ctx, func(t *Tx) error {
		total, enqueued, cancelled, err := t.stagingOf(pkgID)
		if err != nil {
			return err
		}
		var reused error
		if replay, reused, err = t.idempotent(idem); replay != nil || err != nil {
			return err
		}
		var c spinbroker.Command
		switch {
		case cancelled:
			err = spinbroker.Errorf(spinbroker.ECONFLICT, "package %s is cancelled", pkgID)
		case enqueued:
			err = spinbroker.Errorf(spinbroker.ECONFLICT, "package %s is already enqueued; commands can only be added in staging", pkgID)
		case total >= db.maxPackageCommands:
			err = spinbroker.Errorf(spinbroker.ECONFLICT, "package %s is full: a package holds at most %d commands; put the rest in another package (a dependency may name a command of any package)", pkgID, db.maxPackageCommands)
		default:
			c, err = t.addCommand(pkgID, total, &in, nil)
		}
		if err != nil {
			// A bad dependency is a 400, and a 400 wins over any 409
			// (API.md, Errors).
			return keyConflictLast(reused, t.badDepsFirst(err, pkgID, []spinbroker.NewCommand{in}, true))
		}
		if reused != nil {
			return reused // the transaction is rolled back: nothing is added
		}
		t.commit.Packages = append(t.commit.Packages, pkgID)
		cmd = &c
		return t.remember(idem, cmd)
	})
	if err != nil || replay != nil {
		return nil, replay, err
	}
	return cmd, nil, nil
}

// createdPackage is the answer to a create that needed no general enqueue:
// the package as its commands were inserted, built rather than read back
// (TestDB_CreatePackageAnswer holds it equal to a read).
func createdPackage(id string, cmds []spinbroker.Command, enq *enqueueAt, now time.Time) *spinbroker.Package {
	p := &spinbroker.Package{ID: id, State: spinbroker.PackageStaging, CreatedAt: fromNanos(nanos(now)),
		Total: len(cmds), Commands: cmds}
	if enq != nil {
		at := fromNanos(enq.now)
		p.EnqueuedAt = &at
		p.State = spinbroker.PackageQueued
	}
	for _, c := range cmds {
		p.Counts.Add(c.State, 1)
	}
	return p
}

// insertedCommand is a command as addCommand inserts it, built from what
// was inserted rather than read back (TestDB_AddCommand and
// TestDB_CreatePackageAnswer hold it equal to a read).
func insertedCommand(id, pkgID string, in *spinbroker.NewCommand, deps []string, now time.Time) spinbroker.Command {
	c := spinbroker.Command{
		ID: id, PackageID: pkgID, Resource: in.Resource, Action: in.Action,
		Parameters: in.Parameters, Dependencies: deps,
		MaxAttempts: spinbroker.DefaultMaxAttempts, LeaseDuration: in.LeaseDuration,
		NotBefore: in.NotBefore, State: spinbroker.Staged, CreatedAt: fromNanos(nanos(now)),
	}
	if in.Key != "" {
		k := in.Key
		c.Key = &k
	}
	if in.MaxAttempts != nil {
		c.MaxAttempts = *in.MaxAttempts
	}
	if in.NotBefore != nil {
		t := fromNanos(nanos(*in.NotBefore))
		c.NotBefore = &t
	}
	return c
}

// newID returns a new time-ordered UUID (version 7).
func newID() string {
	return uuid.Must(uuid.NewV7()).String()
}

// enqueueAt, when set, says a command is created already enqueued: with its
// package's sequence numbers from base and its enqueue time.
type enqueueAt struct {
	base int64 // the sequence number of position 0
	now  int64
}

func (e *enqueueAt) enqueuedAt() any {
	if e == nil {
		return nil
	}
	return e.now
}

// canEnqueueDirectly reports whether a package created with enqueue can
// have its commands inserted in their final states: not when a dependency
// outside the package has already failed or been cancelled, whose cascade
// the general enqueue handles.
func (t *Tx) canEnqueueDirectly(in spinbroker.NewPackage) (bool, error) {
	if !in.Enqueue || len(in.Commands) == 0 {
		return false, nil
	}
	for i, c := range in.Commands {
		for _, d := range c.Dependencies {
			if _, inside := t.plan.earlier(d, i); inside || !spinbroker.LooksLikeID(d) {
				continue
			}
			state, err := t.plan.outsideState(t, strings.ToLower(d))
			if err != nil && !isNoRows(err) {
				return false, err
			}
			if state == string(spinbroker.Failed) || state == string(spinbroker.Cancelled) {
				return false, nil
			}
		}
	}
	return true, nil
}

// createPlan is what a create knows of its own commands before it inserts
// them: the id each will have, and how many later commands of the request
// depend on each. A dependency on an earlier command of the request is
// resolved here rather than read back, each command is inserted with its
// count of dependents rather than updated once per dependent, and a
// dependency outside the request is read once and counted once, however
// many of the request's commands name it: a chain of 10,000 commands ran
// four statements a command, and 10,000 commands waiting on one outside
// command five (BenchmarkLargePackage).
type createPlan struct {
	pkg        string // the package the request creates
	ids        []string
	byKey      map[string]int // a key → the first command of the request given it
	byID       map[string]int // a client's id → its command
	dependents []int          // how many commands of the request depend on each
	// The dependencies outside the request: their states as read, and
	// how many of the request's commands depend on each, in the order
	// first named.
	states  map[string]string
	outside map[string]int
	order   []string
}

// newCreatePlan plans the insertion of cmds, validated, into new package pkg.
func newCreatePlan(pkg string, cmds []spinbroker.NewCommand) *createPlan {
	p := &createPlan{pkg: pkg, ids: make([]string, len(cmds)), byKey: make(map[string]int), byID: make(map[string]int),
		dependents: make([]int, len(cmds))}
	var seen map[int]bool
	for i := range cmds {
		c := &cmds[i]
		clear(seen)
		for _, d := range c.Dependencies {
			if j, ok := p.earlier(d, i); ok && !seen[j] {
				if seen == nil {
					seen = make(map[int]bool)
				}
				seen[j] = true
				p.dependents[j]++
			}
		}
		p.ids[i] = c.ID
		if c.ID == "" {
			p.ids[i] = newID()
		} else if _, dup := p.byID[c.ID]; !dup {
			p.byID[c.ID] = i
		}
		if _, dup := p.byKey[c.Key]; c.Key != "" && !dup {
			p.byKey[c.Key] = i
		}
	}
	return p
}

// earlier returns the command of the request, before position pos, that
// dependency entry names, if any: an entry shaped like a UUID is an id,
// anything else a key (as resolveDep reads them).
func (p *createPlan) earlier(entry string, pos int) (int, bool) {
	if p == nil {
		return 0, false
	}
	var j int
	var ok bool
	if spinbroker.LooksLikeID(entry) {
		j, ok = p.byID[strings.ToLower(entry)]
	} else {
		j, ok = p.byKey[entry]
	}
	return j, ok && j < pos
}

// outsideState reads the state of command id, outside the request, once.
// Until the create's commands are all inserted nothing else changes in
// the transaction, so a state read stays true. Without a plan (an add to
// a staging package) it reads it each time.
func (p *createPlan) outsideState(t *Tx, id string) (string, error) {
	if p != nil {
		if state, ok := p.states[id]; ok {
			return state, nil
		}
	}
	state, err := commandState(t, id)
	if err != nil || p == nil {
		return state, err
	}
	if p.states == nil {
		p.states = make(map[string]string)
	}
	p.states[id] = state
	return state, nil
}

// dependOutside counts a command of the request depending on command id,
// outside it.
func (p *createPlan) dependOutside(id string) {
	if p.outside == nil {
		p.outside = make(map[string]int)
	}
	if p.outside[id] == 0 {
		p.order = append(p.order, id)
	}
	p.outside[id]++
}

// countOutside adds the request's commands to the dependents counted on
// each command outside it that they depend on.
func (p *createPlan) countOutside(t *Tx) error {
	for _, id := range p.order {
		if _, err := t.exec(`UPDATE commands SET n_dependents = n_dependents + ? WHERE id = ?`, p.outside[id], id); err != nil {
			return err
		}
	}
	return nil
}

// reserveSeqs takes the next n sequence numbers. The commands' queues need
// no row made here: each command goes in blocked or ready, and the counts'
// upsert at the end of the operation makes the row of every queue it
// counts in (an INSERT per queue here cost 2% of the batched protocol's
// writer).
func (t *Tx) reserveSeqs(n int) (*enqueueAt, error) {
	var last int64
	if err := t.queryRow(`UPDATE counters SET value = value + ? WHERE name = 'seq' RETURNING value`, n).Scan(&last); err != nil {
		return nil, err
	}
	return &enqueueAt{base: last - int64(n) + 1, now: nanos(t.now)}, nil
}

// addCommand inserts a validated command at position pos of its package,
// resolving its dependencies (ids of any package, or keys of commands added
// earlier to the same package): in staging, or already enqueued when enq
// is set. It returns the command as inserted.
func (t *Tx) addCommand(pkgID string, pos int, in *spinbroker.NewCommand, enq *enqueueAt) (spinbroker.Command, error) {
	plan := t.planOf(pkgID)
	id := in.ID
	switch {
	case plan != nil && id == "":
		id = plan.ids[pos]
	case id == "":
		id = newID()
	default:
		var one int
		err := t.queryRow(`SELECT 1 FROM commands WHERE id = ?`, id).Scan(&one)
		if err == nil {
			return spinbroker.Command{}, spinbroker.Errorf(spinbroker.ECONFLICT, "command %s already exists", id)
		} else if !isNoRows(err) {
			return spinbroker.Command{}, err
		}
	}
	deps := make([]string, 0, len(in.Dependencies))
	seen := make(map[string]bool, len(in.Dependencies))
	pending := 0
	for j, d := range in.Dependencies {
		what := "dependency"
		if plan != nil {
			what = depItem(pos, j) // pos is the command's index in the request
		}
		var dep, state string
		var err error
		j, inside := plan.earlier(d, pos)
		if inside {
			dep = plan.ids[j] // inserted, so not succeeded
		} else if dep, state, err = t.resolveDep(pkgID, d, what); err != nil {
			return spinbroker.Command{}, err
		}
		if dep == id {
			return spinbroker.Command{}, spinbroker.Errorf(spinbroker.EINVALID, "a command cannot depend on itself")
		}
		if !seen[dep] {
			seen[dep] = true
			deps = append(deps, dep)
			if state != string(spinbroker.Succeeded) {
				pending++
			}
			if plan != nil && !inside {
				plan.dependOutside(dep)
			}
		}
	}
	dependents := 0
	if plan != nil {
		dependents = plan.dependents[pos]
	}
	var key any
	if in.Key != "" {
		key = in.Key
	}
	maxAttempts := spinbroker.DefaultMaxAttempts
	if in.MaxAttempts != nil {
		maxAttempts = *in.MaxAttempts
	}
	var leaseDur any
	if in.LeaseDuration != nil {
		leaseDur = int64(*in.LeaseDuration)
	}
	state := spinbroker.Staged
	var seq, enqueued, readyAt, pend any
	pend = 0
	if enq != nil {
		state = spinbroker.Blocked
		if pending == 0 && (in.NotBefore == nil || nanos(*in.NotBefore) <= enq.now) {
			state = spinbroker.Ready
			readyAt = enq.now
		}
		seq, enqueued, pend = enq.base+int64(pos), enq.now, pending
	}
	params, spill := string(in.Parameters), len(in.Parameters) > spillBytes
	if spill {
		params = ""
	}
	_, err := t.exec(`INSERT INTO commands (id, package_id, pos, key, resource, action, parameters, state,
			max_attempts, lease_duration, not_before, created_at, n_deps, seq, enqueued_at, pending_deps, ready_at, n_dependents)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		id, pkgID, pos, key, in.Resource, in.Action, params, string(state),
		maxAttempts, leaseDur, optNanos(in.NotBefore), nanos(t.now), len(deps), seq, enqueued, pend, readyAt, dependents)
	if isConstraint(err) && plan != nil {
		// The package does not exist outside this request: its id (the
		// broker's own, unless the client gave one) would answer 404.
		return spinbroker.Command{}, spinbroker.Errorf(spinbroker.ECONFLICT, "key %q is given to two commands of %s", spinbroker.Truncate(in.Key, 80), requestsPackage)
	} else if isConstraint(err) {
		return spinbroker.Command{}, spinbroker.Errorf(spinbroker.ECONFLICT, "package %s already has a command with key %q", pkgID, in.Key)
	} else if err != nil {
		return spinbroker.Command{}, err
	}
	if spill {
		if _, err := t.exec(`INSERT INTO command_parameters (command_id, parameters) VALUES (?, ?)`, id, string(in.Parameters)); err != nil {
			return spinbroker.Command{}, err
		}
	}
	t.addedCommand(pkgID)
	for _, dep := range deps {
		if _, err := t.exec(`INSERT INTO command_deps (command_id, depends_on) VALUES (?, ?)`, id, dep); err != nil {
			return spinbroker.Command{}, err
		}
		if plan != nil {
			continue // counted by the plan
		}
		if _, err := t.exec(`UPDATE commands SET n_dependents = n_dependents + 1 WHERE id = ?`, dep); err != nil {
			return spinbroker.Command{}, err
		}
	}
	c := insertedCommand(id, pkgID, in, deps, t.now)
	if enq != nil {
		t.change(id, pkgID, in.Resource, spinbroker.Staged, state, 0)
		c.State = state
		s := seq.(int64)
		c.Seq = &s
		at := fromNanos(enq.now)
		c.EnqueuedAt = &at
	}
	return c, nil
}

// depItem names dependency j of command i of a request's commands, for
// errors: in a create of many commands, "dependency x" said not which.
func depItem(i, j int) string {
	return fmt.Sprintf("commands[%d].dependencies[%d]", i, j)
}

// resolveDep turns a dependency entry into a command id, with the state of
// that command: an entry shaped like a UUID names a command of any package;
// anything else is a key in pkgID. what names the entry in errors
// ("dependency", or its place in the request).
func (t *Tx) resolveDep(pkgID, entry, what string) (id, state string, err error) {
	if spinbroker.LooksLikeID(entry) {
		id = strings.ToLower(entry)
		state, err = t.planOf(pkgID).outsideState(t, id)
		if isNoRows(err) {
			return "", "", spinbroker.Errorf(spinbroker.EUNKNOWNDEP, "%s %s names no existing command", what, id)
		}
		return id, state, err
	}
	err = t.queryRow(`SELECT id, state FROM commands WHERE package_id = ? AND key = ?`, pkgID, entry).Scan(&id, &state)
	if isNoRows(err) {
		return "", "", unknownKeyDep(t.pkgName(pkgID), entry, what)
	}
	return id, state, err
}

// unknownKeyDep is the error of a dependency key, named what, that names no
// command added earlier to the package named pkg (as pkgName names it).
func unknownKeyDep(pkg, key, what string) error {
	return spinbroker.Errorf(spinbroker.EUNKNOWNDEP, "%s %q names no command added earlier to %s", what, spinbroker.Truncate(key, 80), pkg)
}

// badDepsFirst returns the error of a bad dependency among cmds, added to
// package pkgID, in place of err when err is a conflict: a request with
// both is answered 400, not 409 (API.md, Errors: 400 before 409). The
// transaction is failing either way; this reads and writes nothing. Keys
// name earlier commands of the request, and, with inDB, the package's
// commands already stored; ids name earlier commands of the request or
// stored ones. Without inDB (a create) an error names its item's place.
func (t *Tx) badDepsFirst(err error, pkgID string, cmds []spinbroker.NewCommand, inDB bool) error {
	if spinbroker.ErrorCode(err) != spinbroker.ECONFLICT {
		return err
	}
	keys := make(map[string]bool, len(cmds))
	ids := make(map[string]bool, len(cmds))
	for i, c := range cmds {
		own := strings.ToLower(c.ID)
		for j, d := range c.Dependencies {
			what := "dependency"
			if !inDB {
				what = depItem(i, j) // the create's commands, not one add
			}
			isID := spinbroker.LooksLikeID(d)
			switch {
			case isID && strings.ToLower(d) == own, !isID && d == c.Key && c.Key != "":
				return spinbroker.Errorf(spinbroker.EINVALID, "a command cannot depend on itself")
			case isID && ids[strings.ToLower(d)], !isID && keys[d]:
				// An earlier command of the request.
			case isID || inDB:
				if _, _, rerr := t.resolveDep(pkgID, d, what); spinbroker.ErrorCode(rerr) == spinbroker.EUNKNOWNDEP {
					return rerr
				} else if rerr != nil {
					return err
				}
			default:
				// A create's key names an earlier command of the request:
				// its package is the request's own, as createPackage's
				// errors say, not one by the id it failed to take.
				return unknownKeyDep(requestsPackage, d, what)
			}
		}
		if c.Key != "" {
			keys[c.Key] = true
		}
		if c.ID != "" {
			ids[strings.ToLower(c.ID)] = true
		}
	}
	return err
}

// Enqueue makes a staging package's commands visible to agents, all at once.
// Enqueuing an enqueued package changes nothing. It answers the package as
// the enqueue left it (see answer).
func (db *DB) Enqueue(ctx context.Context, pkgID string) (pkg *spinbroker.Package, err error) {
	err = db.write(ctx, func(t *Tx) error {
		if err := t.enqueue(pkgID); err != nil {
			return err
		}
		pkg, err = t.smallAnswer(pkgID)
		return err
	})
	if err != nil || pkg != nil {
		return pkg, err
	}
	return db.answer(ctx, pkgID, "enqueue")
}

// The most commands, and bytes of their parameters, outputs, reasons and
// dependencies' ids, that a package may hold for a write's answer to be read in the write's
// transaction (smallAnswer): about a millisecond of the writer's time.
const (
	answerInTxCommands = 100
	answerInTxBytes    = 64 << 10
)

// qAnswerSize tells whether package ?1 has at most ?2 commands and ?3 bytes
// of text in them, reading at most ?2+1 of its commands, and not their text
// (octet_length reads only the record's header).
const qAnswerSize = `SELECT count(*) <= ?2 AND coalesce(sum(bytes), 0) <= ?3
	FROM (SELECT ` + colAnswerBytes + ` AS bytes FROM commands WHERE package_id = ?1 LIMIT ?2 + 1)`

// smallAnswer reads package id, with all its commands, as this operation
// leaves it, when it is small (see answerInTxCommands); else it answers
// nil, and the caller reads it once the transaction has committed (answer).
// Read after the commit, the answer of a package of 10 took a third longer
// (the read pool's connections read again the pages the commit changed);
// read in the transaction, one of 50,000 held every client's write back
// for as long as it took.
func (t *Tx) smallAnswer(id string) (*spinbroker.Package, error) {
	var small bool
	if err := t.queryRow(qAnswerSize, id, answerInTxCommands, answerInTxBytes).Scan(&small); err != nil || !small {
		return nil, err
	}
	return t.readPackage(id)
}

// answer reads package id with all its commands, to answer a write of it
// (what: "enqueue", "cancel") that has committed, when it was too big to be
// read in the write's transaction (smallAnswer): in a snapshot on the read
// pool, so that the writer, and every other client's write, does not wait
// for a read that grows with the package (a second for 50,000 commands of
// 1 KiB, BenchmarkBigPackage). The answer shows the write's change, and may
// show changes committed since (README, API notes); a package deleted since
// is a 404 that says so.
func (db *DB) answer(ctx context.Context, id, what string) (*spinbroker.Package, error) {
	if db.readingBack != nil {
		db.readingBack(id)
	}
	p, err := db.Package(ctx, id)
	if spinbroker.ErrorCode(err) == spinbroker.ENOTFOUND {
		return nil, spinbroker.Errorf(spinbroker.ENOTFOUND, "package %s was deleted by another request right after this %s committed", id, what)
	}
	return p, err
}

// qEnqueue numbers a package's staged commands (?1 is the first sequence
// number), counts what each waits for, and makes ready those that wait for
// nothing, in one pass. The count is taken once per command, in a
// materialized CTE (a correlated subquery in SET, or in a FROM that SQLite
// flattens, runs once per column that uses it); a command without
// dependencies skips it.
const qEnqueue = `WITH p AS MATERIALIZED (
		SELECT c.id, CASE WHEN c.n_deps = 0 THEN 0 ELSE (
			SELECT count(*) FROM command_deps d JOIN commands x ON x.id = d.depends_on
			WHERE d.command_id = c.id AND x.state <> 'succeeded') END AS n
		FROM commands c WHERE c.package_id = ?3 AND c.state = 'staged')
	UPDATE commands SET
		seq = ?1 + commands.pos,
		enqueued_at = ?2,
		pending_deps = p.n,
		state = CASE WHEN p.n = 0 AND coalesce(commands.not_before, 0) <= ?2 THEN 'ready' ELSE 'blocked' END,
		ready_at = CASE WHEN p.n = 0 AND coalesce(commands.not_before, 0) <= ?2 THEN ?2 END
	FROM p WHERE commands.id = p.id
	RETURNING commands.id, commands.resource, commands.state`

// stagingOf reads what adding to or enqueuing a package depends on: how
// many commands it has, and whether it was enqueued or cancelled.
func (t *Tx) stagingOf(pkgID string) (total int, enqueued, cancelled bool, err error) {
	var enq, can sql.NullInt64
	err = t.queryRow(`SELECT total, enqueued_at, cancelled_at FROM packages WHERE id = ?`, pkgID).Scan(&total, &enq, &can)
	if isNoRows(err) {
		return 0, false, false, spinbroker.Errorf(spinbroker.ENOTFOUND, "package %s not found", pkgID)
	}
	return total, enq.Valid, can.Valid, err
}

func (t *Tx) enqueue(pkgID string) error {
	if err := t.flushCounts(); err != nil { // the total of commands just added
		return err
	}
	total, enqueued, cancelled, err := t.stagingOf(pkgID)
	if err != nil {
		return err
	}
	switch {
	case enqueued:
		return nil // safe to retry
	case total == 0: // before the 409 of a cancel (API.md, Errors: 400 before 409)
		return spinbroker.Errorf(spinbroker.EEMPTY, "%s has no commands to enqueue", t.pkgName(pkgID))
	case cancelled:
		return spinbroker.Errorf(spinbroker.ECONFLICT, "package %s was cancelled in staging and cannot be enqueued", pkgID)
	}
	now := nanos(t.now)
	if _, err := t.exec(`INSERT INTO queues (resource, last_active_at)
		SELECT DISTINCT resource, ?2 FROM commands WHERE package_id = ?1
		ON CONFLICT (resource) DO NOTHING`, pkgID, now); err != nil {
		return err
	}
	var last int64
	if err := t.queryRow(`UPDATE counters SET value = value + ? WHERE name = 'seq' RETURNING value`, total).Scan(&last); err != nil {
		return err
	}
	// Positions are 0..total-1 in the order the commands were added, so the
	// package takes the sequence numbers last-total+1 .. last.
	// A command may have finished in staging (cancelled when a package it
	// depended on was deleted); the package cannot have finished before it
	// was enqueued.
	if _, err := t.exec(`UPDATE packages SET enqueued_at = ?1,
			last_finished_at = CASE WHEN last_finished_at < ?1 THEN ?1 ELSE last_finished_at END
		WHERE id = ?2`, now, pkgID); err != nil {
		return err
	}
	rows, err := t.query(qEnqueue, last-int64(total)+1, now, pkgID)
	if err != nil {
		return err
	}
	if err := t.collect(rows, pkgID, spinbroker.Staged); err != nil {
		return err
	}
	// A command whose dependency has already failed or been cancelled is
	// cancelled now, and so is everything that depends on it.
	rows, err = t.query(`SELECT c.id, c.resource, d.depends_on, x.state FROM commands c
		JOIN command_deps d ON d.command_id = c.id
		JOIN commands x ON x.id = d.depends_on
		WHERE c.package_id = ? AND c.state = 'blocked' AND x.state IN ('failed', 'cancelled')
		ORDER BY c.pos`, pkgID)
	if err != nil {
		return err
	}
	type doomed struct{ id, resource, dep, state string }
	var ds []doomed
	for rows.Next() {
		var d doomed
		if err := rows.Scan(&d.id, &d.resource, &d.dep, &d.state); err != nil {
			rows.Close()
			return err
		}
		ds = append(ds, d)
	}
	if err := endRows(rows); err != nil {
		return err
	}
	for _, d := range ds {
		reason := "dependency " + d.dep + " " + d.state
		res, err := t.exec(`UPDATE commands SET state = 'cancelled', reason = ?, cancelled_by = ?, finished_at = ?
			WHERE id = ? AND state = 'blocked'`, reason, d.dep, now, d.id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			continue // cancelled already by an earlier cascade
		}
		t.change(d.id, pkgID, d.resource, spinbroker.Blocked, spinbroker.Cancelled, 0)
		if err := t.cascade(d.id, ""); err != nil {
			return err
		}
	}
	t.commit.Packages = append(t.commit.Packages, pkgID)
	return nil
}

// collect records the transitions a `RETURNING id, resource, state`
// statement reports, all of one package and from one state.
func (t *Tx) collect(rows *sql.Rows, pkgID string, from spinbroker.CommandState) error {
	defer rows.Close()
	for rows.Next() {
		var id, resource, state string
		if err := rows.Scan(&id, &resource, &state); err != nil {
			return err
		}
		t.change(id, pkgID, resource, from, spinbroker.CommandState(state), 0)
	}
	return rows.Err()
}

// change records one transition for the listeners.
func (t *Tx) change(id, pkgID, resource string, from, to spinbroker.CommandState, attempts int) {
	t.commit.Commands = append(t.commit.Commands, spinbroker.Change{
		CommandID: id, PackageID: pkgID, Resource: resource, From: from, To: to, Attempts: attempts,
	})
}

// CancelPackage cancels a package that has not finished: its staged, blocked
// and ready commands become cancelled (with the cascade), leased ones run to
// the end. A finished package is answered unchanged. It answers the package
// as the cancel left it (see answer).
func (db *DB) CancelPackage(ctx context.Context, pkgID string) (pkg *spinbroker.Package, err error) {
	err = db.write(ctx, func(t *Tx) error {
		if err := t.cancel(pkgID); err != nil {
			return err
		}
		pkg, err = t.smallAnswer(pkgID)
		return err
	})
	if err != nil || pkg != nil {
		return pkg, err
	}
	return db.answer(ctx, pkgID, "cancel")
}

// CancelPackageOnly is CancelPackage without the answer, for a caller that
// does not show it (the dashboard's button): a package of 50,000 commands
// is not read for nothing.
func (db *DB) CancelPackageOnly(ctx context.Context, pkgID string) error {
	return db.write(ctx, func(t *Tx) error { return t.cancel(pkgID) })
}

// cancel cancels package pkgID unless it has finished.
func (t *Tx) cancel(pkgID string) error {
	var state string
	err := t.queryRow(`SELECT state FROM packages WHERE id = ?`, pkgID).Scan(&state)
	if isNoRows(err) {
		return spinbroker.Errorf(spinbroker.ENOTFOUND, "package %s not found", pkgID)
	} else if err != nil {
		return err
	}
	if spinbroker.PackageState(state).Terminal() {
		return nil
	}
	return t.cancelPackage(pkgID)
}

func (t *Tx) cancelPackage(pkgID string) error {
	now := nanos(t.now)
	if _, err := t.exec(`UPDATE packages SET cancelled_at = ? WHERE id = ?`, now, pkgID); err != nil {
		return err
	}
	// One statement per state, so that each change says where it came from.
	for _, from := range []spinbroker.CommandState{spinbroker.Staged, spinbroker.Blocked, spinbroker.Ready} {
		rows, err := t.query(`UPDATE commands SET state = 'cancelled', reason = 'package cancelled', finished_at = ?,
				backoff_until = NULL
			WHERE package_id = ? AND state = ?
			RETURNING id, resource, state`, now, pkgID, string(from))
		if err != nil {
			return err
		}
		if err := t.collect(rows, pkgID, from); err != nil {
			return err
		}
	}
	t.commit.Packages = append(t.commit.Packages, pkgID)
	return t.cascadePackage(pkgID, "", false)
}

// DeletePackage deletes a package in staging or one whose commands are all
// terminal. Commands of other packages that still wait on one of its
// commands that did not succeed are cancelled first.
func (db *DB) DeletePackage(ctx context.Context, pkgID string) error {
	return db.write(ctx, func(t *Tx) error {
		var state string
		var open int
		err := t.queryRow(`SELECT state, n_blocked + n_ready + n_leased FROM packages WHERE id = ?`, pkgID).Scan(&state, &open)
		if isNoRows(err) {
			return spinbroker.Errorf(spinbroker.ENOTFOUND, "package %s not found", pkgID)
		} else if err != nil {
			return err
		}
		if state == string(spinbroker.PackageCancelled) && open > 0 {
			// What is left are leases; those run out are settled here,
			// as the refusal below promises, not at the sweeper's next
			// round.
			if open, err = t.settlePackageLeases(pkgID); err != nil {
				return err
			}
		}
		if state != string(spinbroker.PackageStaging) && open > 0 {
			unfinished := fmt.Sprintf("%d unfinished commands", open)
			if open == 1 {
				unfinished = "1 unfinished command"
			}
			if state == string(spinbroker.PackageCancelled) {
				// Cancelled already: what is left are leases running out.
				return spinbroker.Errorf(spinbroker.ECONFLICT, "package %s is cancelled but has %s still leased to agents; delete it once they report or their leases expire", pkgID, unfinished)
			}
			return spinbroker.Errorf(spinbroker.ECONFLICT, "package %s is %s with %s; cancel it and wait, or delete it when it has finished", pkgID, state, unfinished)
		}
		return t.deletePackage(pkgID)
	})
}

// settlePackageLeases settles the expired leases of package pkgID's
// commands, on every queue they are in, and answers how many of its
// commands are left unfinished.
func (t *Tx) settlePackageLeases(pkgID string) (int, error) {
	rows, err := t.query(`SELECT DISTINCT resource FROM commands
		WHERE package_id = ? AND state = 'leased' AND lease_expires_at <= ?`, pkgID, nanos(t.now))
	if err != nil {
		return 0, err
	}
	var resources []string
	for rows.Next() {
		var r string
		if err := rows.Scan(&r); err != nil {
			rows.Close()
			return 0, err
		}
		resources = append(resources, r)
	}
	if err := endRows(rows); err != nil {
		return 0, err
	}
	for _, r := range resources {
		if _, err := t.settleExpired(r); err != nil {
			return 0, err
		}
	}
	// From the rows: the counts of the package's row are brought up to
	// date with the transaction's changes only as it ends.
	var open int
	err = t.queryRow(`SELECT count(*) FROM commands
		WHERE package_id = ? AND state IN ('blocked', 'ready', 'leased')`, pkgID).Scan(&open)
	return open, err
}

// qHoldDeleted names, on the commands of other packages that a cascade had
// cancelled already and that also wait on a command of package ?1 that did
// not succeed, that command (the first such dependency they list) as their
// cause: deleted, it can never succeed, so a retry of the dependency that
// cancelled them must leave them cancelled, as the retry of one the deletion
// cancelled is refused. Without this a retry counted only the dependencies
// still stored and ran them. Those cancelled by a command of ?1 name it
// already.
const qHoldDeleted = `UPDATE commands SET cancelled_by = e.dep, reason = 'dependency ' || e.dep || ' deleted'
	FROM (SELECT d.command_id AS id, d.depends_on AS dep, min(d.rowid)
		FROM commands x JOIN command_deps d ON d.depends_on = x.id
		WHERE x.package_id = ?1 AND x.state <> 'succeeded'
		GROUP BY d.command_id) AS e
	WHERE commands.id = e.id AND commands.package_id <> ?1
	  AND commands.state = 'cancelled' AND commands.cancelled_by IS NOT NULL
	  AND commands.cancelled_by NOT IN (SELECT id FROM commands WHERE package_id = ?1)
	RETURNING commands.package_id`

func (t *Tx) deletePackage(pkgID string) error {
	if err := t.cascadePackage(pkgID, "deleted", true); err != nil {
		return err
	}
	held, err := queryStrings(t, qHoldDeleted, pkgID)
	if err != nil {
		return err
	}
	t.commit.Packages = append(t.commit.Packages, held...) // their reason changed
	if _, err := t.exec(`DELETE FROM packages WHERE id = ?`, pkgID); err != nil {
		return err
	}
	t.commit.Deleted = append(t.commit.Deleted, pkgID)
	return nil
}

// Package reads a package with its commands, all of one moment.
func (db *DB) Package(ctx context.Context, id string) (*spinbroker.Package, error) {
	return db.snapshotPackage(ctx, id, true)
}

// Streamed answers hand a package's commands over a batch at a time: up to
// streamBatch of them, fewer once their parameters and outputs hold
// streamBatchBytes (each may be near 1 MiB, and a package may hold 50,000).
const (
	streamBatch      = 500
	streamBatchBytes = 4 << 20
)

// PackageEach reads a package and its commands, all of one moment, as
// Package does, but hands them over as it reads rather than gathering
// them: head gets the package (its Commands nil), then each gets every
// command in the order they were added, with its dependencies. What it
// holds at a time is a batch of commands, not the package. An error from
// head or each ends the read and is returned.
//
// The read transaction, and the read pool's connection it is on, stay open
// until the last command is handed over: a caller that writes each one to
// a slow client must bound how long (the HTTP server's write deadline
// does), since meanwhile the WAL cannot be checkpointed past it.
func (db *DB) PackageEach(ctx context.Context, id string, head func(*spinbroker.Package) error, each func(*spinbroker.Command) error) error {
	return db.snapshot(ctx, func(q querier) error {
		p, err := getPackage(q, id, false)
		if err != nil {
			return err
		}
		if err := head(p); err != nil {
			return err
		}
		for from := 0; from < p.Total; {
			cmds, err := packageCommandsBounded(q, qPackageCommands, id, from, streamBatch, streamBatchBytes)
			if err != nil {
				return err
			}
			if len(cmds) == 0 {
				return nil
			}
			for i := range cmds {
				if err := each(&cmds[i]); err != nil {
					return err
				}
				cmds[i] = spinbroker.Command{} // let the collector have it
			}
			from += len(cmds)
		}
		return nil
	})
}

// snapshotPackage is getPackage in one snapshot.
func (db *DB) snapshotPackage(ctx context.Context, id string, withCommands bool) (p *spinbroker.Package, err error) {
	err = db.snapshot(ctx, func(q querier) error {
		p, err = getPackage(q, id, withCommands)
		return err
	})
	return p, err
}

// Package pages, newest first, through packages_created or
// packages_state_created.
const (
	qPackages = `SELECT ` + packageCols + ` FROM packages
		WHERE created_at < ?1 OR (created_at = ?1 AND id < ?2)
		ORDER BY created_at DESC, id DESC LIMIT ?3`
	qPackagesByState = `SELECT ` + packageCols + ` FROM packages
		WHERE state = ?4 AND (created_at < ?1 OR (created_at = ?1 AND id < ?2))
		ORDER BY created_at DESC, id DESC LIMIT ?3`
)

// PackageInfo reads a package without its commands.
func (db *DB) PackageInfo(ctx context.Context, id string) (*spinbroker.Package, error) {
	return db.snapshotPackage(ctx, id, false)
}

// PackagePage reads a package with one page of its commands, all of one
// moment: up to limit of them (none with 0), in the order they were added,
// from the from-th (the first is 0; past the last, none), without their
// parameters and outputs (nil). The dashboard shows a package this way, so
// that a page of a package of 50,000 commands reads what it shows rather
// than all of them, nor up to 2 MiB a row that it does not show.
func (db *DB) PackagePage(ctx context.Context, id string, from, limit int) (p *spinbroker.Package, err error) {
	if from < 0 || limit < 0 {
		return nil, spinbroker.Errorf(spinbroker.EINVALID, "a page of commands starts at 0 or later and holds 0 or more")
	}
	err = db.snapshot(ctx, func(q querier) error {
		if p, err = getPackage(q, id, false); err != nil {
			return err
		}
		p.Commands = []spinbroker.Command{}
		if limit > 0 && from < p.Total {
			p.Commands, err = packageCommandsBounded(q, qPackageCommandsLight, id, from, limit, 0)
		}
		return err
	})
	return p, err
}

// Packages lists packages newest first, without their commands.
func (db *DB) Packages(ctx context.Context, f spinbroker.PackageFilter) (*spinbroker.PackageList, error) {
	if f.State != "" && !f.State.Valid() {
		return nil, spinbroker.Errorf(spinbroker.EINVALID, "state %q is not a package state", spinbroker.Truncate(string(f.State), 40))
	}
	switch {
	case f.Limit == 0:
		f.Limit = spinbroker.DefaultListLimit
	case f.Limit < 0:
		return nil, spinbroker.Errorf(spinbroker.EINVALID, "limit must be positive")
	case f.Limit > spinbroker.MaxListLimit:
		f.Limit = spinbroker.MaxListLimit
	}
	afterTime, afterID := int64(1<<63-1), "~"
	if f.Cursor != "" {
		var ok bool
		if afterTime, afterID, ok = decodeCursor(f.Cursor); !ok {
			return nil, spinbroker.Errorf(spinbroker.EINVALID, "cursor is not one this server gave out")
		}
	}
	list := &spinbroker.PackageList{Packages: []spinbroker.Package{}}
	err := db.snapshot(ctx, func(q querier) error {
		var rows *sql.Rows
		var err error
		if f.State == "" {
			rows, err = q.query(qPackages, afterTime, afterID, f.Limit+1)
		} else {
			rows, err = q.query(qPackagesByState, afterTime, afterID, f.Limit+1, string(f.State))
		}
		if err != nil {
			return err
		}
		for rows.Next() {
			p, err := scanPackage(rows)
			if err != nil {
				rows.Close()
				return err
			}
			list.Packages = append(list.Packages, p)
		}
		if err := endRows(rows); err != nil {
			return err
		}
		if len(list.Packages) > f.Limit {
			list.Packages = list.Packages[:f.Limit]
			last := list.Packages[f.Limit-1]
			c := encodeCursor(nanos(last.CreatedAt), last.ID)
			list.NextCursor = &c
		}
		for i := range list.Packages {
			if err := fillCauser(q, &list.Packages[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return list, nil
}

func encodeCursor(t int64, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(t, 10) + "/" + id))
}

func decodeCursor(c string) (int64, string, bool) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return 0, "", false
	}
	ts, id, ok := strings.Cut(string(b), "/")
	if !ok {
		return 0, "", false
	}
	t, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return 0, "", false
	}
	if _, ok := spinbroker.ParseID(id); !ok {
		return 0, "", false
	}
	return t, id, true
}

// idempotent looks up an earlier request with the same key: the same body
// answers its response again (replay); a different body is the 409 in
// reused, which the caller answers only once the request itself has been
// judged and found valid (a 400 of its own wins, API.md, Errors); err is
// a failure of the store.
func (t *Tx) idempotent(idem *spinbroker.Idempotency) (replay []byte, reused, err error) {
	if idem == nil {
		return nil, nil, nil
	}
	var hash, body []byte
	err = t.queryRow(`SELECT hash, body FROM idempotency WHERE scope = ? AND key = ? AND created_at > ?`,
		idem.Scope, idem.Key, nanos(t.now.Add(-spinbroker.IdempotencyTTL))).Scan(&hash, &body)
	if isNoRows(err) {
		return nil, nil, nil
	} else if err != nil {
		return nil, nil, err
	}
	if !bytes.Equal(hash, idem.Hash) {
		// Most often a retry that encoded its body again: say that the
		// bytes must be the same, and what a new request needs instead.
		return nil, spinbroker.Errorf(spinbroker.ECONFLICT, "Idempotency-Key %q was used with a different body in the last %d hours: a retry must resend the first request's body byte for byte; a new request needs a new key",
			spinbroker.Truncate(idem.Key, 80), int(spinbroker.IdempotencyTTL.Hours())), nil
	}
	return body, nil, nil
}

// remember stores the response to a request made with an Idempotency-Key.
func (t *Tx) remember(idem *spinbroker.Idempotency, v any) error {
	if idem == nil {
		return nil
	}
	body, err := jsonenc.Append(nil, v)
	if err != nil {
		return err
	}
	_, err = t.exec(`INSERT OR REPLACE INTO idempotency (scope, key, hash, status, body, created_at)
		VALUES (?, ?, ?, 201, ?, ?)`, idem.Scope, idem.Key, idem.Hash, body, nanos(t.now))
	return err
}

// staleBefore is a helper for sweeps: the time before which things expire.
func staleBefore(now time.Time, ttl time.Duration) int64 { return nanos(now.Add(-ttl)) }
