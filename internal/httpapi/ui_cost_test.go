package httpapi_test

import (
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"testing"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/httpapi"
	"github.com/spin-broker/spinbroker/internal/store"
)

// largeValue is the size of the parameters and outputs of largeWorld's
// commands: near the most a request body can carry.
const largeValue = 900 << 10

// largeWorld is a broker whose commands carry parameters or outputs of
// largeValue bytes, which only a command's own page shows. It returns the
// pages that list such commands without showing them.
func largeWorld(tb testing.TB, db *store.DB) []largePage {
	tb.Helper()
	big := func(i int) []byte {
		return []byte(`{"i": ` + strconv.Itoa(i) + `, "blob": "` + strings.Repeat("x", largeValue) + `"}`)
	}
	// done: six commands that succeeded with large outputs.
	var cmds []spinbroker.NewCommand
	for i := range 6 {
		cmds = append(cmds, spinbroker.NewCommand{Resource: "done", Action: "build", Key: strconv.Itoa(i)})
	}
	done, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: cmds}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	ok := true
	for i := range cmds {
		leased, _, err := db.Claim(ctx, "done", 1, 0)
		if err != nil || len(leased) != 1 {
			tb.Fatalf("claim: %d, %v", len(leased), err)
		}
		c := leased[0]
		if _, err := db.Complete(ctx, c.ID, spinbroker.Result{Status: &ok, Lease: c.Lease.Token, Output: big(i)}); err != nil {
			tb.Fatal(err)
		}
	}
	// waits: a root (small, leased) that depends on one of done, and six
	// commands with large parameters blocked behind it.
	cmds = []spinbroker.NewCommand{{Resource: "big", Action: "root", Key: "root", Dependencies: []string{done.Commands[0].ID}}}
	for i := range 6 {
		cmds = append(cmds, spinbroker.NewCommand{Resource: "big", Action: "apply", Key: strconv.Itoa(i),
			Parameters: big(i), Dependencies: []string{"root"}})
	}
	waits, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: cmds}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	root := waits.Commands[0].ID
	if leased, _, err := db.Claim(ctx, "big", 1, 0); err != nil || len(leased) != 1 || leased[0].ID != root {
		tb.Fatalf("claim of the root: %v, %v", leased, err)
	}
	// head: a ready command with large parameters, the queue's head of line.
	head, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{
		{Resource: "big", Action: "head", Parameters: big(7)}}}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return []largePage{
		{"package-outputs", "/ui/packages/" + done.ID},
		{"package-params", "/ui/packages/" + waits.ID},
		{"package-graph", "/ui/packages/" + waits.ID + "?fragment=graph"},
		{"package-table", "/ui/packages/" + waits.ID + "?fragment=commands&from=1"},
		{"queue", "/ui/queues/big"},
		{"queue-after", "/ui/queues/big?fragment=commands&after=0"},
		{"command-links", "/ui/commands/" + root + "?fragment=links"},
		{"search", "/ui/search?q=" + head.Commands[0].ID[:1]},
		{"search-one", "/ui/search?q=" + head.Commands[0].ID},
	}
}

// largePage is one of largeWorld's pages.
type largePage struct{ name, path string }

// allocated returns the bytes a request for path allocates, the least of
// three runs (other goroutines allocate too).
func allocated(tb testing.TB, h http.Handler, path string) uint64 {
	tb.Helper()
	least := uint64(1<<64 - 1)
	for range 3 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		runtime.ReadMemStats(&after)
		if rec.Code != http.StatusOK && rec.Code != http.StatusSeeOther {
			tb.Fatalf("%s: %d\n%.2000s", path, rec.Code, rec.Body)
		}
		least = min(least, after.TotalAlloc-before.TotalAlloc)
	}
	return least
}

// TestUI_PagesCostWhatTheyShow: the pages that list commands (a package's,
// a queue's, a command's links, the search) read the rows they list without
// the parameters and outputs, which only a command's own page shows: each
// allocates less than one of largeWorld's values, whatever its rows carry.
// They read every row's parameters and output: 396 MB of the broker's
// memory for the page of a package of 300 commands with 1 MiB outputs.
func TestUI_PagesCostWhatTheyShow(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	h := e.api.Handler()
	for _, p := range largeWorld(t, e.db) {
		if n := allocated(t, h, p.path); n >= largeValue {
			t.Errorf("%s (%s) allocates %d KiB, more than one command's parameters (%d KiB)", p.name, p.path, n>>10, largeValue>>10)
		}
	}
}

// BenchmarkUI_LargeValues renders the pages of largeWorld: with -benchmem,
// what each allocates.
func BenchmarkUI_LargeValues(b *testing.B) {
	e := newEnv(b, httpapi.Options{})
	h := e.api.Handler()
	for _, p := range largeWorld(b, e.db) {
		path := p.path
		b.Run(p.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
				if rec.Code != http.StatusOK && rec.Code != http.StatusSeeOther {
					b.Fatalf("%s: %d", path, rec.Code)
				}
			}
		})
	}
}
