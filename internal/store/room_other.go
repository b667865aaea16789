//go:build !(linux || darwin || freebsd || dragonfly)

package store

// freeBytes cannot tell the free space here.
func freeBytes(string) (uint64, bool) { return 0, false }

// sqliteTempDir is not told here: "" for unknown.
func sqliteTempDir() string { return "" }

// noAccess is not told here: SQLite says what it can.
func noAccess(string, bool) error { return nil }
