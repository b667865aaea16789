package nlink

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// TestOf: a file has one name until a hard link gives it a second.
func TestOf(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "a")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(f)
	if err != nil {
		t.Fatal(err)
	}
	if n := Of(fi); n != 1 {
		t.Fatalf("a new file has %d links, want 1", n)
	}
	if runtime.GOOS == "windows" {
		return
	}
	if err := os.Link(f, filepath.Join(dir, "b")); err != nil {
		t.Fatal(err)
	}
	if fi, err = os.Stat(f); err != nil {
		t.Fatal(err)
	}
	if n := Of(fi); n != 2 {
		t.Fatalf("a file with a hard link has %d links, want 2", n)
	}
}
