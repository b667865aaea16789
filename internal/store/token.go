package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"

	spinbroker "github.com/spin-broker/spinbroker"
)

// tokenPrefix marks spin-broker tokens so that secret scanners and people
// recognise one.
const tokenPrefix = "sbt_"

// HashToken is how a token is stored and looked up: SHA-256 is enough for a
// secret with 160 bits of randomness (no dictionary to guess from).
func HashToken(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// CheckTokenName refuses a name CreateToken would refuse: one longer than
// 200 characters (not bytes: a Cyrillic or CJK name takes two or three a
// character), not UTF-8, or with a control character in it, C1's too
// (U+009B is a terminal's CSI, which token ls would print as it is).
func CheckTokenName(name string) error {
	if !utf8.ValidString(name) || utf8.RuneCountInString(name) > 200 || strings.ContainsFunc(name, unicode.IsControl) {
		return spinbroker.Errorf(spinbroker.EINVALID, "a token name is UTF-8 text of at most 200 characters without control characters")
	}
	return nil
}

// MaxTokenLifetime is the longest lifetime a token may be made with: about
// a century, well inside the years a time column can hold.
const MaxTokenLifetime = 36500 * 24 * time.Hour

// CreateToken makes a token for role (bound to resource for an agent) that
// never expires, and returns it with its secret, which is not kept and
// cannot be shown again.
func (db *DB) CreateToken(ctx context.Context, role, resource, name string) (*spinbroker.Token, string, error) {
	return db.CreateExpiringToken(ctx, role, resource, name, 0)
}

// CreateExpiringToken is CreateToken for a token that stops working
// lifetime from now (0: never), up to MaxTokenLifetime.
func (db *DB) CreateExpiringToken(ctx context.Context, role, resource, name string, lifetime time.Duration) (*spinbroker.Token, string, error) {
	if lifetime < 0 || lifetime > MaxTokenLifetime {
		return nil, "", spinbroker.Errorf(spinbroker.EINVALID, "a token's lifetime is positive and at most %d days, not %s", MaxTokenLifetime/(24*time.Hour), lifetime)
	}
	switch role {
	case spinbroker.RoleAdmin, spinbroker.RoleClient, spinbroker.RoleViewer:
		if resource != "" {
			return nil, "", spinbroker.Errorf(spinbroker.EINVALID, "only an agent token is bound to a resource")
		}
	case spinbroker.RoleAgent:
		if err := spinbroker.CheckName("resource", resource); err != nil {
			return nil, "", err
		}
	default:
		return nil, "", spinbroker.Errorf(spinbroker.EINVALID, "role must be admin, client, agent or viewer, not %q", spinbroker.Truncate(role, 40))
	}
	if err := CheckTokenName(name); err != nil {
		return nil, "", err
	}
	secret := tokenPrefix + rand.Text() + rand.Text()[:6]
	// A random (v4) id, unlike other ids: its first characters tell tokens
	// apart, so that a short prefix names one in token revoke.
	tok := &spinbroker.Token{ID: uuid.NewString(), Name: name, Role: role, Resource: resource}
	var res any
	if resource != "" {
		res = resource
	}
	err := db.write(ctx, func(t *Tx) error {
		tok.CreatedAt = t.now
		var expires any
		if lifetime > 0 {
			end := t.now.Add(lifetime)
			tok.ExpiresAt, expires = &end, nanos(end)
		}
		_, err := t.exec(`INSERT INTO tokens (id, name, hash, role, resource, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			tok.ID, name, HashToken(secret), role, res, nanos(t.now), expires)
		return err
	})
	if err != nil {
		return nil, "", err
	}
	return tok, secret, nil
}

// Authenticate returns the live token whose secret this is, or an
// EUNAUTHORIZED error: spinbroker.TokenExpired for one past its end,
// spinbroker.TokenRevoked for one revoked (whichever came first), and
// "not valid" for a secret no token has (mistyped, made for another broker,
// of a token deleted). Revoked or not, it is one lookup by the hash's index,
// so that timing tells no more than the answer.
func (db *DB) Authenticate(ctx context.Context, secret string) (*spinbroker.Token, error) {
	h := HashToken(secret)
	var (
		tok      spinbroker.Token
		stored   []byte
		resource sql.NullString
		created  int64
		expires  sql.NullInt64
		revoked  sql.NullInt64
	)
	err := db.reader.queryRow(qAuthenticate, h).Scan(&tok.ID, &tok.Name, &stored, &tok.Role, &resource, &created, &expires, &revoked)
	if isNoRows(err) {
		return nil, errInvalidToken
	} else if err != nil {
		return nil, err
	}
	// The lookup is by hash; compare again in constant time so that nothing
	// about the stored value leaks through timing.
	if subtle.ConstantTimeCompare(stored, h) != 1 {
		return nil, errInvalidToken
	}
	tok.Resource = resource.String
	tok.CreatedAt = fromNanos(created)
	tok.ExpiresAt = optTime(expires)
	if revoked.Valid {
		// A revoked token is refused whatever the clock says now: one
		// revoked after its end says it expired, the first of the two,
		// even when the clock has since stepped back before that end.
		if at := fromNanos(revoked.Int64); tok.ExpiresAt == nil || at.Before(*tok.ExpiresAt) {
			return nil, spinbroker.TokenRevoked(at)
		}
		return nil, spinbroker.TokenExpired(*tok.ExpiresAt)
	}
	if tok.Expired(db.now()) {
		return nil, spinbroker.TokenExpired(*tok.ExpiresAt)
	}
	return &tok, nil
}

// qAuthenticate finds a token by its hash, revoked or not (the hash column's
// UNIQUE index: plan_test.go).
const qAuthenticate = `SELECT id, name, hash, role, resource, created_at, expires_at, revoked_at FROM tokens WHERE hash = ?`

// errInvalidToken refuses a secret that is no token's: mistyped, made for
// another broker, or of a token revoked and then deleted, hence the
// sentence. The HTTP layer answers it as it is.
var errInvalidToken = spinbroker.Errorf(spinbroker.EUNAUTHORIZED, "the token is not valid or was revoked")

// Tokens lists every token, revoked ones included, oldest first.
func (db *DB) Tokens(ctx context.Context) ([]spinbroker.Token, error) {
	rows, err := db.reader.query(`SELECT id, name, role, resource, created_at, revoked_at, expires_at FROM tokens ORDER BY created_at, id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []spinbroker.Token{}
	for rows.Next() {
		var (
			tok      spinbroker.Token
			resource sql.NullString
			created  int64
			revoked  sql.NullInt64
			expires  sql.NullInt64
		)
		if err := rows.Scan(&tok.ID, &tok.Name, &tok.Role, &resource, &created, &revoked, &expires); err != nil {
			return nil, err
		}
		tok.Resource = resource.String
		tok.CreatedAt = fromNanos(created)
		tok.RevokedAt = optTime(revoked)
		tok.ExpiresAt = optTime(expires)
		out = append(out, tok)
	}
	return out, rows.Err()
}

// RevokeToken revokes a token by id (or a unique prefix of at least 8
// characters of it); requests carrying it are refused from then on. The
// token's RevokedAt is when it was revoked; already says that was before.
func (db *DB) RevokeToken(ctx context.Context, idOrPrefix string) (tok *spinbroker.Token, already bool, err error) {
	if err := checkTokenPrefix(idOrPrefix); err != nil {
		return nil, false, err
	}
	err = db.write(ctx, func(t *Tx) error {
		id, err := tokenNamed(t, idOrPrefix)
		if err != nil {
			return err
		}
		var at int64
		if err := t.queryRow(`UPDATE tokens SET revoked_at = coalesce(revoked_at, ?) WHERE id = ? RETURNING revoked_at`, nanos(t.now), id).Scan(&at); err != nil {
			return err
		}
		revoked := fromNanos(at)
		tok, already = &spinbroker.Token{ID: id, RevokedAt: &revoked}, at != nanos(t.now)
		return nil
	})
	return tok, already, err
}

// DeleteToken removes a revoked or expired token, by id or a unique prefix
// as RevokeToken takes, and returns it as it was. A live one is refused
// (ECONFLICT): deleting it would revoke it and leave no trace that it had
// been; revoke it first.
func (db *DB) DeleteToken(ctx context.Context, idOrPrefix string) (*spinbroker.Token, error) {
	if err := checkTokenPrefix(idOrPrefix); err != nil {
		return nil, err
	}
	var tok spinbroker.Token
	err := db.write(ctx, func(t *Tx) error {
		id, err := tokenNamed(t, idOrPrefix)
		if err != nil {
			return err
		}
		var (
			resource sql.NullString
			created  int64
			revoked  sql.NullInt64
			expires  sql.NullInt64
		)
		if err := t.queryRow(`SELECT id, name, role, resource, created_at, revoked_at, expires_at FROM tokens WHERE id = ?`, id).
			Scan(&tok.ID, &tok.Name, &tok.Role, &resource, &created, &revoked, &expires); err != nil {
			return err
		}
		tok.Resource, tok.CreatedAt, tok.RevokedAt, tok.ExpiresAt = resource.String, fromNanos(created), optTime(revoked), optTime(expires)
		if tok.RevokedAt == nil && !tok.Expired(t.now) {
			return spinbroker.Errorf(spinbroker.ECONFLICT, "token %s still works: revoke it first (spinbroker token revoke %s), then delete it", id, id)
		}
		_, err = t.exec(`DELETE FROM tokens WHERE id = ?`, id)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &tok, nil
}

// checkTokenPrefix refuses a prefix too short to name a token by.
func checkTokenPrefix(idOrPrefix string) error {
	if len(idOrPrefix) < 8 {
		return spinbroker.Errorf(spinbroker.EINVALID, "give the token's id or at least its first 8 characters")
	}
	return nil
}

// maxTokenMatches is how many of the tokens a prefix matches an error
// lists.
const maxTokenMatches = 10

// tokenNamed returns the id of the one token whose id starts with
// idOrPrefix: ENOTFOUND for none, EINVALID listing them for several (a
// mistake in what was typed, as a short prefix is).
func tokenNamed(t *Tx, idOrPrefix string) (string, error) {
	p := strings.ToLower(idOrPrefix)
	ids, err := queryStrings(t, `SELECT id FROM tokens WHERE id >= ? AND id < ? ORDER BY id LIMIT ?`, p, p+"~", maxTokenMatches+1)
	if err != nil {
		return "", err
	}
	switch {
	case len(ids) == 0:
		return "", spinbroker.Errorf(spinbroker.ENOTFOUND, "no token %s", spinbroker.Truncate(idOrPrefix, 40))
	case len(ids) > maxTokenMatches:
		return "", spinbroker.Errorf(spinbroker.EINVALID, "%s matches more than %d tokens, %s and more; give more of the id", spinbroker.Truncate(idOrPrefix, 40), maxTokenMatches, strings.Join(ids[:maxTokenMatches], ", "))
	case len(ids) > 1:
		return "", spinbroker.Errorf(spinbroker.EINVALID, "%s matches %d tokens, %s; give more of the id", spinbroker.Truncate(idOrPrefix, 40), len(ids), strings.Join(ids, ", "))
	}
	return ids[0], nil
}
