package store_test

import (
	"strings"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
)

// TestDB_AuthenticateRevoked: a revoked token is refused saying it was
// revoked, and when, not that it is "not valid or was revoked": its holder
// is to ask for a new one, not to look for a typo, and the broker's log can
// tell it from a secret no one made. A token that expired before it was
// revoked says it expired, the first of the two to happen; one revoked
// before its end says revoked.
func TestDB_AuthenticateRevoked(t *testing.T) {
	db, clock := open(t)
	tok, secret, err := db.CreateToken(ctx, spinbroker.RoleAdmin, "", "old")
	if err != nil {
		t.Fatal(err)
	}
	clock.Add(time.Minute)
	revoked, _, err := db.RevokeToken(ctx, tok.ID)
	if err != nil {
		t.Fatal(err)
	}
	clock.Add(time.Minute)
	got, err := db.Authenticate(ctx, secret)
	if spinbroker.ErrorCode(err) != spinbroker.EUNAUTHORIZED || got != nil {
		t.Fatalf("a revoked token: %+v, %v, want unauthorized", got, err)
	}
	if !spinbroker.IsTokenRevoked(err) || spinbroker.IsTokenExpired(err) {
		t.Errorf("IsTokenRevoked(%v) = false or IsTokenExpired true", err)
	}
	want := "the token was revoked at " + revoked.RevokedAt.UTC().Format(time.RFC3339) + ": ask for a new one (spinbroker token create)"
	if msg := spinbroker.ErrorMessage(err); msg != want {
		t.Errorf("the refusal of a revoked token says %q, want %q", msg, want)
	}

	// Neither a secret no one made nor an expired token is "revoked".
	if _, err := db.Authenticate(ctx, "sbt_mistyped"); spinbroker.IsTokenRevoked(err) || !strings.Contains(spinbroker.ErrorMessage(err), "not valid") {
		t.Errorf("the refusal of an unknown token: %v", err)
	}
	early, earlySecret, err := db.CreateExpiringToken(ctx, spinbroker.RoleViewer, "", "short", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	late, lateSecret, err := db.CreateExpiringToken(ctx, spinbroker.RoleViewer, "", "long", 3*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	clock.Add(2 * time.Hour)
	for _, id := range []string{early.ID, late.ID} {
		if _, _, err := db.RevokeToken(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	clock.Add(2 * time.Hour)
	if _, err := db.Authenticate(ctx, earlySecret); !spinbroker.IsTokenExpired(err) || spinbroker.IsTokenRevoked(err) {
		t.Errorf("a token revoked after its end: %v, want the expiry", err)
	}
	if _, err := db.Authenticate(ctx, lateSecret); !spinbroker.IsTokenRevoked(err) || spinbroker.IsTokenExpired(err) {
		t.Errorf("a token revoked before its end: %v, want the revocation", err)
	}

	// A revoked token deleted is one no one made.
	if _, err := db.DeleteToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Authenticate(ctx, secret); spinbroker.IsTokenRevoked(err) || spinbroker.ErrorCode(err) != spinbroker.EUNAUTHORIZED {
		t.Errorf("a revoked token, deleted: %v", err)
	}
}

// TestDB_AuthenticateRevokedAfterEndStepBack: a token revoked after its
// end stays refused when the wall clock steps back before that end (NTP
// correcting a drift, a VM resumed from a snapshot). Its refusal says it
// expired, the first of the two; before, only its end was compared with
// the clock, and the stepped-back clock let the revoked token in again.
func TestDB_AuthenticateRevokedAfterEndStepBack(t *testing.T) {
	db, clock := open(t)
	tok, secret, err := db.CreateExpiringToken(ctx, spinbroker.RoleAdmin, "", "short", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	clock.Add(2 * time.Hour)
	if _, _, err := db.RevokeToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	clock.Step(-3 * time.Hour)
	got, err := db.Authenticate(ctx, secret)
	if got != nil || spinbroker.ErrorCode(err) != spinbroker.EUNAUTHORIZED {
		t.Fatalf("a token revoked after its end, the clock stepped back: %+v, %v, want unauthorized", got, err)
	}
	if !spinbroker.IsTokenExpired(err) {
		t.Errorf("a token revoked after its end: %v, want the expiry", err)
	}
}
