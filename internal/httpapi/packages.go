package httpapi

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/go-chi/chi/v5"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/jsonenc"
)

// pathID returns the canonical id in the path, or ENOTFOUND: a string that
// is not an id names nothing, and an empty one (/packages//commands) is
// said to be missing rather than "package  not found".
func pathID(r *http.Request, kind string) (string, error) {
	raw := pathParam(r, "id")
	if raw == "" {
		return "", errNoPathParam(r, kind+" id")
	}
	id, ok := spinbroker.ParseID(raw)
	if !ok {
		return "", errorf(spinbroker.ENOTFOUND, "%s %s not found", kind, spinbroker.Truncate(raw, 80))
	}
	return id, nil
}

// errNoPathParam is the 404 of a path whose segment what is empty: a
// client's unset variable, most likely (/packages/$ID/commands).
func errNoPathParam(r *http.Request, what string) error {
	return errorf(spinbroker.ENOTFOUND, "no %s in the path %s", what, spinbroker.Truncate(r.URL.Path, 200))
}

// pathParam is the path segment name, percent-decoded. chi matches on the
// escaped path when it differs from the decoded one, and hands its segments
// over still escaped: /queues/%61 would name a queue "%61", refused, though
// it is the same URI as /queues/a (RFC 3986, 6.2.2.2), and an id with one
// escaped digit would name no package. When the escaped path is the
// default escaping of the decoded one (RawPath empty), chi matched on
// r.URL.Path, decoded already: decoding its segment again would read
// /queues/%2572 as the queue r, not the invalid name %72.
func pathParam(r *http.Request, name string) string {
	raw := chi.URLParam(r, name)
	if r.URL.RawPath == "" {
		return raw
	}
	if s, err := url.PathUnescape(raw); err == nil {
		return s
	}
	return raw
}

// pathFirst applies API.md's precedence: when a body is refused (413, 400),
// a missing package or command in the path is answered first (404).
func pathFirst(err error, exists func() error) error {
	switch spinbroker.ErrorCode(err) {
	case spinbroker.ETOOLARGE, spinbroker.EINVALID, spinbroker.EUNKNOWNDEP, spinbroker.EEMPTY:
		if nf := exists(); spinbroker.ErrorCode(nf) == spinbroker.ENOTFOUND {
			return nf
		}
	}
	return err
}

// packageExists answers, when called, whether package id exists: for
// pathFirst, which asks only when a body was refused.
func (s *Server) packageExists(r *http.Request, id string) func() error {
	return func() error { _, err := s.store.PackageInfo(r.Context(), id); return err }
}

// idempotency returns the Idempotency-Key record of a create, or nil when
// the request carries no key. Keys are scoped to the method and path, and to
// the token when auth is on. The path is the caller's canonical one (its id
// in lower case), not the one written: ids are case-insensitive, and a
// retry that wrote the id in upper case would otherwise create twice.
func (s *Server) idempotency(r *http.Request, path string, body []byte) (*spinbroker.Idempotency, error) {
	keys := r.Header.Values("Idempotency-Key")
	if len(keys) == 0 {
		return nil, nil
	}
	if len(keys) > 1 {
		// Which one a replay would be judged by is anyone's guess.
		return nil, errorf(spinbroker.EINVALID, "Idempotency-Key is given %d times; give it once", len(keys))
	}
	key := keys[0] // Go's server has trimmed the spaces around it (RFC 9110, 5.5)
	if err := spinbroker.CheckIdempotencyKey(key); err != nil {
		return nil, err
	}
	scope := r.Method + " " + path
	if s.opts.Auth {
		scope += " " + identityOf(r).token.ID
	}
	h := sha256.Sum256(body)
	return &spinbroker.Idempotency{Scope: scope, Key: key, Hash: h[:]}, nil
}

func (s *Server) handlePackageCreate(w http.ResponseWriter, r *http.Request) {
	if err := s.allow(r, permWrite, ""); err != nil {
		s.writeError(w, r, err)
		return
	}
	var in spinbroker.NewPackage
	body, err := readJSON(w, r, &in, true)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	idem, err := s.idempotency(r, "/packages", body)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	pkg, replay, err := s.store.CreatePackage(r.Context(), in, idem)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeCreated(w, replay, "/packages/", func() (string, any) { return pkg.ID, pkg })
}

// writeCreated answers a create: 201 with the new thing and its Location
// (prefix followed by its id), or, for a repeated Idempotency-Key, the
// first answer again, Location included.
func writeCreated(w http.ResponseWriter, replay []byte, prefix string, created func() (id string, v any)) {
	if replay != nil {
		var first struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(replay, &first) == nil && first.ID != "" {
			w.Header().Set("Location", prefix+first.ID)
		}
		w.Header().Set("Idempotent-Replayed", "true")
		writeRaw(w, http.StatusCreated, replay)
		return
	}
	id, v := created()
	w.Header().Set("Location", prefix+id)
	writeJSON(w, http.StatusCreated, v)
}

func (s *Server) handleCommandAdd(w http.ResponseWriter, r *http.Request) {
	if err := s.allow(r, permWrite, ""); err != nil {
		s.writeError(w, r, err)
		return
	}
	id, err := pathID(r, "package")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	exists := s.packageExists(r, id)
	var in spinbroker.NewCommand
	body, err := readJSON(w, r, &in, false)
	if err != nil {
		s.writeError(w, r, pathFirst(err, exists))
		return
	}
	idem, err := s.idempotency(r, "/packages/"+id+"/commands", body)
	if err != nil {
		s.writeError(w, r, pathFirst(err, exists))
		return
	}
	cmd, replay, err := s.store.AddCommand(r.Context(), id, in, idem)
	if err != nil {
		s.writeError(w, r, pathFirst(err, exists))
		return
	}
	writeCreated(w, replay, "/commands/", func() (string, any) { return cmd.ID, cmd })
}

func (s *Server) handlePackageList(w http.ResponseWriter, r *http.Request) {
	if err := s.allow(r, permRead, ""); err != nil {
		s.writeError(w, r, err)
		return
	}
	q, err := query(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var vals [3]string
	for i, name := range []string{"state", "cursor", "limit"} {
		v, err := queryValue(q, name)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		vals[i] = v
	}
	f := spinbroker.PackageFilter{State: spinbroker.PackageState(vals[0]), Cursor: vals[1]}
	if l := vals[2]; l != "" {
		n, err := strconv.Atoi(l)
		if errors.Is(err, strconv.ErrRange) && l[0] != '-' {
			n, err = spinbroker.MaxListLimit, nil // too large for an int: clamped like any other
		}
		if err != nil || n < 1 {
			s.writeError(w, r, errorf(spinbroker.EINVALID, "limit must be a positive integer, not %q", spinbroker.Truncate(l, 40)))
			return
		}
		f.Limit = n
	}
	list, err := s.store.Packages(r.Context(), f)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, list)
}

// packageAction runs a store call on the package in the path and answers
// the package.
func (s *Server) packageAction(w http.ResponseWriter, r *http.Request, p permission, do func(id string) (*spinbroker.Package, error)) {
	if err := s.allow(r, p, ""); err != nil {
		s.writeError(w, r, err)
		return
	}
	id, err := pathID(r, "package")
	if err == nil && p != permRead {
		err = pathFirst(noBody(w, r), s.packageExists(r, id))
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	pkg, err := do(id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, pkg)
}

// handlePackageGet answers a package with all its commands, streamed: a
// package may hold 50,000 commands whose parameters and outputs are each
// up to 1 MiB, and reading it whole, then encoding it whole, took about
// five times its answer in memory (a 300 MB answer, 1.7 GB). The commands
// are encoded one by one as the store reads them, in one read transaction
// (the answer is of one moment), into the pooled buffer; an answer that
// fits in streamAfter goes in one write with its Content-Length, as every
// other answer does; a larger one is sent chunked once it passes it, and
// the broker holds a batch of commands and the buffer, not the package.
// The write deadline set for every ordinary answer (defaultWriteTimeout)
// bounds how long a slow client keeps the read transaction open.
func (s *Server) handlePackageGet(w http.ResponseWriter, r *http.Request) {
	if err := s.allow(r, permRead, ""); err != nil {
		s.writeError(w, r, err)
		return
	}
	id, err := pathID(r, "package")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.streamList(w, r, "package", id, func(head, item func(any) error) error {
		return s.store.PackageEach(r.Context(), id, func(p *spinbroker.Package) error {
			return head(p)
		}, func(c *spinbroker.Command) error {
			return item(c)
		})
	})
}

// streamList answers 200 with a JSON object whose last field, "commands",
// is a list, as read calls head (once, with the object, its commands nil
// and so left out) and item (with each command in turn), so that the
// answer is never held whole: what it holds at a time is what read holds
// and a chunk. An answer of up to streamAfter is still sent whole, with
// its length. what and id name the answer in errors and logs. An error
// from read before the first bytes are sent is answered as any error;
// after them, a 500 can no longer be said, and the connection is cut.
func (s *Server) streamList(w http.ResponseWriter, r *http.Request, what, id string, read func(head, item func(any) error) error) {
	buf := bufPool.Get().(*bytes.Buffer)
	defer putBuf(buf)
	buf.Reset()
	enc := json.NewEncoder(buf)
	sent := false // the headers, and part of the body
	n := 0        // items encoded
	// send writes what is encoded once it is worth a write of its own;
	// until the answer passes streamAfter, nothing (all of it may fit, and
	// writeBody send it with its length). last, once the answer is whole,
	// comes only after the headers went out.
	send := func(last bool) error {
		if !sent {
			if buf.Len() < streamAfter {
				return nil
			}
			jsonHeaders(w)
			w.WriteHeader(http.StatusOK)
			sent = true
		}
		if buf.Len() < streamChunk && !last {
			return nil
		}
		_, err := w.Write(buf.Bytes())
		buf.Reset() // grown past 1 MiB, putBuf lets it go
		return err
	}
	err := read(func(v any) error {
		// The object's own fields, then its list: encoded without it, it
		// ends in "}\n", where ,"commands":[ goes.
		if err := enc.Encode(v); err != nil {
			return err
		}
		buf.Truncate(buf.Len() - 2)
		buf.WriteString(`,"commands":[`)
		return nil
	}, func(v any) error {
		if n > 0 {
			buf.WriteByte(',')
		}
		n++
		b, err := jsonenc.Append(buf.AvailableBuffer(), v)
		if err != nil {
			return err
		}
		buf.Write(b)
		return send(false)
	})
	if err == nil {
		buf.WriteString("]}\n")
		if !sent {
			writeBody(w, http.StatusOK, buf.Bytes())
			return
		}
		err = send(true)
	}
	if err == nil {
		return
	}
	if !sent {
		var je *json.MarshalerError
		if errors.As(err, &je) {
			// A stored value that does not encode: writeJSON's 500.
			err = fmt.Errorf("%s %s: %w", what, id, err)
		}
		s.writeError(w, r, err)
		return
	}
	// Part of a 200 is out: a 500 can no longer be said. Cutting the
	// connection leaves the client a broken answer (chunked, it lacks
	// its last chunk), never a shorter one that parses.
	if r.Context().Err() == nil {
		attrs := logAttrs(r, "err", err, "commands_sent", n)
		if what == "queue" {
			s.log.Error("queue answer cut off", attrs...)
		} else {
			s.log.Error("package answer cut off", attrs...)
		}
	}
	panic(http.ErrAbortHandler)
}

const (
	// streamAfter is the size past which a package's answer is streamed
	// rather than sent whole with its length: the pool's largest buffer.
	streamAfter = 1 << 20
	// streamChunk is how much of a streamed answer is gathered before a
	// write.
	streamChunk = 64 << 10
)

func (s *Server) handlePackageEnqueue(w http.ResponseWriter, r *http.Request) {
	s.packageAction(w, r, permWrite, func(id string) (*spinbroker.Package, error) {
		return s.store.Enqueue(r.Context(), id)
	})
}

func (s *Server) handlePackageCancel(w http.ResponseWriter, r *http.Request) {
	s.packageAction(w, r, permWrite, func(id string) (*spinbroker.Package, error) {
		return s.store.CancelPackage(r.Context(), id)
	})
}

func (s *Server) handlePackageDelete(w http.ResponseWriter, r *http.Request) {
	if err := s.allow(r, permWrite, ""); err != nil {
		s.writeError(w, r, err)
		return
	}
	id, err := pathID(r, "package")
	if err == nil {
		err = pathFirst(noBody(w, r), s.packageExists(r, id))
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.store.DeletePackage(r.Context(), id); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
