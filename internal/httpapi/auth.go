package httpapi

import (
	"context"
	"crypto/sha256"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
)

// TokenCookie is the cookie the dashboard keeps a token in.
const TokenCookie = "spinbroker_token"

type identityKey struct{}

// identity is who made a request: a token, or the anonymous admin of a
// broker that runs without auth.
type identity struct {
	token *spinbroker.Token
	// fromCookie is set when the token came from the dashboard's cookie.
	fromCookie bool
	// secret is the token as sent, for a request that outlives the check
	// (a long-poll, an event stream) to ask again whether it still holds.
	secret string
}

var anonymous = &identity{token: &spinbroker.Token{ID: "anonymous", Name: "anonymous", Role: spinbroker.RoleAdmin}}

func identityOf(r *http.Request) *identity {
	if id, ok := r.Context().Value(identityKey{}).(*identity); ok {
		return id
	}
	return anonymous
}

// authenticate finds the request's token. With auth off everyone is admin.
// With auth on, /healthz (and /metrics with MetricsOpen, and the
// dashboard's login page) are open; everything else needs a valid token,
// from the Authorization header or the dashboard's cookie.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.opts.Auth || s.open(r) {
			next.ServeHTTP(w, r)
			return
		}
		secret, fromCookie := bearer(r)
		if secret == "" {
			err := errNoToken
			if r.Header.Get("Authorization") != "" {
				err = errNotBearer
			}
			s.unauthorized(w, r, err)
			return
		}
		tok, err := s.tokens.check(r.Context(), secret)
		if err != nil {
			if spinbroker.ErrorCode(err) == spinbroker.EUNAUTHORIZED {
				// Not valid, or expired (and when): the store's and the
				// cache's sentences, which tell a typo from a renewal.
				s.unauthorized(w, r, err)
				return
			}
			// The token could not be checked: the caller is nobody yet,
			// and the cause (the database file's path, SQLite's words)
			// is for the log, as /healthz keeps it.
			if spinbroker.ErrorCode(err) == spinbroker.EUNAVAILABLE {
				err = withheldCause{err}
			}
			s.writeError(w, r, err)
			return
		}
		if sw, ok := w.(*statusWriter); ok { // logRequests' writer: crossOrigin passes it on as is
			sw.token = tok
		}
		ctx := context.WithValue(r.Context(), identityKey{}, &identity{token: tok, fromCookie: fromCookie, secret: secret})
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// refused says why the token of a request still being served no longer
// works, nil while it does: a long-poll or an event stream must not go on
// for a token the operator took back, or one past its end. (A database that
// does not answer is not taken for a refusal.)
func (s *Server) refused(r *http.Request) error {
	id := identityOf(r)
	if !s.opts.Auth || id.secret == "" {
		return nil
	}
	_, err := s.tokens.check(r.Context(), id.secret)
	switch {
	case spinbroker.ErrorCode(err) != spinbroker.EUNAUTHORIZED:
		return nil
	case id.token.Expired(s.now()):
		return spinbroker.TokenExpired(*id.token.ExpiresAt)
	}
	return errRevoked
}

// errRevoked ends a request whose token was revoked while it waited.
var errRevoked = spinbroker.Errorf(spinbroker.EUNAUTHORIZED, "the token was revoked while the request waited")

// errNoToken refuses a request without a token; errNotBearer one whose
// Authorization header is not "Bearer <token>" (Basic, an empty Bearer):
// the same sentence, told apart in the log (refusal).
var (
	errNoToken   = spinbroker.Errorf(spinbroker.EUNAUTHORIZED, "a token is required: send Authorization: Bearer <token>")
	errNotBearer = spinbroker.Errorf(spinbroker.EUNAUTHORIZED, "a token is required: send Authorization: Bearer <token>")
)

// refusal is why a token was refused, for the auth key of the request's
// log line: the client has it in the message, and the operator, who reads
// the log, had only code=unauthorized. Never anything of the secret.
func refusal(err error) string {
	switch {
	case errors.Is(err, errNoToken):
		return "missing"
	case errors.Is(err, errNotBearer), errors.Is(err, errInvalidToken):
		return "malformed" // not a Bearer header, or no secret the broker makes
	case errors.Is(err, errRevoked):
		return "revoked_while_waiting"
	case spinbroker.IsTokenExpired(err):
		return "expired"
	case spinbroker.IsTokenRevoked(err):
		return "revoked"
	}
	return "unknown" // no token has that secret: mistyped, another broker's, deleted
}

// unauthorized answers err, a 401, or sends a browser to the dashboard's
// login.
func (s *Server) unauthorized(w http.ResponseWriter, r *http.Request, err error) {
	if s.wantsLogin(r) {
		http.Redirect(w, r, "/ui/login?next="+urlQueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
		return
	}
	s.writeError(w, r, err)
}

// trusted reports whether a request to an open path may be told what the
// broker tells only its own (why /healthz fails): with auth off, everyone
// is; with auth on, a request with a token that works, as authenticate
// finds it. No token, a bogus, revoked or expired one, or one the database
// cannot vouch for counts as none, never as a 401: monitors poll /healthz
// without a token. With askStore false only the tokens checked in the last
// few seconds count, for when the database has just failed a read.
func (s *Server) trusted(ctx context.Context, r *http.Request, askStore bool) bool {
	if !s.opts.Auth {
		return true
	}
	secret, _ := bearer(r)
	if secret == "" {
		return false
	}
	if !askStore {
		tok, _, _ := s.tokens.cached(secret)
		return tok != nil
	}
	tok, _ := s.tokens.check(ctx, secret)
	return tok != nil
}

// open reports whether a path is served without a token.
func (s *Server) open(r *http.Request) bool {
	switch p := r.URL.Path; {
	case p == "/healthz":
		return true
	case p == "/metrics":
		return s.opts.MetricsOpen
	case p == "/ui/login" || p == "/ui/logout" || p == "/favicon.ico" || strings.HasPrefix(p, "/ui/static/"):
		return true
	}
	return false
}

// bearer returns the token of a request: the Authorization header, else
// the dashboard's cookie.
func bearer(r *http.Request) (string, bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(tok), false
		}
		return "", false
	}
	if c, err := r.Cookie(TokenCookie); err == nil && c.Value != "" {
		return c.Value, true
	}
	return "", false
}

// Permissions a handler asks for.
type permission int

const (
	permRead    permission = iota // read packages, commands, queues, events
	permWrite                     // create, enqueue, cancel, delete packages; retry
	permAdmin                     // change queue settings
	permDeliver                   // next, claim
	permSettle                    // heartbeat, complete
)

// allow checks that the request's token may do p; resource is the queue the
// request concerns ("" when it concerns none or several).
func (s *Server) allow(r *http.Request, p permission, resource string) error {
	tok := identityOf(r).token
	role := tok.Role
	ok := roleMay(role, p)
	if role == spinbroker.RoleAgent {
		ok = ok && resource != "" && resource == tok.Resource
	}
	if ok {
		return nil
	}
	if role == spinbroker.RoleAgent && resource != "" && resource != tok.Resource {
		return errorf(spinbroker.EFORBIDDEN, "this agent token is for resource %q, not %q", tok.Resource, resource)
	}
	article := "a"
	if role != "" && strings.ContainsRune("aeiou", rune(role[0])) {
		article = "an"
	}
	return errorf(spinbroker.EFORBIDDEN, "%s %s token may not %s: that takes %s", article, role, p.what(), p.who())
}

// what says what p allows, for a refusal: "do this" alone left the caller
// to guess what was refused.
func (p permission) what() string {
	switch p {
	case permRead:
		return "read packages, commands or queues"
	case permWrite:
		return "create, enqueue, cancel or delete packages, or retry commands"
	case permAdmin:
		return "change a queue's settings"
	case permDeliver:
		return "take commands (next, claim)"
	case permSettle:
		return "heartbeat or complete commands"
	}
	return "do this"
}

// who says which tokens roleMay lets do p, for a refusal.
func (p permission) who() string {
	switch p {
	case permRead:
		return "a viewer, client or admin token (an agent token, for its own resource)"
	case permWrite:
		return "a client or admin token"
	case permAdmin:
		return "an admin token"
	case permDeliver:
		return "the agent token of the queue's resource, or an admin token"
	case permSettle:
		return "the agent token of the command's resource, or a client or admin token"
	}
	return "another token"
}

// roleMay reports whether role may do p on some resource: for an agent,
// allow also asks that it be the token's own.
func roleMay(role string, p permission) bool {
	switch role {
	case spinbroker.RoleAdmin:
		return true
	case spinbroker.RoleClient:
		return p == permRead || p == permWrite || p == permSettle
	case spinbroker.RoleViewer:
		return p == permRead
	case spinbroker.RoleAgent:
		return p == permRead || p == permDeliver || p == permSettle
	}
	return false
}

// isAgent reports whether the request comes with an agent token.
func isAgent(r *http.Request) bool {
	return identityOf(r).token.Role == spinbroker.RoleAgent
}

// tokenCache remembers checked tokens for a few seconds, so that an agent's
// every heartbeat does not cost a database read. Entries are keyed by the
// secret's SHA-256, never by the secret: a client chooses what it sends,
// and 60 KB "tokens" kept as keys once let anyone without a token fill the
// broker's memory. Refusals live apart from tokens that work, so that a
// flood of bad ones, which clears its own map when full, never costs the
// good ones their place.
type tokenCache struct {
	st  Store
	ttl time.Duration
	now func() time.Time
	// clock is the store's time, which a token's ExpiresAt is of: a
	// trusted token is refused from its end on, however recently checked.
	clock func() time.Time
	mu    sync.Mutex
	m     map[[32]byte]cachedToken // tokens that work: as many as the database holds
	bad   map[[32]byte]cachedToken // refusals, at most maxBadTokens
}

// maxBadTokens bounds the refusals remembered: about 1 MB.
const maxBadTokens = 10000

// maxSecretLen is longer than any secret the broker makes (36 bytes); a
// longer one is refused without a lookup.
const maxSecretLen = 128

type cachedToken struct {
	tok     *spinbroker.Token
	err     error
	expires time.Time
}

// newTokenCache uses the real clock for how long a token stays cached,
// which has nothing to do with the store's (possibly simulated) time;
// clock, the store's, is only for when tokens expire.
func newTokenCache(st Store, ttl time.Duration, clock func() time.Time) *tokenCache {
	return &tokenCache{st: st, ttl: ttl, now: time.Now, clock: clock, m: map[[32]byte]cachedToken{}, bad: map[[32]byte]cachedToken{}}
}

func (c *tokenCache) check(ctx context.Context, secret string) (*spinbroker.Token, error) {
	if tok, known, err := c.cached(secret); known {
		return tok, err
	}
	key := sha256.Sum256([]byte(secret))
	now := c.now()
	tok, err := c.st.Authenticate(ctx, secret)
	if err != nil && spinbroker.ErrorCode(err) != spinbroker.EUNAUTHORIZED {
		return nil, err // a database problem is not remembered
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	entry := cachedToken{tok: tok, err: err, expires: now.Add(c.ttl)}
	if err != nil {
		if len(c.bad) >= maxBadTokens {
			clear(c.bad)
		}
		c.bad[key] = entry
		return nil, err
	}
	for k, e := range c.m {
		if !now.Before(e.expires) {
			delete(c.m, k) // a revoked or deleted token does not linger
		}
	}
	c.m[key] = entry
	return tok, nil
}

// cached answers as check would without asking the database: known is
// false when the secret is neither trusted nor refused yet.
func (c *tokenCache) cached(secret string) (tok *spinbroker.Token, known bool, err error) {
	if len(secret) > maxSecretLen || strings.ContainsFunc(secret, func(r rune) bool { return r <= ' ' || r > '~' }) {
		return nil, true, errInvalidToken
	}
	key := sha256.Sum256([]byte(secret))
	now := c.now()
	c.mu.Lock()
	good, isGood := c.m[key]
	bad, isBad := c.bad[key]
	c.mu.Unlock()
	switch {
	case isGood && now.Before(good.expires):
		if good.tok.Expired(c.clock()) {
			return nil, true, spinbroker.TokenExpired(*good.tok.ExpiresAt)
		}
		return good.tok, true, nil
	case isBad && now.Before(bad.expires):
		return nil, true, bad.err
	}
	return nil, false, nil
}

// errInvalidToken refuses a secret no token could have, unread.
var errInvalidToken = spinbroker.Errorf(spinbroker.EUNAUTHORIZED, "the token is not valid or was revoked")
