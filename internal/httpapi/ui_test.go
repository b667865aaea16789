package httpapi_test

import (
	"context"
	"crypto/tls"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/httpapi"
)

func uiRef[T any](v T) *T { return &v }

// fixedID makes the n-th id of the test data: fixed ids keep rendered pages
// (and their golden files) the same from run to run.
func fixedID(n int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012d", n) }

// Hostile values: user data the dashboard must show as text, never run.
const (
	hostileScript = `<script>alert("pwned")</script>`
	hostileAttr   = `"><img src=x onerror=alert(1)>`
)

// world is a broker with a bit of everything in it, made through the store
// with the clock moving between steps, so that every page has something to
// show: a package that succeeded, one that failed (with a cascade), one
// running with a graph, one queued, one in staging, and one full of hostile
// values.
type world struct {
	done, failed, running, queued, staging, hostile string // package ids
	failedCmd                                       string // the command whose failure failed its package
	cascaded                                        string // a command cancelled by that failure
	leased                                          *spinbroker.Command
	waiting                                         string // a ready command no agent has taken
	blocked                                         string // a blocked command of the running package
	hostileCmd                                      string
}

func mustCreate(t testing.TB, e *env, id int, enqueue bool, cmds ...spinbroker.NewCommand) string {
	t.Helper()
	p, _, err := e.db.CreatePackage(ctx, spinbroker.NewPackage{ID: fixedID(id), Commands: cmds, Enqueue: enqueue}, nil)
	if err != nil {
		t.Fatalf("create package %d: %v", id, err)
	}
	return p.ID
}

func nc(id int, key, resource, action, params string, deps ...string) spinbroker.NewCommand {
	c := spinbroker.NewCommand{ID: fixedID(id), Key: key, Resource: resource, Action: action, Dependencies: deps}
	if params != "" {
		c.Parameters = json.RawMessage(params)
	}
	return c
}

func mustNext(t testing.TB, e *env, resource string) *spinbroker.Command {
	t.Helper()
	c, _, err := e.db.Next(ctx, resource, 0)
	if err != nil || c == nil {
		t.Fatalf("next %s: %v %v", resource, c, err)
	}
	return c
}

func mustComplete(t testing.TB, e *env, c *spinbroker.Command, ok bool, reason, output string) {
	t.Helper()
	res := spinbroker.Result{Status: &ok, Lease: c.Lease.Token}
	if reason != "" {
		res.Reason = &reason
	}
	if output != "" {
		res.Output = json.RawMessage(output)
	}
	if _, err := e.db.Complete(ctx, c.ID, res); err != nil {
		t.Fatalf("complete %s: %v", c.ID, err)
	}
}

func seedWorld(t testing.TB, e *env) *world {
	t.Helper()
	w := &world{}
	tick := func() { e.clock.Add(97 * time.Second) }

	w.done = mustCreate(t, e, 1, true, nc(101, "", "storage", "add_volume", `{"path": "volumes/base"}`))
	mustComplete(t, e, mustNext(t, e, "storage"), true, "", `{"created": "volumes/base"}`)
	tick()

	w.failed = mustCreate(t, e, 2, true,
		nc(201, "img", "storage", "create_image", `{"volume_path": "volumes/base", "image_name": "db.img", "image_size": 500}`),
		nc(202, "cfg", "emulation", "write_config", `{"id": "db"}`, "img"),
		nc(203, "", "emulation", "start", `{"id": "db"}`, "cfg"))
	w.failedCmd, w.cascaded = fixedID(201), fixedID(202)
	tick()
	mustComplete(t, e, mustNext(t, e, "storage"), false, "not enough space: 500 GiB asked, 120 GiB free", "")
	tick()

	w.running = mustCreate(t, e, 3, true,
		nc(301, "vol", "storage", "add_volume", `{"path": "vms/web"}`),
		nc(302, "disk", "storage", "create_image", `{"volume_path": "vms/web", "image_name": "root.img", "image_size": 20}`, "vol"),
		nc(303, "net", "network", "create_bridge", `{"name": "br-web"}`),
		nc(304, "cfg", "emulation", "write_config", `{"id": "web", "vm": {"name": "web", "cpus": 2, "memory": 4096, "images": [{"path": "vms/web/root.img"}]}}`, "disk", "net"),
		nc(305, "", "emulation", "start", `{"id": "web"}`, "cfg"))
	mustComplete(t, e, mustNext(t, e, "storage"), true, "", "")
	w.waiting, w.blocked = fixedID(303), fixedID(304)
	tick()

	w.queued = mustCreate(t, e, 4, true,
		nc(401, "", "network", "configure_dns", `{"zone": "web.internal"}`),
		nc(402, "", "network", "open_port", `{"port": 443}`))
	tick()

	w.staging = mustCreate(t, e, 5, false, nc(501, "", "storage", "add_volume", `{"path": "volumes/next"}`))
	tick()

	w.hostile = mustCreate(t, e, 6, true, nc(601, hostileAttr, "misc", "echo",
		`{"text": "`+strings.ReplaceAll(hostileScript, `"`, `\"`)+`", "attr": "`+strings.ReplaceAll(hostileAttr, `"`, `\"`)+`"}`))
	w.hostileCmd = fixedID(601)
	mustComplete(t, e, mustNext(t, e, "misc"), false, hostileScript, `{"html": "`+strings.ReplaceAll(hostileAttr, `"`, `\"`)+`"}`)
	tick()
	// Leased last, so that its lease has not run out on the test's clock.
	w.leased = mustNext(t, e, "storage")
	e.clock.Add(20 * time.Second)
	return w
}

// page is a GET as a browser makes it.
func (e *env) page(path string, header ...string) response {
	e.t.Helper()
	return e.do("GET", path, "", append([]string{"Accept", "text/html"}, header...)...)
}

// form posts an urlencoded form without following redirects.
func (e *env) form(path string, values url.Values, header ...string) response {
	e.t.Helper()
	req, err := http.NewRequest("POST", e.srv.URL+path, strings.NewReader(values.Encode()))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return e.send(req)
}

// send does a request without following redirects.
func (e *env) send(req *http.Request) response {
	e.t.Helper()
	client := *e.srv.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

func (e *env) get(path string, header ...string) response {
	e.t.Helper()
	req, err := http.NewRequest("GET", e.srv.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Accept", "text/html")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return e.send(req)
}

func wantHTML(t testing.TB, r response, status int, contains ...string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %.500s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Fatalf("Content-Type %q, want text/html", ct)
	}
	if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("no content security policy: %q", csp)
	}
	for _, c := range contains {
		if !strings.Contains(string(r.body), c) {
			t.Errorf("page lacks %q", c)
		}
	}
}

func TestUI_Pages(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	w := seedWorld(t, e)
	tests := []struct {
		name, path string
		status     int
		contains   []string
	}{
		{"Overview", "/ui/", 200, []string{"<h1>Overview</h1>", `href="/ui/queues/storage"`, `href="/ui/packages/` + w.running + `"`, "Completions per minute", "2 succeeded", "1/1 done", `data-events="/events"`}},
		{"Packages", "/ui/packages", 200, []string{`<h1 id="h-packages">Packages</h1>`, `href="/ui/packages/` + w.failed + `"`, `href="/ui/packages/` + w.staging + `"`}},
		{"PackagesFailed", "/ui/packages?state=failed", 200, []string{`href="/ui/packages/` + w.failed + `"`, `aria-current="page"><svg class="ico st-failed"`}},
		{"PackagesPaged", "/ui/packages?state=running", 200, []string{`href="/ui/packages/` + w.running + `"`}},
		{"PackageRunning", "/ui/packages/" + w.running, 200, []string{"Cancel package", `class="dag"`, `class="node st-leased"`, "create_bridge", "write_config", `data-events="/events?package=` + w.running + `"`, `marker-end="url(#arrow)"`}},
		{"PackageFailed", "/ui/packages/" + w.failed, 200, []string{"Caused by", "not enough space: 500 GiB asked, 120 GiB free", `href="/ui/commands/` + w.failedCmd + `"`, "dependency " + w.failedCmd + " failed"}},
		{"PackageStaging", "/ui/packages/" + w.staging, 200, []string{"not yet (staging)", "Cancel package"}},
		{"QueueStorage", "/ui/queues/storage", 200, []string{"Queue <code>storage</code>", "Agents hold 1 leased", "lease ends", "Pause"}},
		{"QueueNetwork", "/ui/queues/network", 200, []string{"3 ready", `class="head"`, "create_bridge", "configure_dns"}},
		{"QueueEmulation", "/ui/queues/emulation", 200, []string{"Nothing is ready", `class="dep"`, `href="/ui/commands/` + fixedID(302) + `"`, `href="/ui/commands/` + fixedID(303) + `"`}},
		{"QueueUnused", "/ui/queues/never-used", 200, []string{"Empty: nothing is waiting"}},
		{"QueueAfter", "/ui/queues/network?after=1", 200, []string{"configure_dns"}},
		{"CommandLeased", "/ui/commands/" + w.leased.ID, 200, []string{"create_image", "Lease expires", "in 40s", "attempt 1 of 3", `href="/ui/commands/` + fixedID(301) + `"`, `href="/ui/commands/` + fixedID(304) + `"`, "&#34;image_size&#34;: 20"}},
		{"CommandFailed", "/ui/commands/" + w.failedCmd, 200, []string{"Retry", "not enough space"}},
		// Its retry would be refused while its dependency is failed: the
		// page says so instead of offering a button that can only fail.
		{"CommandCascaded", "/ui/commands/" + w.cascaded, 200, []string{"No retry: command " + w.cascaded + " cannot run again while its dependency " + w.failedCmd + " is failed", "dependency " + w.failedCmd + " failed"}},
		{"Search", "/ui/search", 200, []string{`<h1>Search</h1>`}},
		{"SearchNothing", "/ui/search?q=ffff", 200, []string{"Nothing matches"}},
		{"SearchMany", "/ui/search?q=00000000", 200, []string{"Packages", "Commands"}},
		{"Login", "/ui/login", 303, nil}, // auth is off
		{"BadState", "/ui/packages?state=sleeping", 400, []string{"not a package state"}},
		{"BadCursor", "/ui/packages?cursor=nope", 400, []string{"cursor"}},
		{"NotAnID", "/ui/packages/nope", 404, []string{"not found"}},
		{"NoPackage", "/ui/packages/" + fixedID(99), 404, []string{"not found"}},
		{"NoCommand", "/ui/commands/" + fixedID(9999), 404, []string{"not found"}},
		{"BadQueue", "/ui/queues/NOT_OK", 400, []string{"not a valid name"}},
		{"BadAfter", "/ui/queues/storage?after=x", 400, []string{"after must be"}},
		{"NoPage", "/ui/nowhere", 404, []string{"there is no page"}},
		{"NoFragment", "/ui/?fragment=nope", 404, []string{"no fragment"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := *e
			c.t = t
			r := c.get(tt.path)
			if tt.status == 303 {
				if r.status != 303 {
					t.Fatalf("status %d, want 303", r.status)
				}
				return
			}
			wantHTML(t, r, tt.status, tt.contains...)
			if !strings.Contains(string(r.body), "<!doctype html>") {
				t.Error("not a whole page")
			}
		})
	}
}

func TestUI_Fragments(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	w := seedWorld(t, e)
	for _, tt := range []struct{ path, fragment, want string }{
		{"/ui/", "queues", `href="/ui/queues/network"`},
		{"/ui/", "chart", `<svg viewBox="0 0 640 150" role="img"`},
		{"/ui/", "packages", `href="/ui/packages/` + w.hostile + `"`},
		{"/ui/packages", "list", `href="/ui/packages/` + w.done + `"`},
		{"/ui/packages/" + w.running, "summary", "Cancel package"},
		{"/ui/packages/" + w.running, "graph", `class="dag"`},
		{"/ui/packages/" + w.running, "commands", "create_bridge"},
		{"/ui/queues/network", "summary", "3 ready"},
		{"/ui/queues/network", "commands", "configure_dns"},
		{"/ui/commands/" + w.leased.ID, "summary", "Lease expires"},
		{"/ui/commands/" + w.leased.ID, "links", "Depends on"},
	} {
		t.Run(tt.fragment, func(t *testing.T) {
			c := *e
			c.t = t
			sep := "?"
			if strings.Contains(tt.path, "?") {
				sep = "&"
			}
			r := c.get(tt.path + sep + "fragment=" + tt.fragment)
			wantHTML(t, r, 200, tt.want)
			if strings.Contains(string(r.body), "<html") || strings.Contains(string(r.body), "<header") {
				t.Errorf("fragment %s is a whole page", tt.fragment)
			}
		})
	}
}

// TestUI_Escaping shows hostile parameters, keys, reasons and outputs on
// every page that shows them: they must arrive as text.
func TestUI_Escaping(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	w := seedWorld(t, e)
	for _, path := range []string{
		"/ui/",
		"/ui/packages",
		"/ui/packages/" + w.hostile,
		"/ui/commands/" + w.hostileCmd,
		"/ui/queues/misc",
		"/ui/search?q=" + url.QueryEscape(hostileScript),
		"/ui/search?q=" + url.QueryEscape(hostileAttr),
		"/ui/nowhere/" + url.PathEscape(hostileScript),
	} {
		t.Run(path, func(t *testing.T) {
			c := *e
			c.t = t
			r := c.get(path)
			body := string(r.body)
			for _, bad := range []string{"<script>alert", "<img src=x", "onerror=alert(1)>"} {
				if strings.Contains(body, bad) {
					t.Errorf("%s shows %q unescaped", path, bad)
				}
			}
		})
	}
	r := e.get("/ui/commands/" + w.hostileCmd)
	wantHTML(t, r, 200, "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;", "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;")
}

func TestUI_Redirects(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	w := seedWorld(t, e)
	for _, tt := range []struct{ path, location string }{
		{"/", "/ui/"},
		{"/ui", "/ui/"},
		{"/ui/search?q=" + w.running, "/ui/packages/" + w.running},
		{"/ui/search?q=" + strings.ToUpper(w.running), "/ui/packages/" + w.running},
		{"/ui/search?q=" + w.leased.ID, "/ui/commands/" + w.leased.ID},
		{"/ui/search?q=emu", "/ui/queues/emulation"},
		{"/ui/login", "/ui/"},
		{"/ui/logout", "/ui/"},
	} {
		r := e.get(tt.path)
		if r.status/100 != 3 || r.header.Get("Location") != tt.location {
			t.Errorf("GET %s: %d to %q, want a redirect to %q", tt.path, r.status, r.header.Get("Location"), tt.location)
		}
	}
}

func TestUI_Static(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	page := string(e.get("/ui/").body)
	i := strings.Index(page, "/ui/static/app.css?v=")
	if i < 0 {
		t.Fatal("the page links no versioned stylesheet")
	}
	versioned := page[i : i+len("/ui/static/app.css?v=")+12]
	for _, tt := range []struct {
		path, contentType, cache string
		status                   int
	}{
		{versioned, "text/css; charset=utf-8", "public, max-age=31536000, immutable", 200},
		{"/ui/static/app.css", "text/css; charset=utf-8", "no-cache", 200},
		{"/ui/static/app.js", "text/javascript; charset=utf-8", "no-cache", 200},
		{"/ui/static/favicon.svg", "image/svg+xml", "no-cache", 200},
		{"/favicon.ico", "image/svg+xml", "no-cache", 200},
		{"/ui/static/", "text/html; charset=utf-8", "no-store", 404},
		{"/ui/static/nope.css", "text/html; charset=utf-8", "no-store", 404},
		{"/ui/static/../web.go", "text/html; charset=utf-8", "no-store", 404},
	} {
		r := e.get(tt.path)
		if r.status != tt.status || r.header.Get("Content-Type") != tt.contentType || r.header.Get("Cache-Control") != tt.cache {
			t.Errorf("GET %s: %d %q %q, want %d %q %q", tt.path, r.status, r.header.Get("Content-Type"), r.header.Get("Cache-Control"), tt.status, tt.contentType, tt.cache)
		}
	}
	// A browser that has the file already is told so.
	r := e.get("/ui/static/app.css")
	r2 := e.get("/ui/static/app.css", "If-None-Match", r.header.Get("ETag"))
	if r2.status != http.StatusNotModified {
		t.Errorf("revalidation answered %d, want 304", r2.status)
	}
}

func TestUI_Actions(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	w := seedWorld(t, e)
	fetch := []string{"X-Requested-With", "fetch"}
	yes := url.Values{"confirmed": {"yes"}}
	tests := []struct {
		name, path string
		form       url.Values
		header     []string
		status     int
		location   string
	}{
		{"CancelAsks", "/ui/packages/" + w.queued + "/cancel", nil, nil, 200, ""},
		{"Cancel", "/ui/packages/" + w.queued + "/cancel", yes, nil, 303, "/ui/packages/" + w.queued},
		{"CancelAgain", "/ui/packages/" + w.queued + "/cancel", yes, fetch, 204, ""},
		{"CancelAgainUnasked", "/ui/packages/" + w.queued + "/cancel", nil, nil, 303, "/ui/packages/" + w.queued},
		{"CancelMissing", "/ui/packages/" + fixedID(99) + "/cancel", yes, nil, 404, ""},
		{"CancelMissingUnasked", "/ui/packages/" + fixedID(99) + "/cancel", nil, nil, 404, ""},
		{"RetryFailed", "/ui/commands/" + w.failedCmd + "/retry", nil, nil, 303, "/ui/commands/" + w.failedCmd},
		{"RetryNotFailed", "/ui/commands/" + fixedID(101) + "/retry", nil, nil, 409, ""},
		{"RetryNotFailedFetch", "/ui/commands/" + fixedID(101) + "/retry", nil, fetch, 409, ""},
		{"Pause", "/ui/queues/network/pause", nil, nil, 303, "/ui/queues/network"},
		{"Resume", "/ui/queues/network/resume", nil, fetch, 204, ""},
		{"Concurrency", "/ui/queues/network/concurrency", url.Values{"concurrency": {"4"}}, nil, 303, "/ui/queues/network"},
		{"ConcurrencyZero", "/ui/queues/network/concurrency", url.Values{"concurrency": {"0"}}, nil, 400, ""},
		{"ConcurrencyWords", "/ui/queues/network/concurrency", url.Values{"concurrency": {"four"}}, fetch, 400, ""},
		{"BadQueue", "/ui/queues/BAD!/pause", nil, nil, 400, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := *e
			c.t = t
			r := c.form(tt.path, tt.form, tt.header...)
			if r.status != tt.status || r.header.Get("Location") != tt.location {
				t.Fatalf("%d to %q, want %d to %q: %s", r.status, r.header.Get("Location"), tt.status, tt.location, r.body)
			}
			if tt.name == "CancelAsks" {
				wantHTML(t, r, http.StatusOK, `<input type="hidden" name="confirmed" value="yes">`)
				if p, _ := e.db.PackageInfo(ctx, w.queued); p.State != spinbroker.PackageQueued {
					t.Errorf("the unconfirmed post left the package %s", p.State)
				}
			}
			if r.status >= 400 {
				want := "text/html; charset=utf-8"
				if len(tt.header) > 0 {
					want = "text/plain; charset=utf-8"
				}
				if ct := r.header.Get("Content-Type"); ct != want {
					t.Errorf("error answered as %q, want %q", ct, want)
				}
			}
		})
	}
	if p, _ := e.db.PackageInfo(ctx, w.queued); p.State != spinbroker.PackageCancelled {
		t.Errorf("package is %s after cancel", p.State)
	}
	if c, _ := e.db.Command(ctx, w.failedCmd); c.State != spinbroker.Ready {
		t.Errorf("command is %s after retry", c.State)
	}
	if q, _ := e.db.Queue(ctx, "network"); q.Paused || q.Concurrency != 4 {
		t.Errorf("queue paused=%v concurrency=%d", q.Paused, q.Concurrency)
	}
}

// TestUI_CrossOrigin posts the dashboard's forms as another site's page
// would: refused, and nothing changes.
func TestUI_CrossOrigin(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	w := seedWorld(t, e)
	for _, h := range [][]string{
		{"Sec-Fetch-Site", "cross-site"},
		{"Sec-Fetch-Site", "same-site"},
		{"Origin", "https://evil.example"},
	} {
		r := e.form("/ui/packages/"+w.queued+"/cancel", nil, h...)
		if r.status != http.StatusForbidden {
			t.Errorf("cross-origin cancel with %v answered %d", h, r.status)
		}
		// The browser shows a page that says why, not the API's JSON.
		wantHTML(t, r, http.StatusForbidden, "cross-origin request refused")
		r = e.form("/ui/queues/network/pause", nil, h...)
		if r.status != http.StatusForbidden {
			t.Errorf("cross-origin pause with %v answered %d", h, r.status)
		}
	}
	if p, _ := e.db.PackageInfo(ctx, w.queued); p.State == spinbroker.PackageCancelled {
		t.Error("a cross-origin post cancelled the package")
	}
	// The same form from the dashboard itself passes.
	r := e.form("/ui/packages/"+w.queued+"/cancel", url.Values{"confirmed": {"yes"}}, "Sec-Fetch-Site", "same-origin", "Origin", e.srv.URL)
	if r.status != http.StatusSeeOther {
		t.Errorf("same-origin cancel answered %d", r.status)
	}
}

// TestUI_APIStaysJSON: the dashboard shares the router, but API paths
// answer JSON whatever a browser asks for.
func TestUI_APIStaysJSON(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	w := seedWorld(t, e)
	for _, path := range []string{"/packages", "/packages/" + w.running, "/queues/storage", "/commands/" + w.leased.ID, "/nowhere", "/packages/nope"} {
		r := e.page(path)
		if ct := r.header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("GET %s answered %q", path, ct)
		}
	}
}

// TestUI_RefusalsArePages: what refuses a dashboard request before its
// handler runs answers as the dashboard does, a page or, to its script,
// plain text; the API's paths keep answering JSON.
func TestUI_RefusalsArePages(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	r := e.do("DELETE", "/ui/packages", "")
	wantHTML(t, r, http.StatusMethodNotAllowed, "DELETE is not allowed on /ui/packages")
	if r.header.Get("Allow") != "GET, HEAD" {
		t.Errorf("405 on a page: Allow %q", r.header.Get("Allow"))
	}
	if r := e.do("DELETE", "/packages", ""); r.status != http.StatusMethodNotAllowed || r.header.Get("Content-Type") != "application/json" {
		t.Errorf("405 on the API: %d %q", r.status, r.header.Get("Content-Type"))
	}

	ea := newEnv(t, httpapi.Options{Auth: true})
	w := seedWorld(t, ea)
	r = ea.do("POST", "/ui/packages/"+w.queued+"/cancel", "", "X-Requested-With", "fetch")
	if r.status != http.StatusUnauthorized || r.header.Get("Content-Type") != "text/plain; charset=utf-8" ||
		r.header.Get("WWW-Authenticate") == "" || !strings.Contains(string(r.body), "a token is required") {
		t.Errorf("the dashboard's script posting without a token: %d %q %q %q", r.status, r.header.Get("Content-Type"), r.header.Get("WWW-Authenticate"), r.body)
	}
}

func TestUI_Auth(t *testing.T) {
	e := newEnv(t, httpapi.Options{Auth: true})
	w := seedWorld(t, e)
	secrets := map[string]string{}
	for _, role := range []string{spinbroker.RoleAdmin, spinbroker.RoleViewer, spinbroker.RoleAgent} {
		res := ""
		if role == spinbroker.RoleAgent {
			res = "storage"
		}
		secret := e.secret(role, res, role)
		secrets[role] = secret
	}
	cookie := func(role string) []string { return []string{"Cookie", httpapi.TokenCookie + "=" + secrets[role]} }

	// A browser without a token is sent to the login form, and back after.
	r := e.get("/ui/packages/" + w.running)
	if r.status != 303 || r.header.Get("Location") != "/ui/login?next="+url.QueryEscape("/ui/packages/"+w.running) {
		t.Fatalf("no token: %d to %q", r.status, r.header.Get("Location"))
	}
	wantHTML(t, e.get("/ui/login?next=/ui/queues/storage"), 200, `name="token"`, `value="/ui/queues/storage"`)
	// The login page and the static files need no token.
	for _, path := range []string{"/ui/static/app.css", "/favicon.ico"} {
		if r := e.get(path); r.status != 200 {
			t.Errorf("GET %s without a token: %d", path, r.status)
		}
	}

	login := func(secret, next string) response {
		return e.form("/ui/login", url.Values{"token": {secret}, "next": {next}})
	}
	wantHTML(t, login("", ""), 400, "Paste a token")
	wantHTML(t, login("sbt_wrong", ""), 401, "not valid")
	wantHTML(t, login(secrets[spinbroker.RoleAgent], ""), 403, "agent token")

	r = login(secrets[spinbroker.RoleViewer], "/ui/queues/storage")
	if r.status != 303 || r.header.Get("Location") != "/ui/queues/storage" {
		t.Fatalf("viewer login: %d to %q", r.status, r.header.Get("Location"))
	}
	set := r.header.Get("Set-Cookie")
	for _, want := range []string{httpapi.TokenCookie + "=" + secrets[spinbroker.RoleViewer], "Path=/", "HttpOnly", "SameSite=Strict", "Max-Age="} {
		if !strings.Contains(set, want) {
			t.Errorf("cookie %q lacks %q", set, want)
		}
	}
	if strings.Contains(set, "Secure") {
		t.Errorf("cookie over plain HTTP is Secure: %q", set)
	}
	// Behind a proxy that ended TLS, it is Secure.
	behind := e.form("/ui/login", url.Values{"token": {secrets[spinbroker.RoleViewer]}, "next": {"/ui/"}}, "X-Forwarded-Proto", "https")
	if set := behind.header.Get("Set-Cookie"); !strings.Contains(set, "Secure") {
		t.Errorf("cookie behind a TLS proxy is not Secure: %q", set)
	}
	// Never sent off to another site after logging in.
	for _, next := range []string{"//evil.example/", "https://evil.example/", "/packages", "/ui/login"} {
		if r := login(secrets[spinbroker.RoleViewer], next); r.header.Get("Location") != "/ui/" {
			t.Errorf("next=%s sent to %q", next, r.header.Get("Location"))
		}
	}

	// A viewer sees everything and no buttons; its posts are refused.
	for _, path := range []string{"/ui/", "/ui/packages", "/ui/packages/" + w.running, "/ui/queues/storage", "/ui/commands/" + w.failedCmd} {
		r := e.get(path, cookie(spinbroker.RoleViewer)...)
		wantHTML(t, r, 200, "viewer", "Log out")
		for _, button := range []string{"Cancel package", "/retry\"", "/pause\"", `name="concurrency"`} {
			if strings.Contains(string(r.body), button) {
				t.Errorf("a viewer is offered %q on %s", button, path)
			}
		}
	}
	wantHTML(t, e.form("/ui/packages/"+w.running+"/cancel", nil, cookie(spinbroker.RoleViewer)...), 403, "viewer")
	wantHTML(t, e.form("/ui/queues/storage/pause", nil, cookie(spinbroker.RoleViewer)...), 403)
	// An admin gets the buttons.
	wantHTML(t, e.get("/ui/packages/"+w.running, cookie(spinbroker.RoleAdmin)...), 200, "Cancel package")
	wantHTML(t, e.get("/ui/queues/storage", cookie(spinbroker.RoleAdmin)...), 200, "/pause\"", `name="concurrency"`)
	wantHTML(t, e.get("/ui/commands/"+w.failedCmd, cookie(spinbroker.RoleAdmin)...), 200, "Retry")
	// An agent's token reads only its own queue; the dashboard is not for it.
	wantHTML(t, e.get("/ui/", cookie(spinbroker.RoleAgent)...), 403)
	// The event stream takes the cookie too.
	req, _ := http.NewRequest("GET", e.srv.URL+"/events", nil)
	req.Header.Set("Cookie", httpapi.TokenCookie+"="+secrets[spinbroker.RoleViewer])
	reqCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := e.srv.Client().Do(req.WithContext(reqCtx))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Errorf("events with the cookie: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}

	// Logging out forgets the cookie.
	wantHTML(t, e.get("/ui/logout", cookie(spinbroker.RoleViewer)...), 200, "Forget the token")
	r = e.form("/ui/logout", nil, cookie(spinbroker.RoleViewer)...)
	if r.status != 303 || r.header.Get("Location") != "/ui/login" || !strings.Contains(r.header.Get("Set-Cookie"), "Max-Age=0") {
		t.Errorf("logout: %d to %q, cookie %q", r.status, r.header.Get("Location"), r.header.Get("Set-Cookie"))
	}
	// With a token that was revoked (or never was), logging out still works.
	r = e.form("/ui/logout", nil, "Cookie", httpapi.TokenCookie+"=sbt_revoked-long-ago")
	if r.status != 303 || !strings.Contains(r.header.Get("Set-Cookie"), "Max-Age=0") {
		t.Errorf("logout with a dead token: %d, cookie %q", r.status, r.header.Get("Set-Cookie"))
	}
}

// TestUI_LoginTLS: over TLS the cookie is Secure as well.
func TestUI_LoginTLS(t *testing.T) {
	e := newEnv(t, httpapi.Options{Auth: true})
	secret := e.secret(spinbroker.RoleAdmin, "", "admin")
	req := httptest.NewRequest("POST", "https://broker.example/ui/login", strings.NewReader(url.Values{"token": {secret}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.TLS = &tls.ConnectionState{}
	rec := httptest.NewRecorder()
	e.api.Handler().ServeHTTP(rec, req)
	if rec.Code != 303 || !strings.Contains(rec.Header().Get("Set-Cookie"), "Secure") {
		t.Errorf("login over TLS: %d, cookie %q", rec.Code, rec.Header().Get("Set-Cookie"))
	}
}

// TestUI_QueueWhyLongReason: the sentence that says a queue's head waits
// out a back-off quotes the first lines of a 16 KiB reason, not all of it;
// the head's own page, one click away, has the whole.
func TestUI_QueueWhyLongReason(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	mustCreate(t, e, 1, true, nc(101, "", "q", "first", ""))
	c := mustNext(t, e, "q")
	var b strings.Builder
	for i := 0; b.Len() < 16000; i++ {
		fmt.Fprintf(&b, "line %d: connection refused\n", i)
	}
	ok, reason := false, b.String()
	if _, err := e.db.Complete(ctx, c.ID, spinbroker.Result{Status: &ok, Retry: true, Reason: &reason, Lease: c.Lease.Token}); err != nil {
		t.Fatal(err)
	}
	r := e.get("/ui/queues/q")
	wantHTML(t, r, 200, "waits out a retry back-off until", "after “<bdi>line 0: connection refused", "line 2: connection refused…</bdi>”")
	if strings.Contains(string(r.body), "line 3:") {
		t.Errorf("the queue's page quotes the head's reason past its first lines (%d bytes of page)", len(r.body))
	}
	wantHTML(t, e.get("/ui/commands/"+c.ID), 200, "line 500: connection refused")
}

// TestUI_ReasonCellsCut: a table's reason cell quotes a 16 KiB reason by
// its first lines, in its tooltip too; the whole of it is one click away,
// on the package's or the command's page.
func TestUI_ReasonCellsCut(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	pkg := mustCreate(t, e, 1, true, nc(101, "", "q", "first", ""))
	c := mustNext(t, e, "q")
	var b strings.Builder
	for i := 0; b.Len() < 16000; i++ {
		fmt.Fprintf(&b, "line %d: connection refused\n", i)
	}
	mustComplete(t, e, c, false, b.String(), "")
	title := regexp.MustCompile(`<td class="reason full" title="([^"]*)">([^<]*)</td>`)
	for _, path := range []string{"/ui/", "/ui/packages", "/ui/packages?state=failed", "/ui/packages/" + pkg} {
		r := e.get(path)
		wantHTML(t, r, 200)
		cells := title.FindAllStringSubmatch(string(r.body), -1)
		if len(cells) == 0 {
			t.Fatalf("%s has no reason cell with a tooltip", path)
		}
		for _, m := range cells {
			for i, what := range map[int]string{1: "tooltip", 2: "text"} {
				if len(m[i]) > 400 || strings.Contains(m[i], "line 3:") {
					t.Errorf("%s: a reason cell's %s is %d bytes, past the reason's first lines: %.80q…", path, what, len(m[i]), m[i])
				}
				if !strings.HasPrefix(m[i], "line 0: connection refused\nline 1") || !strings.HasSuffix(m[i], "line 2: connection refused…") {
					t.Errorf("%s: a reason cell's %s is not the reason's first lines: %q", path, what, m[i])
				}
			}
		}
	}
	wantHTML(t, e.get("/ui/packages/"+pkg), 200, "The whole reason (15.6 KiB", "line 500: connection refused")
	wantHTML(t, e.get("/ui/commands/"+c.ID), 200, "The whole reason (15.6 KiB", "line 500: connection refused")
}

// TestUI_GraphReasonCut: a graph's box quotes a failed command's reason by
// its first lines in its tooltip, as a table's cell does, where it carried
// the whole reason twice (its title and its label for screen readers): 300
// commands that failed with reasons of 64 KiB made the page with the graph
// 39 MB, fetched again at every live update of the graph. The whole of a
// reason stays on its command's page, and the causer's once (one click
// away) in the package's summary.
func TestUI_GraphReasonCut(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	const n = 40
	var cmds []spinbroker.NewCommand
	for i := range n {
		cmds = append(cmds, nc(100+i, "", "q", "step", ""))
	}
	pkg := mustCreate(t, e, 1, true, cmds...)
	if _, err := e.db.SetQueue(ctx, "q", spinbroker.QueueSettings{Concurrency: uiRef(n)}); err != nil {
		t.Fatal(err)
	}
	leased, _, err := e.db.Claim(ctx, "q", n, 0)
	if err != nil || len(leased) != n {
		t.Fatalf("claim: %d commands, %v", len(leased), err)
	}
	var b strings.Builder
	for i := 0; b.Len() < 64<<10-40; i++ {
		fmt.Fprintf(&b, "line %d: connection refused\n", i)
	}
	for _, c := range leased {
		mustComplete(t, e, &c, false, b.String(), "")
	}
	r := e.get("/ui/packages/" + pkg + "?fragment=graph")
	wantHTML(t, r, 200)
	titles := regexp.MustCompile(`<title>step on q: failed — ([^<]*)</title>`).FindAllStringSubmatch(string(r.body), -1)
	if len(titles) != n {
		t.Fatalf("%d boxes quote a reason in their tooltip, want %d:\n%.3000s", len(titles), n, r.body)
	}
	for _, m := range titles {
		if !strings.HasPrefix(m[1], "line 0: connection refused\nline 1") || !strings.HasSuffix(m[1], "line 2: connection refused…") {
			t.Fatalf("a box's tooltip is not its reason's first lines and an ellipsis: %.200q", m[1])
		}
	}
	if len(r.body) > n*2<<10 || strings.Contains(string(r.body), "line 3:") {
		t.Errorf("the graph of %d commands with reasons of 64 KiB is %d KiB, and quotes them past their first lines", n, len(r.body)>>10)
	}
	r = e.get("/ui/packages/" + pkg)
	wantHTML(t, r, 200, "The whole reason (")
	if got := strings.Count(string(r.body), "line 2000: connection refused"); got != 1 {
		t.Errorf("the package's page carries a whole reason %d times, want once, the causer's (%d KiB)", got, len(r.body)>>10)
	}
	wantHTML(t, e.get("/ui/commands/"+leased[n-1].ID), 200, "line 2000: connection refused")
}

// TestUI_QueueWhy: the queue's page says why it does not move.
func TestUI_QueueWhy(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	mustCreate(t, e, 1, true, nc(101, "", "q", "first", ""), nc(102, "", "q", "second", ""))
	wantHTML(t, e.get("/ui/queues/q"), 200, "2 ready; the head of line", "first")

	c := mustNext(t, e, "q")
	wantHTML(t, e.get("/ui/queues/q"), 200, "Its one slot is leased")

	ok, reason := false, "flaky network"
	if _, err := e.db.Complete(ctx, c.ID, spinbroker.Result{Status: &ok, Retry: true, Reason: &reason, Lease: c.Lease.Token}); err != nil {
		t.Fatal(err)
	}
	wantHTML(t, e.get("/ui/queues/q"), 200, "waits out a retry back-off until", "(in 1s)", "flaky network", "holds back the commands behind it")

	if _, err := e.db.SetQueue(ctx, "q", spinbroker.QueueSettings{Paused: uiRef(true)}); err != nil {
		t.Fatal(err)
	}
	r := e.get("/ui/queues/q")
	wantHTML(t, r, 200, "Paused: the queue hands out nothing", `action="/ui/queues/q/resume"`)
	if strings.Contains(string(r.body), `action="/ui/queues/q/pause"`) {
		t.Error("a paused queue offers to pause")
	}
}

// TestUI_OpenPagesShowNoRole: pages served without a token never show the
// anonymous identity as if someone were logged in.
func TestUI_OpenPagesShowNoRole(t *testing.T) {
	e := newEnv(t, httpapi.Options{Auth: true})
	for _, path := range []string{"/ui/login", "/ui/static/nope.css"} {
		body := string(e.get(path).body)
		if strings.Contains(body, "Log out") || strings.Contains(body, `class="who"`) || strings.Contains(body, `href="/ui/packages"`) {
			t.Errorf("%s shows a role or the navigation to a visitor without a token", path)
		}
	}
}

// TestUI_QueueAgents: a queue's page and the overview say whether agents
// are asking it for work (waiting now, or when one last asked), and say so
// plainly when work waits and no agent has asked for a minute; /metrics
// carries the same.
func TestUI_QueueAgents(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	mustCreate(t, e, 1, true, nc(101, "", "q", "first", ""), nc(102, "", "q", "second", ""))
	r := e.get("/ui/queues/q")
	wantHTML(t, r, 200, "none has asked since the broker started")
	if strings.Contains(string(r.body), "is one running?") {
		t.Error("a broker that just started already misses its agents")
	}
	if strings.Contains(string(e.get("/ui/").body), "none asking") {
		t.Error("the overview flags a queue of a broker that just started")
	}
	e.clock.Add(2 * time.Minute)
	wantHTML(t, e.get("/ui/queues/q"), 200, "No agent has asked for work since the broker started, 2m 0s ago: is one running?")
	wantHTML(t, e.get("/ui/"), 200, `<span class="badge st-failed" title="Work waits and no agent has asked for it in a minute">none asking</span>`)

	// An agent takes the first command over HTTP; the second is ready.
	asked := e.clock.Now()
	mustComplete(t, e, e.next("q"), true, "", "")
	r = e.get("/ui/queues/q")
	wantHTML(t, r, 200, "1 ready; the head of line", `last asked <time datetime="`+asked.UTC().Format(time.RFC3339),
		"by <code><bdi>Go-http-client/1.1</bdi></code> from 127.0.0.1")
	if strings.Contains(string(r.body), "is one running?") {
		t.Error("the page misses an agent that just asked")
	}
	// The cell says how long ago; its tooltip, the exact time, as the
	// queue's page does (it repeated "just now").
	wantHTML(t, e.get("/ui/"), 200, `<time datetime="`+asked.UTC().Format(time.RFC3339)+`" title="An agent last asked for work at `+asked.UTC().Format("2006-01-02 15:04:05")+` UTC">just now</time>`)
	e.clock.Add(90 * time.Second)
	wantHTML(t, e.get("/ui/queues/q"), 200, "No agent has asked for work in 1m 30s: is one running?")
	wantHTML(t, e.get("/ui/"), 200, "none asking")

	// An agent waiting in a long-poll on the emptied queue.
	mustComplete(t, e, e.next("q"), true, "", "")
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		req, _ := http.NewRequestWithContext(pctx, "POST", e.srv.URL+"/queues/q/next?wait=30s", nil)
		if resp, err := e.srv.Client().Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	waiting := `spinbroker_queue_waiting_polls{resource="q"} 1`
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(string(e.do("GET", "/metrics", "").body), waiting) {
		if time.Now().After(deadline) {
			t.Fatalf("/metrics never showed %s", waiting)
		}
		time.Sleep(5 * time.Millisecond)
	}
	wantHTML(t, e.get("/ui/queues/q"), 200, "1 waiting for work: by <code><bdi>Go-http-client/1.1</bdi></code> from 127.0.0.1")
	wantHTML(t, e.get("/ui/"), 200, "<td class=\"nowrap\" data-label=\"Agents\">1 waiting</td>")
	var last float64
	for _, line := range strings.Split(string(e.do("GET", "/metrics", "").body), "\n") {
		if v, ok := strings.CutPrefix(line, `spinbroker_queue_last_poll_timestamp_seconds{resource="q"} `); ok {
			last, _ = strconv.ParseFloat(v, 64)
		}
	}
	if want := float64(e.clock.Now().Unix()); last != want {
		t.Errorf("spinbroker_queue_last_poll_timestamp_seconds is %v, want %v", last, want)
	}
	cancel()
	<-done
}

// TestUI_QueueAgentsToken: with auth on, the queue page names the token the
// last agent asked with.
func TestUI_QueueAgentsToken(t *testing.T) {
	e := newEnv(t, httpapi.Options{Auth: true})
	agentSecret := e.secret(spinbroker.RoleAgent, "storage", "storage-host-a")
	viewer := e.secret(spinbroker.RoleViewer, "", "ops")
	mustCreate(t, e, 1, true, nc(101, "", "storage", "first", ""))
	agent := *e
	agent.token = agentSecret
	if c := agent.next("storage"); c == nil {
		t.Fatal("the agent got nothing")
	}
	wantHTML(t, e.get("/ui/queues/storage", "Authorization", "Bearer "+viewer), 200,
		"with token <code><bdi>storage-host-a</bdi></code> from 127.0.0.1")
}

// TestUI_QueueAgentsWaitingNamed: when agents wait for work, the queue's
// page names them as it names the last one to ask: which program, with
// which token, from which host, and how many of each.
func TestUI_QueueAgentsWaitingNamed(t *testing.T) {
	e := newEnv(t, httpapi.Options{Auth: true})
	viewer := e.secret(spinbroker.RoleViewer, "", "ops")
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var polls sync.WaitGroup
	defer polls.Wait()
	defer cancel()
	poll := func(secret, program string) {
		polls.Add(1)
		go func() {
			defer polls.Done()
			req, _ := http.NewRequestWithContext(pctx, "POST", e.srv.URL+"/queues/storage/next?wait=30s", nil)
			req.Header.Set("Authorization", "Bearer "+secret)
			req.Header.Set("User-Agent", program)
			if resp, err := e.srv.Client().Do(req); err == nil {
				resp.Body.Close()
			}
		}()
	}
	a := e.secret(spinbroker.RoleAgent, "storage", "storage-host-a")
	poll(a, "sa-host-path/1")
	poll(a, "sa-host-path/1")
	poll(e.secret(spinbroker.RoleAgent, "storage", "storage-host-b"), "my-agent/2")
	page := func() string {
		return string(e.get("/ui/queues/storage", "Authorization", "Bearer "+viewer).body)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(page(), "3 waiting for work") {
		if time.Now().After(deadline) {
			t.Fatalf("the queue's page never said 3 waiting:\n%s", page())
		}
		time.Sleep(5 * time.Millisecond)
	}
	wantHTML(t, e.get("/ui/queues/storage", "Authorization", "Bearer "+viewer), 200,
		"3 waiting for work: 2 by <code><bdi>sa-host-path/1</bdi></code> with token <code><bdi>storage-host-a</bdi></code> from 127.0.0.1; "+
			"1 by <code><bdi>my-agent/2</bdi></code> with token <code><bdi>storage-host-b</bdi></code> from 127.0.0.1")
}

// TestUI_QueueAgentsIsolated: the program and the token name the queue page
// quotes are the client's words, maybe right to left: each is isolated
// from the sentence, so that its punctuation stays its own ("סוכן!" is not
// drawn "!סוכן" against the next word).
func TestUI_QueueAgentsIsolated(t *testing.T) {
	e := newEnv(t, httpapi.Options{Auth: true})
	agentSecret := e.secret(spinbroker.RoleAgent, "storage", "מארח א!")
	viewer := e.secret(spinbroker.RoleViewer, "", "ops")
	mustCreate(t, e, 1, true, nc(101, "", "storage", "first", ""))
	agent := *e
	agent.token = agentSecret
	r := agent.do("POST", "/queues/storage/next", "", "User-Agent", "סוכן/1 (בדיקה!)")
	agent.want(r, 200, "")
	wantHTML(t, e.get("/ui/queues/storage", "Authorization", "Bearer "+viewer), 200,
		"by <code><bdi>סוכן/1 (בדיקה!)</bdi></code> with token <code><bdi>מארח א!</bdi></code> from 127.0.0.1")
}

// TestUI_QueueWaitsForBounded: a blocked command's "Waits for" cell names
// the first five dependencies it still waits for and counts the rest,
// where it named every one: a command of hundreds of dependencies made a
// cell of hundreds of links, on every row like it, fetched again at every
// live update. Its own page, which the count links to, lists them all.
func TestUI_QueueWaitsForBounded(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	const deps = 12
	var cmds []spinbroker.NewCommand
	var keys []string
	for i := range deps {
		key := fmt.Sprintf("dep%d", i)
		cmds = append(cmds, nc(101+i, key, "other", "prepare", ""))
		keys = append(keys, key)
	}
	cmds = append(cmds, nc(200, "", "q", "apply", "", keys...))
	mustCreate(t, e, 1, true, cmds...)
	mustComplete(t, e, mustNext(t, e, "other"), true, "", "") // one no longer waited for
	r := e.get("/ui/queues/q")
	wantHTML(t, r, 200, `and 6 more</a>`)
	cell := regexp.MustCompile(`(?s)<td class="waits full" data-label="Waits for">(.*?)</td>`).FindStringSubmatch(string(r.body))
	if cell == nil {
		t.Fatalf("no Waits for cell:\n%.3000s", r.body)
	}
	if n := strings.Count(cell[1], `class="dep"`); n != 5 {
		t.Errorf("the cell names %d dependencies, want 5:\n%s", n, cell[1])
	}
	for i := 1; i <= 5; i++ {
		if !strings.Contains(cell[1], `href="/ui/commands/`+fixedID(101+i)+`"`) {
			t.Errorf("the cell does not name the unfinished dependency dep%d, one of the first five", i)
		}
	}
	if !strings.Contains(cell[1], `<a href="/ui/commands/`+fixedID(200)+`">and 6 more</a>`) {
		t.Errorf("the count does not link to the command's page, which lists them all:\n%s", cell[1])
	}
	wantHTML(t, e.get("/ui/commands/"+fixedID(200)+"?fragment=links"), 200, fixedID(101+deps-1))
}

// TestUI_RetryOnlyWhereItRuns: the command page offers Retry for a failed
// command whose retry would run, and none for one a failed dependency still
// holds back (its retry could only answer 409).
func TestUI_RetryOnlyWhereItRuns(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	w := seedWorld(t, e)
	form := func(id string) string { return `action="/ui/commands/` + id + `/retry"` }
	if r := e.get("/ui/commands/" + w.failedCmd); r.status != 200 || !strings.Contains(string(r.body), form(w.failedCmd)) {
		t.Errorf("the failed command's page has no retry form: %d", r.status)
	}
	if r := e.get("/ui/commands/" + w.cascaded); r.status != 200 || strings.Contains(string(r.body), form(w.cascaded)) {
		t.Errorf("the cascaded command's page offers a retry that would be refused: %d", r.status)
	}
}

// TestUI_DelayedCommand: a command held back by its not_before alone says
// so under "Depends on", rather than that it was ready when enqueued.
func TestUI_DelayedCommand(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	p := e.createPackage(`[{"resource": "later", "action": "x", "not_before": "2200-01-01T00:00:00Z"}]`, true)
	c := p.Commands[0]
	r := e.get("/ui/commands/" + c.ID + "?fragment=links")
	body := string(r.body)
	if r.status != 200 || !strings.Contains(body, "no earlier than its start time") || !strings.Contains(body, `datetime="2200-01-01T00:00:00Z"`) || strings.Contains(body, "ready as soon as") {
		t.Errorf("the links of a delayed command: %d\n%s", r.status, body)
	}
}

// TestUI_SearchSaysWhenItStops: a prefix matching more than the page lists
// says so, and one matching fewer does not.
func TestUI_SearchSaysWhenItStops(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	var first string
	for i := range 22 {
		p := e.createPackage(`[]`, false)
		if i == 0 {
			first = p.ID
		}
	}
	r := e.get("/ui/search?q=" + first[:6])
	if r.status != 200 || !strings.Contains(string(r.body), "More match than the 20 of each kind listed here") || strings.Count(string(r.body), `class="id" href="/ui/packages/`) != 20 {
		t.Errorf("a search matching 22 packages: %d\n%s", r.status, r.body)
	}
	r = e.get("/ui/search?q=" + first[:30])
	if r.status != 200 && r.status != 303 || strings.Contains(string(r.body), "More match") {
		t.Errorf("a search matching one package: %d", r.status)
	}
}

// TestUI_ErrorLeadsBack: an error page leads back to the dashboard page the
// failed request came from, and to no page of another site.
func TestUI_ErrorLeadsBack(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	zero := url.Values{"concurrency": {"0"}}
	r := e.form("/ui/queues/network/concurrency", zero, "Referer", e.srv.URL+"/ui/queues/network?after=1")
	if r.status != 400 || !strings.Contains(string(r.body), `<a href="/ui/queues/network?after=1">Back to the page you came from</a>`) {
		t.Errorf("an error from the queue page: %d\n%s", r.status, r.body)
	}
	for _, ref := range []string{"https://evil.example/ui/queues/network", e.srv.URL + "/metrics", ""} {
		r := e.form("/ui/queues/network/concurrency", zero, "Referer", ref)
		if r.status != 400 || strings.Contains(string(r.body), "Back to the page you came from") {
			t.Errorf("an error after a request from %q offers to go back there: %d", ref, r.status)
		}
	}
}

// TestUI_BidiControlsShown: a reason or key with characters that reorder
// the text around them is shown with them visible, so that it reads as it
// is ("failed: \u202eevil" would read "failed: live").
func TestUI_BidiControlsShown(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	pkg := mustCreate(t, e, 1, true, nc(101, "k\u202eyek", "q", "go", "{\"a\": \"x\u202eyz\"}")) // raw in the JSON, not escaped
	c := mustNext(t, e, "q")
	mustComplete(t, e, c, false, "failed: \u202eevil\u202c", "")
	for _, path := range []string{"/ui/packages/" + pkg, "/ui/commands/" + c.ID, "/ui/packages"} {
		r := e.get(path)
		wantHTML(t, r, 200, "failed: ⟨U&#43;202E⟩evil⟨U&#43;202C⟩") // html/template writes + as &#43;
		if strings.ContainsRune(string(r.body), '\u202e') {
			t.Errorf("%s carries a raw U+202E", path)
		}
	}
	wantHTML(t, e.get("/ui/commands/"+c.ID), 200, "k⟨U&#43;202E⟩yek", `&#34;x\u202eyz&#34;`)
}

// TestUI_LargeGraphCanBeSkipped: a graph of many commands, a tab stop
// each, has a way past it for the keyboard; a small one needs none.
func TestUI_LargeGraphCanBeSkipped(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	var cmds []spinbroker.NewCommand
	for i := range 13 {
		cmds = append(cmds, nc(100+i, "", "q", "step", ""))
	}
	big := mustCreate(t, e, 1, true, cmds...)
	small := mustCreate(t, e, 2, true, nc(200, "", "q", "one", ""))
	wantHTML(t, e.get("/ui/packages/"+big), 200, `<a class="skip skip-graph" href="#h-commands">Skip the graph's 13 commands`)
	if r := e.get("/ui/packages/" + small); strings.Contains(string(r.body), "skip-graph") {
		t.Error("a one-command graph offers to skip it")
	}
}

// TestUI_OverviewListsTheBusiestQueues: with more queues than the overview
// lists, it shows the busiest (paused ones first among equals) by name, and
// says how many it left out and where to find them, where a fleet of
// 10,000 queues made the fragment 4.6 MB, fetched again with every change.
// Empty paused queues do not crowd out one with work.
func TestUI_OverviewListsTheBusiestQueues(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	for i := range 60 { // queues with settings and nothing in them
		e.want(e.do("PATCH", fmt.Sprintf("/queues/idle-%02d", i), `{"concurrency": 2}`), 200, "")
	}
	for i := 5; i < 60; i++ { // 55 of them paused: more than the list holds
		e.want(e.do("PATCH", fmt.Sprintf("/queues/idle-%02d", i), `{"paused": true}`), 200, "")
	}
	var busy []spinbroker.NewCommand
	for i := range 3 {
		busy = append(busy, nc(100+i, "", "zz-busy", "a", ""))
	}
	mustCreate(t, e, 2, true, busy...)
	r := e.get("/ui/?fragment=queues")
	body := string(r.body)
	wantHTML(t, r, 200, "more are not", "<code>GET /queues</code>")
	if n := strings.Count(body, `<th scope="row" class="name">`); n != 50 {
		t.Errorf("%d queues listed, want 50", n)
	}
	if !strings.Contains(body, "/ui/queues/zz-busy") {
		t.Error("the overview leaves out the one queue with work")
	}
	if n := strings.Count(body, "paused</span>"); n != 49 {
		t.Errorf("%d paused queues listed beside the busy one, want 49 (before the running empty ones)", n)
	}
	if i, j := strings.Index(body, "/ui/queues/idle-05"), strings.Index(body, "/ui/queues/zz-busy"); i < 0 || i > j {
		t.Error("the listed queues are not in the order of their names")
	}
}

// TestUI_Head: HEAD works on the dashboard's pages as on the API's reads
// (an uptime monitor probes /), with GET's status and headers and no
// body; it answered 405.
func TestUI_Head(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	p := mustCreate(t, e, 1, true, nc(100, "", "q", "a", ""))
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, path := range []string{"/", "/ui/", "/ui/packages", "/ui/packages/" + p, "/ui/queues/q", "/ui/commands/" + fixedID(100), "/ui/static/app.css", "/ui/search?q=q"} {
		var got [2]int
		var types [2]string
		for i, method := range []string{"GET", "HEAD"} {
			req, _ := http.NewRequest(method, e.srv.URL+path, nil)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			got[i], types[i] = resp.StatusCode, resp.Header.Get("Content-Type")
			if method == "HEAD" && len(body) != 0 {
				t.Errorf("HEAD %s: a body of %d bytes", path, len(body))
			}
		}
		if got[0] != got[1] || types[0] != types[1] || got[1] == 405 {
			t.Errorf("%s: GET %d %s, HEAD %d %s", path, got[0], types[0], got[1], types[1])
		}
	}
}

// TestUI_QueuePagerEnds: a queue whose unfinished commands fill its pages
// exactly offers no "Later" page after the last one, where it led to an
// empty page that said "No unfinished commands" of a queue with 100 of
// them, and had no way back. A page past the end (its commands finished
// since the link was made) says so and leads back to the first.
func TestUI_QueuePagerEnds(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	var cmds []spinbroker.NewCommand
	for i := range 2 * spinbroker.DefaultListLimit {
		cmds = append(cmds, nc(100+i, "", "q", "step", ""))
	}
	mustCreate(t, e, 1, true, cmds...)
	q, err := e.db.Queue(ctx, "q")
	if err != nil {
		t.Fatal(err)
	}
	first := *q.Commands[0].Seq
	last := *q.Commands[len(q.Commands)-1].Seq
	second := fmt.Sprintf("/ui/queues/q?after=%d", last)
	wantHTML(t, e.get("/ui/queues/q"), 200, `<a href="`+second+`">Later →</a>`)
	r := e.get(second)
	wantHTML(t, r, 200, `<a href="/ui/queues/q">← First</a>`)
	if strings.Contains(string(r.body), "Later →") {
		t.Errorf("the last page of the queue offers a later one")
	}
	past := e.get(fmt.Sprintf("/ui/queues/q?after=%d", first+2*int64(spinbroker.DefaultListLimit)))
	wantHTML(t, past, 200, "No unfinished commands after", `<a href="/ui/queues/q">← First</a>`)
}

// TestUI_DeepJSONPageBounded: a command's page indents its parameters and
// output, and indentation grows with depth: 60 KB of parameters nested
// 9,990 deep (the decoder allows 10,000) once made a 200 MB page and 2 GB
// of the broker's memory, and a 1 MiB body could make gigabytes. Such a
// value is shown as it was sent; a page stays about as large as its data.
func TestUI_DeepJSONPageBounded(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	const depth = 2000 // enough to show it, small enough to fail quickly
	params := strings.Repeat(`{"a":`, depth) + "1" + strings.Repeat("}", depth)
	output := strings.Repeat("[", depth) + strings.Repeat("7,", 1000) + "7" + strings.Repeat("]", depth)
	p := e.createPackage(`[{"resource": "deep", "action": "x", "parameters": `+params+`}]`, true)
	c := e.next("deep")
	e.want(e.do("POST", "/commands/"+c.ID+"/complete", `{"status": true, "lease": "`+c.Lease.Token+`", "output": {"o": `+output+`}}`), 200, "")
	r := e.do("GET", "/ui/commands/"+p.Commands[0].ID, "")
	e.want(r, 200, "")
	if len(r.body) > 1<<20 {
		t.Fatalf("the page of %d bytes of parameters and output is %d bytes", len(params)+len(output), len(r.body))
	}
	for _, want := range []string{strings.Repeat("{&#34;a&#34;:", 10), strings.Repeat("7,", 10)} {
		if !strings.Contains(string(r.body), want) {
			t.Errorf("the page does not show %s", want)
		}
	}
	// An ordinary value is still indented.
	p = e.createPackage(`[{"resource": "deep", "action": "x", "parameters": {"image": {"size": 20}}}]`, false)
	r = e.do("GET", "/ui/commands/"+p.Commands[0].ID, "")
	if !strings.Contains(string(r.body), "{\n  &#34;image&#34;: {\n    &#34;size&#34;: 20\n  }\n}") {
		t.Errorf("ordinary parameters are not indented:\n%s", r.body)
	}
}

// TestUI_LostParametersSaid: a command whose parameters were kept aside
// (past 2 KiB) and whose row of them is gone (a hand edit, a restore of a
// damaged copy) has a page that says they are lost and names the check
// that lists such commands, where it showed an empty box under
// "Parameters", as if the command had been given none. A command's
// parameters of {} are still shown as such.
func TestUI_LostParametersSaid(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	big := `{"blob": "` + strings.Repeat("x", 4<<10) + `"}`
	mustCreate(t, e, 1, true, nc(101, "", "q", "lost", big), nc(102, "", "q", "none", ""))
	db, err := sql.Open("sqlite", "file:"+e.db.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	res, err := db.ExecContext(ctx, `DELETE FROM command_parameters WHERE command_id = ?`, fixedID(101))
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("%d rows of kept-aside parameters deleted, want 1", n)
	}
	r := e.get("/ui/commands/" + fixedID(101))
	wantHTML(t, r, 200, "parameters are lost", "spinbroker check --db")
	if strings.Contains(string(r.body), `<pre class="json"></pre>`) {
		t.Error("the page shows lost parameters as an empty value")
	}
	r = e.get("/ui/commands/" + fixedID(102))
	wantHTML(t, r, 200, `<pre class="json">{}</pre>`)
	if strings.Contains(string(r.body), "lost") {
		t.Error("the page of a command given no parameters says they are lost")
	}
}

// TestUI_TablesNamed: every table of the dashboard has a name a screen
// reader announces on entering it (a page may have two: the overview's
// queues and its recent packages), taken from the heading over it; where
// the tables had none, a reader heard only "table, 6 columns".
func TestUI_TablesNamed(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	w := seedWorld(t, e)
	table := regexp.MustCompile(`<table[^>]*>`)
	labelledBy := regexp.MustCompile(`aria-labelledby="([^"]+)"`)
	for _, path := range []string{"/ui/", "/ui/packages", "/ui/packages?state=failed", "/ui/packages/" + w.running, "/ui/queues/network"} {
		c := *e
		c.t = t
		body := string(c.get(path).body)
		tables := table.FindAllString(body, -1)
		if len(tables) == 0 {
			t.Errorf("%s: no table", path)
		}
		for _, tag := range tables {
			m := labelledBy.FindStringSubmatch(tag)
			if m == nil {
				t.Errorf("%s: %s has no name", path, tag)
				continue
			}
			head := regexp.MustCompile(`<h[1-3][^>]* id="` + regexp.QuoteMeta(m[1]) + `"[^>]*>([^<]+)`).FindStringSubmatch(body)
			if head == nil || strings.TrimSpace(head[1]) == "" {
				t.Errorf("%s: %s is named by %q, which is no heading of the page", path, tag, m[1])
			}
		}
	}
}

// TestUI_PackagePages: a package of more commands than one page of its
// table shows them a page at a time, in the order they were added, with
// links to the pages before and after, a from= out of range clamped; each
// page lists the dependencies on other packages' commands of its own rows,
// and the summary, causer and "too big to draw" notice are the package's
// whatever the page. (The page reads only the rows it shows: with 50,000
// commands, each view and live refresh read them all.)
func TestUI_PackagePages(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	ext1 := mustCreate(t, e, 1, false, nc(101, "", "other", "ext_one", ""))
	ext2 := mustCreate(t, e, 2, false, nc(201, "", "other", "ext_two", ""))
	const n = 1201
	cmds := make([]spinbroker.NewCommand, n)
	for i := range cmds {
		cmds[i] = nc(10000+i, "", "q", fmt.Sprintf("c%04d", i), "")
	}
	cmds[1].Dependencies = []string{fixedID(101)}
	cmds[600].Dependencies = []string{fixedID(201), fixedID(10001)}
	big := mustCreate(t, e, 3, true, cmds...)
	mustComplete(t, e, mustNext(t, e, "q"), false, "disk full", "")
	base := "/ui/packages/" + big

	row := regexp.MustCompile(`<a href="/ui/commands/[^"]+" title="[^"]+">c(\d{4})</a>`)
	pager := regexp.MustCompile(`<a href="/ui/packages/[^"?]+\?from=(\d+)">(← Earlier|Later) commands`)
	for _, tt := range []struct {
		from                 string
		first, rows          int
		prev, next, external string
	}{
		{"", 0, 500, "", "500", "ext_one"},
		{"-5", 0, 500, "", "500", "ext_one"},
		{"500", 500, 500, "0", "1000", "ext_two"},
		{"700", 700, 500, "200", "1200", ""},
		{"1000", 1000, 201, "500", "", ""},
		{"1200", 1200, 1, "700", "", ""},
		{"99999", 0, 0, "", "", ""}, // past the end: no rows, as before
	} {
		t.Run("from="+tt.from, func(t *testing.T) {
			r := e.get(base + "?from=" + tt.from)
			wantHTML(t, r, 200, "This package has 1201 commands; the graph is drawn for packages of at most 300.",
				"Caused by <a href=\"/ui/commands/"+fixedID(10000)+"\">c0000 on q",
				"<dt>Commands</dt><dd>1201</dd>")
			body := string(r.body)
			got := row.FindAllStringSubmatch(body, -1)
			if len(got) != tt.rows {
				t.Fatalf("%d rows, want %d", len(got), tt.rows)
			}
			for i, m := range got {
				if m[1] != fmt.Sprintf("%04d", tt.first+i) {
					t.Fatalf("row %d is c%s, want c%04d", i, m[1], tt.first+i)
				}
			}
			var prev, next string
			for _, m := range pager.FindAllStringSubmatch(body, -1) {
				if m[2] == "← Earlier" {
					prev = m[1]
				} else {
					next = m[1]
				}
			}
			if prev != tt.prev || next != tt.next {
				t.Errorf("links: earlier from=%q, later from=%q; want %q, %q", prev, next, tt.prev, tt.next)
			}
			if tt.rows == 0 && !strings.Contains(body, "No commands yet.") {
				t.Error("an empty page does not say so")
			}
			for _, x := range []struct{ action, pkg string }{{"ext_one", ext1}, {"ext_two", ext2}} {
				listed := strings.Contains(body, x.action+" on other</a> <span class=\"muted\">in package <a href=\"/ui/packages/"+x.pkg+"\">")
				if listed != (x.action == tt.external) {
					t.Errorf("the dependency on %s listed: %v", x.action, listed)
				}
			}
		})
	}
	// The live update of the table renders the same page.
	wantHTML(t, e.get(base+"?fragment=commands&from=500"), 200, `title="`+fixedID(10500)+`">c0500</a>`, `?from=1000">Later commands →`)
}

// TestUI_PackageExternalBounded: a package's page lists the first 100 of
// the other packages' commands its rows depend on and says how many more
// there are, where it listed them all: rows that depend on thousands of
// commands elsewhere made a list of thousands, fetched again at every live
// update of the table. Each row's command page lists its own.
func TestUI_PackageExternalBounded(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	const n = 105
	var ext []spinbroker.NewCommand
	var ids []string
	for i := range n {
		ext = append(ext, nc(1000+i, "", "other", fmt.Sprintf("ext%03d", i), ""))
		ids = append(ids, fixedID(1000+i))
	}
	mustCreate(t, e, 1, false, ext...)
	pkg := mustCreate(t, e, 2, true, nc(2000, "", "q", "first", "", ids[:60]...), nc(2001, "", "q", "second", "", ids[40:]...))
	r := e.get("/ui/packages/" + pkg)
	wantHTML(t, r, 200, "Depends on commands of other packages", "The first 100 are listed; 5 more are not.")
	list := regexp.MustCompile(`(?s)<h3>Depends on commands of other packages</h3>\s*<ul class="links">(.*?)</ul>`).FindStringSubmatch(string(r.body))
	if list == nil {
		t.Fatalf("no list of dependencies on other packages:\n%.3000s", r.body)
	}
	if got := strings.Count(list[1], "<li>"); got != 100 {
		t.Errorf("%d dependencies on other packages listed, want 100", got)
	}
	if !strings.Contains(list[1], ">ext099 on other</a>") || strings.Contains(list[1], ">ext100 on other</a>") {
		t.Error("the list is not the first 100 in the order the rows name them")
	}
	// Under the bound, the list is whole and says nothing more.
	few := mustCreate(t, e, 3, true, nc(3000, "", "q", "third", "", ids[:3]...))
	r = e.get("/ui/packages/" + few)
	wantHTML(t, r, 200, ">ext002 on other</a>")
	if strings.Contains(string(r.body), "more are not") {
		t.Error("a list of 3 says more are not listed")
	}
}

// TestUI_SearchQueuesBounded: the search lists at most 20 of the queues
// whose name starts with what was typed, as it lists packages and
// commands, and says when more match; it read every queue, and listed all
// that matched, a page of thousands with a fleet of thousands.
func TestUI_SearchQueuesBounded(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	for i := range 25 {
		if _, err := e.db.SetQueue(ctx, fmt.Sprintf("s%02d", i), spinbroker.QueueSettings{Concurrency: uiRef(2)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.db.SetQueue(ctx, "t1", spinbroker.QueueSettings{Paused: uiRef(true)}); err != nil {
		t.Fatal(err)
	}
	queue := regexp.MustCompile(`<li><a href="/ui/queues/([^"]+)">`)
	for _, tt := range []struct {
		q     string
		first string
		n     int
		more  bool
	}{
		{"s", "s00", 20, true},
		{"s2", "s20", 5, false},
		{" S0 ", "s00", 10, false},
		{"s%", "", 0, false},
		{"s~", "", 0, false},
		{"u", "", 0, false},
	} {
		r := e.get("/ui/search?q=" + url.QueryEscape(tt.q))
		body := string(r.body)
		got := queue.FindAllStringSubmatch(body, -1)
		if r.status != 200 || len(got) != tt.n || (tt.n > 0 && got[0][1] != tt.first) || strings.Contains(body, "More match") != tt.more {
			t.Errorf("search %q: %d, %d queues, more %v; want %d from %q, more %v", tt.q, r.status, len(got), strings.Contains(body, "More match"), tt.n, tt.first, tt.more)
		}
	}
	if r := e.get("/ui/search?q=t"); r.status != http.StatusSeeOther || r.header.Get("Location") != "/ui/queues/t1" {
		t.Errorf("the one queue that matches: %d %s", r.status, r.header.Get("Location"))
	}
}

// TestUI_PackagePageCostsItsRows: a package's page, and each fragment its
// live updates fetch again, costs what its rows cost, not what the whole
// package does: with 6,000 commands it allocates about what it does with
// 600 (both more than the table's 500 rows, too many for the graph). It
// read the whole package, with every command's parameters and output, at
// each view and each live update: 0.85 s for 50,000 commands.
func TestUI_PackagePageCostsItsRows(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	few, many := loadPackage(t, e.db, 600), loadPackage(t, e.db, 6_000)
	for _, q := range []string{"", "?fragment=summary", "?fragment=commands&from=50"} {
		allocs := func(id string) float64 {
			return testing.AllocsPerRun(3, func() {
				rec := httptest.NewRecorder()
				e.api.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/ui/packages/"+id+q, nil))
				if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), id) {
					t.Fatalf("%s%s: %d\n%.2000s", id, q, rec.Code, rec.Body)
				}
			})
		}
		if a, b := allocs(few), allocs(many); b > 1.5*a {
			t.Errorf("the package page%s allocates %.0f times with 6,000 commands, %.0f with 600", q, b, a)
		}
	}
}

// TestUI_SearchCostsItsMatches: the search reads the queues it lists, not
// every queue to keep those that match: a search that matches ten queues
// allocates about the same with 20 queues as with 2,000. (It read every
// queue, with its counts, at each search.)
func TestUI_SearchCostsItsMatches(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	allocs := func() float64 {
		return testing.AllocsPerRun(3, func() {
			rec := httptest.NewRecorder()
			e.api.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/ui/search?q=q0001", nil))
			if rec.Code != http.StatusOK || strings.Count(rec.Body.String(), `<li><a href="/ui/queues/q0001`) != 10 {
				t.Fatalf("search: %d\n%.2000s", rec.Code, rec.Body)
			}
		})
	}
	loadQueues(t, e, 0, 20)
	few := allocs()
	loadQueues(t, e, 20, 2_000)
	if many := allocs(); many > 1.5*few {
		t.Errorf("a search allocates %.0f times with 2,000 queues, %.0f with 20", many, few)
	}
}

// TestUI_OverviewCostsItsList: the overview's list of queues, fetched
// again by every open dashboard up to twice a second while work moves,
// costs the queues it lists, not every queue: it allocates about the same
// with 2,000 queues as with 60. (It read every queue and sorted them to
// keep the 50 busiest: 70 ms of the broker's time at each fetch with
// 50,000 queues.)
func TestUI_OverviewCostsItsList(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	allocs := func(more string) float64 {
		return testing.AllocsPerRun(3, func() {
			rec := httptest.NewRecorder()
			e.api.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/ui/?fragment=queues", nil))
			if body := rec.Body.String(); rec.Code != http.StatusOK || strings.Count(body, `<th scope="row" class="name">`) != 50 || !strings.Contains(body, more) {
				t.Fatalf("overview: %d\n%.2000s", rec.Code, rec.Body)
			}
		})
	}
	loadQueues(t, e, 0, 60)
	few := allocs("10 more are not")
	loadQueues(t, e, 60, 2_000)
	if many := allocs("1950 more are not"); many > 1.5*few {
		t.Errorf("the overview's queues allocate %.0f times with 2,000 queues, %.0f with 60", many, few)
	}
}

// TestUI_LoginSaysWhyTheTokenStopped: a browser whose kept token expired
// (or was revoked) is sent to the login form, and the form says why,
// rather than asking for a token as if the operator had never logged in:
// the cookie is kept past the token's end for that (cookieAge).
func TestUI_LoginSaysWhyTheTokenStopped(t *testing.T) {
	e := newEnv(t, httpapi.Options{Auth: true})
	start := e.clock.Now()
	_, expiring, err := e.db.CreateExpiringToken(ctx, spinbroker.RoleViewer, "", "v", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, revoked := e.revokedSecret(spinbroker.RoleViewer, "", "gone")
	e.clock.Add(2 * time.Hour)
	for secret, want := range map[string]string{
		expiring: "expired at " + start.Add(time.Hour).Format(time.RFC3339),
		revoked:  "revoked",
	} {
		cookie := []string{"Cookie", httpapi.TokenCookie + "=" + secret}
		r := e.get("/ui/", cookie...)
		if r.status != 303 || !strings.HasPrefix(r.header.Get("Location"), "/ui/login") {
			t.Fatalf("a page with a dead token: %d to %q", r.status, r.header.Get("Location"))
		}
		wantHTML(t, e.get(r.header.Get("Location"), cookie...), 200, `name="token"`, want)
	}
	// Without a cookie, or with a good one, the form says nothing of it.
	for _, h := range [][]string{nil, {"Cookie", httpapi.TokenCookie + "=" + e.secret(spinbroker.RoleViewer, "", "ok")}} {
		r := e.get("/ui/login", h...)
		wantHTML(t, r, 200, `name="token"`)
		if strings.Contains(string(r.body), `class="error"`) {
			t.Errorf("the login form with %v says %s", h, r.body)
		}
	}
}

// TestUI_LoggedOutActionLeadsToLogin: a button pressed on a page left open
// after the operator logged out (in another tab, say) is refused 401 with
// a page that leads to the login form and back to the page, not with the
// API's advice to send an Authorization header, which a browser cannot.
func TestUI_LoggedOutActionLeadsToLogin(t *testing.T) {
	e := newEnv(t, httpapi.Options{Auth: true})
	r := e.form("/ui/queues/storage/pause", nil, "Referer", e.srv.URL+"/ui/queues/storage")
	wantHTML(t, r, 401, `<a href="/ui/login?next=%2Fui%2Fqueues%2Fstorage">Log in</a>`, "not logged in")
	if strings.Contains(string(r.body), "Authorization") {
		t.Errorf("a browser is told to send a header:\n%s", r.body)
	}
	// Without a page to go back to, the login leads to the overview.
	wantHTML(t, e.form("/ui/queues/storage/pause", nil), 401, `<a href="/ui/login">Log in</a>`)
	// The API's answer is unchanged.
	if r := e.do("POST", "/queues/storage/next", ""); r.status != 401 || !strings.Contains(string(r.body), "Authorization: Bearer") {
		t.Errorf("the API without a token: %d %s", r.status, r.body)
	}
}

// TestUI_DeletedDependencyNamed: a command whose dependency was deleted
// (its package deleted, which cancelled this one) says on its page that it
// depended on a command now deleted, not that it depended on nothing and
// "was ready as soon as it was enqueued", beside a reason and a refused
// retry that both name that dependency.
func TestUI_DeletedDependencyNamed(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	first := mustCreate(t, e, 1, true, nc(101, "", "q", "base", ""))
	mustCreate(t, e, 2, true, nc(201, "", "r", "child", "", fixedID(101)))
	if _, err := e.db.CancelPackage(ctx, first); err != nil {
		t.Fatal(err)
	}
	if err := e.db.DeletePackage(ctx, first); err != nil {
		t.Fatal(err)
	}
	r := e.get("/ui/commands/" + fixedID(201))
	wantHTML(t, r, 200, "a command deleted since", `title="`+fixedID(101)+`"`)
	if strings.Contains(string(r.body), "ready as soon as it was enqueued") {
		t.Errorf("the page says the command depended on nothing:\n%s", r.body)
	}
}
