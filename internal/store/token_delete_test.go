package store_test

import (
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/store"
	"github.com/spin-broker/spinbroker/internal/store/storetest"
)

// TestDB_DeleteToken: a revoked or expired token can be deleted, by id or
// prefix; a live one is refused, saying to revoke it first: its deletion
// would be a revocation that left no trace.
func TestDB_DeleteToken(t *testing.T) {
	db, clock := open(t)
	live, _, err := db.CreateToken(ctx, spinbroker.RoleAdmin, "", "live")
	if err != nil {
		t.Fatal(err)
	}
	expiring, secret, err := db.CreateExpiringToken(ctx, spinbroker.RoleViewer, "", "ci", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	revoked, _, err := db.CreateToken(ctx, spinbroker.RoleAgent, "storage", "old")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.RevokeToken(ctx, revoked.ID); err != nil {
		t.Fatal(err)
	}

	for _, tok := range []*spinbroker.Token{live, expiring} {
		_, err := db.DeleteToken(ctx, tok.ID)
		if spinbroker.ErrorCode(err) != spinbroker.ECONFLICT || !strings.Contains(spinbroker.ErrorMessage(err), "revoke it first (spinbroker token revoke "+tok.ID+")") {
			t.Errorf("deleting the live token %s: %v", tok.Name, err)
		}
	}
	if _, err := db.Authenticate(ctx, secret); err != nil {
		t.Fatalf("a refused deletion: the token no longer works: %v", err)
	}

	got, err := db.DeleteToken(ctx, revoked.ID[:8])
	if err != nil || got.ID != revoked.ID || got.Name != "old" || got.Resource != "storage" || got.RevokedAt == nil {
		t.Fatalf("deleting a revoked token by prefix: %+v, %v", got, err)
	}
	clock.Add(time.Hour)
	got, err = db.DeleteToken(ctx, strings.ToUpper(expiring.ID))
	if err != nil || got.ID != expiring.ID || got.ExpiresAt == nil || !got.Expired(clock.Now()) {
		t.Fatalf("deleting an expired token: %+v, %v", got, err)
	}
	if _, err := db.DeleteToken(ctx, expiring.ID); spinbroker.ErrorCode(err) != spinbroker.ENOTFOUND {
		t.Errorf("deleting it again: %v, want not_found", err)
	}
	if _, err := db.DeleteToken(ctx, live.ID[:7]); spinbroker.ErrorCode(err) != spinbroker.EINVALID {
		t.Errorf("a 7-character prefix: %v, want invalid_request", err)
	}
	toks, err := db.Tokens(ctx)
	if err != nil || len(toks) != 1 || toks[0].ID != live.ID {
		t.Errorf("Tokens after the deletions: %+v, %v", toks, err)
	}
}

// TestDB_TokenPrefixMatchesSeveral: a prefix that matches several tokens
// is refused by revoke and delete alike, naming the ids it matches so that
// the next try can give one; nothing is revoked or deleted.
func TestDB_TokenPrefixMatchesSeveral(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.db")
	clock := storetest.NewClock()
	db, err := store.Open(ctx, path, store.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ids := []string{"abcdef01-0000-4000-8000-000000000001", "abcdef01-0000-4000-8000-000000000002"}
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	for _, id := range ids {
		tok, _, err := db.CreateToken(ctx, spinbroker.RoleViewer, "", "")
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := db.RevokeToken(ctx, tok.ID); err != nil {
			t.Fatal(err)
		}
		// Ids are random: two that share 8 characters are made here.
		if _, err := raw.ExecContext(ctx, `UPDATE tokens SET id = ? WHERE id = ?`, id, tok.ID); err != nil {
			t.Fatal(err)
		}
	}
	want := "abcdef01 matches 2 tokens, " + ids[0] + ", " + ids[1] + "; give more of the id"
	if _, _, err := db.RevokeToken(ctx, "abcdef01"); spinbroker.ErrorCode(err) != spinbroker.EINVALID || spinbroker.ErrorMessage(err) != want {
		t.Errorf("revoke: %v, want invalid_request %q", err, want)
	}
	if _, err := db.DeleteToken(ctx, "abcdef01"); spinbroker.ErrorCode(err) != spinbroker.EINVALID || spinbroker.ErrorMessage(err) != want {
		t.Errorf("delete: %v, want invalid_request %q", err, want)
	}
	if tok, err := db.DeleteToken(ctx, ids[1]); err != nil || tok.ID != ids[1] {
		t.Errorf("delete by the whole id: %+v, %v", tok, err)
	}
	if toks, err := db.Tokens(ctx); err != nil || len(toks) != 1 || toks[0].ID != ids[0] {
		t.Errorf("Tokens: %+v, %v", toks, err)
	}
}
