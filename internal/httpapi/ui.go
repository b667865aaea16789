package httpapi

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/go-chi/chi/v5"
)

// mountUI adds the dashboard's routes: / and everything under /ui/.
func (s *Server) mountUI(r chi.Router) {
	r.Get("/", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/", http.StatusFound)
	})
}

// wantsLogin reports whether an unauthenticated request comes from a
// browser on a dashboard page, which is sent to the login form rather than
// answered 401.
func (s *Server) wantsLogin(r *http.Request) bool {
	return (r.URL.Path == "/" || strings.HasPrefix(r.URL.Path, "/ui/")) &&
		r.Method == http.MethodGet && strings.Contains(r.Header.Get("Accept"), "text/html")
}

func urlQueryEscape(s string) string { return url.QueryEscape(s) }
