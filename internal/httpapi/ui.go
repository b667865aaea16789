package httpapi

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/web"
)

// ui is the dashboard: server-rendered pages under /ui/, built from the
// templates in web.FS, parsed once when the server is made.
type ui struct {
	s       *Server
	pages   map[string]*template.Template
	files   fs.FS // web.FS's static/
	static  http.Handler
	version string // a hash of the static files, for cache-busting URLs
}

// pageNames are the templates in web/templates that are whole pages; each is
// parsed together with layout.html and partials.html.
var pageNames = []string{"overview", "packages", "package", "queue", "command", "search", "login", "logout", "confirm", "error"}

// mountUI adds the dashboard's routes: / and everything under /ui/. HTML is
// only ever answered here; the API's paths answer JSON whatever the Accept
// header says.
func (s *Server) mountUI(r chi.Router) {
	u := newUI(s)
	s.ui = u
	// HEAD wherever GET (an uptime monitor's probe of /): net/http sends
	// the head of the GET's answer without its body.
	get := func(pattern string, h http.HandlerFunc) {
		r.Get(pattern, h)
		r.Head(pattern, h)
	}
	get("/", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/", http.StatusFound)
	})
	get("/ui", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/", http.StatusFound)
	})
	// The buttons' posts change state as the API's writes do, and take a
	// turn among them (--max-writes) like those.
	w := r.With(s.limitWrites)
	get("/ui/", u.handleOverview)
	get("/ui/packages", u.handlePackages)
	get("/ui/packages/{id}", u.handlePackage)
	w.Post("/ui/packages/{id}/cancel", u.handlePackageCancel)
	get("/ui/queues/{resource}", u.handleQueue)
	w.Post("/ui/queues/{resource}/pause", u.handleQueuePause(true))
	w.Post("/ui/queues/{resource}/resume", u.handleQueuePause(false))
	w.Post("/ui/queues/{resource}/concurrency", u.handleQueueConcurrency)
	get("/ui/commands/{id}", u.handleCommand)
	w.Post("/ui/commands/{id}/retry", u.handleCommandRetry)
	get("/ui/search", u.handleSearch)
	get("/ui/login", u.handleLoginForm)
	r.Post("/ui/login", u.handleLogin)
	get("/ui/logout", u.handleLogoutForm)
	r.Post("/ui/logout", u.handleLogout)
	get("/ui/static/*", u.handleStatic)
	// Browsers ask for /favicon.ico on pages that name no icon: an API
	// answer opened in a tab, say.
	get("/favicon.ico", func(w http.ResponseWriter, r *http.Request) {
		r2 := r.Clone(r.Context())
		r2.URL.Path = "/ui/static/favicon.svg"
		u.handleStatic(w, r2)
	})
	// Any other page under /ui/ is a 404 in HTML, not the API's JSON.
	get("/ui/*", u.handleNotFound)
}

// newUI parses the templates and indexes the static files. The files are
// embedded, so a template that does not parse is a bug in this binary:
// panicking here fails every test and the broker's start, never a request.
func newUI(s *Server) *ui {
	static, err := fs.Sub(web.FS, "static")
	if err != nil {
		panic(err)
	}
	u := &ui{s: s, pages: map[string]*template.Template{}, files: static, version: hashFS(static)}
	funcs := u.funcs()
	for _, name := range pageNames {
		t := template.New(name).Funcs(funcs)
		u.pages[name] = template.Must(t.ParseFS(web.FS, "templates/layout.html", "templates/partials.html", "templates/"+name+".html"))
	}
	u.static = http.StripPrefix("/ui/static/", http.FileServerFS(static))
	return u
}

// hashFS hashes every file of fsys, so that static URLs change whenever a
// file does and browsers may cache them for good.
func hashFS(fsys fs.FS) string {
	h := sha256.New()
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		h.Write([]byte(p))
		h.Write(b)
		return nil
	})
	if err != nil {
		panic(err)
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}

// view is what every page's template gets: the page's own data in Data and
// what the layout needs around it.
type view struct {
	Title    string
	Nav      string // the navigation item to mark as current
	Events   string // the /events URL the page listens to; "" for a static page
	Resource string // on a queue's page: only this resource's events matter
	Auth     bool   // auth is on: show the role and a logout button
	Role     string
	CanWrite bool // may cancel packages and retry commands
	CanAdmin bool // may pause queues and change their concurrency
	Query    string
	Bare     bool // served without a token: no navigation to pages it cannot open
	Now      time.Time
	Data     any
}

// newView fills in what the layout needs for request r.
func (u *ui) newView(r *http.Request, title, nav string, data any) *view {
	v := &view{
		Title:    title,
		Nav:      nav,
		Auth:     u.s.opts.Auth,
		Role:     identityOf(r).token.Role,
		CanWrite: u.s.allow(r, permWrite, "") == nil,
		CanAdmin: u.s.allow(r, permAdmin, "") == nil,
		Now:      u.s.now().UTC(),
		Data:     data,
	}
	if _, ok := r.Context().Value(identityKey{}).(*identity); u.s.opts.Auth && !ok {
		// A page served without a token (the login form, a missing static
		// file): identityOf's anonymous admin is not who is looking.
		v.Auth, v.Role, v.CanWrite, v.CanAdmin, v.Bare = false, "", false, false, true
	}
	return v
}

// Ago says how long before the page's time t was, for templates: "3m 20s
// ago", or "just now" within a second. It takes a time.Time or a
// *time.Time ("" for nil).
func (v *view) Ago(t any) string {
	d, ok := v.since(t)
	if !ok {
		return ""
	}
	return ago(d)
}

// Since is how long before the page's time t was, as a duration ("3m
// 20s"), for sentences such as "in 3m 20s"; "" for a nil *time.Time.
func (v *view) Since(t any) string {
	d, ok := v.since(t)
	if !ok {
		return ""
	}
	return human(d)
}

func (v *view) since(t any) (time.Duration, bool) {
	switch t := t.(type) {
	case time.Time:
		return v.Now.Sub(t), true
	case *time.Time:
		if t != nil {
			return v.Now.Sub(*t), true
		}
	}
	return 0, false
}

// ago is "3m 20s ago", or "just now" under a second, where milliseconds
// would only say how long the page took.
func ago(d time.Duration) string {
	if d < time.Second {
		return "just now"
	}
	return human(d) + " ago"
}

// Until says how far ahead of the page's time t is ("in 40s"), or how
// long ago it passed: a lease the sweeper has not settled yet.
func (v *view) Until(t *time.Time) string {
	if t == nil {
		return ""
	}
	if d := t.Sub(v.Now); d >= 0 {
		return "in " + human(d)
	}
	return "passed " + ago(v.Now.Sub(*t))
}

// wantFragment reports whether the request asks for the whole page or for
// fragment name: the live updates fetch one fragment at a time, and a page
// skips the reads the others need.
func wantFragment(r *http.Request, name string) bool {
	f := r.URL.Query().Get("fragment")
	return f == "" || f == name
}

// render executes a page, or the one fragment the request asks for, into a
// buffer and only then writes it, so that a template error is a clean 500
// rather than half a page.
func (u *ui) render(w http.ResponseWriter, r *http.Request, status int, page string, v *view) {
	t := u.pages[page]
	name := "layout"
	if f := r.URL.Query().Get("fragment"); f != "" {
		name = "f-" + f
		if t.Lookup(name) == nil {
			u.fail(w, r, errorf(spinbroker.ENOTFOUND, "page %s has no fragment %q", page, spinbroker.Truncate(f, 40)))
			return
		}
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, name, v); err != nil {
		u.s.log.Error("could not render a dashboard page", logAttrs(r, "page", page, "template", name, "err", err)...)
		u.htmlHeaders(w)
		w.WriteHeader(http.StatusInternalServerError)
		w.Write([]byte("<!doctype html><title>Error</title><p>The page could not be rendered; the broker's log says why.</p>\n")) //nolint:errcheck
		return
	}
	u.htmlHeaders(w)
	w.WriteHeader(status)
	w.Write(buf.Bytes()) //nolint:errcheck // the browser is gone; nothing to do
}

// htmlHeaders are sent with every page. The policy allows only the
// dashboard's own files: no inline script, no inline style, no framing, so
// that even a value that escaped escaping could not run.
func (u *ui) htmlHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
}

// fail answers err as an HTML page with the status API.md gives its code.
// Internal errors are logged once here and answered without details. A
// request from the dashboard's script gets the message as plain text, which
// it shows above the page.
func (u *ui) fail(w http.ResponseWriter, r *http.Request, err error) {
	e, status := u.s.judge(w, r, err)
	if isFetch(r) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(status)
		w.Write([]byte(e.Message)) //nolint:errcheck
		return
	}
	// The fragment, if any, was for the failed page; the error is a page.
	q := r.URL.Query()
	if q.Has("fragment") {
		q.Del("fragment")
		r2 := *r
		r2.URL = &url.URL{Path: r.URL.Path, RawQuery: q.Encode()}
		r = &r2
	}
	d := struct {
		Status  int
		Code    string
		Message string
		Back    string
		Login   string // the login form, leading back, for a browser without a token
	}{status, e.Code, e.Message, backTo(r), ""}
	if status == http.StatusUnauthorized && u.s.opts.Auth {
		// A button pressed on a page left open after logging out: the
		// API's advice (send an Authorization header) is no use here.
		if errors.Is(err, errNoToken) || errors.Is(err, errNotBearer) {
			d.Message = "you are not logged in (you logged out, perhaps in another tab): log in, then try again"
		}
		d.Login = "/ui/login"
		if d.Back != "" {
			d.Login += "?next=" + url.QueryEscape(d.Back)
		}
	}
	u.render(w, r, status, "error", u.newView(r, http.StatusText(status), "", d))
}

// backTo is the dashboard page a failed request came from (a form posted
// from it, a link followed), for the error page to lead back to; "" when
// the Referer is not a dashboard page of this broker, or is this request.
func backTo(r *http.Request) string {
	ref, err := url.Parse(r.Referer())
	if err != nil || ref.Host != r.Host || !strings.HasPrefix(ref.Path, "/ui/") || ref.Path == r.URL.Path && r.Method == http.MethodGet {
		return ""
	}
	return (&url.URL{Path: ref.Path, RawQuery: ref.RawQuery}).String()
}

// isFetch reports whether a request comes from the dashboard's script
// rather than a plain form post or navigation.
func isFetch(r *http.Request) bool {
	return r.Header.Get("X-Requested-With") == "fetch"
}

// readable checks that the request may read the dashboard, answering the
// error page when not.
func (u *ui) readable(w http.ResponseWriter, r *http.Request) bool {
	if err := u.s.allow(r, permRead, ""); err != nil {
		u.fail(w, r, err)
		return false
	}
	return true
}

// done ends a successful form post: the script asked for it and is told
// 204 (the change arrives over /events); a plain form is sent back to the
// page, 303 so that a reload does not post again.
func (u *ui) done(w http.ResponseWriter, r *http.Request, back string) {
	if isFetch(r) {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	http.Redirect(w, r, back, http.StatusSeeOther)
}

// parseForm reads a small urlencoded form body.
func parseForm(w http.ResponseWriter, r *http.Request) error {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		return errorf(spinbroker.EINVALID, "the form could not be read")
	}
	return nil
}

func (u *ui) handleNotFound(w http.ResponseWriter, r *http.Request) {
	u.fail(w, r, errorf(spinbroker.ENOTFOUND, "there is no page %s", spinbroker.Truncate(r.URL.Path, 200)))
}

// handleStatic serves the embedded CSS, script and icons. A URL carrying the
// current version may be cached for good; others are revalidated by ETag.
func (u *ui) handleStatic(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/ui/static/")
	if !fs.ValidPath(name) || path.Clean(name) != name {
		u.handleNotFound(w, r)
		return
	}
	if st, err := fs.Stat(u.files, name); err != nil || st.IsDir() {
		u.handleNotFound(w, r)
		return
	}
	h := w.Header()
	if r.URL.Query().Get("v") == u.version {
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		h.Set("Cache-Control", "no-cache")
	}
	h.Set("ETag", `"`+u.version+`"`)
	h.Set("X-Content-Type-Options", "nosniff")
	u.static.ServeHTTP(w, r)
}

// wantsLogin reports whether an unauthenticated request comes from a
// browser on a dashboard page, which is sent to the login form rather than
// answered 401.
func (s *Server) wantsLogin(r *http.Request) bool {
	return (r.URL.Path == "/" || strings.HasPrefix(r.URL.Path, "/ui/")) &&
		r.Method == http.MethodGet && strings.Contains(r.Header.Get("Accept"), "text/html")
}

func urlQueryEscape(s string) string { return url.QueryEscape(s) }
