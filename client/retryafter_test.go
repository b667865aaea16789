package client

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestError_RetryAfter: a refusal's Retry-After, in seconds or as an
// HTTP date, is on the Error, so that a caller can wait as long as asked;
// absent or unreadable, it is 0.
func TestError_RetryAfter(t *testing.T) {
	future := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	past := time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat)
	for _, tc := range []struct {
		name, header string
		min, max     time.Duration
	}{
		{"Seconds", "1", time.Second, time.Second},
		{"Spaces", " 7 ", 7 * time.Second, 7 * time.Second},
		{"Zero", "0", 0, 0},
		{"Absent", "", 0, 0},
		{"Negative", "-3", 0, 0},
		{"Fraction", "1.5", 0, 0},
		{"Garbage", "soon", 0, 0},
		{"Huge", "99999999999999999999", 0, 0},
		{"Date", future, 85 * time.Second, 91 * time.Second},
		{"DatePassed", past, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.header != "" {
					w.Header().Set("Retry-After", tc.header)
				}
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusServiceUnavailable)
				w.Write([]byte(`{"error": {"code": "unavailable", "message": "busy"}}`))
			}))
			defer srv.Close()
			c, err := New(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Queues(context.Background())
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want an *Error", err)
			}
			if ce.RetryAfter < tc.min || ce.RetryAfter > tc.max {
				t.Errorf("Retry-After %q: RetryAfter = %s, want %s to %s", tc.header, ce.RetryAfter, tc.min, tc.max)
			}
		})
	}
}
