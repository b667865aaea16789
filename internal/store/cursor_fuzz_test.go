package store

import (
	"testing"

	spinbroker "github.com/spin-broker/spinbroker"
)

// FuzzCursor: a client sends back any cursor it likes (GET
// /packages?cursor=): it decodes to a time and an id, or is refused, never
// a panic; and a cursor the broker made decodes to what it encoded.
func FuzzCursor(f *testing.F) {
	for _, c := range []string{
		encodeCursor(1767225600000000000, "0190c3a4-5a6b-7c8d-9e0f-a1b2c3d4e5f6"), encodeCursor(-1, "0190c3a4-5a6b-7c8d-9e0f-a1b2c3d4e5f6"),
		"", "=", "MTIz", "MTIzLw", "LzAxOTBjM2E0LTVhNmItN2M4ZC05ZTBmLWExYjJjM2Q0ZTVmNg", "%%%",
	} {
		f.Add(c, int64(0), "0190c3a4-5a6b-7c8d-9e0f-a1b2c3d4e5f6")
	}
	f.Fuzz(func(t *testing.T, c string, ts int64, id string) {
		if got, gid, ok := decodeCursor(c); ok {
			if _, valid := spinbroker.ParseID(gid); !valid {
				t.Fatalf("decodeCursor(%q) = %d, %q: not an id", c, got, gid)
			}
		}
		norm, ok := spinbroker.ParseID(id)
		if !ok {
			return
		}
		got, gid, ok := decodeCursor(encodeCursor(ts, norm))
		if !ok || got != ts || gid != norm {
			t.Fatalf("cursor of %d %q decodes to %d %q %v", ts, norm, got, gid, ok)
		}
	})
}
