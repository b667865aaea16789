//go:build unix

package emulation

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeQMP is an in-process QMP server: the greeting, capabilities
// negotiation (required first), events interleaved with answers, errors,
// and a command that never answers.
type fakeQMP struct {
	path     string
	greeting string
	powered  chan struct{}
}

func startFakeQMP(t *testing.T, greeting string) *fakeQMP {
	t.Helper()
	f := &fakeQMP{path: filepath.Join(t.TempDir(), "vm.qmp"), greeting: greeting, powered: make(chan struct{}, 10)}
	if f.greeting == "" {
		f.greeting = `{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}`
	}
	l, err := net.Listen("unix", f.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go f.serve(c)
		}
	}()
	return f
}

func (f *fakeQMP) serve(c net.Conn) {
	defer c.Close()
	w := bufio.NewWriter(c)
	send := func(s string) { w.WriteString(s + "\n"); w.Flush() }
	send(f.greeting)
	negotiated := false
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		var req struct {
			Execute string `json:"execute"`
			ID      any    `json:"id"`
		}
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			send(`{"error": {"class": "GenericError", "desc": "JSON parse error"}}`)
			continue
		}
		id, _ := json.Marshal(req.ID)
		answer := func(body string) { send(fmt.Sprintf(`{%s, "id": %s}`, body, id)) }
		switch {
		case req.Execute == "qmp_capabilities":
			negotiated = true
			answer(`"return": {}`)
		case !negotiated:
			answer(`"error": {"class": "CommandNotFound", "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}`)
		case req.Execute == "query-status":
			send(`{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RTC_CHANGE", "data": {"offset": 1}}`)
			send(`{"return": {"status": "stale answer"}, "id": "not-yours"}`)
			answer(`"return": {"status": "running", "singlestep": false, "running": true}`)
		case req.Execute == "system_powerdown":
			send(`{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "POWERDOWN"}`)
			answer(`"return": {}`)
			f.powered <- struct{}{}
		case req.Execute == "hang":
		default:
			answer(fmt.Sprintf(`"error": {"class": "CommandNotFound", "desc": "The command %s has not been found"}`, req.Execute))
		}
	}
}

func TestQMP(t *testing.T) {
	f := startFakeQMP(t, "")
	ctx := context.Background()
	q, err := DialQMP(ctx, f.path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if q.Version != "7.2.22" {
		t.Errorf("Version = %q", q.Version)
	}
	st, err := q.QueryStatus(ctx)
	if err != nil || st.Status != "running" || !st.Running {
		t.Errorf("QueryStatus = %+v, %v", st, err)
	}
	if err := q.PowerDown(ctx); err != nil {
		t.Errorf("PowerDown: %v", err)
	}
	select {
	case <-f.powered:
	case <-time.After(time.Second):
		t.Error("the server saw no system_powerdown")
	}
	err = q.Execute(ctx, "frobnicate", nil, nil)
	var qe *QMPError
	if !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Errorf("unknown command: %v", err)
	}
	// The connection is still usable after an error.
	if _, err := q.QueryStatus(ctx); err != nil {
		t.Errorf("QueryStatus after an error: %v", err)
	}
}

func TestQMP_Timeouts(t *testing.T) {
	f := startFakeQMP(t, "")
	q, err := DialQMP(context.Background(), f.path, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	begin := time.Now()
	err = q.Execute(context.Background(), "hang", nil, nil)
	if err == nil || !strings.Contains(err.Error(), "no answer within 200ms") {
		t.Errorf("hang: %v", err)
	}
	if d := time.Since(begin); d > time.Second {
		t.Errorf("the timeout took %s", d)
	}

	q2, err := DialQMP(context.Background(), f.path, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer q2.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := q2.Execute(ctx, "hang", nil, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("hang with a context deadline: %v", err)
	}
}

func TestQMP_BadPeers(t *testing.T) {
	f := startFakeQMP(t, `{"hello": "not qmp"}`)
	if _, err := DialQMP(context.Background(), f.path, time.Second); err == nil || !strings.Contains(err.Error(), "greeting") {
		t.Errorf("a non-QMP greeting: %v", err)
	}
	if _, err := DialQMP(context.Background(), filepath.Join(t.TempDir(), "none.qmp"), time.Second); err == nil {
		t.Error("dialled a socket that does not exist")
	}
	// A peer that accepts and says nothing.
	path := filepath.Join(t.TempDir(), "mute.qmp")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			time.Sleep(2 * time.Second)
			c.Close()
		}
	}()
	begin := time.Now()
	if _, err := DialQMP(context.Background(), path, 200*time.Millisecond); err == nil {
		t.Error("a mute peer passed for QMP")
	}
	if d := time.Since(begin); d > time.Second {
		t.Errorf("waited %s for a mute peer", d)
	}
}
