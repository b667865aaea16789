// Package web holds the dashboard's HTML templates and static files,
// embedded so that the broker serves them from its own binary, offline and
// without a build step. internal/httpapi parses the templates once at
// start-up and serves the static files under /ui/static/.
package web

import "embed"

// FS holds templates/*.html (html/template sources, one per page plus the
// shared layout and partials) and static/ (CSS, JavaScript, icons).
//
//go:embed templates static
var FS embed.FS
