package httpapi

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkPollsSaw: agents polling n queues round-robin, n past
// maxPolled, so that every poll is of a queue no longer remembered and
// forgets the one asked longest ago.
func BenchmarkPollsSaw(b *testing.B) {
	for _, n := range []int{1000, 10000, 20000, 50000} {
		b.Run(fmt.Sprintf("queues=%d", n), func(b *testing.B) {
			names := make([]string, n)
			for i := range names {
				names[i] = fmt.Sprintf("vm-%05d", i)
			}
			start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
			p := newPolls(start)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				p.saw(names[i%n], ask{At: start.Add(time.Duration(i) * time.Millisecond)})
			}
		})
	}
}
