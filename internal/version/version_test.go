package version

import (
	"runtime"
	"strings"
	"testing"
)

func TestString(t *testing.T) {
	for _, c := range []struct {
		in   Info
		want string
	}{
		{Info{Version: "(devel)", Go: "go1.26.8"}, "(devel) go1.26.8"},
		{Info{Version: "v1.2.3", Revision: "cabccd30ed262515892e701e6e025f4bf14295c2", Go: "go1.26.8"}, "v1.2.3 (commit cabccd30ed26) go1.26.8"},
		{Info{Version: "v0.0.0-20261125191825-cabccd30ed26", Revision: "cabccd30ed26", Modified: true, Go: "go1.26.8"},
			"v0.0.0-20261125191825-cabccd30ed26 (commit cabccd30ed26, modified) go1.26.8"},
		// The toolchain's own "+dirty" already says the checkout was modified.
		{Info{Version: "v0.0.0-20261125191825-cabccd30ed26+dirty", Revision: "cabccd30ed26", Modified: true, Go: "go1.26.8"},
			"v0.0.0-20261125191825-cabccd30ed26+dirty (commit cabccd30ed26) go1.26.8"},
		{Info{Version: "v1.0.0", Revision: "abc"}, "v1.0.0 (commit abc)"},
	} {
		if got := c.in.String(); got != c.want {
			t.Errorf("%+v: %q, want %q", c.in, got, c.want)
		}
	}
}

// TestGet: a test binary has build information: its toolchain at least.
func TestGet(t *testing.T) {
	i := Get()
	if i.Go != runtime.Version() || i.Version == "" || !strings.HasSuffix(i.String(), runtime.Version()) {
		t.Fatalf("Get() = %+v", i)
	}
}
