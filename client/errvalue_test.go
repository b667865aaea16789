package client

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	spinbroker "github.com/spin-broker/spinbroker"
)

// TestError_Constructed: an *Error made by hand, without its API error (a
// producer's test of its retry on a 503), is an error like the client's:
// its text names the status, Temporary and spinbroker.ErrorCode read it,
// and errors.As finds no API error in it rather than a nil one. Its Error
// and ErrorCode used to panic on the nil Err.
func TestError_Constructed(t *testing.T) {
	err := fmt.Errorf("create: %w", &Error{StatusCode: 503})
	if msg := err.Error(); !strings.Contains(msg, "503") || !strings.Contains(msg, "Service Unavailable") {
		t.Errorf("text %q, want the status", msg)
	}
	if !Temporary(err) {
		t.Error("a 503 is temporary")
	}
	if got := spinbroker.ErrorCode(err); got != spinbroker.EINTERNAL {
		t.Errorf("code %q, want %q as for any error without an API error", got, spinbroker.EINTERNAL)
	}
	var api *spinbroker.Error
	if errors.As(err, &api) {
		t.Errorf("errors.As found an API error: %#v", api)
	}
}
