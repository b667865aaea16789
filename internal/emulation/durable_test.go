package emulation

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
)

// TestWriteConfig_Synced: a write_config reported done has its config on
// disk, the file and its name in its folder, as a pid file has: the
// package's start is delivered on that success, and a power cut right
// after it must not take the config back (start would then fail "no
// config").
func TestWriteConfig_Synced(t *testing.T) {
	var got []string
	synced = func(name string) { got = append(got, name) }
	t.Cleanup(func() { synced = nil })
	e := noQEMU(t)
	if _, err := e.WriteConfig(context.Background(), WriteConfig{ID: "vm1", VM: &VM{Name: "w", Cpus: 1, Memory: 64}}); err != nil {
		t.Fatal(err)
	}
	config := e.configPath("vm1")
	for _, want := range []string{config + ".tmp", filepath.Dir(config)} {
		if !slices.Contains(got, want) {
			t.Errorf("write_config synced %q, not %q", got, want)
		}
	}

}
