package main

import (
	"strings"
	"testing"

	spinbroker "github.com/spin-broker/spinbroker"
)

func TestQueueCommands(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	const header = "RESOURCE CONCURRENCY PAUSED BLOCKED READY LEASED OLDEST READY"

	if out := b.ok("queue", "ls"); strings.Join(lines(out)[0], " ") != header || len(lines(out)) != 1 {
		t.Errorf("queue ls of a new broker:\n%s", out)
	}
	var list spinbroker.QueueList
	decodeJSON(t, b.ok("queue", "ls", "-o", "json"), &list)
	if list.Queues == nil || len(list.Queues) != 0 {
		t.Errorf("queue ls -o json of a new broker = %+v", list)
	}

	pkg := b.id("message", "new")
	first := b.id("message", "add", pkg, "storage", "add_volume", "path=vm1", "--key", "vol")
	second := b.id("message", "add", pkg, "storage", "create_image", "volume_path=vm1", "--dep", "vol")
	b.id("message", "add", pkg, "emulation", "write_config", "id=vm1")
	b.ok("message", "enqueue", pkg)

	rows := lines(b.ok("queue", "ls"))
	if len(rows) != 3 || strings.Join(rows[1], " ") != "emulation 1 false 0 1 0 0s" || strings.Join(rows[2], " ") != "storage 1 false 1 1 0 0s" {
		t.Errorf("queue ls: %v", rows)
	}
	decodeJSON(t, b.ok("queue", "ls", "-o", "json"), &list)
	if len(list.Queues) != 2 || list.Queues[1].Resource != "storage" || list.Queues[1].Counts.Blocked != 1 {
		t.Errorf("queue ls -o json = %+v", list)
	}

	out := b.ok("queue", "show", "storage")
	rows = lines(out)
	if strings.Join(rows[1], " ") != "storage 1 false 1 1 0 0s" {
		t.Errorf("queue show: %v", rows)
	}
	cmds := lines(out[strings.Index(out, "\n\n")+2:])
	if strings.Join(cmds[0], " ") != "SEQ ID PACKAGE ACTION STATE ATTEMPTS" || len(cmds) != 3 ||
		strings.Join(cmds[1], " ") != "1 "+first+" "+pkg+" add_volume ready 0/3" ||
		strings.Join(cmds[2], " ") != "2 "+second+" "+pkg+" create_image blocked 0/3" {
		t.Errorf("queue show's commands: %v", cmds)
	}
	var q spinbroker.Queue
	decodeJSON(t, b.ok("queue", "show", "storage", "-o", "json"), &q)
	if q.Resource != "storage" || len(q.Commands) != 2 || q.Commands[0].ID != first {
		t.Errorf("queue show -o json = %+v", q)
	}

	// A queue never used has its defaults.
	if rows := lines(b.ok("queue", "show", "network")); len(rows) != 2 || strings.Join(rows[1], " ") != "network 1 false 0 0 0 -" {
		t.Errorf("queue show of an unused queue: %v", rows)
	}

	set := func(want string, args ...string) {
		t.Helper()
		rows := lines(b.ok(append([]string{"queue"}, args...)...))
		if len(rows) != 2 || strings.Join(rows[1], " ") != want {
			t.Errorf("queue %s: %v, want %q", strings.Join(args, " "), rows, want)
		}
	}
	set("storage 4 false 1 1 0 0s", "set", "storage", "--concurrency", "4")
	set("storage 4 true 1 1 0 0s", "set", "storage", "--paused")
	set("storage 2 false 1 1 0 0s", "set", "storage", "--paused=false", "--concurrency", "2")
	set("storage 2 true 1 1 0 0s", "pause", "storage")
	set("storage 2 false 1 1 0 0s", "resume", "storage")
	set("network 1 true 0 0 0 -", "pause", "network") // settings before any command

	decodeJSON(t, b.ok("queue", "set", "storage", "--concurrency", "3", "-o", "json"), &q)
	if q.Concurrency != 3 || q.Paused {
		t.Errorf("queue set -o json = %+v", q)
	}
}
