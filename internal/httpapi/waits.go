package httpapi

import (
	"net/http"
	"sync"
	"sync/atomic"

	spinbroker "github.com/spin-broker/spinbroker"
)

// waits counts the requests held open waiting (long-polls that block,
// event streams), in all and per token, and refuses a token's past
// Options.MaxWaitsPerToken. Each costs a connection and about 40 KB of
// memory for as long as it waits: without a cap, one token could hold
// thousands, up to the process's limit of open files.
type waits struct {
	max  int // per token; 0 for no cap
	mu   sync.Mutex
	held map[string]int // by token id; a token holding none has no entry
	all  atomic.Int64   // the gauge spinbroker_http_waits
}

func newWaits(max int) *waits {
	return &waits{max: max, held: map[string]int{}}
}

// acquireWait counts r as a waiting request of its token, or refuses it with
// 503 unavailable when the token holds max already. The returned release
// must be called once the request stops waiting, on every path (a defer);
// calling it again does nothing. Requests without a token (auth off, where
// everyone is the one anonymous admin) are counted but never capped.
func (s *Server) acquireWait(r *http.Request) (release func(), err error) {
	w := s.waits
	id := identityOf(r)
	capped := s.opts.Auth && id != anonymous && w.max > 0
	key := id.token.ID
	if capped {
		w.mu.Lock()
		n := w.held[key]
		if n >= w.max {
			w.mu.Unlock()
			s.metrics.waitsRefused.Inc()
			return nil, errorf(spinbroker.EUNAVAILABLE, "the token %q holds %d waiting requests (long-polls and event streams) already, the most --max-waits-per-token allows; retry once one of them ends", spinbroker.Truncate(id.token.Name, 80), n)
		}
		w.held[key] = n + 1
		w.mu.Unlock()
	}
	w.all.Add(1)
	var once sync.Once
	return func() {
		once.Do(func() {
			w.all.Add(-1)
			if !capped {
				return
			}
			w.mu.Lock()
			defer w.mu.Unlock()
			if w.held[key]--; w.held[key] <= 0 {
				delete(w.held, key)
			}
		})
	}, nil
}
