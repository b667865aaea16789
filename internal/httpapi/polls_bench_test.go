package httpapi

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkPollsSaw: agents polling n queues round-robin, once each
// before the timer starts; past maxPolled, every poll is of a queue no
// longer remembered and forgets the one asked longest ago.
func BenchmarkPollsSaw(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 50_000, 2 * maxPolled} {
		b.Run(fmt.Sprintf("queues=%d", n), func(b *testing.B) {
			names := make([]string, n)
			for i := range names {
				names[i] = fmt.Sprintf("vm-%06d", i)
			}
			start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
			p := newPolls(start)
			for i, r := range names {
				p.saw(r, ask{At: start.Add(time.Duration(i) * time.Millisecond)})
			}
			b.ReportAllocs()
			i := n
			for b.Loop() {
				p.saw(names[i%n], ask{At: start.Add(time.Duration(i) * time.Millisecond)})
				i++
			}
		})
	}
}
