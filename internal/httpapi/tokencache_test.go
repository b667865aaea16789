package httpapi

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/store"
	"github.com/spin-broker/spinbroker/internal/store/storetest"
)

// TestTokenCache_Bounded: what a client sends as a token cannot grow the
// broker's memory. An oversized or malformed secret is refused unread and
// not remembered; refusals are kept by hash and bounded; and a flood of
// them does not push out a token that works.
func TestTokenCache_Bounded(t *testing.T) {
	db, _ := storetest.MustOpen(t, store.Options{Now: time.Now})
	ctx := context.Background()
	_, secret, err := db.CreateToken(ctx, spinbroker.RoleAgent, "storage", "a")
	if err != nil {
		t.Fatal(err)
	}
	c := newTokenCache(db, time.Minute, time.Now)
	if tok, err := c.check(ctx, secret); err != nil || tok.Resource != "storage" {
		t.Fatalf("a good token: %v %v", tok, err)
	}
	for _, s := range []string{strings.Repeat("A", 60000), "sbt_with space", "sbt_\u00e9"} {
		if _, err := c.check(ctx, s); spinbroker.ErrorCode(err) != spinbroker.EUNAUTHORIZED {
			t.Errorf("secret of %d bytes: %v", len(s), err)
		}
	}
	if len(c.bad) != 0 {
		t.Errorf("malformed secrets were remembered: %d", len(c.bad))
	}
	for i := range 2*maxBadTokens + 10 {
		if _, err := c.check(ctx, fmt.Sprintf("sbt_%032d", i)); spinbroker.ErrorCode(err) != spinbroker.EUNAUTHORIZED {
			t.Fatalf("bad token %d: %v", i, err)
		}
	}
	if len(c.bad) > maxBadTokens {
		t.Errorf("%d refusals remembered, want at most %d", len(c.bad), maxBadTokens)
	}
	if len(c.m) != 1 {
		t.Errorf("after a flood of bad tokens the cache holds %d good ones, want the 1", len(c.m))
	}
	for k := range c.m {
		if string(k[:]) == secret {
			t.Error("the cache is keyed by the secret itself")
		}
	}
}

// TestTokenCache_Login: the dashboard's login form checks a token as the
// API does, through the cache: a guess is remembered as refused, and a
// secret no token could have is refused without a lookup.
func TestTokenCache_Login(t *testing.T) {
	db, _ := storetest.MustOpen(t, store.Options{Now: time.Now})
	s := New(db, slog.New(slog.NewTextHandler(io.Discard, nil)), Options{Auth: true})
	t.Cleanup(s.Shutdown)
	h := s.Handler()
	login := func(secret string) int {
		req := httptest.NewRequest("POST", "/ui/login", strings.NewReader(url.Values{"token": {secret}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Code
	}
	if code := login("sbt_" + strings.Repeat("0", 32)); code != http.StatusUnauthorized {
		t.Fatalf("a wrong token: %d", code)
	}
	if code := login(strings.Repeat("A", 5000)); code != http.StatusUnauthorized {
		t.Fatalf("an oversized token: %d", code)
	}
	s.tokens.mu.Lock()
	bad := len(s.tokens.bad)
	s.tokens.mu.Unlock()
	if bad != 1 {
		t.Errorf("%d refusals remembered after a wrong and an oversized token, want the wrong one", bad)
	}
}
