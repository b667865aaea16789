package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/client"
	"github.com/spin-broker/spinbroker/internal/store"
)

// TestSlowloris: a client that trickles its headers is cut off after
// --header-timeout, and the broker goes on answering everyone else.
func TestSlowloris(t *testing.T) {
	b := startBroker(t, filepath.Join(t.TempDir(), "s.db"), "--header-timeout", "1s")
	addr := strings.TrimPrefix(b.url, "http://")
	var wg sync.WaitGroup
	closed := make(chan time.Duration, 5)
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			start := time.Now()
			fmt.Fprint(conn, "POST /packages HTTP/1.1\r\nHost: localhost\r\n")
			for j := 0; j < 30; j++ {
				if _, err := fmt.Fprintf(conn, "X-Slow-%d: a\r\n", j); err != nil {
					break
				}
				time.Sleep(200 * time.Millisecond)
				conn.SetReadDeadline(time.Now().Add(time.Millisecond))
				if _, err := bufio.NewReader(conn).ReadByte(); err == nil || !isTimeout(err) {
					break // answered or closed: cut off
				}
			}
			closed <- time.Since(start)
		}()
	}
	// Meanwhile the broker answers others.
	for i := 0; i < 5; i++ {
		resp, err := http.Get(b.url + "/healthz")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("healthz during the attack: %v %v", resp, err)
		}
		resp.Body.Close()
		time.Sleep(100 * time.Millisecond)
	}
	wg.Wait()
	close(closed)
	for d := range closed {
		if d > 4*time.Second {
			t.Errorf("a slow client was held %v; the header timeout is 1s", d)
		}
	}
}

// TestReadTimeout: a body still arriving at --read-timeout is cut off (the
// default would hold it for 60s).
func TestReadTimeout(t *testing.T) {
	b := startBroker(t, filepath.Join(t.TempDir(), "r.db"), "--header-timeout", "1s", "--read-timeout", "2s")
	conn, err := net.Dial("tcp", strings.TrimPrefix(b.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	fmt.Fprint(conn, "POST /packages HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"commands\": ")
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	took := time.Since(start)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Errorf("a body cut off answered %d, want 400", resp.StatusCode)
		}
	} else if isTimeout(err) {
		t.Fatalf("the body was not cut off within %v", took)
	}
	if took > 10*time.Second {
		t.Errorf("a body was held %v; the read timeout is 2s", took)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestBackupRestore backs up a database while a broker writes to it,
// restores the copy as documented, and finds everything the backup saw.
func TestBackupRestore(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "live.db")
	b := startBroker(t, db)
	c, _ := client.New(b.url)
	ctx := context.Background()
	var before []string
	for i := 0; i < 20; i++ {
		p, err := c.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{{Resource: "r", Action: "x"}}})
		if err != nil {
			t.Fatal(err)
		}
		before = append(before, p.ID)
	}
	// Writers keep going during the backup.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
				c.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{{Resource: "r", Action: "y"}}})
			}
		}
	}()
	backup := filepath.Join(dir, "backup.db")
	out, err := exec.Command(serveBinary(t), "backup", "--db", db, "--to", backup).CombinedOutput()
	close(stop)
	<-done
	if err != nil || !strings.Contains(string(out), "backed up") {
		t.Fatalf("backup: %v\n%s", err, out)
	}
	if out, err := exec.Command(serveBinary(t), "backup", "--db", db, "--to", backup).CombinedOutput(); err == nil {
		t.Fatalf("a backup over an existing file must be refused:\n%s", out)
	}
	b.stop(t)

	// Restore: the copy is the database now.
	restored := startBroker(t, backup, "--check")
	c, _ = client.New(restored.url)
	for _, id := range before {
		if _, err := c.Package(ctx, id); err != nil {
			t.Fatalf("package %s missing from the restored backup: %v", id, err)
		}
	}
	if !strings.Contains(restored.logs.String(), "integrity check passed") {
		t.Fatalf("the restored copy was not checked:\n%s", restored.logs)
	}
}

// TestBackup_ThroughAnotherHardLink: a backup through a second name of the
// database a broker serves, a hard link made after the broker started
// (serve refuses one that exists at start), is refused, saying why: SQLite
// looks for the -wal beside the name it is given, so the copy lacked the
// commits still in the broker's -wal beside the first name and was called
// a backup all the same. It leaves no -wal or -shm beside the link; the
// backup through the served name has every commit.
func TestBackup_ThroughAnotherHardLink(t *testing.T) {
	dir := t.TempDir()
	db, other := filepath.Join(dir, "one.db"), filepath.Join(dir, "two.db")
	b := startBroker(t, db)
	if err := os.Link(db, other); err != nil {
		t.Fatal(err)
	}
	c, _ := client.New(b.url)
	ctx := context.Background()
	p, err := c.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{{Resource: "r", Action: "after-the-link"}}})
	if err != nil {
		t.Fatal(err)
	}
	through := filepath.Join(dir, "through-link.db")
	r := spin(t, "backup", "--db", other, "--to", through)
	if r.code != 1 || !strings.Contains(r.stderr, "two.db has 2 hard links") || !strings.Contains(r.stderr, "-samefile") || !strings.Contains(r.stderr, "the name the broker serves") {
		t.Errorf("a backup through a hard link beside the broker: %s", r)
	}
	for _, f := range []string{through, other + "-wal", other + "-shm"} {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("the refused backup left %s", filepath.Base(f))
		}
	}
	through = filepath.Join(dir, "through-served.db")
	if r := spin(t, "backup", "--db", db, "--to", through); r.code != 0 {
		t.Fatalf("a backup through the name the broker serves: %s", r)
	}
	copied, err := store.Open(ctx, through, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer copied.Close()
	if _, err := copied.Package(ctx, p.ID); err != nil {
		t.Fatalf("the backup through the served name lacks the package made after the link: %v", err)
	}
}

// TestCompact: compact refuses to run beside a broker; once it has stopped,
// compact gives back the space that deleted packages left, and the broker
// starts again on the database with what was kept.
func TestCompact(t *testing.T) {
	db := filepath.Join(t.TempDir(), "c.db")
	b := startBroker(t, db)
	c, _ := client.New(b.url)
	ctx := context.Background()
	kept, err := c.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{{Resource: "r", Action: "kept"}}})
	if err != nil {
		t.Fatal(err)
	}
	blob := []byte(`{"blob": "` + strings.Repeat("x", 4000) + `"}`)
	var big []string
	for range 300 {
		p, err := c.CreatePackage(ctx, spinbroker.NewPackage{Commands: []spinbroker.NewCommand{{Resource: "r", Action: "big", Parameters: blob}}})
		if err != nil {
			t.Fatal(err)
		}
		big = append(big, p.ID)
	}
	for _, id := range big {
		if err := c.DeletePackage(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if free := metric(t, b.url, "spinbroker_store_free_bytes"); free < 1<<20 {
		t.Fatalf("spinbroker_store_free_bytes %v after deleting 1.2 MB of rows", free)
	}
	if r := spin(t, "compact", "--db", db); r.code == 0 || !strings.Contains(r.stderr, "in use") || !strings.Contains(r.stderr, "stop it first") || strings.Contains(r.stderr, "compacting") {
		t.Fatalf("compact beside the broker: %s", r)
	}
	b.stop(t)

	r := spin(t, "compact", "--db", db)
	if r.code != 0 || !regexp.MustCompile(`compacted .* from [0-9.]+ MiB to [0-9.]+ MiB`).MatchString(r.stdout) || !strings.Contains(r.stderr, "compacting "+db) {
		t.Fatalf("compact: %s", r)
	}
	b = startBroker(t, db)
	c, _ = client.New(b.url)
	if p, err := c.Package(ctx, kept.ID); err != nil || p.Total != 1 {
		t.Fatalf("the kept package after compacting: %+v %v", p, err)
	}
	if free := metric(t, b.url, "spinbroker_store_free_bytes"); free != 0 {
		t.Fatalf("spinbroker_store_free_bytes %v after compacting", free)
	}
}

// metric reads one unlabelled metric of the broker at url.
func metric(t *testing.T, url, name string) float64 {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no %s in the metrics", name)
	return 0
}

// TestSweep_Logged: a sweep that did something says what, and how long it
// took.
func TestSweep_Logged(t *testing.T) {
	b := startBroker(t, filepath.Join(t.TempDir(), "s.db"))
	c, _ := client.New(b.url)
	ctx := context.Background()
	if _, err := c.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{{Resource: "r", Action: "x"}}}); err != nil {
		t.Fatal(err)
	}
	if cmd, err := c.Next(ctx, "r", 0, time.Second); err != nil || cmd == nil {
		t.Fatalf("next: %v %v", cmd, err)
	}
	swept := regexp.MustCompile(`msg=swept leases_settled=1 .*duration=[0-9.]+[mµ]?s`)
	deadline := time.Now().Add(15 * time.Second)
	for !swept.MatchString(b.logs.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("no sweep line with its duration:\n%s", b.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
