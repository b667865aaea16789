package main

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// readmeFlagRow is a row of the README's table of serve's flags.
type readmeFlagRow struct {
	flags, envs, defaults []string
	line                  string
}

var (
	backticked = regexp.MustCompile("`([^`]*)`")
	envName    = regexp.MustCompile(`^(…_|[A-Z])[A-Z0-9_]*$`)
)

// readmeServeFlags reads the table of "## Configuration": its flags, the
// environment variable of each ("…_LEVEL" after "SPINBROKER_LOG_FORMAT"
// is SPINBROKER_LOG_LEVEL; "SPINBROKER_AUTH=1" is SPINBROKER_AUTH) and
// the default of each (a cell without backquotes, "off" or empty, as
// written).
func readmeServeFlags(t *testing.T) []readmeFlagRow {
	t.Helper()
	_, table, ok := strings.Cut(readmeSection(t, "## Configuration"), "\n| flag | env | default | meaning |\n| --- | --- | --- | --- |\n")
	if !ok {
		t.Fatal("the README's Configuration has no table of flags: | flag | env | default | meaning |")
	}
	var rows []readmeFlagRow
	for _, line := range strings.Split(table, "\n") {
		if !strings.HasPrefix(line, "|") {
			break
		}
		// The first three cells hold no "|"; the meaning may.
		cells := strings.SplitN(strings.TrimPrefix(line, "|"), "|", 4)
		if len(cells) != 4 {
			t.Fatalf("a row of the README's table of flags has not four cells: %s", line)
		}
		row := readmeFlagRow{line: line}
		for _, m := range backticked.FindAllStringSubmatch(cells[0], -1) {
			row.flags = append(row.flags, strings.TrimPrefix(m[1], "--"))
		}
		for _, m := range backticked.FindAllStringSubmatch(cells[1], -1) {
			env, _, _ := strings.Cut(m[1], "=")
			if !envName.MatchString(env) {
				continue // a value: "(or `true`)"
			}
			if rest, ok := strings.CutPrefix(env, "…"); ok && len(row.envs) > 0 {
				prev := row.envs[len(row.envs)-1]
				env = prev[:strings.LastIndex(prev, "_")] + rest
			}
			row.envs = append(row.envs, env)
		}
		for _, m := range backticked.FindAllStringSubmatch(cells[2], -1) {
			row.defaults = append(row.defaults, m[1])
		}
		if row.defaults == nil {
			row.defaults = []string{strings.TrimSpace(cells[2])}
		}
		rows = append(rows, row)
	}
	if len(rows) == 0 {
		t.Fatal("the README's table of flags has no rows")
	}
	return rows
}

// TestReadme_ServeFlags holds the README's table of serve's flags to the
// flags serve has: every one of them listed, none that it lacks, each
// with the environment variable that sets it (and that its --help names)
// and the default it has.
func TestReadme_ServeFlags(t *testing.T) {
	rows := readmeServeFlags(t)
	serve := func() *pflag.FlagSet {
		a := &app{stdout: io.Discard, stderr: io.Discard}
		return a.serveCommand().Flags()
	}
	// The defaults as the code has them, whatever this environment holds.
	var all []string
	serve().VisitAll(func(f *pflag.Flag) {
		all = append(all, f.Name)
		t.Setenv(flagEnvGuess(f.Name), "")
	})
	for _, r := range rows {
		for _, env := range r.envs {
			t.Setenv(env, "")
		}
	}
	flags := serve()

	listed := map[string]bool{}
	for _, r := range rows {
		if len(r.flags) == 0 { // an environment variable alone: GOGC
			if len(r.envs) != 1 || r.envs[0] != "GOGC" || r.defaults[0] != strconv.Itoa(defaultGCPercent) {
				t.Errorf("the README's row %q is not GOGC with serve's default, %d", r.line, defaultGCPercent)
			}
			continue
		}
		if len(r.envs) > 1 && len(r.envs) != len(r.flags) || len(r.defaults) > 1 && len(r.defaults) != len(r.flags) {
			t.Errorf("the README's row %q names %d flags, %d variables and %d defaults", r.line, len(r.flags), len(r.envs), len(r.defaults))
			continue
		}
		for i, name := range r.flags {
			f := flags.Lookup(name)
			if f == nil {
				t.Errorf("the README lists --%s, a flag serve does not have", name)
				continue
			}
			if listed[name] {
				t.Errorf("the README lists --%s twice", name)
			}
			listed[name] = true
			def := r.defaults[0]
			if len(r.defaults) > 1 {
				def = r.defaults[i]
			}
			if !sameDefault(f, def) {
				t.Errorf("the README gives --%s the default %q, serve %q", name, def, f.DefValue)
			}
			env := ""
			if len(r.envs) == 1 {
				env = r.envs[0]
			} else if len(r.envs) > 1 {
				env = r.envs[i]
			}
			checkFlagEnv(t, serve, f, env)
		}
	}
	for _, name := range all {
		if f := flags.Lookup(name); !listed[name] && !f.Hidden {
			t.Errorf("serve has --%s, which the README's table of its flags does not list", name)
		}
	}
}

// flagEnvGuess is the variable a flag would be read from, were it read
// from one: SPINBROKER_ and its name.
func flagEnvGuess(name string) string {
	return "SPINBROKER_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// sameDefault reports whether the README's default is the flag's: "off"
// for a false switch or an empty string, durations as durations ("60s"
// is 1m0s), anything else as written, thousands separated or not.
func sameDefault(f *pflag.Flag, readme string) bool {
	switch f.Value.Type() {
	case "bool":
		return readme == "off" && f.DefValue == "false"
	case "string":
		return f.DefValue == readme || f.DefValue == "" && readme == "off"
	case "duration":
		want, err1 := time.ParseDuration(readme)
		got, err2 := time.ParseDuration(f.DefValue)
		return err1 == nil && err2 == nil && want == got
	}
	return f.DefValue == strings.ReplaceAll(readme, ",", "")
}

// checkFlagEnv checks that env (none when empty) is the variable that
// gives the flag its default, and the one its --help names; a flag the
// README gives none is not read from SPINBROKER_ and its name either.
func checkFlagEnv(t *testing.T, serve func() *pflag.FlagSet, f *pflag.Flag, env string) {
	t.Helper()
	value, want := map[string][2]string{
		"bool":     {"1", "true"},
		"duration": {"7s", "7s"},
		"int":      {"7", "7"},
	}[f.Value.Type()], ""
	if value[0] == "" {
		value = [2]string{"from-the-environment", "from-the-environment"}
	}
	set := env
	if env == "" {
		set, want = flagEnvGuess(f.Name), f.DefValue
		if strings.Contains(f.Usage, "(env ") {
			t.Errorf("--%s's help names a variable, %q, that the README does not", f.Name, f.Usage)
		}
	} else {
		want = value[1]
		if !strings.Contains(f.Usage, "(env "+env) {
			t.Errorf("the README reads --%s from %s, and its help does not say so: %q", f.Name, env, f.Usage)
		}
		if name, ok := serveEnv[f.Name]; f.Value.Type() != "bool" && (!ok || name != env) {
			t.Errorf("serveEnv, which names the variable in --%s's errors, has %q, not %s", f.Name, name, env)
		}
	}
	t.Setenv(set, value[0])
	defer t.Setenv(set, "")
	if got := serve().Lookup(f.Name).DefValue; got != want {
		if env == "" {
			t.Errorf("--%s takes its default from %s, which the README does not say", f.Name, set)
		} else {
			t.Errorf("the README reads --%s from %s, and %s=%s makes its default %q", f.Name, env, env, value[0], got)
		}
	}
}

// TestReadme_AgentFlags: every flag of the shipped agents' -help is named
// in the README ("## The agents", or beside the agent's name, as
// `sa-host-path -version` is), so that a flag added to an agent is not
// one the README keeps quiet about. The README gives them in prose, not
// in a table: their defaults are not checked here.
func TestReadme_AgentFlags(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	section := readmeSection(t, "## The agents")
	dir := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", dir+"/", "../sa-host-path", "../sa-emulation").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	flagLine := regexp.MustCompile(`(?m)^  -([a-z-]+)`)
	for _, agent := range []string{"sa-host-path", "sa-emulation"} {
		out, err := exec.Command(filepath.Join(dir, agent), "-help").Output()
		if err != nil {
			t.Fatalf("%s -help: %v\n%s", agent, err, out)
		}
		names := flagLine.FindAllStringSubmatch(string(out), -1)
		if len(names) < 5 {
			t.Fatalf("%s -help lists %d flags:\n%s", agent, len(names), out)
		}
		for _, m := range names {
			// --qemu is not --qemu-img: the name ends where a flag's would.
			named := regexp.MustCompile(`[\s\x60(\[]--?` + regexp.QuoteMeta(m[1]) + `([^-\w]|$)`)
			beside := regexp.MustCompile("`" + agent + `\s[^\x60]*-` + regexp.QuoteMeta(m[1]) + `([^-\w]|$)`)
			if !named.MatchString(section) && !beside.MatchString(string(readme)) {
				t.Errorf("%s has -%s, which the README does not name", agent, m[1])
			}
		}
	}
}
