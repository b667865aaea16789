package main

import (
	"strings"
	"testing"

	spinbroker "github.com/spin-broker/spinbroker"
)

// lines splits a command's output into lines, each a list of fields.
func lines(out string) [][]string {
	var rows [][]string
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		rows = append(rows, strings.Fields(l))
	}
	return rows
}

// fieldOf returns the value of "Name: value" in a single object's view.
func fieldOf(t *testing.T, out, name string) string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %s: in\n%s", name, out)
	return ""
}

func TestPackageCommands(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	staging := b.id("message", "new")
	queued := b.id("message", "new")
	b.id("message", "add", queued, "storage", "add_volume", "path=vm1")
	b.ok("message", "enqueue", queued)
	failed := b.id("message", "new")
	causer := b.id("message", "add", failed, "storage", "add_volume", "path=vm2", "--key", "vol")
	b.id("message", "add", failed, "emulation", "start", "id=vm2", "--dep", "vol")
	b.ok("message", "enqueue", failed)
	b.ok("message", "complete", causer, "false", "disk\tfull")

	t.Run("ListTable", func(t *testing.T) {
		rows := lines(b.ok("package", "ls"))
		if want := []string{"ID", "STATE", "DONE", "CREATED", "FINISHED", "REASON"}; strings.Join(rows[0], " ") != strings.Join(want, " ") {
			t.Fatalf("header = %v, want %v", rows[0], want)
		}
		got := map[string]string{}
		for _, r := range rows[1:] {
			got[r[0]] = r[1] + " " + r[2]
		}
		want := map[string]string{staging: "staging 0/0", queued: "queued 0/1", failed: "failed 2/2"}
		for id, w := range want {
			if got[id] != w {
				t.Errorf("package %s: %q, want %q", id, got[id], w)
			}
		}
		if len(got) != 3 {
			t.Errorf("%d packages listed, want 3", len(got))
		}
	})
	t.Run("ListJSON", func(t *testing.T) {
		var list spinbroker.PackageList
		decodeJSON(t, b.ok("package", "ls", "-o", "json"), &list)
		if len(list.Packages) != 3 || list.NextCursor != nil {
			t.Fatalf("package ls -o json = %+v", list)
		}
		for _, p := range list.Packages {
			if p.Commands != nil {
				t.Errorf("package %s is listed with its commands", p.ID)
			}
		}
	})
	t.Run("ListState", func(t *testing.T) {
		rows := lines(b.ok("package", "ls", "--state", "failed"))
		if len(rows) != 2 || rows[1][0] != failed || rows[1][len(rows[1])-1] != `disk\tfull` {
			t.Errorf("package ls --state failed: %v", rows)
		}
	})
	t.Run("ListPages", func(t *testing.T) {
		r := b.spin("package", "ls", "--limit", "1")
		if r.code != 0 || len(lines(r.stdout)) != 2 || !strings.Contains(r.stderr, "More packages: use --all, or --cursor ") {
			t.Fatalf("package ls --limit 1: %s", r)
		}
		r = b.spin("package", "ls", "--limit", "1", "--all")
		if r.code != 0 || len(lines(r.stdout)) != 4 || r.stderr != "" {
			t.Fatalf("package ls --limit 1 --all: %s", r)
		}
		var all spinbroker.PackageList
		decodeJSON(t, b.ok("package", "ls", "--limit", "2", "--all", "-o", "json"), &all)
		if len(all.Packages) != 3 || all.NextCursor != nil {
			t.Errorf("package ls --all -o json = %+v", all)
		}
		// Page by hand with the cursor: the same packages, in the same order.
		var got []string
		cursor := ""
		for range 5 {
			args := []string{"package", "ls", "--limit", "1", "-o", "json"}
			if cursor != "" {
				args = append(args, "--cursor", cursor)
			}
			var page spinbroker.PackageList
			decodeJSON(t, b.ok(args...), &page)
			for _, p := range page.Packages {
				got = append(got, p.ID)
			}
			if page.NextCursor == nil {
				break
			}
			cursor = *page.NextCursor
		}
		var want []string
		for _, p := range all.Packages {
			want = append(want, p.ID)
		}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("paging by --cursor gave %v, want %v", got, want)
		}
	})
	t.Run("ShowTable", func(t *testing.T) {
		out := b.ok("package", "show", failed)
		for name, want := range map[string]string{
			"ID": failed, "State": "failed", "Done": "2/2 (1 failed, 1 cancelled)",
			"Causer": causer, "Reason": `disk\tfull`, "Enqueued": "2026-01-02 03:04:05Z",
		} {
			if got := fieldOf(t, out, name); got != want {
				t.Errorf("%s: %q, want %q", name, got, want)
			}
		}
		rows := lines(out[strings.Index(out, "\n\n")+2:])
		if want := "ID KEY RESOURCE ACTION STATE ATTEMPTS REASON"; strings.Join(rows[0], " ") != want {
			t.Errorf("commands header = %v", rows[0])
		}
		if len(rows) != 3 || rows[1][0] != causer || rows[1][1] != "vol" || rows[1][4] != "failed" || rows[2][4] != "cancelled" {
			t.Errorf("commands = %v", rows)
		}
		if !strings.Contains(strings.Join(rows[2], " "), "dependency "+causer+" failed") {
			t.Errorf("cancelled command's reason: %v", rows[2])
		}
	})
	t.Run("ShowJSON", func(t *testing.T) {
		var p spinbroker.Package
		decodeJSON(t, b.ok("package", "show", failed, "-o", "json"), &p)
		if p.State != spinbroker.PackageFailed || len(p.Commands) != 2 || *p.Causer != causer || *p.Reason != "disk\tfull" {
			t.Errorf("package show -o json = %+v", p)
		}
	})
	t.Run("CancelAndRemove", func(t *testing.T) {
		r := b.spin("package", "rm", queued)
		if r.code != 1 || !strings.Contains(r.stderr, "(conflict)") {
			t.Errorf("rm of an unfinished package: %s", r)
		}
		if out := b.ok("package", "cancel", queued); out != "package "+queued+": cancelled, 1/1 done\n" {
			t.Errorf("cancel printed %q", out)
		}
		var p spinbroker.Package
		decodeJSON(t, b.ok("package", "cancel", queued, "-o", "json"), &p)
		if p.State != spinbroker.PackageCancelled || len(p.Commands) != 1 || p.Commands[0].State != spinbroker.Cancelled {
			t.Errorf("cancel -o json = %+v", p)
		}
		// A finished package stays as it is.
		if out := b.ok("package", "cancel", failed); out != "package "+failed+": failed, 2/2 done\n" {
			t.Errorf("cancel of a failed package printed %q", out)
		}
		if out := b.ok("package", "rm", queued, "-o", "json"); out != "" {
			t.Errorf("rm -o json printed %q", out)
		}
		if out := b.ok("package", "rm", staging); out != "package "+staging+": deleted\n" {
			t.Errorf("rm printed %q", out)
		}
		for _, id := range []string{staging, queued} {
			if r := b.spin("package", "show", id); r.code != 1 || !strings.Contains(r.stderr, "(not_found)") {
				t.Errorf("show of a deleted package: %s", r)
			}
		}
	})
}
