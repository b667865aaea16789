package httpapi

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
)

// queueAccess returns the resource in the path once the request's token may
// do p on its queue. The permission comes first (API.md, Errors: 401/403
// before 400): a token that may not use the queue learns nothing from the
// name; an invalid name is a bad request.
func (s *Server) queueAccess(r *http.Request, p permission) (string, error) {
	res := pathParam(r, "resource")
	if err := s.allow(r, p, res); err != nil {
		return "", err
	}
	return pathResource(r)
}

// queueBody is queueAccess for a request with a body, which it decodes
// into v (none at all is fine when optional). The body is read before the
// name is checked, in API.md's order of errors: a body over 1 MiB is a 413
// whatever the path names, and the name's 400 comes before the body's.
func (s *Server) queueBody(w http.ResponseWriter, r *http.Request, p permission, v any, optional bool) (string, error) {
	if err := s.allow(r, p, pathParam(r, "resource")); err != nil {
		return "", err
	}
	if pathParam(r, "resource") == "" {
		return "", errNoPathParam(r, "resource") // 404 before the body's 413
	}
	body, err := readBody(w, r)
	if err != nil {
		return "", err
	}
	res, err := pathResource(r)
	if err != nil {
		return "", err
	}
	return res, decodeJSON(body, v, optional)
}

// pathResource returns the resource in the path; every valid name has a
// queue, an invalid one is a bad request, and none at all (/queues//next)
// names nothing.
func pathResource(r *http.Request) (string, error) {
	res := pathParam(r, "resource")
	if res == "" {
		return "", errNoPathParam(r, "resource")
	}
	if err := spinbroker.CheckName("resource", res); err != nil {
		return "", err
	}
	return res, nil
}

func (s *Server) handleQueueList(w http.ResponseWriter, r *http.Request) {
	if err := s.allow(r, permRead, identityOf(r).token.Resource); err != nil {
		s.writeError(w, r, err)
		return
	}
	var qs []spinbroker.Queue
	var err error
	if isAgent(r) {
		// An agent sees only its own queue, and reads only it: reading
		// every queue to keep its own cost each agent what a full list
		// costs (100 ms with 50,000 queues).
		qs, err = s.store.QueuesNamed(r.Context(), []string{identityOf(r).token.Resource})
	} else {
		qs, err = s.store.Queues(r.Context())
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, spinbroker.QueueList{Queues: qs})
}

func (s *Server) handleQueueGet(w http.ResponseWriter, r *http.Request) {
	res, err := s.queueAccess(r, permRead)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	// Its 50 commands may hold 1 MiB of parameters each: streamed, the
	// answer holds one at a time.
	s.streamList(w, r, "queue", res, func(head, item func(any) error) error {
		return s.store.QueueEach(r.Context(), res, func(q *spinbroker.Queue) error {
			return head(q)
		}, func(c *spinbroker.Command) error {
			return item(c)
		})
	})
}

func (s *Server) handleQueueSet(w http.ResponseWriter, r *http.Request) {
	var in spinbroker.QueueSettings
	res, err := s.queueBody(w, r, permAdmin, &in, false)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	q, err := s.store.SetQueue(r.Context(), res, in)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, q)
}

// query parses the request's query string. Go's r.URL.Query() drops what
// it cannot parse: "?state=%zz" would list every state, "?wait=5%s" not
// wait at all. A malformed one is refused instead.
func query(r *http.Request) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil && strings.Contains(r.URL.RawQuery, ";") {
		// Go refuses ";" as a separator (?wait=30s;lease=60s); escaping
		// % is advice about another mistake.
		return nil, errorf(spinbroker.EINVALID, `the query string is malformed: separate query parameters with "&", not ";" (a ";" in a value is written %%3B)`)
	}
	if err != nil {
		return nil, errorf(spinbroker.EINVALID, "the query string is malformed (%v): escape %% as %%25", err)
	}
	return q, nil
}

// queryValue is the query parameter name, "" when absent. A parameter given
// twice is refused rather than one of its values picked: ?state=a&state=b
// reads as "either" to some and as "both" to others.
func queryValue(q url.Values, name string) (string, error) {
	vs := q[name]
	if len(vs) > 1 {
		return "", errorf(spinbroker.EINVALID, "query parameter %s is given %d times; give it once", name, len(vs))
	}
	if len(vs) == 0 {
		return "", nil
	}
	return vs[0], nil
}

// queryDuration parses an optional duration of the query q; given says
// whether it was there.
func queryDuration(q url.Values, name string) (d time.Duration, given bool, err error) {
	v, err := queryValue(q, name)
	if v == "" || err != nil {
		return 0, false, err
	}
	d, err = spinbroker.ParseDuration(v)
	if err != nil {
		return 0, false, errorf(spinbroker.EINVALID, "%s: %s", name, spinbroker.ErrorMessage(err))
	}
	return d, true, nil
}

func (s *Server) handleQueueNext(w http.ResponseWriter, r *http.Request) {
	// Its settings are in the query; a body is refused rather than
	// ignored ({"wait": "30s"} there would otherwise not wait at all).
	res, err := s.queueBody(w, r, permDeliver, &struct{}{}, true)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	q, err := query(r)
	var wait time.Duration
	if err == nil {
		wait, _, err = queryDuration(q, "wait")
	}
	if err == nil && wait < 0 {
		err = errorf(spinbroker.EINVALID, "wait must not be negative") // as a claim's
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	lease, given, err := queryDuration(q, "lease")
	if err == nil && given {
		// 0s and a negative one too, as a claim's: the default is had
		// by leaving it out.
		err = spinbroker.CheckLease("lease", lease)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var cmd *spinbroker.Command
	err = s.longPoll(w, r, res, wait, 1, func() (bool, time.Time, error) {
		c, wake, err := s.store.Next(r.Context(), res, lease)
		cmd = c
		return c != nil, wake, err
	})
	switch {
	case r.Context().Err() != nil:
		// The client is gone; nobody reads an answer.
		if cmd != nil {
			s.release(r, []spinbroker.Command{*cmd})
		}
	case err != nil:
		s.writeError(w, r, err)
	case cmd == nil:
		noteQuiet(w)
		w.WriteHeader(http.StatusNoContent)
	default:
		writeJSON(w, http.StatusOK, cmd)
	}
}

// claimQuery refuses claim's settings in the query. next takes wait and
// lease there; given there to claim, they would be ignored, and an agent
// that meant to wait 30s would ask again at once, in a loop.
func claimQuery(r *http.Request) error {
	q, err := query(r)
	for _, name := range []string{"max", "wait", "lease"} {
		if err == nil && q.Has(name) {
			err = errorf(spinbroker.EINVALID, "claim takes %s in its JSON body, not in the query: {\"max\": N, \"wait\": \"30s\", \"lease\": \"60s\"}", name)
		}
	}
	return err
}

func (s *Server) handleQueueClaim(w http.ResponseWriter, r *http.Request) {
	var in spinbroker.Claim
	res, err := s.queueBody(w, r, permDeliver, &in, false)
	if spinbroker.ErrorCode(err) == spinbroker.EINVALID {
		// A body missing or wrong because its settings went into the
		// query: say that, rather than only that the body is wrong.
		if qerr := claimQuery(r); qerr != nil {
			err = qerr
		}
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	err = claimQuery(r)
	if err == nil {
		err = spinbroker.CheckClaimMax(in.Max)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var wait, lease time.Duration
	if in.Wait != nil {
		if wait = in.Wait.D(); wait < 0 {
			s.writeError(w, r, errorf(spinbroker.EINVALID, "wait must not be negative"))
			return
		}
	}
	if in.Lease != nil {
		lease = in.Lease.D()
		if err := spinbroker.CheckLease("lease", lease); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	out := spinbroker.ClaimResult{Commands: []spinbroker.Command{}}
	err = s.longPoll(w, r, res, wait, in.Max, func() (bool, time.Time, error) {
		cmds, wake, err := s.store.Claim(r.Context(), res, in.Max, lease)
		if len(cmds) > 0 {
			out.Commands = cmds
		}
		return len(cmds) > 0, wake, err
	})
	switch {
	case r.Context().Err() != nil:
		s.release(r, out.Commands)
	case err != nil:
		s.writeError(w, r, err)
	default:
		if len(out.Commands) == 0 {
			noteQuiet(w)
		}
		writeJSON(w, http.StatusOK, out)
	}
}

// release puts back the commands leased for a client that went away
// before their answer could be written (an agent stopping while its
// long-poll was answered): a serial queue would otherwise wait for the
// lease to run out, a minute by default, before anyone got them.
func (s *Server) release(r *http.Request, cmds []spinbroker.Command) {
	if len(cmds) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 10*time.Second)
	defer cancel()
	if err := s.store.Release(ctx, cmds); err != nil {
		s.log.Warn("could not put back the commands of an answer its client left; their leases will run out", logAttrs(r, "commands", len(cmds), "err", err)...)
		return
	}
	s.log.Info("put back the commands of an answer its client left", logAttrs(r, "commands", len(cmds))...)
}

// longPoll calls try until it delivers, fails, or wait runs out (clamped
// to 60s). In between it sleeps on the queue's notifier, which every commit
// touching the queue wakes, or until the store's next time of interest (a
// lease expiring, a back-off or a delay ending): never a polling loop. It
// returns early, without error, when the client goes away, and with 503
// unavailable when the server shuts down: the wait did not run out, and an
// agent should back off rather than ask again at once. Once it would
// block, it counts as one of its token's waiting requests, and a token
// that holds MaxWaitsPerToken already is answered 503 instead. take is
// the most commands one try leases (next 1, claim its max).
func (s *Server) longPoll(w http.ResponseWriter, r *http.Request, resource string, wait time.Duration, take int, try func() (bool, time.Time, error)) error {
	q := askOf(r, s.now())
	s.polls.saw(resource, q)
	wait = min(wait, spinbroker.MaxWait)
	deadline := time.Now().Add(wait)
	if wait > 0 {
		http.NewResponseController(w).SetWriteDeadline(deadline.Add(defaultWriteTimeout)) //nolint:errcheck
	}
	// A revoked token's long-poll ends within the token cache's time, as
	// its event stream does, even when no commit wakes it: the re-check
	// reads the token, not the queue.
	var recheck <-chan time.Time
	if s.opts.Auth && wait > 0 {
		t := time.NewTicker(s.opts.TokenCacheTTL)
		defer t.Stop()
		recheck = t.C
	}
	var held func() // the token's count of waiting requests, once it blocks
	woken := false  // by a commit on the queue, and not acted on yet
	owes := false   // it knows of a time at which a claim may lease
	// A commit wakes only as many long-polls as it may have given work
	// to. One that leaves without acting on its wake (one that came while
	// it tried counts too: the try may have missed what it was for), or
	// knowing of a time the others may not know of, wakes another in its
	// place.
	leave := func(release func() bool, err error) error {
		if release() || woken || owes {
			s.notifier.notify(resource, take)
		}
		return err
	}
	for {
		// Watch before trying: a commit between the try and the wait
		// wakes this very watch.
		ch, release := s.notifier.watch(resource, &q, take)
		var got bool
		var wake time.Time
		var err error
		maybe := true
		if woken {
			// Most commits that wake a long-poll leave nothing for it
			// (another agent's lease, a completion on a queue not full);
			// a try is a write, one turn of the one writer each. A read
			// tells first. (Should it fail, the try says why.)
			if m, w, err := s.store.Peek(r.Context(), resource); err == nil {
				maybe, wake = m, w
			}
		}
		if maybe {
			got, wake, err = try()
		}
		if err == nil {
			woken, owes = false, !wake.IsZero()
		}
		if got {
			owes = false
			return leave(release, nil)
		}
		if err != nil {
			return leave(release, err)
		}
		d := time.Until(deadline)
		if d <= 0 {
			return leave(release, nil)
		}
		if held == nil {
			// It blocks: from now on it holds a connection for its token
			// (nothing is leased yet, so a refusal leaves nothing behind).
			if held, err = s.acquireWait(r); err != nil {
				return leave(release, err)
			}
			defer held()
		}
		if !wake.IsZero() {
			d = min(d, max(wake.Sub(s.now()), time.Millisecond))
		}
		timer := time.NewTimer(d)
		for waiting := true; waiting; {
			select {
			case <-ch:
			case <-timer.C:
			case <-r.Context().Done():
			case <-s.quit:
			case <-recheck:
				waiting = s.refused(r) == nil
				continue
			}
			waiting = false
		}
		timer.Stop()
		woken = release()
		if r.Context().Err() != nil {
			return leave(release, nil)
		}
		select {
		case <-s.quit:
			return leave(release, errShuttingDown)
		default:
		}
		if err := s.refused(r); err != nil {
			return leave(release, err) // before a lease goes to a token taken back or past its end
		}
	}
}

// errShuttingDown answers the long-polls that Shutdown ends.
var errShuttingDown = spinbroker.Errorf(spinbroker.EUNAVAILABLE, "the broker is shutting down")
