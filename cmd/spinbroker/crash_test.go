package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/client"
	"github.com/spin-broker/spinbroker/internal/store"
)

// TestCrash runs the real broker under load from concurrent producers and
// agents, kills it with SIGKILL several times and restarts it on the same
// file. Afterwards every package a producer saw acknowledged is there,
// every command finished exactly once with the result its agent saw
// acknowledged, and the agents' own logs show that each queue delivered in
// order and that no command came before its dependency had finished.
// The first command of most packages has parameters past 2 KiB, up to near
// the 1 MiB body limit, which the store keeps in a table of their own
// (migration 00006), and its agent answers with an output of some KiB:
// each is delivered and kept byte for byte, and `spinbroker check` finds
// the file clean (no parameters lost, none left behind).
func TestCrash(t *testing.T) {
	const (
		cycles   = 4
		packages = 120
	)
	db := filepath.Join(t.TempDir(), "crash.db")
	addr := loopbackAddr(t)
	url := "http://" + addr
	c, err := client.New(url)
	if err != nil {
		t.Fatal(err)
	}
	b := startBroker(t, db, "--addr", addr)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		mu    sync.Mutex
		acked = map[string][]string{} // package → its command ids, as acknowledged
		deps  = map[string]string{}   // command → the command it depends on
		// The agents' logs: what each received, in order, and when each
		// result was sent and acknowledged.
		received = map[string][]delivery{}
		sentAt   = map[string]time.Time{}
		results  = map[string]int{} // acknowledged successes per command
	)

	// Producers: a package is a command on q0 and one on q1 that depends on
	// it. Each create is retried with the same Idempotency-Key until the
	// broker acknowledges it, across crashes.
	var producers sync.WaitGroup
	for p := 0; p < 3; p++ {
		producers.Add(1)
		go func(p int) {
			defer producers.Done()
			for i := 0; i < packages/3; i++ {
				in := spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{
					{Key: "a", Resource: "q0", Action: "first", Parameters: crashParameters(p, i)},
					{Key: "b", Resource: "q1", Action: "second", Dependencies: []string{"a"}},
				}}
				key := fmt.Sprintf("producer-%d-%d", p, i)
				for {
					pkg, err := c.CreatePackage(ctx, in, client.IdempotencyKey(key))
					if err == nil {
						mu.Lock()
						acked[pkg.ID] = []string{pkg.Commands[0].ID, pkg.Commands[1].ID}
						deps[pkg.Commands[1].ID] = pkg.Commands[0].ID
						mu.Unlock()
						break
					}
					if ctx.Err() != nil {
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
		}(p)
	}

	// Agents: one per queue, with short leases so that a lease lost in a
	// crash comes back quickly. A result is resent until acknowledged.
	var agents sync.WaitGroup
	for _, q := range []string{"q0", "q1"} {
		agents.Add(1)
		go func(q string) {
			defer agents.Done()
			ok := true
			for ctx.Err() == nil {
				cmd, err := c.Next(ctx, q, time.Second, 2*time.Second)
				if err != nil || cmd == nil {
					if err != nil {
						time.Sleep(20 * time.Millisecond)
					}
					continue
				}
				if q == "q0" {
					var pi struct{ P, I int }
					if err := json.Unmarshal(cmd.Parameters, &pi); err != nil || string(cmd.Parameters) != string(crashParameters(pi.P, pi.I)) {
						t.Errorf("%s delivered with %d bytes of parameters other than those given (%v)", cmd.ID, len(cmd.Parameters), err)
					}
				}
				mu.Lock()
				received[q] = append(received[q], delivery{id: cmd.ID, seq: *cmd.Seq, attempts: cmd.Attempts, at: time.Now()})
				sentAt[cmd.ID] = time.Now()
				mu.Unlock()
				for ctx.Err() == nil {
					_, err := c.Complete(ctx, cmd.ID, spinbroker.Result{Status: &ok, Lease: cmd.Lease.Token, Output: crashOutput(cmd.ID)})
					if err == nil {
						mu.Lock()
						results[cmd.ID]++
						mu.Unlock()
						break
					}
					if code := spinbroker.ErrorCode(err); code == spinbroker.ESTALE || code == spinbroker.ECONFLICT {
						break // the lease expired during the crash: it is redelivered
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
		}(q)
	}

	// Kill and restart the broker while all that runs.
	for i := 0; i < cycles; i++ {
		time.Sleep(time.Duration(700+300*i) * time.Millisecond)
		if err := b.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-b.done
		b = startBroker(t, db, "--addr", addr)
	}
	producers.Wait()
	// Let the agents finish the work.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		mu.Lock()
		done := 0
		for _, ids := range acked {
			for _, id := range ids {
				if results[id] > 0 {
					done++
				}
			}
		}
		want := 2 * len(acked)
		mu.Unlock()
		if done == want && want == 2*(packages/3)*3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the crashes %d of %d commands finished", done, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	agents.Wait()

	mu.Lock()
	defer mu.Unlock()
	// Every acknowledged package and result is there, each result once.
	check := context.Background()
	for pid, ids := range acked {
		p, err := c.Package(check, pid)
		if err != nil {
			t.Fatalf("acknowledged package %s lost: %v", pid, err)
		}
		if p.State != spinbroker.PackageSucceeded {
			t.Errorf("package %s is %s", pid, p.State)
		}
		for i, cmd := range p.Commands {
			if cmd.ID != ids[i] || cmd.State != spinbroker.Succeeded {
				t.Errorf("command %s is %s", cmd.ID, cmd.State)
			}
			if results[cmd.ID] != 1 {
				t.Errorf("command %s has %d acknowledged results", cmd.ID, results[cmd.ID])
			}
			if i == 0 {
				var pi struct{ P, I int }
				if err := json.Unmarshal(cmd.Parameters, &pi); err != nil || string(cmd.Parameters) != string(crashParameters(pi.P, pi.I)) {
					t.Errorf("command %s kept %d bytes of parameters other than those given (%v)", cmd.ID, len(cmd.Parameters), err)
				}
			}
			if string(cmd.Output) != string(crashOutput(cmd.ID)) {
				t.Errorf("command %s kept %d bytes of output, not the %d its agent sent", cmd.ID, len(cmd.Output), len(crashOutput(cmd.ID)))
			}
			if d, ok := deps[cmd.ID]; ok {
				dep := p.Commands[0]
				if dep.ID != d || cmd.StartedAt.Before(*dep.FinishedAt) {
					t.Errorf("%s started %v, before its dependency finished %v", cmd.ID, cmd.StartedAt, dep.FinishedAt)
				}
				// From the agents' logs: the dependent was received only
				// after its dependency's result had been sent.
				if first := firstReceived(received["q1"], cmd.ID); first.IsZero() || first.Before(sentAt[d]) {
					t.Errorf("%s received before its dependency's result was sent", cmd.ID)
				}
			}
		}
	}
	// Each queue delivered in order: sequence numbers never go back, and a
	// repeat is a redelivery with more attempts.
	redelivered := 0
	for q, ds := range received {
		for i := 1; i < len(ds); i++ {
			prev, cur := ds[i-1], ds[i]
			switch {
			case cur.seq < prev.seq:
				t.Errorf("%s delivered seq %d after %d", q, cur.seq, prev.seq)
			case cur.seq == prev.seq && cur.attempts <= prev.attempts:
				t.Errorf("%s delivered %s twice with attempts %d", q, cur.id, cur.attempts)
			}
			if cur.attempts > 1 {
				redelivered++
			}
		}
	}
	cc, err := store.CheckFile(check, db)
	if err != nil || !cc.OK() {
		t.Errorf("check of the file after the crashes: %v %+v", err, cc)
	}
	t.Logf("%d packages and %d results survived %d SIGKILLs; %d redeliveries after lost leases", len(acked), len(results), cycles, redelivered)
}

// crashParameters are the parameters of producer p's i-th package's first
// command: small, or past 2 KiB (kept aside by the store) up to near the
// 1 MiB body limit, filled with what names them.
func crashParameters(p, i int) json.RawMessage {
	size := []int{30, 3 << 10, 64 << 10, 900 << 10}[i%4]
	head := fmt.Sprintf(`{"p":%d,"i":%d,"x":"`, p, i)
	fill := strings.Repeat(fmt.Sprintf("%d.%d;", p, i), size/4)
	return json.RawMessage(head + fill[:max(size-len(head)-2, 0)] + `"}`)
}

// crashOutput is the output an agent sends for command id: some KiB.
func crashOutput(id string) json.RawMessage {
	return json.RawMessage(`{"id":"` + id + `","x":"` + strings.Repeat(id, 100) + `"}`)
}

type delivery struct {
	id       string
	seq      int64
	attempts int
	at       time.Time
}

func firstReceived(ds []delivery, id string) time.Time {
	for _, d := range ds {
		if d.id == id {
			return d.at
		}
	}
	return time.Time{}
}

// loopbackAddr is freeAddr's address, for a broker that is to be started
// again where its clients left it.
func loopbackAddr(t *testing.T) string {
	t.Helper()
	addr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}
