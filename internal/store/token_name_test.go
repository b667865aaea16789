package store_test

import (
	"strings"
	"testing"

	"github.com/spin-broker/spinbroker/internal/store"
)

// TestTokenNameCountsCharacters: a token name is at most 200 characters, as
// its error says, whatever their script: a 150-character Cyrillic name
// (300 bytes) was refused "at most 200 characters", which it is.
func TestTokenNameCountsCharacters(t *testing.T) {
	db, _ := open(t)
	for _, tt := range []struct {
		name string
		ok   bool
	}{
		{strings.Repeat("я", 150), true},
		{strings.Repeat("я", 200), true},
		{strings.Repeat("日", 200), true},
		{strings.Repeat("я", 201), false},
		{strings.Repeat("n", 200), true},
		{strings.Repeat("n", 201), false},
		{"ops\tteam", false},
		// Not UTF-8 (Latin-1 from an old terminal): listed back through
		// JSON it would read as U+FFFD, never as what was typed.
		{"caf\xe9", false},
	} {
		if err := store.CheckTokenName(tt.name); (err == nil) != tt.ok {
			t.Errorf("CheckTokenName of %d characters (%d bytes): %v, want ok %v", len([]rune(tt.name)), len(tt.name), err, tt.ok)
		} else if err != nil && !strings.Contains(err.Error(), "at most 200 characters") {
			t.Errorf("CheckTokenName: %v", err)
		}
		tok, _, err := db.CreateToken(ctx, "viewer", "", tt.name)
		if (err == nil) != tt.ok {
			t.Errorf("CreateToken of %d characters (%d bytes): %v, want ok %v", len([]rune(tt.name)), len(tt.name), err, tt.ok)
		}
		if err == nil && tok.Name != tt.name {
			t.Errorf("CreateToken: name %q, want %q", tok.Name, tt.name)
		}
	}
}

// TestTokenNameRefusesC1Controls: a token name has no control character,
// the C1 ones (U+0080 to U+009F) included, as a command's key has none:
// U+009B is a terminal's CSI, and a name holding it rewrote the screen of
// whoever ran token ls; U+0085 is a line break to some readers of the log.
func TestTokenNameRefusesC1Controls(t *testing.T) {
	db, _ := open(t)
	for _, name := range []string{"ops\u009b2J", "ops\u0085fake line", "ops\u0080"} {
		if err := store.CheckTokenName(name); err == nil {
			t.Errorf("CheckTokenName(%q) took a control character", name)
		}
		if _, _, err := db.CreateToken(ctx, "viewer", "", name); err == nil {
			t.Errorf("CreateToken(%q) took a control character", name)
		}
	}
	if err := store.CheckTokenName("opérations \u00a0équipe"); err != nil {
		t.Errorf("a name with accents and a no-break space: %v", err)
	}
}
