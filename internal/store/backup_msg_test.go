package store_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/store"
)

// TestBackup_SaysWhichFile: a backup that cannot read its source names the
// source, and is not the API's "database is unavailable" (the CLI prints
// the message of a coded error without its context, so such an error read
// as the live database's failure, whichever file it was about); a source
// that is no spin-broker database (an empty file) is refused, not copied
// into an empty "backup".
func TestBackup_SaysWhichFile(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, []byte(strings.Repeat("not a database ", 512)), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.db")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, src := range []string{garbage, empty} {
		to := filepath.Join(dir, filepath.Base(src)+".bak")
		err := store.Backup(ctx, src, to)
		if err == nil {
			t.Fatalf("a backup of %s succeeded", src)
		}
		if spinbroker.ErrorCode(err) != spinbroker.EINTERNAL || !strings.Contains(err.Error(), src) {
			t.Errorf("backup of %s: %v (%s): want the driver's error naming the file", src, err, spinbroker.ErrorCode(err))
		}
		for _, f := range []string{to, to + "-journal"} {
			if _, err := os.Lstat(f); !os.IsNotExist(err) {
				t.Errorf("a failed backup left %s", f)
			}
		}
	}
}
