package spinbroker_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestFuzzTargetsInMakefile: every fuzz target of the module is in the
// Makefile's FUZZ_TARGETS, which 'make fuzz' runs; one left out would only
// ever run its seeds.
func TestFuzzTargetsInMakefile(t *testing.T) {
	mk, err := os.ReadFile("Makefile")
	if err != nil {
		t.Fatal(err)
	}
	fuzz := regexp.MustCompile(`(?m)^func (Fuzz\w+)\(`)
	found := 0
	err = filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (path == "bench" || strings.HasPrefix(d.Name(), ".") && path != ".") {
			return filepath.SkipDir // bench/ is a module of its own
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		pkg := "./" + filepath.Dir(path)
		if pkg == "./." {
			pkg = "."
		}
		for _, m := range fuzz.FindAllSubmatch(src, -1) {
			found++
			if target := pkg + ":" + string(m[1]); !strings.Contains(string(mk), "\t"+target+" ") && !strings.Contains(string(mk), "\t"+target+"\n") {
				t.Errorf("%s (%s) is not in the Makefile's FUZZ_TARGETS", target, path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if found < 20 {
		t.Fatalf("found %d fuzz targets; the walk is missing some", found)
	}
}
