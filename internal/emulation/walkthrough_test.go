//go:build unix

package emulation_test

import (
	"context"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/spin-broker/spinbroker/client"
)

// TestSeedWalkthrough_PortTaken runs examples/seed-walkthrough.sh with its
// PORT held by another broker. The script's own broker cannot listen there;
// the script must stop and say so, not send its packages to the broker that
// answers on the port and let its agents take that broker's work.
func TestSeedWalkthrough_PortTaken(t *testing.T) {
	other := startBroker(t)
	u, err := url.Parse(other.url)
	if err != nil {
		t.Fatal(err)
	}
	_, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command("bash", "../../examples/seed-walkthrough.sh")
	cmd.Env = append(os.Environ(), "PORT="+port)
	out, err := runFor(cmd, 3*time.Minute)
	if err == nil {
		t.Errorf("the walk-through succeeded with its port taken by another broker:\n%s", out)
	}
	if !strings.Contains(out, "the broker did not start") {
		t.Errorf("the walk-through does not say that its broker did not start:\n%s", out)
	}
	list, lerr := other.c.Packages(context.Background(), client.ListOptions{})
	if lerr != nil {
		t.Fatal(lerr)
	}
	if n := len(list.Packages); n != 0 {
		t.Errorf("the walk-through sent %d packages to the broker already on its port:\n%s", n, out)
	}
}
