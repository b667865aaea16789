package httpapi

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
)

// limitWrites serves a state-changing request once fewer than MaxWrites
// are being served; it waits up to MaxWriteWait for a turn, then answers 503
// unavailable (with Retry-After), which clients retry.
//
// The body is read before the turn is taken (readAhead), so that a slow
// upload holds memory it has been charged for, never a turn: 256 clients on
// a slow link must not stall every heartbeat and completion behind them.
func (s *Server) limitWrites(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		settle := strings.HasSuffix(r.URL.Path, "/heartbeat") || strings.HasSuffix(r.URL.Path, "/complete")
		if !mayWrite(r, settle) {
			// Its handler refuses it (403) before reading a byte: a token
			// that may not write must not spend the memory of those that
			// may, by holding bodies that never finish.
			next.ServeHTTP(w, r)
			return
		}
		b := s.bodies
		if settle {
			b = s.settles
		}
		charged, err := s.readAhead(r, b)
		defer b.release(charged)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		select {
		case s.writes <- struct{}{}:
		default:
			t := time.NewTimer(s.opts.MaxWriteWait)
			select {
			case s.writes <- struct{}{}:
				t.Stop()
			case <-t.C:
				s.writeError(w, r, errorf(spinbroker.EUNAVAILABLE, "the broker is busy: %d writes are in progress and this one waited %s for a turn; retry shortly", cap(s.writes), s.opts.MaxWriteWait))
				return
			case <-r.Context().Done():
				t.Stop()
				return // the client is gone
			}
		}
		defer func() { <-s.writes }()
		next.ServeHTTP(w, r)
	})
}

// mayWrite reports whether the request's token may make some write on this
// route: every role but viewer, and an agent only heartbeats and
// completions (settle).
func mayWrite(r *http.Request, settle bool) bool {
	switch identityOf(r).token.Role {
	case spinbroker.RoleViewer:
		return false
	case spinbroker.RoleAgent:
		return settle
	}
	return true
}

// readAhead reads r's body into memory, at most one byte past
// spinbroker.MaxBodyBytes (the handler's readBody then reports 413), and
// puts it back as r.Body. Memory is charged to b before it is
// allocated, in pieces that start at 4 KiB whatever Content-Length says, so
// a client that has sent little holds little. When the budget cannot cover
// the next piece the request is answered 503 at once: waiting while holding
// pieces would let two large bodies wait for each other, and a waiter would
// hold back the small writes behind it. A read error (the client went away,
// the server's read timeout) is handed on to the handler after the bytes
// that did arrive, as the body would have.
func (s *Server) readAhead(r *http.Request, b *budget) (charged int64, err error) {
	if r.Body == nil || r.Body == http.NoBody {
		return 0, nil
	}
	if r.ContentLength > spinbroker.MaxBodyBytes {
		return 0, nil // readBody refuses it as declared, unread
	}
	const first, largest = 4 << 10, 256 << 10
	var buf []byte
	piece := first
	var readErr error
	for len(buf) <= spinbroker.MaxBodyBytes {
		if len(buf) == cap(buf) {
			grow := min(piece, spinbroker.MaxBodyBytes+1-len(buf))
			if n := r.ContentLength; n >= 0 && int64(len(buf)) <= n && n-int64(len(buf)) < int64(grow) {
				grow = int(n) - len(buf) + 1 // the rest as declared, and a byte to see EOF
			}
			if !b.charge(int64(grow)) {
				return charged, errorf(spinbroker.EUNAVAILABLE, "the broker is busy: request bodies waiting for a turn hold all the memory they may (%d MiB); retry shortly", b.limit>>20)
			}
			charged += int64(grow)
			next := make([]byte, len(buf), len(buf)+grow)
			copy(next, buf)
			buf = next
			piece = min(2*piece, largest)
		}
		n, err := r.Body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			readErr = err
			break
		}
	}
	r.Body = &aheadBody{buf, readErr, io.MultiReader(bytes.NewReader(buf), errReader{readErr}), r.Body}
	return charged, nil
}

// aheadBody is a body read ahead: its bytes, then the read's error, and the
// original body to close. readBody takes data and err without reading.
type aheadBody struct {
	data []byte
	err  error
	rest io.Reader
	io.Closer
}

func (a *aheadBody) Read(p []byte) (int, error) { return a.rest.Read(p) }

// errReader returns err, or io.EOF when err is nil.
type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) {
	if e.err == nil {
		return 0, io.EOF
	}
	return 0, e.err
}

// budget is the bytes that bodies read ahead of their write turn may hold
// at once. Nothing waits for it: a charge that does not fit now fails.
type budget struct {
	limit int64
	held  atomic.Int64 // also the gauge spinbroker_http_body_bytes
}

func newBudget(n int64) *budget { return &budget{limit: n} }

// charge takes n bytes if they are free now.
func (b *budget) charge(n int64) bool {
	for {
		h := b.held.Load()
		if h+n > b.limit {
			return false
		}
		if b.held.CompareAndSwap(h, h+n) {
			return true
		}
	}
}

// release gives n bytes back.
func (b *budget) release(n int64) {
	if n > 0 {
		b.held.Add(-n)
	}
}
