package httpapi_test

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"testing"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/httpapi"
)

// loadQueues gives e's broker the queues from to n-1 (q00000, q00001, …),
// each with two ready commands, one of them leased on every third queue, a
// setting made on every tenth: each queue has all its series, counters
// moved.
func loadQueues(tb testing.TB, e *env, from, n int) {
	tb.Helper()
	for start := from; start < n; {
		end := min(start+spinbroker.MaxCommandsPerBatch/2, n)
		cmds := make([]spinbroker.NewCommand, 0, 2*(end-start))
		for i := start; i < end; i++ {
			r := queueName(i)
			cmds = append(cmds, spinbroker.NewCommand{Resource: r, Action: "a"}, spinbroker.NewCommand{Resource: r, Action: "b"})
		}
		if _, _, err := e.db.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: cmds}, nil); err != nil {
			tb.Fatal(err)
		}
		start = end
	}
	for i := from; i < n; i += 3 {
		if _, _, err := e.db.Next(ctx, queueName(i), 0); err != nil {
			tb.Fatal(err)
		}
	}
	for i := from; i < n; i += 10 {
		if _, err := e.db.SetQueue(ctx, queueName(i), spinbroker.QueueSettings{Concurrency: uiRef(3)}); err != nil {
			tb.Fatal(err)
		}
	}
}

func queueName(i int) string { return fmt.Sprintf("q%05d", i) }

// BenchmarkMetrics scrapes /metrics of a broker with 1,000 and 20,000
// queues, with auth on: all of it (an admin's token) and an agent's own
// queue's series (an agent token for one queue), read whole as a
// scraper does (gzip, as Prometheus asks). Its bytes and allocations are
// the broker's and the client's, in one process.
func BenchmarkMetrics(b *testing.B) {
	for _, n := range []int{1_000, 20_000} {
		e := newEnv(b, httpapi.Options{Auth: true})
		loadQueues(b, e, 0, n)
		admin := e.secret("admin", "", "admin")
		agent := e.secret("agent", queueName(n/2), "agent")
		for _, c := range []struct{ name, token string }{{"full", admin}, {"agent", agent}} {
			b.Run(c.name+"/queues="+strconv.Itoa(n), func(b *testing.B) {
				b.ReportAllocs()
				size := 0
				for b.Loop() {
					size = scrapeBytes(b, e, c.token)
				}
				b.ReportMetric(float64(size), "bytes/scrape")
			})
		}
	}
}

// scrapeBytes reads /metrics with token, gzipped as Prometheus asks, and
// returns how many bytes it held.
func scrapeBytes(tb testing.TB, e *env, token string) int {
	req, err := http.NewRequest("GET", e.srv.URL+"/metrics", nil)
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || resp.StatusCode != 200 {
		tb.Fatalf("/metrics: %d, %v", resp.StatusCode, err)
	}
	return int(n)
}
