package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"testing"

	spinbroker "github.com/spin-broker/spinbroker"
)

// TestNext_ReadsTheAnswerOnce: a command of 1 MiB of parameters taken with
// Next costs the answer's bytes, read into a buffer of its Content-Length,
// and the parameters decoded out of it: under 2.5 times them, the best of
// five calls. io.ReadAll's buffer, grown as it read, cost more than twice
// the answer on its own, garbage as soon as the answer was decoded.
func TestNext_ReadsTheAnswerOnce(t *testing.T) {
	params := `{"p":"` + strings.Repeat("x", spinbroker.MaxBodyBytes-300) + `"}`
	body, err := json.Marshal(spinbroker.Command{ID: "c1", Resource: "r", Action: "a", Parameters: json.RawMessage(params),
		State: spinbroker.Leased, Attempts: 1, Lease: &spinbroker.Lease{Token: "t"}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	}))
	defer srv.Close()
	c, err := New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	best := uint64(1 << 62)
	for range 5 {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		cmd, err := c.Next(context.Background(), "r", 0, 0)
		runtime.ReadMemStats(&after)
		if err != nil {
			t.Fatal(err)
		}
		if string(cmd.Parameters) != params {
			t.Fatalf("parameters of %d bytes, want the %d sent", len(cmd.Parameters), len(params))
		}
		best = min(best, after.TotalAlloc-before.TotalAlloc)
	}
	if per := float64(best) / float64(len(params)); per >= 2.5 {
		t.Errorf("Next allocated %.2f times the parameters it took, want under 2.5", per)
	} else {
		t.Logf("Next allocated %.2f times the parameters it took", per)
	}
}
