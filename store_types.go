package spinbroker

import "time"

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
}
