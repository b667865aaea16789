//go:build race

package store_test

// raceEnabled is true when the race detector is on: it slows the
// transpiled SQLite down several times, so long tests run shorter.
const raceEnabled = true
