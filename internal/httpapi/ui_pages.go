package httpapi

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
)

// The dashboard's pages. Each reads what it shows through the Store's
// paged, indexed reads; with ?fragment=NAME it renders one part of itself
// for the live updates, and reads only what that part needs.

// recentPackages is how many packages the overview lists.
const recentPackages = 20

// overviewQueues is how many queues the overview lists: a fleet with
// thousands made it megabytes, fetched again with every change.
const overviewQueues = 50

type overviewPage struct {
	Queues     []spinbroker.Queue
	MoreQueues int                   // queues left out of the list
	Agents     map[string]agentsView // by resource
	Packages   []spinbroker.Package
	Chart      chart
}

// agentsView is what a page shows of the agents asking a queue for work.
type agentsView struct {
	agents
	Started time.Time // when the broker started hearing polls
	// Waiters names the agents waiting now (maxNamed of them at most),
	// MoreWaiting counts the long-polls of those not named.
	Waiters     []waiter
	MoreWaiting int
	// Missing: work waits for a free slot, and no agent waits for it nor
	// has asked for quietAfter.
	Missing bool
}

// maxNamed is how many of a list that may run long a queue's page names
// before it counts the rest ("and 7 more"): the kinds of waiting agent
// (program, token, host) asking for its work, and the dependencies a
// blocked command still waits for.
const maxNamed = 5

// quietAfter is how long a queue with work for agents and nobody waiting
// must have gone unasked before a page says that no agent is asking.
const quietAfter = time.Minute

func (u *ui) agentsView(q *spinbroker.Queue) agentsView {
	a := agentsView{agents: u.s.agentsOf(q.Resource), Started: u.s.polls.started}
	if a.Waiting > 0 {
		a.Waiters, a.MoreWaiting = groupWaiters(u.s.notifier.askers(q.Resource), maxNamed)
	}
	since := a.Started
	if a.Last != nil {
		since = a.Last.At
	}
	a.Missing = a.Waiting == 0 && u.s.now().Sub(since) > quietAfter &&
		!q.Paused && q.Counts.Ready > 0 && q.Counts.Leased < q.Concurrency
	return a
}

func (u *ui) handleOverview(w http.ResponseWriter, r *http.Request) {
	if !u.readable(w, r) {
		return
	}
	ctx := r.Context()
	var d overviewPage
	var err error
	if wantFragment(r, "queues") {
		var total int
		if d.Queues, total, err = u.s.store.BusiestQueues(ctx, overviewQueues); err != nil {
			u.fail(w, r, err)
			return
		}
		d.MoreQueues = total - len(d.Queues)
		d.Agents = make(map[string]agentsView, len(d.Queues))
		for i := range d.Queues {
			d.Agents[d.Queues[i].Resource] = u.agentsView(&d.Queues[i])
		}
	}
	if wantFragment(r, "packages") {
		list, err := u.s.store.Packages(ctx, spinbroker.PackageFilter{Limit: recentPackages})
		if err != nil {
			u.fail(w, r, err)
			return
		}
		d.Packages = list.Packages
	}
	v := u.newView(r, "Overview", "overview", &d)
	if wantFragment(r, "chart") {
		since := v.Now.Truncate(time.Minute).Add(-59 * time.Minute)
		counts, err := u.s.store.Completions(ctx, since, 60)
		if err != nil {
			u.fail(w, r, err)
			return
		}
		d.Chart = newChart(since, counts, v.Now)
	}
	v.Events = "/events"
	u.render(w, r, http.StatusOK, "overview", v)
}

type packagesPage struct {
	State    spinbroker.PackageState
	Packages []spinbroker.Package
	NextURL  string
	First    bool // this is the newest page
}

func (u *ui) handlePackages(w http.ResponseWriter, r *http.Request) {
	if !u.readable(w, r) {
		return
	}
	q := r.URL.Query()
	f := spinbroker.PackageFilter{State: spinbroker.PackageState(q.Get("state")), Cursor: q.Get("cursor")}
	list, err := u.s.store.Packages(r.Context(), f)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	d := &packagesPage{State: f.State, Packages: list.Packages, First: f.Cursor == ""}
	if list.NextCursor != nil {
		next := url.Values{"cursor": {*list.NextCursor}}
		if f.State != "" {
			next.Set("state", string(f.State))
		}
		d.NextURL = "/ui/packages?" + next.Encode()
	}
	title := "Packages"
	if f.State != "" {
		title = "Packages: " + string(f.State)
	}
	v := u.newView(r, title, "packages", d)
	v.Events = "/events"
	u.render(w, r, http.StatusOK, "packages", v)
}

// tableRows is how many commands a package's table shows at once.
const tableRows = 500

type packagePage struct {
	Package      *spinbroker.Package // its Commands: the table's page alone
	Graph        *graph
	TooBig       bool                 // too many commands to draw
	Commands     []spinbroker.Command // this page of the table
	External     []spinbroker.Command // dependencies of its rows in other packages, linksShown at most
	MoreExternal int                  // those left out of External
	Causer       *spinbroker.Command  // the first failure, for its action
	From         int                  // the index of the table's first row
	PrevURL      string
	NextURL      string
}

// handlePackage reads what it shows: the package and its counts, the
// table's page of commands (or none, for a fragment without the table),
// all of them only when the graph is asked for and small enough to draw,
// the causer, and the other packages' commands the page's rows depend on.
// A package of 50,000 commands costs a page of them, not 50,000.
func (u *ui) handlePackage(w http.ResponseWriter, r *http.Request) {
	if !u.readable(w, r) {
		return
	}
	id, err := pathID(r, "package")
	if err != nil {
		u.fail(w, r, err)
		return
	}
	ctx := r.Context()
	from, rows := 0, 0
	if wantFragment(r, "commands") {
		from, _ = strconv.Atoi(r.URL.Query().Get("from"))
		from, rows = max(0, from), tableRows
	}
	p, err := u.s.store.PackagePage(ctx, id, from, rows)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	d := &packagePage{Package: p, TooBig: p.Total > graphMax}
	if wantFragment(r, "graph") && !d.TooBig {
		all := p.Commands
		if from > 0 || len(all) < p.Total {
			// The table's page is not the whole package: read it all.
			whole, err := u.s.store.PackagePage(ctx, id, 0, graphMax)
			if err != nil {
				u.fail(w, r, err)
				return
			}
			all = whole.Commands
		}
		d.Graph = newGraph(all)
	}
	if p.Causer != nil {
		// By id: it may be on any page of the package.
		byID, err := u.s.store.CommandsByID(ctx, []string{*p.Causer})
		if err != nil {
			u.fail(w, r, err)
			return
		}
		if c, ok := byID[*p.Causer]; ok {
			d.Causer = &c
		}
	}
	if wantFragment(r, "commands") {
		d.From = min(from, p.Total)
		d.Commands = p.Commands
		to := d.From + len(d.Commands)
		base := "/ui/packages/" + p.ID
		if d.From > 0 {
			d.PrevURL = base + "?from=" + strconv.Itoa(max(0, d.From-tableRows))
		}
		if len(d.Commands) > 0 && to < p.Total {
			d.NextURL = base + "?from=" + strconv.Itoa(to)
		}
		if d.External, err = u.external(ctx, p.ID, d.Commands); err != nil {
			u.fail(w, r, err)
			return
		}
		if len(d.External) > linksShown {
			d.External, d.MoreExternal = d.External[:linksShown], len(d.External)-linksShown
		}
	}
	v := u.newView(r, "Package "+shortID(p.ID), "packages", d)
	v.Events = "/events?package=" + p.ID
	u.render(w, r, http.StatusOK, "package", v)
}

// external returns the commands of other packages than pkgID that cmds
// depend on, in the order they are first named; those deleted since are
// left out.
func (u *ui) external(ctx context.Context, pkgID string, cmds []spinbroker.Command) ([]spinbroker.Command, error) {
	shown := make(map[string]bool, len(cmds))
	for _, c := range cmds {
		shown[c.ID] = true
	}
	var ids []string
	for _, c := range cmds {
		for _, dep := range c.Dependencies {
			if !shown[dep] {
				shown[dep] = true
				ids = append(ids, dep)
			}
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	byID, err := u.s.store.CommandsByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	var out []spinbroker.Command
	for _, id := range ids {
		if c, ok := byID[id]; ok && c.PackageID != pkgID {
			out = append(out, c)
		}
	}
	return out, nil
}

// queueRow is one command of a queue's page, with why it waits.
type queueRow struct {
	spinbroker.Command
	Head      bool                 // the next delivery hands this one out
	Waits     []spinbroker.Command // the first maxNamed dependencies that have not succeeded
	MoreWaits int                  // those not named: a command may wait for hundreds
	Delayed   bool                 // blocked by its not_before alone
}

type queuePage struct {
	Queue   *spinbroker.Queue
	Head    *spinbroker.Command
	Backoff *time.Time // the head waits out a retry back-off until then
	Status  string     // why the queue does or does not move, a keyword the template explains
	Agents  agentsView // whether agents are asking for work
	Rows    []queueRow
	After   int64
	NextURL string
}

func (u *ui) handleQueue(w http.ResponseWriter, r *http.Request) {
	if !u.readable(w, r) {
		return
	}
	res, err := pathResource(r)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	ctx := r.Context()
	d := &queuePage{}
	limit := 0 // the summary alone lists no command
	if wantFragment(r, "commands") {
		if a := r.URL.Query().Get("after"); a != "" {
			if d.After, err = strconv.ParseInt(a, 10, 64); err != nil || d.After < 0 {
				u.fail(w, r, errorf(spinbroker.EINVALID, "after must be a sequence number, not %q", spinbroker.Truncate(a, 40)))
				return
			}
		}
		limit = spinbroker.DefaultListLimit
	}
	q, err := u.s.store.QueuePage(ctx, res, d.After, limit)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	d.Queue = q
	head, backoff, err := u.s.store.QueueHead(ctx, res)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	d.Head = head
	if !backoff.IsZero() {
		d.Backoff = &backoff
	}
	d.Agents = u.agentsView(q)
	switch {
	case q.Paused:
		d.Status = "paused"
	case q.Counts.Ready > 0 && q.Counts.Leased >= q.Concurrency:
		d.Status = "full"
	case d.Backoff != nil:
		d.Status = "backoff"
	case q.Counts.Ready > 0:
		d.Status = "waiting"
	case q.Counts.Blocked > 0:
		d.Status = "blocked"
	case q.Counts.Leased > 0:
		d.Status = "running"
	default:
		d.Status = "empty"
	}
	if wantFragment(r, "commands") {
		cmds := q.Commands
		if d.Rows, err = u.queueRows(r, cmds, head, u.s.now()); err != nil {
			u.fail(w, r, err)
			return
		}
		if n := len(cmds); n == spinbroker.DefaultListLimit && cmds[n-1].Seq != nil {
			// A full page may be the last one: offer a later page only
			// when a command follows, not a page that says there is none.
			after := *cmds[n-1].Seq
			more, err := u.s.store.QueueCommands(ctx, res, after, 1)
			if err != nil {
				u.fail(w, r, err)
				return
			}
			if len(more) > 0 {
				d.NextURL = "/ui/queues/" + res + "?after=" + strconv.FormatInt(after, 10)
			}
		}
	}
	v := u.newView(r, "Queue "+res, "", d)
	v.Events = "/events"
	v.Resource = res
	u.render(w, r, http.StatusOK, "queue", v)
}

// queueRows marks the head of line and finds, for each blocked command,
// the dependencies it still waits for (one read for the whole page).
func (u *ui) queueRows(r *http.Request, cmds []spinbroker.Command, head *spinbroker.Command, now time.Time) ([]queueRow, error) {
	var ids []string
	for _, c := range cmds {
		if c.State == spinbroker.Blocked {
			ids = append(ids, c.Dependencies...)
		}
	}
	deps, err := u.s.store.CommandsByID(r.Context(), ids)
	if err != nil {
		return nil, err
	}
	rows := make([]queueRow, len(cmds))
	for i, c := range cmds {
		row := queueRow{Command: c, Head: head != nil && head.ID == c.ID}
		if c.State == spinbroker.Blocked {
			for _, id := range c.Dependencies {
				if dep, ok := deps[id]; ok && dep.State != spinbroker.Succeeded {
					row.Waits = append(row.Waits, dep)
				}
			}
			row.Delayed = len(row.Waits) == 0 && c.NotBefore != nil && c.NotBefore.After(now)
			if len(row.Waits) > maxNamed {
				row.Waits, row.MoreWaits = row.Waits[:maxNamed], len(row.Waits)-maxNamed
			}
		}
		rows[i] = row
	}
	return rows, nil
}

// linksShown is how many commands a page lists by their links where there
// may be thousands: a command's dependents, the other packages' commands a
// package's rows depend on.
const linksShown = 100

type commandPage struct {
	Command        *spinbroker.Command
	Deps           []spinbroker.Command
	DeletedDeps    []string // dependencies deleted since (their package was)
	Dependents     []spinbroker.Command
	MoreDependents bool
	CanRetry       bool   // a retry would run: the retry button applies
	RetryRefused   string // why it would not, for a failed or cancelled command
}

func (u *ui) handleCommand(w http.ResponseWriter, r *http.Request) {
	if !u.readable(w, r) {
		return
	}
	id, err := pathID(r, "command")
	if err != nil {
		u.fail(w, r, err)
		return
	}
	ctx := r.Context()
	c, err := u.s.store.Command(ctx, id)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	d := &commandPage{Command: c}
	if c.State == spinbroker.Failed || c.State == spinbroker.Cancelled {
		// Offer only a retry that would run: one refused for a failed
		// dependency or a cancelled package says why instead.
		switch err := u.s.store.RetryRefusal(ctx, id); {
		case err == nil:
			d.CanRetry = true
		case spinbroker.ErrorCode(err) == spinbroker.ECONFLICT:
			d.RetryRefused = spinbroker.ErrorMessage(err)
		default:
			u.fail(w, r, err)
			return
		}
	}
	if wantFragment(r, "links") {
		byID, err := u.s.store.CommandsByID(ctx, c.Dependencies)
		if err != nil {
			u.fail(w, r, err)
			return
		}
		for _, dep := range c.Dependencies {
			if dc, ok := byID[dep]; ok {
				d.Deps = append(d.Deps, dc)
			} else {
				d.DeletedDeps = append(d.DeletedDeps, dep)
			}
		}
		if d.Dependents, err = u.s.store.Dependents(ctx, id, linksShown+1); err != nil {
			u.fail(w, r, err)
			return
		}
		if len(d.Dependents) > linksShown {
			d.Dependents, d.MoreDependents = d.Dependents[:linksShown], true
		}
	}
	v := u.newView(r, c.Action+" "+shortID(c.ID), "", d)
	v.Events = "/events?package=" + c.PackageID
	u.render(w, r, http.StatusOK, "command", v)
}

// searchLimit is how many matches of each kind the search page lists.
const searchLimit = 20

type searchPage struct {
	Q        string
	Packages []spinbroker.Package
	Commands []spinbroker.Command
	Queues   []spinbroker.Queue
	Limit    int  // at most this many of each kind are listed
	More     bool // there are more of some kind than listed
}

// handleSearch finds packages and commands by id or id prefix, and queues
// by name prefix, each through its primary key, searchLimit of each kind at
// most. One match is opened directly.
func (u *ui) handleSearch(w http.ResponseWriter, r *http.Request) {
	if !u.readable(w, r) {
		return
	}
	ctx := r.Context()
	d := &searchPage{Q: strings.TrimSpace(r.URL.Query().Get("q")), Limit: searchLimit}
	if d.Q != "" {
		var err error
		if d.Packages, d.Commands, err = u.s.store.Search(ctx, d.Q, searchLimit+1); err != nil {
			u.fail(w, r, err)
			return
		}
		if d.Queues, err = u.s.store.SearchQueues(ctx, d.Q, searchLimit+1); err != nil {
			u.fail(w, r, err)
			return
		}
		if len(d.Packages) > searchLimit || len(d.Commands) > searchLimit || len(d.Queues) > searchLimit {
			d.More = true
			d.Packages = d.Packages[:min(len(d.Packages), searchLimit)]
			d.Commands = d.Commands[:min(len(d.Commands), searchLimit)]
			d.Queues = d.Queues[:min(len(d.Queues), searchLimit)]
		}
		switch {
		case len(d.Packages) == 1 && len(d.Commands)+len(d.Queues) == 0:
			http.Redirect(w, r, "/ui/packages/"+d.Packages[0].ID, http.StatusSeeOther)
			return
		case len(d.Commands) == 1 && len(d.Packages)+len(d.Queues) == 0:
			http.Redirect(w, r, "/ui/commands/"+d.Commands[0].ID, http.StatusSeeOther)
			return
		case len(d.Queues) == 1 && len(d.Packages)+len(d.Commands) == 0:
			http.Redirect(w, r, "/ui/queues/"+d.Queues[0].Resource, http.StatusSeeOther)
			return
		}
	}
	v := u.newView(r, "Search", "", d)
	v.Query = d.Q
	u.render(w, r, http.StatusOK, "search", v)
}
