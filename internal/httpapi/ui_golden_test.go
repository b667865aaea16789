package httpapi_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/spin-broker/spinbroker/internal/httpapi"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files in testdata/golden with what the pages and /metrics render now")

// staticVersion is the hash in the static files' URLs; it changes with
// every edit of the CSS or the script, which says nothing about the pages.
var staticVersion = regexp.MustCompile(`\?v=[0-9a-f]{12}`)

// TestUI_Golden renders each page of a fixed world (fixed ids, a clock that
// moves only when told) and compares it with testdata/golden/NAME.html, so
// that a change to a template shows in review as a change to its output.
// Run `go test ./internal/httpapi -run TestUI_Golden -update` after an
// intended change.
func TestUI_Golden(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	w := seedWorld(t, e)
	ea := newEnv(t, httpapi.Options{Auth: true})
	pages := []struct {
		name string
		e    *env
		path string
	}{
		{"overview", e, "/ui/"},
		{"packages", e, "/ui/packages"},
		{"packages-failed", e, "/ui/packages?state=failed"},
		{"package-running", e, "/ui/packages/" + w.running},
		{"package-failed", e, "/ui/packages/" + w.failed},
		{"queue-network", e, "/ui/queues/network"},
		{"queue-emulation", e, "/ui/queues/emulation"},
		{"queue-storage", e, "/ui/queues/storage"},
		{"command-leased", e, "/ui/commands/" + w.leased.ID},
		{"command-failed", e, "/ui/commands/" + w.failedCmd},
		{"command-hostile", e, "/ui/commands/" + w.hostileCmd},
		{"search", e, "/ui/search?q=ffff"},
		{"not-found", e, "/ui/packages/" + fixedID(99)},
		{"fragment-queues", e, "/ui/?fragment=queues"},
		{"login", ea, "/ui/login?next=/ui/queues/storage"},
	}
	for _, p := range pages {
		t.Run(p.name, func(t *testing.T) {
			c := *p.e
			c.t = t
			got := staticVersion.ReplaceAll(c.get(p.path).body, []byte("?v=VERSION"))
			golden(t, p.path, filepath.Join("testdata", "golden", p.name+".html"), got)
		})
	}
}

// golden compares got, what renders what (a page's path, say), with the
// golden file; with -update it writes got there instead.
func golden(t *testing.T, what, file string, got []byte) {
	t.Helper()
	if *updateGolden {
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from %s; run with -update if the change is intended.\n%s", what, file, firstDiff(want, got))
	}
}

// firstDiff shows where two renderings part, with a little context.
func firstDiff(want, got []byte) string {
	i := 0
	for i < len(want) && i < len(got) && want[i] == got[i] {
		i++
	}
	from := max(0, i-120)
	return "want …" + string(want[from:min(len(want), i+120)]) + "…\n got …" + string(got[from:min(len(got), i+120)]) + "…"
}
