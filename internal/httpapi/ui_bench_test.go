package httpapi_test

import (
	"cmp"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/httpapi"
	"github.com/spin-broker/spinbroker/internal/store"
	"github.com/spin-broker/spinbroker/internal/store/storetest"
)

// benchPackages is how many packages BenchmarkOverview's broker holds.
const benchPackages = 100_000

// loadBroker fills a broker through the store's own API, as clients and
// agents would: n packages over eight queues, most of one command and every
// tenth of three in a chain, created by many writers at once so that the
// store gathers them into large transactions. Then agents claim and settle
// the oldest nine tenths of the work in batches, one command in forty
// failing, a minute of the clock per round, so that the overview has every
// package state and an hour of completions to show.
func loadBroker(tb testing.TB, db *store.DB, clock *storetest.Clock, n int) {
	tb.Helper()
	resources := []string{"storage", "emulation", "network", "dns", "firewall", "backup", "metrics", "billing"}
	const workers = 256
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	total := 0
	for i := range n {
		total += 1 + 2*btoi(i%10 == 0)
	}
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				r := resources[i%len(resources)]
				cmds := []spinbroker.NewCommand{{Key: "a", Resource: r, Action: "prepare", Parameters: []byte(`{"n": 1}`)}}
				if i%10 == 0 {
					cmds = append(cmds,
						spinbroker.NewCommand{Key: "b", Resource: resources[(i/10)%len(resources)], Action: "apply", Dependencies: []string{"a"}},
						spinbroker.NewCommand{Resource: r, Action: "check", Dependencies: []string{"b"}})
				}
				if _, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: cmds}, nil); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
	for _, r := range resources {
		if _, err := db.SetQueue(ctx, r, spinbroker.QueueSettings{Concurrency: uiRef(spinbroker.MaxConcurrency)}); err != nil {
			tb.Fatal(err)
		}
	}
	settle := total * 9 / 10
	reason := "disk full"
	for done := 0; done < settle; clock.Add(time.Minute) {
		progress := false
		for _, r := range resources {
			if done >= settle {
				break
			}
			cmds, _, err := db.Claim(ctx, r, min(spinbroker.MaxClaim, settle-done), 0)
			if err != nil {
				tb.Fatal(err)
			}
			if len(cmds) == 0 {
				continue
			}
			items := make([]spinbroker.BatchResult, len(cmds))
			for k, c := range cmds {
				ok := (done+k)%40 != 0
				items[k] = spinbroker.BatchResult{ID: c.ID, Result: spinbroker.Result{Status: &ok, Lease: c.Lease.Token, Reason: &reason}}
			}
			if _, err := db.CompleteBatch(ctx, items); err != nil {
				tb.Fatal(err)
			}
			done += len(items)
			progress = true
		}
		if !progress {
			break
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// BenchmarkOverview renders the dashboard's overview, the page operators
// keep open, over a broker with 100,000 packages: the queues, the newest
// packages and the last hour's completions, all read through indexes, so
// it must stay well under 100 ms (it takes about a millisecond).
func BenchmarkOverview(b *testing.B) {
	db, clock := storetest.MustOpen(b, store.Options{})
	start := time.Now()
	loadBroker(b, db, clock, benchPackages)
	b.Logf("loaded %d packages in %s", benchPackages, time.Since(start).Round(time.Millisecond))
	api := httpapi.New(db, slog.New(slog.NewTextHandler(io.Discard, nil)), httpapi.Options{Now: clock.Now})
	h := api.Handler()
	for _, path := range []string{"/ui/", "/ui/packages", "/ui/packages?state=failed"} {
		b.Run(path, func(b *testing.B) {
			req := httptest.NewRequest("GET", path, nil)
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("%s: %d %s", path, rec.Code, rec.Body)
				}
			}
		})
	}
}

// loadPackage creates one enqueued package of n commands over four queues,
// as a client would (a create of up to spinbroker.MaxCommandsPerBatch, then
// adds), each with parameters; every tenth depends on the one before it (in
// the adds, on one of the create), and one on a command of another package.
// Then agents settle the first half, with an output each. It returns the
// package's id.
func loadPackage(tb testing.TB, db *store.DB, n int) string {
	tb.Helper()
	resources := []string{"storage", "emulation", "network", "dns"}
	other, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Commands: []spinbroker.NewCommand{{Resource: "storage", Action: "prepare"}}}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	cmd := func(i int) spinbroker.NewCommand {
		c := spinbroker.NewCommand{Key: strconv.Itoa(i), Resource: resources[i%len(resources)], Action: "apply",
			Parameters: []byte(`{"volume_path": "volumes/base", "image_name": "img-` + strconv.Itoa(i) + `.img", "image_size": 20}`)}
		switch {
		case i == 1:
			c.Dependencies = []string{other.Commands[0].ID}
		case i%10 == 9:
			c.Dependencies = []string{strconv.Itoa(i - 1)}
		}
		return c
	}
	first := make([]spinbroker.NewCommand, min(n, spinbroker.MaxCommandsPerBatch))
	for i := range first {
		first[i] = cmd(i)
	}
	p, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Commands: first}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	// Adds from many writers at once, which the store gathers into large
	// transactions, in no fixed order: a dependency names a command of the
	// create, which exists whatever the order.
	var wg sync.WaitGroup
	const workers = 64
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := len(first) + w; i < n; i += workers {
				c := cmd(i)
				if c.Dependencies != nil {
					c.Dependencies = []string{strconv.Itoa(i % len(first))}
				}
				if _, _, err := db.AddCommand(ctx, p.ID, c, nil); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
	if _, err := db.Enqueue(ctx, p.ID); err != nil {
		tb.Fatal(err)
	}
	for _, r := range resources {
		if _, err := db.SetQueue(ctx, r, spinbroker.QueueSettings{Concurrency: uiRef(spinbroker.MaxConcurrency)}); err != nil {
			tb.Fatal(err)
		}
	}
	output := []byte(`{"image": "vms/web/root.img", "size": 21474836480, "checksum": "sha256:0123456789abcdef"}`)
	for done, progress := 0, true; done < n/2 && progress; {
		progress = false
		for _, r := range resources {
			if done >= n/2 {
				break
			}
			cmds, _, err := db.Claim(ctx, r, min(spinbroker.MaxClaim, n/2-done), 0)
			if err != nil {
				tb.Fatal(err)
			}
			items := make([]spinbroker.BatchResult, len(cmds))
			for k, c := range cmds {
				ok := true
				items[k] = spinbroker.BatchResult{ID: c.ID, Result: spinbroker.Result{Status: &ok, Lease: c.Lease.Token, Output: output}}
			}
			if len(items) > 0 {
				if _, err := db.CompleteBatch(ctx, items); err != nil {
					tb.Fatal(err)
				}
				done += len(items)
				progress = true
			}
		}
	}
	return p.ID
}

// BenchmarkPackagePage renders a package's page, and the fragments its
// live updates fetch again with every change of one of its commands, for
// a package of 10 commands and one of spinbroker.MaxCommandsPerPackage.
func BenchmarkPackagePage(b *testing.B) {
	for _, n := range []int{10, spinbroker.MaxCommandsPerPackage} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			db, clock := storetest.MustOpen(b, store.Options{})
			start := time.Now()
			id := loadPackage(b, db, n)
			b.Logf("loaded a package of %d commands in %s", n, time.Since(start).Round(time.Millisecond))
			api := httpapi.New(db, slog.New(slog.NewTextHandler(io.Discard, nil)), httpapi.Options{Now: clock.Now})
			h := api.Handler()
			for _, q := range []string{"", "?fragment=summary", "?fragment=graph", "?fragment=commands", "?fragment=commands&from=" + strconv.Itoa(n/2)} {
				path := "/ui/packages/" + id + q
				name := cmp.Or(strings.TrimPrefix(q, "?"), "page")
				b.Run(name, func(b *testing.B) {
					b.ReportAllocs()
					req := httptest.NewRequest("GET", path, nil)
					for b.Loop() {
						rec := httptest.NewRecorder()
						h.ServeHTTP(rec, req)
						if rec.Code != http.StatusOK {
							b.Fatalf("%s: %d %s", path, rec.Code, rec.Body)
						}
					}
				})
			}
		})
	}
}
