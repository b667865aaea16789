package httpapi_test

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/httpapi"
)

// TestReads_OfOneMoment: a package's counts and state, and a queue's
// counts, agree with the commands the same answer lists while an agent
// leases and completes them. Each answer takes several statements; on the
// read pool they ran on different connections and so could see different
// commits ("queued" beside a leased command, counts one off).
func TestReads_OfOneMoment(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	cmd := `{"resource":"x","action":"a"}`
	p := e.createPackage("["+strings.TrimSuffix(strings.Repeat(cmd+",", 300), ",")+"]", true)
	e.want(e.do("PATCH", "/queues/x", `{"concurrency": 300}`), 200, "")

	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c := e.next("x")
			if c == nil {
				return
			}
			e.complete(c, true)
		}
	})
	torn := 0
	for done := false; !done; {
		var pkg spinbroker.Package
		if err := json.Unmarshal(e.do("GET", "/packages/"+p.ID, "").body, &pkg); err != nil {
			t.Fatal(err)
		}
		var n spinbroker.Counts
		for _, c := range pkg.Commands {
			n.Add(c.State, 1)
		}
		if n != pkg.Counts || pkg.State == spinbroker.PackageQueued && n.Leased+n.Succeeded > 0 {
			if torn++; torn <= 3 {
				t.Errorf("package %s with counts %+v lists commands %+v", pkg.State, pkg.Counts, n)
			}
		}
		done = pkg.State == spinbroker.PackageSucceeded

		var q spinbroker.Queue
		if err := json.Unmarshal(e.do("GET", "/queues/x", "").body, &q); err != nil {
			t.Fatal(err)
		}
		var qn spinbroker.Counts
		for _, c := range q.Commands {
			qn.Add(c.State, 1)
		}
		// The list holds the first 50 unfinished commands: all of them
		// when it holds fewer.
		if len(q.Commands) < 50 && (qn.Blocked != q.Counts.Blocked || qn.Ready != q.Counts.Ready || qn.Leased != q.Counts.Leased) {
			if torn++; torn <= 3 {
				t.Errorf("queue with counts %+v lists commands %+v", q.Counts, qn)
			}
		}
	}
	wg.Wait()
	if torn > 0 {
		t.Errorf("%d answers disagreed with themselves", torn)
	}
}
