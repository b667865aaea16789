package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/httpapi"
)

// The dashboard in a real browser: headless Chromium driven over the
// DevTools protocol. A missing browser is installed (or, under CI, is a
// failure); these tests never skip, since a dashboard that was never
// opened in a browser is not tested.

// installScript installs Debian's chromium where it is missing.
const installScript = "../../scripts/install-chromium.sh"

// chromium finds the browser, installing it when it can.
func chromium(t *testing.T) string {
	t.Helper()
	find := func() string {
		for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
			if p, err := exec.LookPath(name); err == nil {
				return p
			}
		}
		return ""
	}
	if p := find(); p != "" {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("no chromium on PATH: CI must install it first (%s)", installScript)
	}
	t.Logf("no chromium on PATH; running %s", installScript)
	if out, err := exec.Command("sh", installScript).CombinedOutput(); err != nil {
		t.Fatalf("chromium is missing and %s failed (run it as root, or install chromium): %v\n%s", installScript, err, out)
	}
	if p := find(); p != "" {
		return p
	}
	t.Fatalf("chromium is still missing after %s", installScript)
	return ""
}

// screenshotDir is where the screenshots go: $SPINBROKER_SCREENSHOTS, else
// a fixed folder under the temporary directory, so that the latest run's
// pictures are always in the same place.
func screenshotDir(t *testing.T) string {
	dir := os.Getenv("SPINBROKER_SCREENSHOTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "spinbroker-screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// browser starts one headless Chromium for a test, with the flags that work
// as root in a container, and a fresh profile.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// Start the browser with a context that has no deadline: the first Run
	// binds the browser's life to its context.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// tab opens a new tab for a subtest, and fails the subtest on any script
// error or blocked resource (a content security policy violation, say),
// except those that contain one of the expected strings.
func cdpTab(t *testing.T, parent context.Context, expected ...string) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(parent)
	var mu sync.Mutex
	var problems []string
	err := chromedp.Listen(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			msg := ev.ExceptionDetails.Text
			if ev.ExceptionDetails.Exception != nil {
				msg += " " + ev.ExceptionDetails.Exception.Description
			}
			problems = append(problems, "exception: "+msg)
		case *cdplog.EventEntryAdded:
			if ev.Entry.Level == cdplog.EntryLevelError {
				problems = append(problems, "console: "+ev.Entry.Text+" "+ev.Entry.URL)
			}
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError {
				problems = append(problems, "console.error")
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	tctx, tcancel := context.WithTimeout(ctx, 60*time.Second)
	t.Cleanup(func() {
		tcancel()
		cancel()
		mu.Lock()
		defer mu.Unlock()
	next:
		for _, p := range problems {
			for _, x := range expected {
				if strings.Contains(p, x) {
					continue next
				}
			}
			t.Errorf("browser: %s", p)
		}
	})
	return tctx
}

func cdpDo(t *testing.T, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatal(err)
	}
}

func cdpEval[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	return v
}

// waitFor polls a JavaScript condition until it holds. It evaluates the
// condition afresh each time rather than with chromedp.Poll, because the
// condition may hold only after a navigation, which ends a running poll.
func cdpWait(t *testing.T, ctx context.Context, js string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js))
		if err == nil && ok {
			return
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("waited 10s for %s (last error: %v)", js, last)
}

// open navigates to a dashboard page and waits until its event stream is
// connected (pages that have one).
func cdpOpen(t *testing.T, ctx context.Context, url string, live bool) {
	t.Helper()
	cdpDo(t, ctx, chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS("main")))
	if live {
		cdpWait(t, ctx, `document.getElementById("live").textContent === "live"`)
	}
}

func colorScheme(dark bool) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		value := "light"
		if dark {
			value = "dark"
		}
		_, err := cdp.Call(ctx, t, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: value}},
		})
		return err
	})
}

// shoot saves full-page screenshots of the current page in light and dark,
// at a laptop's width and a phone's.
func screenshots(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	sizes := []struct {
		name string
		vp   chromedp.Action[chromedp.Void]
	}{
		{"laptop", chromedp.EmulateViewport(1280, 800)},
		{"phone", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateScale(2))},
	}
	for _, dark := range []bool{false, true} {
		for _, size := range sizes {
			cdpDo(t, ctx, colorScheme(dark), size.vp)
			buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
			if err != nil {
				t.Fatal(err)
			}
			mode := "light"
			if dark {
				mode = "dark"
			}
			file := filepath.Join(dir, fmt.Sprintf("%s-%s-%s.png", name, mode, size.name))
			if err := os.WriteFile(file, buf, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	cdpDo(t, ctx, colorScheme(false), chromedp.EmulateViewport(1280, 800))
}

func TestBrowser(t *testing.T) {
	start := time.Now()
	dir := screenshotDir(t)
	bctx := startBrowser(t)
	e := newEnv(t, httpapi.Options{})
	w := seedWorld(t, e)
	base := e.srv.URL

	t.Run("Pages", func(t *testing.T) {
		ctx := cdpTab(t, bctx)
		pages := []struct {
			name, path string
			live       bool
			check      string // a JavaScript condition the page must meet
		}{
			{"overview", "/ui/", true, `document.querySelectorAll("#f-queues tbody tr").length === 4 &&
				document.querySelectorAll(".chart rect.bar").length > 0 &&
				!!document.querySelector('#f-packages a[href="/ui/packages/` + w.running + `"]')`},
			{"packages", "/ui/packages", true, `document.querySelectorAll("#f-list tbody tr").length === 6`},
			{"packages-failed", "/ui/packages?state=failed", true, `document.querySelectorAll("#f-list tbody tr").length === 2`},
			{"package-running", "/ui/packages/" + w.running, true, `document.querySelectorAll(".dag .node").length === 5 &&
				document.querySelectorAll(".dag .edge").length === 4 &&
				document.querySelector(".big-state").textContent.includes("running") &&
				!!document.querySelector('form[action$="/cancel"] button')`},
			{"package-failed", "/ui/packages/" + w.failed, true, `document.querySelector(".cause").textContent.includes("not enough space") &&
				document.querySelectorAll(".dag .node.st-cancelled").length === 2 &&
				!document.querySelector('form[action$="/cancel"]')`},
			{"queue", "/ui/queues/network", true, `document.querySelector("tr.head").textContent.includes("create_bridge") &&
				document.querySelector(".status").textContent.includes("3 ready")`},
			{"queue-blocked", "/ui/queues/emulation", true, `document.querySelectorAll("td.waits a.dep").length === 3`},
			{"command", "/ui/commands/" + w.leased.ID, true, `document.querySelector(".timeline").textContent.includes("Started") &&
				document.querySelector("pre.json").textContent.includes('"image_size": 20')`},
			{"command-failed", "/ui/commands/" + w.failedCmd, true, `!!document.querySelector('form[action$="/retry"]')`},
			// Hostile values are shown as text and run nothing.
			{"command-hostile", "/ui/commands/" + w.hostileCmd, true, `[...document.querySelectorAll("pre.json")].some(p => p.textContent.includes('"<script>alert(\\"pwned\\")</script>"')) &&
				document.querySelectorAll("main img, main script").length === 0`},
			{"search", "/ui/search?q=0000", false, `document.querySelectorAll("ul.links li").length > 3`},
		}
		for _, p := range pages {
			cdpOpen(t, ctx, base+p.path, p.live)
			if ok := cdpEval[bool](t, ctx, p.check); !ok {
				html := cdpEval[string](t, ctx, `document.querySelector("main").innerText`)
				t.Errorf("%s: the page does not meet %s:\n%s", p.name, p.check, html)
			}
			screenshots(t, ctx, dir, p.name)
		}
	})

	t.Run("CancelLive", func(t *testing.T) {
		ctx := cdpTab(t, bctx)
		// The cancel button asks first; accept like a person would.
		acceptDialogs(ctx)
		cdpOpen(t, ctx, base+"/ui/packages/"+w.queued, true)
		cdpDo(t, ctx, chromedp.Evaluate[chromedp.Void](`window.stillHere = true`),
			chromedp.Click(chromedp.CSS(`form[action$="/cancel"] button`)))
		// The new state arrives over /events and is swapped in: the page is
		// never reloaded.
		cdpWait(t, ctx, `document.querySelector(".big-state").textContent.includes("cancelled")`)
		cdpWait(t, ctx, `document.querySelectorAll("#f-commands .badge.st-cancelled").length === 2`)
		if !cdpEval[bool](t, ctx, `window.stillHere === true && !document.querySelector('form[action$="/cancel"]')`) {
			t.Error("the page reloaded, or still offers to cancel")
		}
		if p, _ := e.db.PackageInfo(ctx, w.queued); p.State != spinbroker.PackageCancelled {
			t.Errorf("package is %s", p.State)
		}
	})

	t.Run("LiveFromAPI", func(t *testing.T) {
		ctx := cdpTab(t, bctx)
		cdpOpen(t, ctx, base+"/ui/packages/"+w.running, true)
		cdpDo(t, ctx, chromedp.Evaluate[chromedp.Void](`window.stillHere = true`))
		// An agent finishes a command somewhere else; the page follows.
		mustComplete(t, e, w.leased, true, "", `{"image": "vms/web/root.img"}`)
		cdpWait(t, ctx, `document.querySelector(".summary .progress").textContent.includes("2/5 done")`)
		cdpWait(t, ctx, `document.querySelector('.dag a[href$="`+w.leased.ID+`"]').classList.contains("st-succeeded")`)
		if !cdpEval[bool](t, ctx, `window.stillHere === true`) {
			t.Error("the page reloaded")
		}
		// And a queue's page follows its queue: pause it with the button.
		cdpOpen(t, ctx, base+"/ui/queues/storage", true)
		cdpDo(t, ctx, chromedp.Evaluate[chromedp.Void](`window.stillHere = true`),
			chromedp.Click(chromedp.CSS(`form[action$="/pause"] button`)))
		cdpWait(t, ctx, `document.querySelector(".summary .badge").textContent.includes("paused") && !!document.querySelector('form[action$="/resume"]')`)
		cdpDo(t, ctx, chromedp.Click(chromedp.CSS(`form[action$="/resume"] button`)))
		cdpWait(t, ctx, `document.querySelector(".summary .badge").textContent.includes("active")`)
		if !cdpEval[bool](t, ctx, `window.stillHere === true`) {
			t.Error("the page reloaded")
		}
	})

	t.Run("ConcurrencyByEnter", func(t *testing.T) {
		ctx := cdpTab(t, bctx)
		cdpOpen(t, ctx, base+"/ui/queues/network", true)
		cdpDo(t, ctx, chromedp.Evaluate[chromedp.Void](`window.stillHere = true`),
			chromedp.Focus(chromedp.ID("concurrency")),
			chromedp.Evaluate[chromedp.Void](`document.getElementById("concurrency").select()`),
			chromedp.SendKeys(chromedp.ID("concurrency"), "3\r"))
		// Saved, and shown at once: the box keeps the keyboard's focus, but
		// no longer holds back the part it is in.
		cdpWait(t, ctx, `document.querySelector(".facts").textContent.includes("of 3")`)
		if !cdpEval[bool](t, ctx, `window.stillHere === true && document.activeElement.id === "concurrency"`) {
			t.Error("the page reloaded, or the box lost the keyboard's focus")
		}
		if q, err := e.db.Queue(ctx, "network"); err != nil || q.Concurrency != 3 {
			t.Fatalf("queue network: %+v %v", q, err)
		}
		// A change made elsewhere reaches the page too.
		if _, err := e.db.SetQueue(ctx, "network", spinbroker.QueueSettings{Paused: uiRef(true)}); err != nil {
			t.Fatal(err)
		}
		cdpWait(t, ctx, `document.querySelector(".summary .badge").textContent.includes("paused")`)
	})

	t.Run("LongQueueName", func(t *testing.T) {
		// A queue named with the longest name there may be does not push
		// every queue's counts out of view.
		long := strings.Repeat("q", spinbroker.MaxNameLen)
		if _, err := e.db.SetQueue(ctx, long, spinbroker.QueueSettings{Concurrency: uiRef(2)}); err != nil {
			t.Fatal(err)
		}
		ctx := cdpTab(t, bctx)
		cdpOpen(t, ctx, base+"/ui/", true)
		if !cdpEval[bool](t, ctx, `[...document.querySelectorAll("#f-queues thead th")].every(th => th.getBoundingClientRect().right <= th.closest(".card").getBoundingClientRect().right)`) {
			t.Error("a long queue name pushes the queues' columns out of view")
		}
		screenshots(t, ctx, dir, "overview-long-name")
	})

	t.Run("PhoneFits", func(t *testing.T) {
		// On a phone every table's cells stay inside their card: nothing a
		// page is opened for hides behind a sideways scroll.
		ctx := cdpTab(t, bctx)
		cdpDo(t, ctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateScale(2)))
		const outside = `[...document.querySelectorAll("main .data th, main .data td")].filter(c => {
			const r = c.getBoundingClientRect(), head = c.closest("thead");
			if (head && head.getBoundingClientRect().width <= 1) return false; // out of sight for screen readers only
			return r.width > 0 && r.right > c.closest(".card").getBoundingClientRect().right + 1;
		}).map(c => c.textContent.trim().slice(0, 30))`
		pages := []string{"/ui/", "/ui/packages", "/ui/queues/network", "/ui/queues/emulation",
			"/ui/packages/" + w.running, "/ui/packages/" + w.failed, "/ui/commands/" + w.leased.ID}
		for _, path := range pages {
			cdpOpen(t, ctx, base+path, true)
			if cells := cdpEval[[]string](t, ctx, outside); len(cells) > 0 {
				t.Errorf("%s on a phone: %d cells reach past their card: %q", path, len(cells), cells)
			}
		}
		// On a laptop the same tables are tables: each header over its
		// column (a class shared with another rule once laid them out as
		// a grid, headers bunched to the left).
		cdpDo(t, ctx, chromedp.EmulateViewport(1280, 800))
		const misaligned = `[...document.querySelectorAll("main table.data")].flatMap(t => {
			const heads = [...t.querySelectorAll("thead th")], row = t.querySelector("tbody tr");
			if (getComputedStyle(t).display !== "table") return ["display " + getComputedStyle(t).display];
			if (!row) return [];
			const cells = [...row.children];
			return heads.filter((h, i) => !cells[i] || Math.abs(h.getBoundingClientRect().left - cells[i].getBoundingClientRect().left) > 1)
				.map(h => h.textContent.trim());
		})`
		for _, path := range pages {
			cdpOpen(t, ctx, base+path, true)
			if heads := cdpEval[[]string](t, ctx, misaligned); len(heads) > 0 {
				t.Errorf("%s on a laptop: headers off their columns: %q", path, heads)
			}
		}
	})

	t.Run("LongNamesFitAPhone", func(t *testing.T) {
		// The longest names there may be (a 64-character action and
		// resource, a 128-character key, none with a space to break at)
		// wrap on a phone: the page stays as wide as the screen, where a
		// heading made it 981 pixels wide, and a phone zoomed out to show
		// every page in small print.
		action, resource := strings.Repeat("a", spinbroker.MaxNameLen), strings.Repeat("r", spinbroker.MaxNameLen)
		key := strings.Repeat("k", 128)
		first := nc(901, key, resource, action, `{"p": 1}`)
		second := nc(902, "", resource, action, "", key)
		mustCreate(t, e, 900, true, first, second)
		ctx := cdpTab(t, bctx)
		cdpDo(t, ctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateScale(2)))
		for _, path := range []string{"/ui/commands/" + fixedID(901), "/ui/commands/" + fixedID(902), "/ui/queues/" + resource, "/ui/packages/" + fixedID(900)} {
			cdpOpen(t, ctx, base+path, true)
			if w := cdpEval[int](t, ctx, `document.documentElement.scrollWidth`); w > 390 {
				wide := cdpEval[[]string](t, ctx, `[...document.querySelectorAll("main *")].filter(e => e.children.length === 0 && e.getBoundingClientRect().right > 391).map(e => e.tagName + " " + e.textContent.slice(0, 20))`)
				t.Errorf("%s on a phone is %d pixels wide, past its 390: %q", path, w, wide)
			}
		}
	})

	t.Run("MessagesFit320", func(t *testing.T) {
		// What a page says of a value someone typed (an id or a queue name
		// that is not one, a search that matched nothing) wraps at 320
		// pixels, the width WCAG's reflow (1.4.10) asks for: a long value
		// made the whole page scroll sideways to read the sentence.
		long := strings.Repeat("x", 80)
		ctx := cdpTab(t, bctx, "404 (Not Found)", "400 (Bad Request)")
		cdpDo(t, ctx, chromedp.EmulateViewport(320, 640, chromedp.EmulateMobile))
		for _, path := range []string{"/ui/packages/" + long, "/ui/queues/" + long, "/ui/packages?state=" + long, "/ui/search?q=" + long} {
			cdpOpen(t, ctx, base+path, false)
			if w := cdpEval[int](t, ctx, `document.documentElement.scrollWidth`); w > 320 {
				t.Errorf("%s at 320 pixels is %d pixels wide", path, w)
			}
		}
	})

	t.Run("ChartLabelsApart", func(t *testing.T) {
		// The chart's labels never overlap: on a phone its text is drawn
		// larger, and the "0" of the y axis sat on the "−60m" below it.
		ctx := cdpTab(t, bctx)
		for _, vp := range []struct {
			name string
			set  chromedp.Action[chromedp.Void]
		}{
			{"laptop", chromedp.EmulateViewport(1280, 900)},
			{"phone", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateScale(2))},
		} {
			cdpDo(t, ctx, vp.set)
			cdpOpen(t, ctx, base+"/ui/", true)
			overlaps := cdpEval[[]string](t, ctx, `(() => {
				const ts = [...document.querySelectorAll(".chart text.tick")].map(e => [e.textContent, e.getBoundingClientRect()]);
				const out = [];
				for (let i = 0; i < ts.length; i++) for (let j = i + 1; j < ts.length; j++) {
					const [a, r] = ts[i], [b, q] = ts[j];
					if (r.left < q.right && q.left < r.right && r.top < q.bottom && q.top < r.bottom) out.push(a + " and " + b);
				}
				return ts.length < 7 ? ["only " + ts.length + " labels"] : out;
			})()`)
			if len(overlaps) > 0 {
				t.Errorf("the chart's labels on a %s overlap: %q", vp.name, overlaps)
			}
		}
	})

	t.Run("GraphOnPhone", func(t *testing.T) {
		// A graph wider than a phone opens on its root, drawn in the middle
		// of the picture, rather than on the empty space at its left edge;
		// a live update keeps where the reader swiped to; and the way past
		// a large graph still takes the keyboard past it.
		cmds := []spinbroker.NewCommand{nc(911, "root", "fanout", "add_volume", "")}
		for i := range 12 {
			cmds = append(cmds, nc(912+i, "", "fanout", fmt.Sprintf("child_%d", i), "", "root"))
		}
		pkg := mustCreate(t, e, 910, true, cmds...)
		rootInView := `(() => {
			const box = document.querySelector(".graph.scroll").getBoundingClientRect();
			const root = document.querySelector('.dag a[href$="` + fixedID(911) + `"] rect.box').getBoundingClientRect();
			return root.left >= box.left && root.right <= box.right;
		})()`
		ctx := cdpTab(t, bctx)
		for _, vp := range []chromedp.Action[chromedp.Void]{
			chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateScale(2)),
			chromedp.EmulateViewport(1280, 800),
		} {
			cdpDo(t, ctx, vp)
			cdpOpen(t, ctx, base+"/ui/packages/"+pkg, true)
			if !cdpEval[bool](t, ctx, rootInView) {
				t.Errorf("the graph's root is out of view at a width of %d: scrolled to %d of %d", cdpEval[int](t, ctx, `innerWidth`),
					cdpEval[int](t, ctx, `document.querySelector(".graph.scroll").scrollLeft`), cdpEval[int](t, ctx, `document.querySelector(".graph.scroll").scrollWidth`))
			}
		}
		cdpDo(t, ctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateScale(2)))
		cdpOpen(t, ctx, base+"/ui/packages/"+pkg, true)
		cdpDo(t, ctx, chromedp.Evaluate[chromedp.Void](`window.stillHere = true; document.querySelector(".graph.scroll").scrollLeft = 17`))
		mustComplete(t, e, mustNext(t, e, "fanout"), true, "", "")
		cdpWait(t, ctx, `document.querySelector('.dag a[href$="`+fixedID(911)+`"]').classList.contains("st-succeeded")`)
		if got := cdpEval[int](t, ctx, `document.querySelector(".graph.scroll").scrollLeft`); got != 17 || !cdpEval[bool](t, ctx, `window.stillHere === true`) {
			t.Errorf("after a live update the graph is scrolled to %d, not where the reader left it (17)", got)
		}
		// The way past the graph: focused, it shows; followed, the next tab
		// stop is after the graph.
		cdpDo(t, ctx, chromedp.Focus(chromedp.CSS(".skip-graph")), chromedp.SendKeys(chromedp.CSS(".skip-graph"), "\r"))
		cdpWait(t, ctx, `location.hash === "#h-commands"`)
		cdpDo(t, ctx, chromedp.KeyEvent("\t"))
		if !cdpEval[bool](t, ctx, `!!document.activeElement.closest("#f-commands")`) {
			t.Errorf("after the way past the graph, Tab goes to %s", cdpEval[string](t, ctx, `document.activeElement.outerHTML.slice(0, 80)`))
		}
		screenshots(t, ctx, dir, "package-fanout")
	})

	t.Run("LongReason", func(t *testing.T) {
		// A reason may be 16 KiB: where a sentence shows it (why a package
		// failed, a command's reason) a phone shows its first lines, and
		// the whole of it is one click away, whole when copied, and stays
		// open when the page updates itself.
		var b strings.Builder
		for i := 0; b.Len() < 16000; i++ {
			fmt.Fprintf(&b, "line %d: qemu-img: Could not open 'vms/db/root.img': Permission denied\n", i)
		}
		reason := strings.TrimSuffix(b.String(), "\n")
		pkg := mustCreate(t, e, 930,
			true, nc(931, "", "longr", "create_image", ""), nc(932, "", "longc", "probe", ""), nc(933, "", "longd", "probe", ""))
		other, another := mustNext(t, e, "longc"), mustNext(t, e, "longd")
		mustComplete(t, e, mustNext(t, e, "longr"), false, reason, "")
		ctx := cdpTab(t, bctx)
		cdpDo(t, ctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateScale(2)))
		for i, path := range []string{"/ui/packages/" + pkg, "/ui/commands/" + fixedID(931)} {
			cdpOpen(t, ctx, base+path, true)
			if h := cdpEval[float64](t, ctx, `document.querySelector(".summary").getBoundingClientRect().height`); h > 900 {
				t.Errorf("%s on a phone: the summary is %.0f pixels high", path, h)
			}
			if !cdpEval[bool](t, ctx, `document.querySelector(".summary .cause").textContent.includes("line 0: qemu-img")`) {
				t.Errorf("%s: the reason's first line is not shown", path)
			}
			if !cdpEval[bool](t, ctx, `!!document.querySelector(".summary details.reason-more summary")`) {
				t.Fatalf("%s: no way to open the whole reason", path)
			}
			cdpDo(t, ctx, chromedp.Click(chromedp.CSS(".summary details.reason-more summary")))
			const copied = `(() => {
				const full = document.querySelector(".summary details.reason-more[open] .reason-full");
				if (!full || full.getBoundingClientRect().height === 0) return "";
				getSelection().selectAllChildren(full);
				return getSelection().toString();
			})()`
			if got := cdpEval[string](t, ctx, copied); got != reason {
				t.Errorf("%s: opened, the reason copies as %d bytes, not the %d of the reason", path, len(got), len(reason))
			}
			cdpDo(t, ctx, chromedp.Evaluate[chromedp.Void](`document.querySelector(".summary").swapped = false;
				document.querySelector(".summary details.reason-more summary").focus()`))
			mustComplete(t, e, []*spinbroker.Command{other, another}[i], true, "", "")
			cdpWait(t, ctx, `document.querySelector(".summary").swapped === undefined`)
			if !cdpEval[bool](t, ctx, `!!document.querySelector(".summary details.reason-more[open]")`) {
				t.Errorf("%s: a live update closed the reason the reader opened", path)
			}
			// A keyboard that opened it is still on it.
			if !cdpEval[bool](t, ctx, `document.activeElement === document.querySelector(".summary details.reason-more summary")`) {
				t.Errorf("%s: a live update took the keyboard's focus off the reason's summary to %s", path, cdpEval[string](t, ctx, `document.activeElement.tagName`))
			}
			if i == 0 {
				screenshots(t, ctx, dir, "package-long-reason")
			}
		}
	})

	t.Run("ExactTimes", func(t *testing.T) {
		// The exact times of a package, a command and an agent's last ask
		// are on their pages to be read, with their time zone: a title
		// shown on hover reaches no touch screen and no keyboard.
		exact := func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05") + " UTC" }
		p, err := e.db.PackageInfo(ctx, w.failed)
		if err != nil {
			t.Fatal(err)
		}
		c, err := e.db.Command(ctx, w.failedCmd)
		if err != nil {
			t.Fatal(err)
		}
		mustCreate(t, e, 940, true, nc(941, "", "timed", "tick", ""), nc(942, "", "timed", "tock", ""))
		asked := e.clock.Now()
		e.next("timed")
		checks := []struct {
			path, part string
			want       []string
		}{
			{"/ui/packages/" + w.failed, ".summary .facts", []string{exact(p.CreatedAt), exact(*p.EnqueuedAt), exact(*p.FinishedAt)}},
			{"/ui/commands/" + w.failedCmd, ".summary .timeline", []string{exact(c.CreatedAt), exact(*c.EnqueuedAt), exact(*c.FinishedAt)}},
			{"/ui/queues/timed", ".summary .facts", []string{exact(asked)}},
		}
		ctx := cdpTab(t, bctx)
		for _, vp := range []chromedp.Action[chromedp.Void]{
			chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateScale(2)),
			chromedp.EmulateViewport(1280, 800),
		} {
			cdpDo(t, ctx, vp)
			for _, ch := range checks {
				cdpOpen(t, ctx, base+ch.path, true)
				text := cdpEval[string](t, ctx, `document.querySelector("`+ch.part+`").innerText`)
				for _, want := range ch.want {
					if !strings.Contains(text, want) {
						t.Errorf("%s at a width of %d: %q is not in view:\n%s", ch.path, cdpEval[int](t, ctx, `innerWidth`), want, text)
					}
				}
			}
		}
	})

	t.Run("RightToLeft", func(t *testing.T) {
		// A reason or a key in a right-to-left script, quoted in a sentence,
		// keeps its own punctuation: its "!" ends it on its left, where
		// without isolation it joined the English around it, on the right.
		failed := mustCreate(t, e, 950, true, nc(951, "מפתח!", "rtl", "create_image", ""))
		mustComplete(t, e, mustNext(t, e, "rtl"), false, "אין מקום בדיסק!", "")
		mustCreate(t, e, 960, true, nc(961, "גיבוי!", "rtlc", "backup", ""), nc(962, "", "rtld", "restore", "", "גיבוי!"))
		const order = `((sel) => {
			const root = document.querySelector(sel);
			if (!root) return "missing";
			const walk = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
			let bang, first;
			const rect = (n, i) => { const r = document.createRange(); r.setStart(n, i); r.setEnd(n, i + 1); return r.getBoundingClientRect(); };
			for (let n; (n = walk.nextNode());) {
				const i = n.data.indexOf("!"), j = n.data.search(/[\u05d0-\u05ea]/);
				if (i >= 0 && !bang) bang = rect(n, i);
				if (j >= 0 && !first) first = rect(n, j);
			}
			if (!bang || !first) return "no text";
			return bang.right <= first.left + 1 ? "isolated" : "joins the text around it";
		})`
		checks := []struct{ path, sel string }{
			{"/ui/packages/" + failed, ".summary .cause q"},
			{"/ui/commands/" + fixedID(951), ".summary .cause q"},
			{"/ui/commands/" + fixedID(951), ".ids code:nth-of-type(2)"},
			{"/ui/queues/rtld", ".waits .dep .key"},
			// The graph's box: "key · action" in an SVG <text>.
			{"/ui/packages/" + failed, ".dag .node .action"},
		}
		ctx := cdpTab(t, bctx)
		for _, vp := range []chromedp.Action[chromedp.Void]{
			chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateScale(2)),
			chromedp.EmulateViewport(1280, 800),
		} {
			cdpDo(t, ctx, vp)
			for _, ch := range checks {
				cdpOpen(t, ctx, base+ch.path, true)
				if got := cdpEval[string](t, ctx, order+`("`+ch.sel+`")`); got != "isolated" {
					t.Errorf("%s, %s at a width of %d: %s: %q", ch.path, ch.sel, cdpEval[int](t, ctx, `innerWidth`), got,
						cdpEval[string](t, ctx, `((p) => p.innerText ?? p.textContent)((document.querySelector("`+ch.sel+`") || {}).parentElement)`))
				}
			}
		}
		screenshots(t, ctx, dir, "package-rtl")
	})

	t.Run("KeyboardKeepsItsPlace", func(t *testing.T) {
		// Someone tabbing through a table keeps their place when the page
		// updates itself: on the link they were on, not on the first link
		// of the table to the same page (every row's queue is one).
		pkg := mustCreate(t, e, 970, true, nc(971, "", "kbd", "one", ""), nc(972, "", "kbd", "two", ""), nc(973, "", "kbd", "three", ""))
		ctx := cdpTab(t, bctx)
		cdpOpen(t, ctx, base+"/ui/packages/"+pkg, true)
		const third = `document.querySelectorAll('#f-commands a[href="/ui/queues/kbd"]')[2]`
		cdpDo(t, ctx, chromedp.Evaluate[chromedp.Void](third+`.focus(); document.querySelector("#f-commands table").swapped = false`))
		mustComplete(t, e, mustNext(t, e, "kbd"), true, "", "")
		cdpWait(t, ctx, `document.querySelector("#f-commands table").swapped === undefined`)
		if !cdpEval[bool](t, ctx, `document.activeElement === `+third) {
			t.Errorf("after a live update the keyboard's focus is on %s, not the third row's queue", cdpEval[string](t, ctx, `document.activeElement.closest("tr") ? document.activeElement.closest("tr").textContent.trim().slice(0, 40) : document.activeElement.tagName`))
		}
	})

	t.Run("KeyboardActions", func(t *testing.T) {
		// A button pressed with the keyboard leaves the keyboard where it
		// was: on the button that undoes it (pause, then resume), or, where
		// the button goes away (cancel), on the part that shows the new
		// state; never back at the top of the page.
		pkg := mustCreate(t, e, 980, true, nc(981, "", "kbda", "one", ""))
		ctx := cdpTab(t, bctx)
		acceptDialogs(ctx)
		focused := func() string {
			return cdpEval[string](t, ctx, `document.activeElement.tagName + " " + document.activeElement.textContent.trim().slice(0, 30)`)
		}
		cdpOpen(t, ctx, base+"/ui/queues/kbda", true)
		cdpDo(t, ctx, chromedp.Focus(chromedp.CSS(`form[action$="/pause"] button`)), chromedp.KeyEvent("\r"))
		cdpWait(t, ctx, `!!document.querySelector('form[action$="/resume"]')`)
		if got := focused(); got != "BUTTON Resume" {
			t.Errorf("after Pause by keyboard the focus is on %q, not the Resume button", got)
		}
		cdpDo(t, ctx, chromedp.KeyEvent("\r"))
		cdpWait(t, ctx, `!!document.querySelector('form[action$="/pause"]')`)
		if got := focused(); got != "BUTTON Pause" {
			t.Errorf("after Resume by keyboard the focus is on %q, not the Pause button", got)
		}
		cdpOpen(t, ctx, base+"/ui/packages/"+pkg, true)
		cdpDo(t, ctx, chromedp.Focus(chromedp.CSS(`form[action$="/cancel"] button`)), chromedp.KeyEvent("\r"))
		cdpWait(t, ctx, `document.querySelector(".big-state").textContent.includes("cancelled")`)
		if !cdpEval[bool](t, ctx, `!!document.activeElement.closest("#f-summary")`) {
			t.Errorf("after Cancel package by keyboard the focus is on %q, not the summary", focused())
		}
	})

	t.Run("Contrast", func(t *testing.T) {
		// In light and in dark, text stands out from what is behind it by
		// 4.5:1 at least (3:1 when large), and the edge of a text box by
		// 3:1 (WCAG 2.2, 1.4.3 and 1.4.11): where the boxes' edges were
		// 1.3:1, the search box and the concurrency box were hard to find.
		// A box's placeholder ("Find by id or prefix…") is text too.
		const low = `(() => {
			const parse = c => {
				let m = c.match(/rgba?\(([^)]+)\)/);
				if (m) { const p = m[1].split(/[ ,\/]+/).filter(Boolean).map(Number); return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1]; }
				m = c.match(/color\(srgb ([^)]+)\)/);
				if (m) { const p = m[1].split(/[ \/]+/).filter(Boolean).map(Number); return [p[0] * 255, p[1] * 255, p[2] * 255, p.length > 3 ? p[3] : 1]; }
				return null;
			};
			const over = (top, bot) => [0, 1, 2].map(i => top[i] * top[3] + bot[i] * (1 - top[3])).concat(1);
			const behind = el => {
				const layers = [];
				for (let e = el; e; e = e.parentElement) {
					const c = parse(getComputedStyle(e).backgroundColor);
					if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
				}
				return layers.reduceRight((b, l) => over(l, b), [255, 255, 255, 1]);
			};
			const lum = c => 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
			const f = v => (v /= 255) <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
			const ratio = (a, b) => { const x = lum(a), y = lum(b); return (Math.max(x, y) + 0.05) / (Math.min(x, y) + 0.05); };
			const out = [];
			document.querySelectorAll("body *").forEach(el => {
				if (!el.getClientRects().length || el.closest("svg")) return;
				if (![...el.childNodes].some(n => n.nodeType === 3 && n.data.trim())) return;
				const cs = getComputedStyle(el), bg = behind(el), r = ratio(over(parse(cs.color), bg), bg);
				const size = parseFloat(cs.fontSize), large = size >= 24 || parseInt(cs.fontWeight) >= 700 && size >= 18.66;
				if (r < (large ? 3 : 4.5)) out.push(el.tagName + "." + el.className + " " + r.toFixed(2) + " " + JSON.stringify(el.textContent.trim().slice(0, 20)));
			});
			document.querySelectorAll("input:not([type=hidden])").forEach(el => {
				const edge = parse(getComputedStyle(el).borderTopColor), r = ratio(edge, behind(el.parentElement));
				if (r < 3) out.push("the edge of input " + el.name + " " + r.toFixed(2));
				if (!el.placeholder) return;
				const bg = behind(el), hint = ratio(over(parse(getComputedStyle(el, "::placeholder").color), bg), bg);
				if (hint < 4.5) out.push("the placeholder of input " + el.name + " " + hint.toFixed(2));
			});
			return out;
		})()`
		ctx := cdpTab(t, bctx)
		for _, dark := range []bool{false, true} {
			cdpDo(t, ctx, colorScheme(dark))
			for _, path := range []string{"/ui/", "/ui/queues/network", "/ui/packages/" + w.failed, "/ui/commands/" + w.failedCmd, "/ui/search?q=ffff"} {
				cdpOpen(t, ctx, base+path, !strings.HasPrefix(path, "/ui/search"))
				if bad := cdpEval[[]string](t, ctx, low); len(bad) > 0 {
					t.Errorf("%s (dark %v): too little contrast: %q", path, dark, bad)
				}
			}
		}
	})

	t.Run("LiveStatusSpoken", func(t *testing.T) {
		// Whether the page still updates itself is said to screen readers
		// when it changes (a status region), not only shown as a dot: a
		// blind operator would otherwise go on trusting a page that said
		// "reconnecting…". Its first "live", on every page opened, is not
		// spoken.
		ea := newEnv(t, httpapi.Options{})
		seedWorld(t, ea)
		ctx := cdpTab(t, bctx, "ERR_INCOMPLETE_CHUNKED_ENCODING", "ERR_CONNECTION_REFUSED")
		cdpOpen(t, ctx, ea.srv.URL+"/ui/", false)
		cdpWait(t, ctx, `document.getElementById("live").textContent === "live"`)
		if !cdpEval[bool](t, ctx, `document.getElementById("live").getAttribute("role") === "status"`) {
			t.Error("the live indicator is no status region once the stream is open")
		}
		ea.srv.CloseClientConnections()
		cdpWait(t, ctx, `document.getElementById("live").textContent !== "live"`)
		if !cdpEval[bool](t, ctx, `document.getElementById("live").getAttribute("role") === "status"`) {
			t.Error("the live indicator is no status region once the stream dropped")
		}
	})

	t.Run("WithoutJavaScript", func(t *testing.T) {
		ctx := cdpTab(t, bctx)
		cdpDo(t, ctx, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			_, err := cdp.Call(ctx, t, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true})
			return err
		}))
		// The page is whole, and the button is a plain form post. The
		// broker asks first, on a page of its own, then comes back to the
		// package with the new state.
		cdpOpen(t, ctx, base+"/ui/packages/"+w.staging, false)
		cdpDo(t, ctx, chromedp.Click(chromedp.CSS(`form[action$="/cancel"] button`)))
		cdpWait(t, ctx, `document.querySelector("main") && document.querySelector("main").textContent.includes("Cancel this package?")`)
		if p, _ := e.db.PackageInfo(ctx, w.staging); p.State == spinbroker.PackageCancelled {
			t.Fatal("one click without JavaScript cancelled the package before asking")
		}
		screenshots(t, ctx, dir, "cancel-nojs")
		cdpDo(t, ctx, chromedp.Click(chromedp.CSS(`form[action$="/cancel"] button`)))
		cdpWait(t, ctx, `document.querySelector(".big-state") && document.querySelector(".big-state").textContent.includes("cancelled")`)
		screenshots(t, ctx, dir, "package-nojs")
	})

	t.Run("CrossOrigin", func(t *testing.T) {
		ctx := cdpTab(t, bctx, "403 (Forbidden)")
		// A page on another site with a form that posts to the broker.
		evil := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			rw.Header().Set("Content-Type", "text/html")
			fmt.Fprintf(rw, `<!doctype html><title>Prize</title><form method="post" action="%s/ui/packages/%s/cancel"><button id="go">Claim your prize</button></form>`, base, w.running)
		}))
		defer evil.Close()
		cdpDo(t, ctx, chromedp.Navigate(strings.Replace(evil.URL, "127.0.0.1", "localhost", 1)),
			chromedp.Click(chromedp.ID("go")))
		cdpWait(t, ctx, `location.href.startsWith("`+base+`") && document.body.innerText.includes("cross-origin request refused")`)
		if p, _ := e.db.PackageInfo(ctx, w.running); p.State == spinbroker.PackageCancelled {
			t.Error("another site's form cancelled the package")
		}
	})

	t.Run("Login", func(t *testing.T) {
		ctx := cdpTab(t, bctx)
		ea := newEnv(t, httpapi.Options{Auth: true})
		wa := seedWorld(t, ea)
		_, secret, err := ea.db.CreateToken(ctx, spinbroker.RoleViewer, "", "viewer")
		if err != nil {
			t.Fatal(err)
		}
		cdpOpen(t, ctx, ea.srv.URL+"/ui/packages/"+wa.running, false)
		cdpWait(t, ctx, `location.pathname === "/ui/login"`)
		screenshots(t, ctx, dir, "login")
		cdpDo(t, ctx, chromedp.SendKeys(chromedp.ID("token"), secret),
			chromedp.Click(chromedp.CSS(`button[type="submit"]`)))
		// Back where it started, as a viewer: no buttons, and the token is
		// out of the page's reach.
		cdpWait(t, ctx, `location.pathname === "/ui/packages/`+wa.running+`" && !!document.querySelector(".dag")`)
		cdpWait(t, ctx, `document.getElementById("live").textContent === "live"`)
		if !cdpEval[bool](t, ctx, `!document.querySelector('form[action$="/cancel"]') && !document.cookie.includes("spinbroker_token") && document.querySelector(".who").textContent === "viewer"`) {
			t.Error("a viewer is offered cancel, or the page can read the token")
		}
	})

	t.Run("ButtonAfterLogout", func(t *testing.T) {
		// A button pressed on a page left open after logging out in
		// another tab: the broker refuses it (401), and the page takes
		// the operator to the login form, which leads back to it, rather
		// than saying above the page that a header should be sent.
		ctx := cdpTab(t, bctx, "401 (Unauthorized)")
		ea := newEnv(t, httpapi.Options{Auth: true})
		seedWorld(t, ea)
		secret := ea.secret(spinbroker.RoleAdmin, "", "admin")
		cdpOpen(t, ctx, ea.srv.URL+"/ui/queues/storage", false)
		cdpWait(t, ctx, `location.pathname === "/ui/login"`)
		cdpDo(t, ctx, chromedp.SendKeys(chromedp.ID("token"), secret),
			chromedp.Click(chromedp.CSS(`button[type="submit"]`)))
		cdpWait(t, ctx, `location.pathname === "/ui/queues/storage" && document.getElementById("live").textContent === "live"`)
		cdpDo(t, ctx, chromedp.Evaluate[chromedp.Void](`fetch("/ui/logout", {method: "POST"}).then(() => { window.loggedOut = true })`))
		cdpWait(t, ctx, `window.loggedOut === true`)
		cdpDo(t, ctx, chromedp.Click(chromedp.CSS(`form[action$="/pause"] button`)))
		cdpWait(t, ctx, `location.pathname === "/ui/login" && new URLSearchParams(location.search).get("next") === "/ui/queues/storage"`)
		if q, err := ea.db.Queue(ctx, "storage"); err != nil || q.Paused {
			t.Errorf("the queue was paused without a token (%v)", err)
		}
	})

	t.Run("StreamRefused", func(t *testing.T) {
		// The broker answers the event stream's reconnection with an error
		// (here the operator logged out in another tab; a token revoked or
		// a broker restarted with --auth do the same): the browser never
		// tries again, so the page may not go on saying "reconnecting…"
		// over data that no longer changes. It finds out why and says so:
		// here, with the login form.
		ctx := cdpTab(t, bctx, "401 (Unauthorized)", "ERR_INCOMPLETE_CHUNKED_ENCODING")
		ea := newEnv(t, httpapi.Options{Auth: true})
		wa := seedWorld(t, ea)
		secret := ea.secret(spinbroker.RoleViewer, "", "viewer")
		cdpOpen(t, ctx, ea.srv.URL+"/ui/packages/"+wa.running, false)
		cdpWait(t, ctx, `location.pathname === "/ui/login"`)
		cdpDo(t, ctx, chromedp.SendKeys(chromedp.ID("token"), secret),
			chromedp.Click(chromedp.CSS(`button[type="submit"]`)))
		cdpWait(t, ctx, `location.pathname === "/ui/packages/`+wa.running+`" && document.getElementById("live").textContent === "live"`)
		cdpDo(t, ctx, chromedp.Evaluate[chromedp.Void](`fetch("/ui/logout", {method: "POST"}).then(() => { window.loggedOut = true })`))
		cdpWait(t, ctx, `window.loggedOut === true`)
		ea.srv.CloseClientConnections() // the stream drops and reconnects, without the cookie
		cdpWait(t, ctx, `location.pathname === "/ui/login"`)
	})

	t.Logf("screenshots (light and dark, laptop and phone) are in %s; the browser tests took %s", dir, time.Since(start).Round(time.Millisecond))
}

// acceptDialogs accepts every JavaScript dialog (the cancel button's
// question) the tab opens, as a person would.
func acceptDialogs(ctx context.Context) {
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for _, err := range dialogs {
			if err != nil {
				return
			}
			chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true}) //nolint:errcheck
		}
	}()
}
