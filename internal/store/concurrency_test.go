package store_test

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/store"
	"github.com/spin-broker/spinbroker/internal/store/storetest"
)

// TestConcurrency runs producers and agents in many goroutines against one
// store and checks, from the store's own commit stream (which is in commit
// order), that no queue ever held more leases than its concurrency, that
// the serial queue delivered in enqueue order, that nothing was delivered
// before its dependencies succeeded, and that every command ended with
// exactly one success.
func TestConcurrency(t *testing.T) {
	db, _ := storetest.MustOpen(t, store.Options{Now: time.Now})
	conc := map[string]int{"serial": 1, "pair": 2, "wide": 4}
	for r, n := range conc {
		if _, err := db.SetQueue(ctx, r, spinbroker.QueueSettings{Concurrency: ptr(n)}); err != nil {
			t.Fatal(err)
		}
	}

	var (
		mu        sync.Mutex
		leased    = map[string]int{}
		stateOf   = map[string]spinbroker.CommandState{}
		violation []string
		lastSeq   = map[string]int64{}
		deps      = map[string][]string{}
		seqOf     = map[string]int64{}
		nextSeq   int64
	)
	db.Listen(func(c *spinbroker.Commit) {
		mu.Lock()
		defer mu.Unlock()
		for _, ch := range c.Commands {
			if ch.From == spinbroker.Staged {
				// Enqueue events arrive in commit order, and within a
				// package in the order its commands were added: the queue
				// order.
				nextSeq++
				seqOf[ch.CommandID] = nextSeq
			}
			if stateOf[ch.CommandID] == spinbroker.Leased {
				leased[ch.Resource]--
			}
			stateOf[ch.CommandID] = ch.To
			if ch.To != spinbroker.Leased {
				continue
			}
			leased[ch.Resource]++
			if leased[ch.Resource] > conc[ch.Resource] {
				violation = append(violation, fmt.Sprintf("%s: %d leased", ch.Resource, leased[ch.Resource]))
			}
			for _, d := range deps[ch.CommandID] {
				if stateOf[d] != spinbroker.Succeeded {
					violation = append(violation, fmt.Sprintf("%s delivered before dependency %s succeeded (%s)", ch.CommandID, d, stateOf[d]))
				}
			}
			if ch.Resource == "serial" {
				if s := seqOf[ch.CommandID]; s <= lastSeq["serial"] && ch.Attempts == 1 {
					violation = append(violation, fmt.Sprintf("serial: seq %d after %d", s, lastSeq["serial"]))
				} else if s > lastSeq["serial"] {
					lastSeq["serial"] = s
				}
			}
		}
	})

	const producers, packages = 4, 25
	var wg sync.WaitGroup
	var total int
	var tmu sync.Mutex
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(p), 1))
			for i := 0; i < packages; i++ {
				// serial commands have no dependencies, so the serial queue's
				// order is the enqueue order; the others depend across queues.
				in := spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{
					keyed("s1", "serial", "x"), keyed("s2", "serial", "y"),
					keyed("p", "pair", "a"), keyed("w1", "wide", "b", "p"),
					keyed("w2", "wide", "c"), keyed("q", "pair", "d", "w1", "w2"),
				}}
				if rnd.IntN(2) == 0 {
					in.Commands[5].Dependencies = in.Commands[5].Dependencies[:1]
				}
				// Ids chosen here, so that the dependencies are known before
				// the package is visible to anyone.
				ids := map[string]string{}
				for j := range in.Commands {
					in.Commands[j].ID = uuid.NewString()
					ids[in.Commands[j].Key] = in.Commands[j].ID
				}
				mu.Lock()
				for _, c := range in.Commands {
					for _, d := range c.Dependencies {
						deps[c.ID] = append(deps[c.ID], ids[d])
					}
				}
				mu.Unlock()
				pkg, _, err := db.CreatePackage(ctx, in, nil)
				if err != nil {
					t.Error(err)
					return
				}
				tmu.Lock()
				total += len(pkg.Commands)
				tmu.Unlock()
			}
		}(p)
	}

	var done sync.Map
	var successes sync.Map
	stop := make(chan struct{})
	var agents sync.WaitGroup
	for a := 0; a < 8; a++ {
		agents.Add(1)
		go func(a int) {
			defer agents.Done()
			resources := []string{"serial", "pair", "wide"}
			rnd := rand.New(rand.NewPCG(uint64(a), 2))
			for {
				select {
				case <-stop:
					return
				default:
				}
				r := resources[rnd.IntN(len(resources))]
				cmds, _, err := db.Claim(ctx, r, 1+rnd.IntN(3), 0)
				if err != nil {
					t.Error(err)
					return
				}
				if len(cmds) == 0 {
					time.Sleep(5 * time.Millisecond)
					continue
				}
				for _, c := range cmds {
					ok := true
					// Some fail once and are retried at once (attempts 1).
					retry := rnd.IntN(60) == 0 && c.Attempts == 1 && r != "serial"
					res := spinbroker.Result{Status: &ok, Lease: c.Lease.Token}
					if retry {
						notOK := false
						res = spinbroker.Result{Status: &notOK, Retry: true, Lease: c.Lease.Token}
					}
					got, err := db.Complete(ctx, c.ID, res)
					if err != nil {
						t.Error(err)
						return
					}
					if got.State == spinbroker.Succeeded {
						if _, dup := successes.LoadOrStore(c.ID, a); dup {
							t.Errorf("command %s succeeded twice", c.ID)
						}
						done.Store(c.ID, true)
					}
				}
			}
		}(a)
	}
	wg.Wait()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		n := 0
		done.Range(func(any, any) bool { n++; return true })
		if n == total {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d commands finished", n, total)
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	agents.Wait()
	mu.Lock()
	defer mu.Unlock()
	for _, v := range violation {
		t.Error(v)
	}
	for r := range conc {
		q, err := db.Queue(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		if q.Counts != (spinbroker.QueueCounts{}) {
			t.Errorf("queue %s ends with %+v", r, q.Counts)
		}
	}
	txs, writes, _ := db.WriteStats()
	t.Logf("%d commands, %d write transactions for %d writes", total, txs, writes)
}
