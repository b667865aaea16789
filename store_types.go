package spinbroker

import (
	"strings"
	"time"
)

// Idempotency identifies a create that a client may retry: the same Key in
// the same Scope with the same Hash of the request answers the first
// response again (API.md, Idempotency-Key).
type Idempotency struct {
	Scope string // the method and path, and the token when auth is on
	Key   string // the Idempotency-Key header
	Hash  []byte // a hash of the request body
}

// PackageFilter selects a page of packages.
type PackageFilter struct {
	State  PackageState // empty for all
	Limit  int          // clamped to 1..MaxListLimit; 0 is the default
	Cursor string       // from the previous page's NextCursor
}

// Token roles (API.md, Auth).
const (
	RoleAdmin  = "admin"  // everything
	RoleClient = "client" // packages and reads
	RoleAgent  = "agent"  // next, claim, heartbeat, complete and reads of one resource
	RoleViewer = "viewer" // reads and the dashboard
)

// Token is an API token as stored: never the secret itself, only its hash.
type Token struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Role      string     `json:"role"`
	Resource  string     `json:"resource,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	// ExpiresAt is when the token stops working; nil never.
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// Expired reports whether t no longer works at now for having reached its
// ExpiresAt (revoked or not).
func (t *Token) Expired(now time.Time) bool {
	return t.ExpiresAt != nil && !now.Before(*t.ExpiresAt)
}

// TokenExpired is the refusal of a token past its ExpiresAt. It says so,
// and when, apart from the refusal of a token that is not valid: its
// holder is to ask for a new one, not to look for a typo.
func TokenExpired(at time.Time) *Error {
	return Errorf(EUNAUTHORIZED, tokenExpiredPrefix+"%s: ask for a new one (spinbroker token create)", at.UTC().Format(time.RFC3339))
}

const tokenExpiredPrefix = "the token expired at "

// IsTokenExpired reports whether err is TokenExpired's refusal, for a log
// line that tells it from the refusal of a token that is not valid.
func IsTokenExpired(err error) bool {
	return ErrorCode(err) == EUNAUTHORIZED && strings.HasPrefix(ErrorMessage(err), tokenExpiredPrefix)
}

// TokenRevoked is the refusal of a token revoked (spinbroker token revoke)
// at at. It says so, and when, apart from the refusal of a secret no token
// has: its holder is to ask for a new one, not to look for a typo.
func TokenRevoked(at time.Time) *Error {
	return Errorf(EUNAUTHORIZED, tokenRevokedPrefix+"%s: ask for a new one (spinbroker token create)", at.UTC().Format(time.RFC3339))
}

const tokenRevokedPrefix = "the token was revoked at "

// IsTokenRevoked reports whether err is TokenRevoked's refusal, for a log
// line that tells it from the refusal of a token that is not valid.
func IsTokenRevoked(err error) bool {
	return ErrorCode(err) == EUNAUTHORIZED && strings.HasPrefix(ErrorMessage(err), tokenRevokedPrefix)
}
