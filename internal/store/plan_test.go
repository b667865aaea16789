package store

import (
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
)

// TestPlans holds the hot queries to their indexes. SQLite silently skips a
// partial index whose WHERE the query does not imply term for term, and a
// claim then scans the table: fast with 100 rows, slow with a million.
func TestPlans(t *testing.T) {
	path := filepath.Join(t.TempDir(), "plans.db")
	db := openQuiet(t, path, Options{})
	defer db.Close()
	conn, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Without statistics SQLite still has to pick these indexes: the plans
	// must not depend on ANALYZE having run.
	tests := []struct {
		name  string
		query string
		args  []any
		want  []string // each must appear in the plan
	}{
		{"LeaseHead", qLeaseHead, []any{"t", nil, 1, 1, "r", 2}, []string{"SEARCH commands USING INDEX sqlite_autoindex_commands_1 (id=?)", "SEARCH commands USING INDEX commands_ready (resource=?)"}},
		{"ReadyHead", qReadyHead, []any{"r", 100}, []string{"SEARCH commands USING INDEX commands_ready (resource=?)"}},
		{"LeaseMany", qLeaseMany, []any{"t.", nil, 1, 1, `["a","b"]`}, []string{"SEARCH commands USING INDEX sqlite_autoindex_commands_1 (id=?)"}},
		{"CompleteLeased", qCompleteLeased, []any{"succeeded", nil, nil, 1, "id", "t"}, []string{"SEARCH commands USING INDEX sqlite_autoindex_commands_1 (id=?)"}},
		{"QueueState", qQueueState, []any{"r"}, []string{"SEARCH queues USING INDEX sqlite_autoindex_queues_1 (resource=?)"}},
		{"WakeLease", qWakeLease, []any{"r"}, []string{"commands_leased"}},
		{"WakeDelay", qWakeDelay, []any{"r"}, []string{"commands_delayed"}},
		{"WakeBackoff", qWakeBackoff, []any{"r"}, []string{"SEARCH commands USING INDEX commands_ready (resource=?)"}},
		{"Expired", qExpired, []any{"r", 1}, []string{"SEARCH c USING INDEX commands_leased (resource=? AND lease_expires_at<?)"}},
		{"ExpiredAll", qExpiredAll, []any{1, 10}, []string{"commands_leased"}},
		{"ShiftLeases", qShiftLeases, []any{1}, []string{"SCAN commands USING INDEX commands_leased"}},
		{"Promote", qPromote, []any{1, "r"}, []string{"INDEX commands_delayed (resource=? AND not_before<?)"}},
		{"PromoteAll", qPromoteAll, []any{1, 10}, []string{"commands_delayed"}},
		{"OldestReady", qOldestReady, []any{"r"}, []string{"SEARCH commands USING INDEX commands_ready (resource=?)"}},
		{"QueueList", `SELECT ` + queueListCols + ` FROM queues ORDER BY resource`, nil, []string{"SCAN queues", "SEARCH commands USING INDEX commands_ready (resource=?)"}},
		{"QueueCommands", qQueueCommands, []any{"r", 0, 50}, []string{"SEARCH commands USING INDEX commands_blocked (resource=? AND seq>?)", "SEARCH commands USING INDEX commands_ready (resource=? AND seq>?)", "commands_leased (resource=?)"}},
		{"QueueCommandsIDs", qQueueIDs, []any{"r", 0, 50}, []string{"SEARCH commands USING INDEX commands_blocked (resource=? AND seq>?)", "SEARCH commands USING INDEX commands_ready (resource=? AND seq>?)", "commands_leased (resource=?)"}},
		{"QueueCommandsLight", qQueueCommandsLight, []any{"r", 0, 50}, []string{"SEARCH commands USING INDEX commands_blocked (resource=? AND seq>?)", "SEARCH commands USING INDEX commands_ready (resource=? AND seq>?)", "commands_leased (resource=?)"}},
		{"Release", qRelease, []any{1, "id"}, []string{"command_deps_depends_on (depends_on=?)"}},
		{"Enqueue", qEnqueue, []any{1, 1, "p"}, []string{"SEARCH c USING INDEX commands_package (package_id=?)", "SEARCH d USING", "SEARCH commands USING INDEX sqlite_autoindex_commands_1 (id=?)"}},
		{"Causer", qCauser, []any{"p"}, []string{"SEARCH commands USING INDEX commands_failures (package_id=?)"}},
		{"Packages", qPackages, []any{1, "x", 50}, []string{"packages_created"}},
		{"PackagesByState", qPackagesByState, []any{1, "x", 50, "queued"}, []string{"packages_state_created (state=?"}},
		{"SweepStaging", qSweepStaging, []any{1, 100}, []string{"packages_state_created (state=? AND created_at<?)"}},
		// Each batch of idle queues to forget goes on from where the one
		// before stopped: a scan of the whole table at each batch made
		// forgetting many queues take a time that grew with their square.
		{"ForgetQueues", qForgetQueues, []any{1, 1, 200, 0}, []string{"SEARCH queues USING INTEGER PRIMARY KEY (rowid>?)"}},
		{"SweepFinished", qSweepFinished, []any{1, 100}, []string{"packages_state_created (state=? AND created_at<?)"}},
		{"CascadeFromCommand", cascadeFromCommand, []any{"id", "failed", "blocked", "", 1}, []string{"command_deps_depends_on (depends_on=?)"}},
		// The dashboard's reads (ui.go): a page must cost the same with a
		// million rows.
		{"Completions", qCompletions, []any{1, 61}, []string{"SEARCH completions USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)"}},
		{"QueueHead", qQueueHead, []any{"r"}, []string{"SEARCH commands USING INDEX commands_ready (resource=?)"}},
		{"CompleteLeasedMany", qCompleteLeasedMany, []any{`[["a","t","succeeded",null,null]]`, 1}, []string{"SEARCH commands USING INDEX sqlite_autoindex_commands_1 (id=?)"}},
		{"CommandsByID", qCommandsByID, []any{`["a","b"]`}, []string{"SEARCH commands USING INDEX sqlite_autoindex_commands_1 (id=?)"}},
		{"CommandResources", qCommandResources, []any{`["a","b"]`}, []string{"SEARCH commands USING INDEX sqlite_autoindex_commands_1 (id=?)"}},
		{"Dependents", qDependents, []any{"id", 10}, []string{"SEARCH command_deps USING INDEX command_deps_depends_on (depends_on=?)"}},
		{"PackageCommands", qPackageCommands, []any{"p", 500, 500}, []string{"SEARCH commands USING INDEX commands_package (package_id=? AND pos>?)"}},
		{"PackageCommandsLight", qPackageCommandsLight, []any{"p", 500, 500}, []string{"SEARCH commands USING INDEX commands_package (package_id=? AND pos>?)"}},
		{"PackageDeps", qPackageDeps, []any{"p", 500, 999}, []string{"SEARCH c USING INDEX commands_package (package_id=? AND pos>? AND pos<?)", "SEARCH d USING COVERING INDEX sqlite_autoindex_command_deps_1 (command_id=?)"}},
		{"SearchPackages", qSearchPackages, []any{"0", "0~", 10}, []string{"SEARCH packages USING INDEX sqlite_autoindex_packages_1 (id>? AND id<?)"}},
		{"SearchQueues", qSearchQueues, []any{"s", "s~", 10}, []string{"SEARCH queues USING INDEX sqlite_autoindex_queues_1 (resource>? AND resource<?)", "SEARCH commands USING INDEX commands_ready (resource=?)"}},
		// The overview's busiest queues: one scan of queues, whose sort
		// keeps the ?1 best only, then the oldest ready command of those.
		{"BusiestQueues", qBusiestQueues, []any{50}, []string{"SCAN queues", "SEARCH commands USING INDEX commands_ready (resource=?)"}},
		{"SearchCommands", qSearchCommands, []any{"0", "0~", 10}, []string{"SEARCH commands USING INDEX sqlite_autoindex_commands_1 (id>? AND id<?)"}},
		// Every request's token, revoked or not: one row by the hash.
		{"Authenticate", qAuthenticate, []any{[]byte{1}}, []string{"SEARCH tokens USING INDEX sqlite_autoindex_tokens_2 (hash=?)"}},
		// A retry: the cancelled set through commands_cancelled_by, then the
		// edges and rows of its commands by their keys.
		{"RetrySet", qRetrySet, []any{"id"}, []string{"SEARCH c USING INDEX commands_cancelled_by (cancelled_by=?)", "SEARCH p USING INDEX sqlite_autoindex_packages_1 (id=?)"}},
		{"RetryBlocking", qRetryBlocking, []any{`["a"]`}, []string{"SEARCH d USING COVERING INDEX sqlite_autoindex_command_deps_1 (command_id=?)", "SEARCH x USING INDEX sqlite_autoindex_commands_1 (id=?)"}},
		{"RetryReset", qRetryReset, []any{1, `["a"]`}, []string{"SEARCH commands USING INDEX sqlite_autoindex_commands_1 (id=?)", "SEARCH d USING COVERING INDEX sqlite_autoindex_command_deps_1 (command_id=?)"}},
		{"RetryHeld", qRetryHeld, []any{`[["a","b"]]`}, []string{"sqlite_autoindex_commands_1 (id=?)", "SEARCH x USING INDEX sqlite_autoindex_commands_1 (id=?)"}},
		{"CascadeFromPackage", cascadeFromPackage, []any{"p", "", "blocked", "p", 1}, []string{"commands_package (package_id=?)", "command_deps_depends_on (depends_on=?)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rows, err := conn.Query("EXPLAIN QUERY PLAN "+tt.query, tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var lines []string
			for rows.Next() {
				var id, parent, notused int
				var detail string
				if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
					t.Fatal(err)
				}
				lines = append(lines, detail)
			}
			plan := strings.Join(lines, "\n")
			for _, w := range tt.want {
				if !strings.Contains(plan, w) {
					t.Errorf("plan lacks %q:\n%s", w, plan)
				}
			}
			for _, l := range lines {
				// A bare "SCAN commands" (no index) reads the whole table.
				if (strings.HasPrefix(l, "SCAN commands") || strings.HasPrefix(l, "SCAN c ") || l == "SCAN c" || strings.HasPrefix(l, "SCAN packages")) && !strings.Contains(l, "INDEX") {
					t.Errorf("full table scan %q in:\n%s", l, plan)
				}
				// Sorts are allowed only where their input is bounded: the
				// cascades' own results, the queue page's three pages of
				// at most ?3 rows (and the leased, at most the concurrency),
				// full, light or ids only, the dependencies of the commands a
				// package's read returns, in the order they were given,
				// and the busiest queues (a sort with a LIMIT keeps that
				// many rows as it goes; then those, by name).
				if strings.Contains(l, "TEMP B-TREE") && tt.name != "CascadeFromCommand" && tt.name != "CascadeFromPackage" && !strings.HasPrefix(tt.name, "QueueCommands") && tt.name != "PackageDeps" && tt.name != "BusiestQueues" {
					t.Errorf("sort in a temporary b-tree %q in:\n%s", l, plan)
				}
			}
			if testing.Verbose() {
				t.Logf("plan:\n%s", plan)
			}
		})
	}
}
