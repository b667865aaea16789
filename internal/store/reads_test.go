package store_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/store"
)

// TestReads_ManyAtOnceOnAFreshPool: reads of one moment each hold a pool
// connection in a read transaction; one that met a statement the pool had
// not prepared yet asked the pool for a second connection to prepare it,
// holding the lock the others needed. With every connection held so, all
// reads (the API's, the dashboard's, /metrics) waited for ever. (Found by
// the review of the change that brought the read transactions.)
func TestReads_ManyAtOnceOnAFreshPool(t *testing.T) {
	for round := range 20 {
		db, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "d.db"), store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		p, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{cmd("r", "a"), cmd("r", "b")}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range 16 {
			wg.Go(func() {
				<-start
				if _, err := db.Package(ctx, p.ID); err != nil {
					t.Error(err)
				}
			})
		}
		close(start)
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: 16 concurrent Package reads on the default 4-connection pool hung ", round)
		}
		db.Close()
	}
}
