package httpapi

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
)

// The dashboard's buttons. Each is a form posted to a path under /ui/ that
// calls the same store method as the API and sends the browser back to the
// page (303). The router's cross-origin protection has already refused
// posts that another site's page made; permissions are checked here with
// the same allow as the API, and the pages hide what the role may not do.

func (u *ui) handlePackageCancel(w http.ResponseWriter, r *http.Request) {
	if err := u.s.allow(r, permWrite, ""); err != nil {
		u.fail(w, r, err)
		return
	}
	id, err := pathID(r, "package")
	if err != nil {
		u.fail(w, r, err)
		return
	}
	if err := parseForm(w, r); err != nil {
		u.fail(w, r, err)
		return
	}
	if r.PostForm.Get("confirmed") != "yes" {
		// A browser without JavaScript asks here what the script's
		// dialog asks: a stray click cancels nothing. A package that is
		// missing or finished gets its answer at once.
		p, err := u.s.store.PackageInfo(r.Context(), id)
		if err != nil {
			u.fail(w, r, err)
			return
		}
		if p.State.Terminal() {
			u.done(w, r, "/ui/packages/"+id)
			return
		}
		u.render(w, r, http.StatusOK, "confirm", u.newView(r, "Cancel package", "", confirmation{
			Question: cancelQuestion,
			Action:   "/ui/packages/" + id + "/cancel",
			Button:   "Cancel package",
			Back:     "/ui/packages/" + id,
			Keep:     "Keep it",
		}))
		return
	}
	if err := u.s.store.CancelPackageOnly(r.Context(), id); err != nil {
		u.fail(w, r, err)
		return
	}
	u.done(w, r, "/ui/packages/"+id)
}

// cancelQuestion is what the dashboard asks before it cancels a package.
const cancelQuestion = "Cancel this package? Its waiting commands are cancelled; leased ones run to the end."

// confirmation is the page that asks before an action, for a browser that
// runs no script.
type confirmation struct {
	Question, Action, Button, Back, Keep string
}

func (u *ui) handleCommandRetry(w http.ResponseWriter, r *http.Request) {
	if err := u.s.allow(r, permWrite, ""); err != nil {
		u.fail(w, r, err)
		return
	}
	id, err := pathID(r, "command")
	if err != nil {
		u.fail(w, r, err)
		return
	}
	if _, err := u.s.store.Retry(r.Context(), id); err != nil {
		u.fail(w, r, err)
		return
	}
	u.done(w, r, "/ui/commands/"+id)
}

// handleQueuePause pauses (or resumes) a queue.
func (u *ui) handleQueuePause(paused bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		u.setQueue(w, r, func() (spinbroker.QueueSettings, error) {
			return spinbroker.QueueSettings{Paused: &paused}, nil
		})
	}
}

func (u *ui) handleQueueConcurrency(w http.ResponseWriter, r *http.Request) {
	u.setQueue(w, r, func() (spinbroker.QueueSettings, error) {
		if err := parseForm(w, r); err != nil {
			return spinbroker.QueueSettings{}, err
		}
		raw := strings.TrimSpace(r.PostFormValue("concurrency"))
		n, err := strconv.Atoi(raw)
		if err != nil {
			return spinbroker.QueueSettings{}, errorf(spinbroker.EINVALID, "concurrency must be a whole number, not %q", spinbroker.Truncate(raw, 40))
		}
		return spinbroker.QueueSettings{Concurrency: &n}, nil
	})
}

// setQueue applies the settings a queue's form asks for.
func (u *ui) setQueue(w http.ResponseWriter, r *http.Request, settings func() (spinbroker.QueueSettings, error)) {
	if err := u.s.allow(r, permAdmin, ""); err != nil {
		u.fail(w, r, err)
		return
	}
	res, err := pathResource(r)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	in, err := settings()
	if err != nil {
		u.fail(w, r, err)
		return
	}
	if _, err := u.s.store.SetQueue(r.Context(), res, in); err != nil {
		u.fail(w, r, err)
		return
	}
	u.done(w, r, "/ui/queues/"+res)
}

// cookieAge is how long the dashboard keeps a token: it bounds how long a
// forgotten browser stays in. A token made with an end (token create
// --expires) is refused from then on, cookie or not; the cookie is kept
// past that end, so that the page the browser gets then says the token
// expired, where without the cookie it would only ask for one.
const cookieAge = 30 * 24 * time.Hour

type loginPage struct {
	Next  string
	Error string
}

// safeNext is where to go after logging in: a dashboard page, never
// another site ("//evil.example" or "https://…" are dropped), nor a page
// of the broker's outside the dashboard ("/ui/../metrics", with its dots
// written as "%2e" or split by a tab, which browsers drop, too).
func safeNext(next string) string {
	if next == "/ui/" {
		return next
	}
	if !strings.HasPrefix(next, "/ui/") || strings.HasPrefix(next, "/ui/login") || strings.ContainsAny(next, "\\\r\n\t") {
		return "/ui/"
	}
	u, err := url.Parse(next)
	if err != nil || slices.Contains(strings.Split(u.Path, "/"), "..") {
		return "/ui/"
	}
	return next
}

func (u *ui) handleLoginForm(w http.ResponseWriter, r *http.Request) {
	if !u.s.opts.Auth {
		http.Redirect(w, r, "/ui/", http.StatusSeeOther)
		return
	}
	d := &loginPage{Next: safeNext(r.URL.Query().Get("next"))}
	// A browser sent here with a token kept from before: say why it no
	// longer works (it expired, and when; it was revoked), or the form
	// asks as if the operator had never logged in.
	if c, err := r.Cookie(TokenCookie); err == nil && c.Value != "" {
		if _, err := u.s.tokens.check(r.Context(), c.Value); spinbroker.ErrorCode(err) == spinbroker.EUNAUTHORIZED {
			d.Error = sentence(spinbroker.ErrorMessage(err))
		}
	}
	u.render(w, r, http.StatusOK, "login", u.newView(r, "Log in", "", d))
}

// sentence is an error's message as a sentence: capitalised, with a full
// stop.
func sentence(msg string) string {
	if msg == "" {
		return msg
	}
	return strings.ToUpper(msg[:1]) + msg[1:] + "."
}

// handleLogin checks a token and keeps it in a cookie that scripts cannot
// read (HttpOnly) and other sites' requests do not carry (SameSite=Strict).
func (u *ui) handleLogin(w http.ResponseWriter, r *http.Request) {
	if !u.s.opts.Auth {
		http.Redirect(w, r, "/ui/", http.StatusSeeOther)
		return
	}
	if err := parseForm(w, r); err != nil {
		u.fail(w, r, err)
		return
	}
	d := &loginPage{Next: safeNext(r.PostFormValue("next"))}
	again := func(status int, msg string) {
		d.Error = msg
		v := u.newView(r, "Log in", "", d)
		u.render(w, r, status, "login", v)
	}
	secret := strings.TrimSpace(r.PostFormValue("token"))
	if secret == "" {
		again(http.StatusBadRequest, "Paste a token: spinbroker token create --role viewer (or admin) makes one.")
		return
	}
	// Through the cache, like every other request's token: a secret no
	// token could have is refused unread, and a refusal is remembered, so
	// that a flood of guesses at the form costs no more than at the API.
	tok, err := u.s.tokens.check(r.Context(), secret)
	switch {
	case spinbroker.ErrorCode(err) == spinbroker.EUNAUTHORIZED:
		// The API's sentence, as a sentence: an expired token says so.
		noteCode(w, spinbroker.EUNAUTHORIZED)
		noteRefusal(w, err)
		again(http.StatusUnauthorized, sentence(spinbroker.ErrorMessage(err)))
		return
	case err != nil:
		u.fail(w, r, err)
		return
	case tok.Role == spinbroker.RoleAgent:
		again(http.StatusForbidden, "An agent token cannot open the dashboard; use a viewer, client or admin token.")
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name:     TokenCookie,
		Value:    secret,
		Path:     "/",
		MaxAge:   int(cookieAge.Seconds()),
		HttpOnly: true,
		Secure:   overTLS(r),
		SameSite: http.SameSiteStrictMode,
	})
	http.Redirect(w, r, d.Next, http.StatusSeeOther)
}

func (u *ui) handleLogoutForm(w http.ResponseWriter, r *http.Request) {
	if !u.s.opts.Auth {
		http.Redirect(w, r, "/ui/", http.StatusSeeOther)
		return
	}
	u.render(w, r, http.StatusOK, "logout", u.newView(r, "Log out", "", nil))
}

// handleLogout forgets the cookie. It is a post, so that another site cannot
// log an operator out with a link or an image.
func (u *ui) handleLogout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{
		Name:     TokenCookie,
		Value:    "",
		Path:     "/",
		MaxAge:   -1,
		HttpOnly: true,
		Secure:   overTLS(r),
		SameSite: http.SameSiteStrictMode,
	})
	target := "/ui/login"
	if !u.s.opts.Auth {
		target = "/ui/"
	}
	http.Redirect(w, r, target, http.StatusSeeOther)
}

// overTLS reports whether the browser reached the dashboard over TLS: its
// own connection, or a proxy in front that ended TLS and says so
// (X-Forwarded-Proto). The cookie is then Secure, so that one visit to the
// http:// address cannot send the token in clear. Trusting the header
// costs nothing: a forged one only makes a cookie that plain HTTP will not
// carry back.
func overTLS(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}
