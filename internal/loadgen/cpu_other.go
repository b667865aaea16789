//go:build !unix

package loadgen

import "time"

// processCPU: elsewhere than on Unix, the generator's CPU time is not
// measured.
func processCPU() (time.Duration, bool) { return 0, false }
