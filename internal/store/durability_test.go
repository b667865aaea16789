package store_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/store"
)

// TestDurability kills a process that writes through the store with SIGKILL,
// several times, and checks after each that everything it was told had
// committed is there: packages, their commands, and recorded results.
func TestDurability(t *testing.T) {
	if os.Getenv("SPINBROKER_CRASH_DB") != "" {
		t.Skip("this is the parent test")
	}
	path := filepath.Join(t.TempDir(), "crash.db")
	acked := map[string]string{} // package or command id → what was acknowledged
	for cycle := 0; cycle < 3; cycle++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestDurabilityChild$", "-test.v")
		cmd.Env = append(os.Environ(), "SPINBROKER_CRASH_DB="+path, fmt.Sprintf("SPINBROKER_CRASH_CYCLE=%d", cycle))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		lines := 0
		for sc.Scan() {
			kind, id, ok := strings.Cut(sc.Text(), " ")
			if ok && (kind == "package" || kind == "succeeded" || kind == "failed") {
				acked[id] = kind
				lines++
			}
		}
		err = cmd.Wait()
		var ee *exec.ExitError
		if !asExit(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("cycle %d: the child did not die by SIGKILL: %v", cycle, err)
		}
		if lines < 20 {
			t.Fatalf("cycle %d: the child acknowledged only %d writes", cycle, lines)
		}

		db, err := store.Open(ctx, path, store.Options{})
		if err != nil {
			t.Fatalf("reopen after crash %d: %v", cycle, err)
		}
		for id, kind := range acked {
			switch kind {
			case "package":
				p, err := db.Package(ctx, id)
				if err != nil {
					t.Fatalf("cycle %d: acknowledged package %s lost: %v", cycle, id, err)
				}
				if p.Total != 3 || p.EnqueuedAt == nil {
					t.Fatalf("cycle %d: package %s came back with %d commands, enqueued %v", cycle, id, p.Total, p.EnqueuedAt)
				}
			default:
				c, err := db.Command(ctx, id)
				if err != nil {
					t.Fatalf("cycle %d: command %s lost: %v", cycle, id, err)
				}
				if string(c.State) != kind {
					t.Fatalf("cycle %d: command %s is %s, its acknowledged result was %s", cycle, id, c.State, kind)
				}
			}
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d acknowledged writes survived 3 SIGKILLs", len(acked))
}

func asExit(err error, target **exec.ExitError) bool {
	ee, ok := err.(*exec.ExitError)
	if ok {
		*target = ee
	}
	return ok
}

// TestDurabilityChild is the process TestDurability kills: it writes as fast
// as it can, prints each write once the store has acknowledged it, and kills
// itself in the middle of the stream.
func TestDurabilityChild(t *testing.T) {
	path := os.Getenv("SPINBROKER_CRASH_DB")
	if path == "" {
		t.Skip("run by TestDurability")
	}
	db, err := store.Open(context.Background(), path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Every acknowledgement goes straight to the pipe (no buffer). Once 20
	// writes are in, a timer kills the process at a moment nobody chose:
	// mid-transaction, mid-checkpoint, between two writes.
	w := os.Stdout
	cycle, _ := strconv.Atoi(os.Getenv("SPINBROKER_CRASH_CYCLE"))
	armed := false
	arm := func(acks int) {
		if acks >= 20 && !armed {
			armed = true
			time.AfterFunc(time.Duration(7*cycle+3)*time.Millisecond, func() {
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
			})
		}
	}
	resource := "crash" + os.Getenv("SPINBROKER_CRASH_CYCLE")
	ok, notOK := true, false
	for i := 0; ; i++ {
		p, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{
			cmd(resource, "a"), cmd(resource, "b"), cmd(resource, "c"),
		}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(w, "package %s\n", p.ID)
		for j := 0; j < 2; j++ {
			c, _, err := db.Next(ctx, resource, 0)
			if err != nil || c == nil {
				t.Fatal("next:", err)
			}
			status := &ok
			if j == 1 && i%3 == 0 {
				status = &notOK
			}
			if _, err := db.Complete(ctx, c.ID, spinbroker.Result{Status: status, Lease: c.Lease.Token}); err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(w, "%s %s\n", map[bool]string{true: "succeeded", false: "failed"}[*status], c.ID)
		}
		arm(3 * (i + 1))
	}
}
