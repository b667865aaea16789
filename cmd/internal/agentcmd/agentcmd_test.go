package agentcmd

import (
	"flag"
	"io"
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
}
