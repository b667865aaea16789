package agent

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/spin-broker/spinbroker/client"
)

// refusedErr is what a call to a broker that is not listening returns: a
// real refused connection, on a port just closed.
func refusedErr(t *testing.T) error {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ln.Close()
	c, err := client.New(url)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Next(context.Background(), "r", 0, 0)
	if err == nil || !unreachable(err) {
		t.Fatalf("a call to a closed port: %v, not taken for a broker out of reach", err)
	}
	return err
}

// unavailableErr is what a call answered with 503 unavailable (no
// Retry-After) returns: the broker is there and says it is overloaded.
func unavailableErr(t *testing.T) error {
	t.Helper()
	err := answeredErr(t, http.StatusServiceUnavailable, "application/json", `{"error":{"code":"unavailable","message":"injected"}}`)
	if unreachable(err) {
		t.Fatalf("a 503: %v, taken for a broker out of reach", err)
	}
	return err
}

// badGatewayErr is what a call through a reverse proxy returns while the
// broker behind it is down: the proxy's own 502 page.
func badGatewayErr(t *testing.T) error {
	t.Helper()
	return answeredErr(t, http.StatusBadGateway, "text/html", "<html><body><h1>502 Bad Gateway</h1></body></html>")
}

// answeredErr is the error of a call answered status with body.
func answeredErr(t *testing.T, status int, contentType, body string) error {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	defer srv.Close()
	c, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err = c.Next(context.Background(), "r", 0, 0); err == nil {
		t.Fatalf("a %d was taken for work", status)
	}
	return err
}

func testRunner(t *testing.T, o Options) *runner {
	t.Helper()
	c, err := client.New("http://localhost:1")
	if err != nil {
		t.Fatal(err)
	}
	a, err := newRunner(c, "r", []Handler{Handle("x", func(context.Context, struct{}) (any, error) { return nil, nil })}, o)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestPause_Unreachable: a broker that cannot be reached at all (a
// refused connection: stopped, restarting; or, behind a reverse proxy,
// the proxy's 502 Bad Gateway) is tried again within a few
// seconds however long it has been away. The full back-off (30s) spent
// nothing while the broker was down and left the queue idle for up to 30s
// once it was back.
func TestPause_Unreachable(t *testing.T) {
	t.Run("Refused", func(t *testing.T) { testPauseBounded(t, refusedErr(t)) })
	t.Run("ProxyBadGateway", func(t *testing.T) { testPauseBounded(t, badGatewayErr(t)) })
}

// testPauseBounded: after err, every pause stays within the bound for
// unreachable brokers, and still grows to it.
func testPauseBounded(t *testing.T, refused error) {
	t.Helper()
	for _, tc := range []struct {
		name     string
		opts     Options
		min, max time.Duration
	}{
		{"Defaults", Options{}, DefaultMinBackoff / 2, unreachableBackoff},
		{"MaxBackoffBelowTheBound", Options{MinBackoff: 10 * time.Millisecond, MaxBackoff: time.Second}, 5 * time.Millisecond, time.Second},
		{"MinBackoffAboveTheBound", Options{MinBackoff: 8 * time.Second, MaxBackoff: time.Minute}, 4 * time.Second, 8 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := testRunner(t, tc.opts)
			longest := time.Duration(0)
			for n := 1; n <= 200; n++ {
				d := a.pause(n, refused)
				if d < tc.min || d > tc.max {
					t.Fatalf("pause after failure %d (%v) is %v, outside %v..%v", n, refused, d, tc.min, tc.max)
				}
				longest = max(longest, d)
			}
			// Still jittered and grown: not a fixed, tight retry.
			if longest <= tc.max/2 {
				t.Errorf("the longest pause of 200 is %v: the back-off does not grow to %v", longest, tc.max)
			}
		})
	}
}

// TestPause_Unavailable: an answer that says the broker is overloaded (a
// 503) keeps the full back-off, to MaxBackoff, and its Retry-After.
func TestPause_Unavailable(t *testing.T) {
	unavailable := unavailableErr(t)
	a := testRunner(t, Options{})
	for n := 10; n <= 200; n++ {
		if d := a.pause(n, unavailable); d < DefaultMaxBackoff/2 || d > DefaultMaxBackoff {
			t.Fatalf("pause after 503 %d is %v, want %v..%v", n, d, DefaultMaxBackoff/2, DefaultMaxBackoff)
		}
	}
	var ce *client.Error
	if !errors.As(unavailable, &ce) {
		t.Fatalf("a 503 is %T, not a *client.Error", unavailable)
	}
	ce.RetryAfter = 3 * time.Second
	if d := a.pause(1, unavailable); d < 3*time.Second {
		t.Errorf("pause after a 503 with Retry-After: 3 is %v", d)
	}
}
