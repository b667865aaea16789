package httpapi

import (
	"net/http"

	spinbroker "github.com/spin-broker/spinbroker"
)

// commandResource returns the resource of a command, for the permission
// checks of agent tokens; for other roles it is not needed and not read.
func (s *Server) commandResource(r *http.Request, id string) (string, error) {
	if !isAgent(r) {
		return "", nil
	}
	byID, err := s.store.CommandResources(r.Context(), []string{id})
	if err != nil {
		return "", err
	}
	return resourceIn(byID, id)
}

// resourceIn answers the resource of command id from a CommandResources
// answer: not found when the store did not know it.
func resourceIn(byID map[string]string, id string) (string, error) {
	res, ok := byID[id]
	if !ok {
		return "", errorf(spinbroker.ENOTFOUND, "command %s not found", id)
	}
	return res, nil
}

// commandPath reads the command id in the path and checks p for it. A
// token whose role may never do p is refused before the id is looked at
// (API.md, Errors: 403 before 404): its answer says nothing of which ids
// exist.
func (s *Server) commandPath(r *http.Request, p permission) (string, error) {
	if !roleMay(identityOf(r).token.Role, p) {
		return "", s.allow(r, p, "")
	}
	id, err := pathID(r, "command")
	if err != nil {
		return "", err
	}
	resource, err := s.commandResource(r, id)
	if err != nil {
		return "", err
	}
	return id, s.allowCommand(r, p, resource, id)
}

// allowCommand is allow for command id of resource. An agent token refused
// a command of another resource is not told which resource that is: its
// token is bound to one, and learns nothing of the others' commands.
func (s *Server) allowCommand(r *http.Request, p permission, resource, id string) error {
	err := s.allow(r, p, resource)
	if err != nil && isAgent(r) && resource != identityOf(r).token.Resource {
		return errorf(spinbroker.EFORBIDDEN, "command %s is not one this agent token (resource %q) may use", id, identityOf(r).token.Resource)
	}
	return err
}

func (s *Server) handleCommandGet(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "command")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	cmd, err := s.store.Command(r.Context(), id)
	if err == nil {
		err = s.allowCommand(r, permRead, cmd.Resource, id)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, cmd)
}

func (s *Server) handleCommandHeartbeat(w http.ResponseWriter, r *http.Request) {
	id, err := s.commandPath(r, permSettle)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	exists := func() error { _, err := s.store.Command(r.Context(), id); return err }
	var in spinbroker.Heartbeat
	if _, err := readJSON(w, r, &in, false); err != nil {
		s.writeError(w, r, pathFirst(err, exists))
		return
	}
	if in.Lease == "" {
		s.writeError(w, r, pathFirst(errorf(spinbroker.EINVALID, "lease is required: the token next or claim gave"), exists))
		return
	}
	var extend spinbroker.Duration
	if in.Extend != nil {
		extend = *in.Extend
		if err := spinbroker.CheckLease("extend", extend.D()); err != nil {
			s.writeError(w, r, pathFirst(err, exists))
			return
		}
	}
	exp, err := s.store.Heartbeat(r.Context(), id, in.Lease, extend.D())
	if err != nil {
		s.writeError(w, r, pathFirst(err, exists))
		return
	}
	noteQuiet(w)
	writeJSON(w, http.StatusOK, spinbroker.HeartbeatResult{LeaseExpiresAt: exp})
}

// agentNoLease refuses an agent's result without a lease: one without
// settles the command by hand, in place of whoever holds it, which is a
// person's act (a client's or an admin's token), not an agent's.
const agentNoLease = "an agent must send its lease: a result without one settles the command by hand, which takes a client or admin token"

func (s *Server) handleCommandComplete(w http.ResponseWriter, r *http.Request) {
	id, err := s.commandPath(r, permSettle)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	exists := func() error { _, err := s.store.Command(r.Context(), id); return err }
	var in spinbroker.Result
	if _, err := readJSON(w, r, &in, false); err != nil {
		s.writeError(w, r, pathFirst(err, exists))
		return
	}
	if in.Lease == "" && isAgent(r) {
		s.writeError(w, r, pathFirst(errorf(spinbroker.EINVALID, agentNoLease), exists))
		return
	}
	cmd, err := s.store.Complete(r.Context(), id, in)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, cmd)
}

func (s *Server) handleCommandCompleteBatch(w http.ResponseWriter, r *http.Request) {
	if err := s.allow(r, permSettle, identityOf(r).token.Resource); err != nil {
		s.writeError(w, r, err)
		return
	}
	var in spinbroker.BatchComplete
	if _, err := readJSON(w, r, &in, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	if len(in.Results) > spinbroker.MaxBatchComplete {
		s.writeError(w, r, errorf(spinbroker.EINVALID, "a batch holds at most %d results, not %d", spinbroker.MaxBatchComplete, len(in.Results)))
		return
	}
	// Ids in any case, as the single form takes them; lower case from here
	// on, in the store's lookups and in the answer.
	valid := make([]bool, len(in.Results))
	for i := range in.Results {
		if id, ok := spinbroker.ParseID(in.Results[i].ID); ok {
			in.Results[i].ID, valid[i] = id, true
		}
	}
	out := spinbroker.BatchOutcomes{Results: make([]spinbroker.BatchOutcome, len(in.Results))}
	// Items the HTTP layer refuses (an agent's item of another resource or
	// without a lease) are judged here; the rest go to the store together.
	pass := make([]spinbroker.BatchResult, 0, len(in.Results))
	index := make([]int, 0, len(in.Results))
	var resources map[string]string // an agent's items' resources, read in one query
	if isAgent(r) {
		ids := make([]string, 0, len(in.Results))
		for i, item := range in.Results {
			if valid[i] {
				ids = append(ids, item.ID)
			}
		}
		var err error
		if resources, err = s.store.CommandResources(r.Context(), ids); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	for i, item := range in.Results {
		out.Results[i].ID = item.ID
		var err error
		if isAgent(r) {
			if valid[i] {
				var resource string
				if resource, err = resourceIn(resources, item.ID); err == nil {
					err = s.allowCommand(r, permSettle, resource, item.ID)
				}
				if err == nil && item.Lease == "" {
					err = errorf(spinbroker.EINVALID, agentNoLease)
				}
			}
		}
		if err != nil {
			e := apiError(err)
			out.Results[i].HTTPStatus, out.Results[i].Error = StatusOf(e.Code), e
			continue
		}
		pass = append(pass, item)
		index = append(index, i)
	}
	errs, err := s.store.CompleteBatch(r.Context(), pass)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	for j, e := range errs {
		i := index[j]
		if e == nil {
			out.Results[i].HTTPStatus = http.StatusOK
			continue
		}
		ae := apiError(e)
		out.Results[i].HTTPStatus, out.Results[i].Error = StatusOf(ae.Code), ae
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleCommandRetry(w http.ResponseWriter, r *http.Request) {
	id, err := s.commandPath(r, permWrite)
	if err == nil {
		err = pathFirst(noBody(w, r), func() error { _, err := s.store.Command(r.Context(), id); return err })
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	cmd, err := s.store.Retry(r.Context(), id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, cmd)
}
