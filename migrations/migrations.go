// Package migrations holds spin-broker's schema as goose SQL migrations,
// embedded so that the binary applies them at start-up.
package migrations

import "embed"

// FS holds the numbered SQL migrations.
//
//go:embed *.sql
var FS embed.FS
