package main

import (
	"context"
	"sync"
	"time"

	"github.com/google/uuid"

	spinbroker "github.com/spin-broker/spinbroker"
)

// memStore keeps packages and queues in memory behind one mutex: what the
// throughput scenarios need of a store (create, add, enqueue, next, claim,
// complete, queue settings, reading a package back), with no storage at
// all. It answers everything else with an error: it exists to measure how
// fast spin-broker's HTTP layer and the load generator can go on a
// machine, not to be a broker. It knows no dependencies, retries, leases
// that expire or deletion.
type memStore struct {
	mu        sync.Mutex
	seq       int64
	pkgs      map[string]*memPackage
	cmds      map[string]*spinbroker.Command
	queues    map[string]*memQueue
	listeners []func(*spinbroker.Commit)
}

type memPackage struct {
	pkg  spinbroker.Package // without its commands
	cmds []*spinbroker.Command
}

type memQueue struct {
	concurrency int
	paused      bool
	ready       []*spinbroker.Command // in queue order
	leased      int
}

func newMemStore() *memStore {
	return &memStore{
		pkgs:   map[string]*memPackage{},
		cmds:   map[string]*spinbroker.Command{},
		queues: map[string]*memQueue{},
	}
}

var errUnsupported = spinbroker.Errorf(spinbroker.EUNAVAILABLE, "the ceiling server's store does not do this")

// publish tells the listeners what a write changed, after it "committed".
func (s *memStore) publish(c *spinbroker.Commit) {
	if c.Empty() {
		return
	}
	for _, f := range s.listeners {
		f(c)
	}
}

func (s *memStore) queue(resource string) *memQueue {
	q := s.queues[resource]
	if q == nil {
		q = &memQueue{concurrency: spinbroker.DefaultConcurrency}
		s.queues[resource] = q
	}
	return q
}

func (s *memStore) CreatePackage(ctx context.Context, in spinbroker.NewPackage, idem *spinbroker.Idempotency) (*spinbroker.Package, []byte, error) {
	for i := range in.Commands {
		if err := in.Commands[i].Validate(); err != nil {
			return nil, nil, err
		}
		if len(in.Commands[i].Dependencies) > 0 {
			return nil, nil, errUnsupported
		}
	}
	id := in.ID
	if id == "" {
		id = uuid.Must(uuid.NewV7()).String()
	}
	var c spinbroker.Commit
	s.mu.Lock()
	if s.pkgs[id] != nil {
		s.mu.Unlock()
		return nil, nil, spinbroker.Errorf(spinbroker.ECONFLICT, "package %s already exists", id)
	}
	now := time.Now().UTC()
	p := &memPackage{pkg: spinbroker.Package{ID: id, State: spinbroker.PackageStaging, CreatedAt: now}}
	s.pkgs[id] = p
	for i := range in.Commands {
		s.add(p, &in.Commands[i], now)
	}
	if in.Enqueue {
		s.enqueue(p, now, &c)
	}
	out := p.read(true)
	s.mu.Unlock()
	c.Packages = []string{id}
	s.publish(&c)
	return out, nil, nil
}

// add appends a staged command to p.
func (s *memStore) add(p *memPackage, in *spinbroker.NewCommand, now time.Time) *spinbroker.Command {
	id := in.ID
	if id == "" {
		id = uuid.Must(uuid.NewV7()).String()
	}
	cmd := &spinbroker.Command{
		ID: id, PackageID: p.pkg.ID, Resource: in.Resource, Action: in.Action,
		Parameters: in.Parameters, Dependencies: []string{}, MaxAttempts: spinbroker.DefaultMaxAttempts,
		State: spinbroker.Staged, CreatedAt: now,
	}
	if in.Key != "" {
		k := in.Key
		cmd.Key = &k
	}
	p.cmds = append(p.cmds, cmd)
	s.cmds[id] = cmd
	return cmd
}

// enqueue makes p's commands ready, in order.
func (s *memStore) enqueue(p *memPackage, now time.Time, c *spinbroker.Commit) {
	at := now
	p.pkg.EnqueuedAt = &at
	for _, cmd := range p.cmds {
		s.seq++
		seq := s.seq
		cmd.Seq = &seq
		cmd.EnqueuedAt = &at
		cmd.State = spinbroker.Ready
		q := s.queue(cmd.Resource)
		q.ready = append(q.ready, cmd)
		c.Commands = append(c.Commands, spinbroker.Change{CommandID: cmd.ID, PackageID: p.pkg.ID,
			Resource: cmd.Resource, From: spinbroker.Staged, To: spinbroker.Ready})
	}
}

// read is the package as responses show it, with copies of its commands.
func (p *memPackage) read(withCommands bool) *spinbroker.Package {
	out := p.pkg
	out.Total = len(p.cmds)
	var last *time.Time
	for _, cmd := range p.cmds {
		switch cmd.State {
		case spinbroker.Staged:
			out.Counts.Staged++
		case spinbroker.Ready:
			out.Counts.Ready++
		case spinbroker.Leased:
			out.Counts.Leased++
		case spinbroker.Succeeded:
			out.Counts.Succeeded++
		case spinbroker.Failed:
			out.Counts.Failed++
		}
		if cmd.FinishedAt != nil && (last == nil || cmd.FinishedAt.After(*last)) {
			last = cmd.FinishedAt
		}
	}
	switch {
	case out.EnqueuedAt == nil:
		out.State = spinbroker.PackageStaging
	case out.Counts.Succeeded == out.Total:
		out.State, out.FinishedAt = spinbroker.PackageSucceeded, last
	case out.Counts.Done() == out.Total:
		out.State, out.FinishedAt = spinbroker.PackageFailed, last
	case out.Counts.Leased+out.Counts.Done() == 0:
		out.State = spinbroker.PackageQueued
	default:
		out.State = spinbroker.PackageRunning
	}
	if withCommands {
		out.Commands = make([]spinbroker.Command, len(p.cmds))
		for i, cmd := range p.cmds {
			out.Commands[i] = *cmd
		}
	}
	return &out
}

func (s *memStore) AddCommand(ctx context.Context, pkgID string, in spinbroker.NewCommand, idem *spinbroker.Idempotency) (*spinbroker.Command, []byte, error) {
	if err := in.Validate(); err != nil {
		return nil, nil, err
	}
	if len(in.Dependencies) > 0 {
		return nil, nil, errUnsupported
	}
	s.mu.Lock()
	p := s.pkgs[pkgID]
	if p == nil {
		s.mu.Unlock()
		return nil, nil, spinbroker.Errorf(spinbroker.ENOTFOUND, "package %s not found", pkgID)
	}
	if p.pkg.EnqueuedAt != nil {
		s.mu.Unlock()
		return nil, nil, spinbroker.Errorf(spinbroker.ECONFLICT, "package %s is already enqueued", pkgID)
	}
	out := *s.add(p, &in, time.Now().UTC())
	s.mu.Unlock()
	s.publish(&spinbroker.Commit{Packages: []string{pkgID}})
	return &out, nil, nil
}

func (s *memStore) Enqueue(ctx context.Context, pkgID string) (*spinbroker.Package, error) {
	var c spinbroker.Commit
	s.mu.Lock()
	p := s.pkgs[pkgID]
	switch {
	case p == nil:
		s.mu.Unlock()
		return nil, spinbroker.Errorf(spinbroker.ENOTFOUND, "package %s not found", pkgID)
	case len(p.cmds) == 0:
		s.mu.Unlock()
		return nil, spinbroker.Errorf(spinbroker.EEMPTY, "package %s has no commands to enqueue", pkgID)
	case p.pkg.EnqueuedAt == nil:
		s.enqueue(p, time.Now().UTC(), &c)
	}
	out := p.read(true)
	s.mu.Unlock()
	c.Packages = []string{pkgID}
	s.publish(&c)
	return out, nil
}

func (s *memStore) Package(ctx context.Context, pkgID string) (*spinbroker.Package, error) {
	return s.readPackage(pkgID, true)
}

func (s *memStore) PackageEach(ctx context.Context, pkgID string, head func(*spinbroker.Package) error, each func(*spinbroker.Command) error) error {
	p, err := s.readPackage(pkgID, true)
	if err != nil {
		return err
	}
	cmds := p.Commands
	p.Commands = nil
	if err := head(p); err != nil {
		return err
	}
	for i := range cmds {
		if err := each(&cmds[i]); err != nil {
			return err
		}
	}
	return nil
}

func (s *memStore) PackageInfo(ctx context.Context, pkgID string) (*spinbroker.Package, error) {
	return s.readPackage(pkgID, false)
}

// readPackage reads a package, with its commands or without.
func (s *memStore) readPackage(pkgID string, commands bool) (*spinbroker.Package, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pkgs[pkgID]
	if p == nil {
		return nil, spinbroker.Errorf(spinbroker.ENOTFOUND, "package %s not found", pkgID)
	}
	return p.read(commands), nil
}

func (s *memStore) Command(ctx context.Context, id string) (*spinbroker.Command, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cmd := s.cmds[id]
	if cmd == nil {
		return nil, spinbroker.Errorf(spinbroker.ENOTFOUND, "command %s not found", id)
	}
	out := *cmd
	return &out, nil
}

func (s *memStore) CommandResources(ctx context.Context, ids []string) (map[string]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]string, len(ids))
	for _, id := range ids {
		if cmd := s.cmds[id]; cmd != nil {
			out[id] = cmd.Resource
		}
	}
	return out, nil
}

func (s *memStore) Next(ctx context.Context, resource string, lease time.Duration) (*spinbroker.Command, time.Time, error) {
	cmds, wake, err := s.Claim(ctx, resource, 1, lease)
	if len(cmds) == 0 {
		return nil, wake, err
	}
	return &cmds[0], wake, err
}

// Release does nothing: the ceiling knows no lease expiry either, and its
// load generator reads every answer.
func (s *memStore) Release(ctx context.Context, cmds []spinbroker.Command) error { return nil }

// Peek tells whether Claim would lease something now, as the broker's
// store does (for a long-poll a commit woke).
func (s *memStore) Peek(ctx context.Context, resource string) (bool, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queue(resource)
	return !q.paused && q.leased < q.concurrency && len(q.ready) > 0, time.Time{}, nil
}

func (s *memStore) Claim(ctx context.Context, resource string, max int, lease time.Duration) ([]spinbroker.Command, time.Time, error) {
	if lease <= 0 {
		lease = time.Duration(spinbroker.DefaultLease)
	}
	var c spinbroker.Commit
	s.mu.Lock()
	q := s.queue(resource)
	n := min(max, q.concurrency-q.leased, len(q.ready))
	if q.paused || n <= 0 {
		s.mu.Unlock()
		return nil, time.Time{}, nil
	}
	now := time.Now().UTC()
	expires := now.Add(lease)
	token := uuid.NewString()
	out := make([]spinbroker.Command, n)
	for i, cmd := range q.ready[:n] {
		cmd.State = spinbroker.Leased
		cmd.Attempts++
		cmd.StartedAt = &now
		cmd.LeaseExpiresAt = &expires
		out[i] = *cmd
		out[i].Lease = &spinbroker.Lease{Token: token, ExpiresAt: expires}
		c.Commands = append(c.Commands, spinbroker.Change{CommandID: cmd.ID, PackageID: cmd.PackageID,
			Resource: resource, From: spinbroker.Ready, To: spinbroker.Leased, Attempts: cmd.Attempts})
	}
	q.ready = q.ready[n:]
	q.leased += n
	s.mu.Unlock()
	s.publish(&c)
	return out, time.Time{}, nil
}

func (s *memStore) Complete(ctx context.Context, id string, res spinbroker.Result) (*spinbroker.Command, error) {
	var c spinbroker.Commit
	s.mu.Lock()
	cmd, err := s.finish(id, res, &c)
	var out spinbroker.Command
	if err == nil {
		out = *cmd
	}
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	s.publish(&c)
	return &out, nil
}

func (s *memStore) CompleteBatch(ctx context.Context, items []spinbroker.BatchResult) ([]error, error) {
	var c spinbroker.Commit
	errs := make([]error, len(items))
	s.mu.Lock()
	for i := range items {
		_, errs[i] = s.finish(items[i].ID, items[i].Result, &c)
	}
	s.mu.Unlock()
	s.publish(&c)
	return errs, nil
}

// finish records a leased command's result.
func (s *memStore) finish(id string, res spinbroker.Result, c *spinbroker.Commit) (*spinbroker.Command, error) {
	cmd := s.cmds[id]
	switch {
	case cmd == nil:
		return nil, spinbroker.Errorf(spinbroker.ENOTFOUND, "command %s not found", id)
	case cmd.State != spinbroker.Leased:
		return nil, spinbroker.Errorf(spinbroker.ECONFLICT, "command %s is %s", id, cmd.State)
	case res.Lease == "":
		return nil, spinbroker.Errorf(spinbroker.EINVALID, "a result needs its lease")
	}
	now := time.Now().UTC()
	cmd.FinishedAt = &now
	cmd.LeaseExpiresAt = nil
	cmd.State = spinbroker.Failed
	if res.Status != nil && *res.Status {
		cmd.State = spinbroker.Succeeded
	}
	cmd.Reason = res.Reason
	cmd.Output = res.Output
	s.queues[cmd.Resource].leased--
	c.Commands = append(c.Commands, spinbroker.Change{CommandID: id, PackageID: cmd.PackageID,
		Resource: cmd.Resource, From: spinbroker.Leased, To: cmd.State, Attempts: cmd.Attempts})
	return cmd, nil
}

func (s *memStore) SetQueue(ctx context.Context, resource string, set spinbroker.QueueSettings) (*spinbroker.Queue, error) {
	if err := spinbroker.CheckName("resource", resource); err != nil {
		return nil, err
	}
	s.mu.Lock()
	q := s.queue(resource)
	if set.Concurrency != nil {
		q.concurrency = *set.Concurrency
	}
	if set.Paused != nil {
		q.paused = *set.Paused
	}
	out := q.read(resource)
	s.mu.Unlock()
	s.publish(&spinbroker.Commit{Queues: []string{resource}})
	return out, nil
}

func (q *memQueue) read(resource string) *spinbroker.Queue {
	return &spinbroker.Queue{Resource: resource, Concurrency: q.concurrency, Paused: q.paused,
		Counts: spinbroker.QueueCounts{Ready: len(q.ready), Leased: q.leased}}
}

func (s *memStore) Queue(ctx context.Context, resource string) (*spinbroker.Queue, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queue(resource).read(resource), nil
}

// QueueEach hands over the queue and no commands: the ceiling keeps no
// list of a queue's commands (Queue answers none either).
func (s *memStore) QueueEach(ctx context.Context, resource string, head func(*spinbroker.Queue) error, each func(*spinbroker.Command) error) error {
	q, _ := s.Queue(ctx, resource)
	return head(q)
}

func (s *memStore) Queues(ctx context.Context) ([]spinbroker.Queue, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]spinbroker.Queue, 0, len(s.queues))
	for r, q := range s.queues {
		out = append(out, *q.read(r))
	}
	return out, nil
}

func (s *memStore) QueuesNamed(ctx context.Context, resources []string) ([]spinbroker.Queue, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]spinbroker.Queue, 0, len(resources))
	for _, r := range resources {
		if q, ok := s.queues[r]; ok {
			out = append(out, *q.read(r))
		}
	}
	return out, nil
}

func (s *memStore) Listen(f func(*spinbroker.Commit)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listeners = append(s.listeners, f)
}

func (s *memStore) Ping(ctx context.Context) error         { return nil }
func (s *memStore) WriteFailure(ctx context.Context) error { return nil }

func (s *memStore) CancelPackage(ctx context.Context, pkgID string) (*spinbroker.Package, error) {
	return nil, errUnsupported
}
func (s *memStore) CancelPackageOnly(ctx context.Context, pkgID string) error { return errUnsupported }
func (s *memStore) DeletePackage(ctx context.Context, pkgID string) error     { return errUnsupported }
func (s *memStore) Packages(ctx context.Context, f spinbroker.PackageFilter) (*spinbroker.PackageList, error) {
	return nil, errUnsupported
}
func (s *memStore) Heartbeat(ctx context.Context, id, token string, extend time.Duration) (time.Time, error) {
	return time.Time{}, errUnsupported
}
func (s *memStore) Retry(ctx context.Context, id string) (*spinbroker.Command, error) {
	return nil, errUnsupported
}
func (s *memStore) RetryRefusal(ctx context.Context, id string) error { return errUnsupported }
func (s *memStore) Authenticate(ctx context.Context, secret string) (*spinbroker.Token, error) {
	return nil, errUnsupported
}
func (s *memStore) Completions(ctx context.Context, since time.Time, minutes int) ([]spinbroker.Counts, error) {
	return nil, errUnsupported
}
func (s *memStore) QueueCommands(ctx context.Context, resource string, afterSeq int64, limit int) ([]spinbroker.Command, error) {
	return nil, errUnsupported
}
func (s *memStore) QueuePage(ctx context.Context, resource string, afterSeq int64, limit int) (*spinbroker.Queue, error) {
	return nil, errUnsupported
}
func (s *memStore) PackagePage(ctx context.Context, pkgID string, from, limit int) (*spinbroker.Package, error) {
	return nil, errUnsupported
}
func (s *memStore) QueueHead(ctx context.Context, resource string) (*spinbroker.Command, time.Time, error) {
	return nil, time.Time{}, errUnsupported
}
func (s *memStore) CommandsByID(ctx context.Context, ids []string) (map[string]spinbroker.Command, error) {
	return nil, errUnsupported
}
func (s *memStore) Dependents(ctx context.Context, id string, limit int) ([]spinbroker.Command, error) {
	return nil, errUnsupported
}
func (s *memStore) SearchQueues(ctx context.Context, prefix string, limit int) ([]spinbroker.Queue, error) {
	return nil, errUnsupported
}
func (s *memStore) BusiestQueues(ctx context.Context, limit int) ([]spinbroker.Queue, int, error) {
	return nil, 0, errUnsupported
}
func (s *memStore) Search(ctx context.Context, prefix string, limit int) ([]spinbroker.Package, []spinbroker.Command, error) {
	return nil, nil, errUnsupported
}
