// Package version says which build of spin-broker is running, from what
// the Go toolchain stamps into every binary: the module's version (a tag,
// or a pseudo-version built from the commit) and the commit itself.
package version

import (
	"runtime/debug"
	"strings"
)

// version, when set at link time (-ldflags "-X
// github.com/spin-broker/spinbroker/internal/version.version=v1.2.3"), is
// the version a packager gives the build, in place of the module's.
var version string

// Info describes a build.
type Info struct {
	Version  string // a module version, or "(devel)" when the build says none
	Revision string // the commit, when built from a checkout
	Modified bool   // the checkout had changes that no commit holds
	Go       string // the toolchain, e.g. go1.26.8
}

// Get reads the running binary's build information.
func Get() Info {
	info := Info{Version: "(devel)"}
	bi, ok := debug.ReadBuildInfo()
	if ok {
		info.Go = bi.GoVersion
		if v := bi.Main.Version; v != "" {
			info.Version = v
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				info.Revision = s.Value
			case "vcs.modified":
				info.Modified = s.Value == "true"
			}
		}
	}
	if version != "" {
		info.Version = version
	}
	return info
}

// String is the build in one line: "v0.0.0-20261125191825-cabccd30ed26
// (commit cabccd30ed26, modified) go1.26.8".
func (i Info) String() string {
	var b strings.Builder
	b.WriteString(i.Version)
	if i.Revision != "" {
		b.WriteString(" (commit ")
		b.WriteString(i.Revision[:min(12, len(i.Revision))])
		if i.Modified && !strings.HasSuffix(i.Version, "+dirty") {
			b.WriteString(", modified")
		}
		b.WriteString(")")
	}
	if i.Go != "" {
		b.WriteString(" ")
		b.WriteString(i.Go)
	}
	return b.String()
}
