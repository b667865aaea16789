package agentcmd

import (
	"flag"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/spin-broker/spinbroker/agent"
)

// TestGrace: -grace 0 asks for no grace, which the SDK's zero value (its
// default, 30s) cannot say; left out, the default holds.
func TestGrace(t *testing.T) {
	for _, c := range []struct {
		args []string
		want time.Duration
	}{
		{[]string{"-url", "http://localhost:1", "-grace", "0"}, time.Nanosecond},
		{[]string{"-url", "http://localhost:1", "-grace", "5s"}, 5 * time.Second},
		{[]string{"-url", "http://localhost:1"}, agent.DefaultGrace},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		f := Register(fs, "t", "test")
		if err := f.Parse(fs, c.args, io.Discard); err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		if got := f.Options(nil).Grace; got != c.want {
			t.Errorf("%v: grace %v, want %v", c.args, got, c.want)
		}
	}
	// -help says what 0 means: the SDK's zero is its default, and a
	// reader of the help would take the flag's for the same.
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	Register(fs, "t", "test")
	if usage := fs.Lookup("grace").Usage; !strings.Contains(usage, "0 for none") {
		t.Errorf("-grace's help does not say that 0 is no grace: %q", usage)
	}
}

// TestParse_TokenLeavesTheEnvironment: the token from $SPINBROKER_TOKEN is
// taken, then removed from the environment, so that the programs the agent
// runs (QEMU for every VM, for as long as it runs) do not inherit it.
func TestParse_TokenLeavesTheEnvironment(t *testing.T) {
	for _, args := range [][]string{
		{"-url", "http://localhost:1"},
		{"-url", "http://localhost:1", "-token", "from-the-flag"},
	} {
		t.Setenv("SPINBROKER_TOKEN", "s3cret-token")
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		f := Register(fs, "t", "test")
		if err := f.Parse(fs, args, io.Discard); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if len(args) == 2 && f.token != "s3cret-token" {
			t.Errorf("%v: token %q, want the environment's", args, f.token)
		}
		if v, ok := os.LookupEnv("SPINBROKER_TOKEN"); ok {
			t.Errorf("%v: SPINBROKER_TOKEN=%q is still in the environment", args, v)
		}
		out, err := exec.Command("env").Output()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(out), "s3cret-token") {
			t.Errorf("%v: a child process inherits the token", args)
		}
	}
}

// TestHelpShowsNoPassword: -help shows -url's default, taken from
// $SPINBROKER_URL, without the password in it (a help text is pasted into
// issues and shown on shared screens); the flag's value keeps it.
func TestHelpShowsNoPassword(t *testing.T) {
	t.Setenv("SPINBROKER_URL", "http://ops:hunter2pw@localhost:1")
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	f := Register(fs, "t", "test")
	var help strings.Builder
	fs.SetOutput(&help)
	fs.PrintDefaults()
	if strings.Contains(help.String(), "hunter2pw") || !strings.Contains(help.String(), "http://ops:xxxxx@localhost:1") {
		t.Errorf("-help:\n%s", help.String())
	}
	if f.url != "http://ops:hunter2pw@localhost:1" {
		t.Errorf("-url is %q, want the environment's", f.url)
	}
}

// TestBadURLShowsNoPassword: a -url the agent refuses is named in the
// refusal, which goes to the journal, with its password masked as -help
// and the log lines mask it.
func TestBadURLShowsNoPassword(t *testing.T) {
	for _, u := range []string{"ftp://ops:hunter2pw@localhost:1", "http://ops:hunter2pw@localhost:1:2", "http://ops:hunter2pw@localhost:99999"} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		f := Register(fs, "t", "test")
		err := f.Parse(fs, []string{"-url", u}, io.Discard)
		if err == nil {
			t.Fatalf("-url %s: no refusal", u)
		}
		if strings.Contains(err.Error(), "hunter2pw") || !strings.Contains(err.Error(), "ops:xxxxx@localhost") {
			t.Errorf("-url %s: %v\nwant the URL with its password masked", u, err)
		}
	}
}
