package httpapi

import (
	"strings"
	"testing"

	spinbroker "github.com/spin-broker/spinbroker"
)

// TestPermissionWho: the refusal's "that takes …" names exactly the roles
// roleMay lets do the thing, so that the sentence cannot drift from the
// rule it reports.
func TestPermissionWho(t *testing.T) {
	roles := []string{spinbroker.RoleAdmin, spinbroker.RoleClient, spinbroker.RoleViewer, spinbroker.RoleAgent}
	for _, p := range []permission{permRead, permWrite, permAdmin, permDeliver, permSettle} {
		for _, role := range roles {
			if named := strings.Contains(p.who(), role); named != roleMay(role, p) {
				t.Errorf("%s: who() = %q names %s: %v, but roleMay says %v", p.what(), p.who(), role, named, roleMay(role, p))
			}
		}
	}
}
