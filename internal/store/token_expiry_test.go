package store_test

import (
	"strings"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/store"
)

// TestDB_TokenExpiry: a token made with a lifetime works until its end and
// is refused from then on, saying it expired and when, not that it is not
// valid: its holder is to renew it, not to look for a typo. A token made
// without one never expires.
func TestDB_TokenExpiry(t *testing.T) {
	db, clock := open(t)
	start := clock.Now()
	tok, secret, err := db.CreateExpiringToken(ctx, spinbroker.RoleAgent, "storage", "ci", 90*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	end := start.Add(90 * 24 * time.Hour)
	if tok.ExpiresAt == nil || !tok.ExpiresAt.Equal(end) {
		t.Fatalf("ExpiresAt = %v, want %v", tok.ExpiresAt, end)
	}
	_, forever, err := db.CreateToken(ctx, spinbroker.RoleAdmin, "", "ops")
	if err != nil {
		t.Fatal(err)
	}

	clock.Add(90*24*time.Hour - time.Nanosecond)
	if got, err := db.Authenticate(ctx, secret); err != nil || got.ID != tok.ID || got.ExpiresAt == nil || !got.ExpiresAt.Equal(end) {
		t.Fatalf("a nanosecond before its end: %+v, %v", got, err)
	}
	clock.Add(time.Nanosecond)
	got, err := db.Authenticate(ctx, secret)
	if spinbroker.ErrorCode(err) != spinbroker.EUNAUTHORIZED || got != nil {
		t.Fatalf("at its end: %+v, %v, want unauthorized", got, err)
	}
	if msg := spinbroker.ErrorMessage(err); !strings.Contains(msg, "expired at 2026-04-02T03:04:05Z") || strings.Contains(msg, "not valid") {
		t.Errorf("the refusal of an expired token says %q", msg)
	}
	if _, err := db.Authenticate(ctx, "sbt_mistyped"); !strings.Contains(spinbroker.ErrorMessage(err), "not valid") {
		t.Errorf("the refusal of an unknown token says %v", err)
	}

	clock.Add(100 * 365 * 24 * time.Hour)
	if got, err := db.Authenticate(ctx, forever); err != nil || got.ExpiresAt != nil {
		t.Errorf("a token made without a lifetime, a century on: %+v, %v", got, err)
	}

	toks, err := db.Tokens(ctx)
	if err != nil || len(toks) != 2 {
		t.Fatalf("Tokens: %v, %v", toks, err)
	}
	for _, lt := range toks {
		if lt.ID == tok.ID && (lt.ExpiresAt == nil || !lt.ExpiresAt.Equal(end) || !lt.Expired(clock.Now())) ||
			lt.ID != tok.ID && (lt.ExpiresAt != nil || lt.Expired(clock.Now())) {
			t.Errorf("Tokens: %+v", lt)
		}
	}
}

// TestDB_TokenLifetimeBounds: a lifetime is positive and at most
// MaxTokenLifetime; an end past what the database can hold would wrap
// around into the past.
func TestDB_TokenLifetimeBounds(t *testing.T) {
	db, _ := open(t)
	for _, d := range []time.Duration{-time.Second, store.MaxTokenLifetime + time.Second, 1<<63 - 1} {
		if _, _, err := db.CreateExpiringToken(ctx, spinbroker.RoleViewer, "", "", d); spinbroker.ErrorCode(err) != spinbroker.EINVALID {
			t.Errorf("lifetime %v: %v, want invalid_request", d, err)
		}
	}
	tok, _, err := db.CreateExpiringToken(ctx, spinbroker.RoleViewer, "", "", store.MaxTokenLifetime)
	if err != nil || tok.ExpiresAt == nil {
		t.Fatalf("the longest lifetime: %+v, %v", tok, err)
	}
	toks, err := db.Tokens(ctx)
	if err != nil || len(toks) != 1 || !toks[0].ExpiresAt.Equal(*tok.ExpiresAt) {
		t.Errorf("the longest lifetime, read back: %+v, %v", toks, err)
	}
}
