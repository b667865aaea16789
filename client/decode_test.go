package client

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	spinbroker "github.com/spin-broker/spinbroker"
)

// TestError_ProxyStatusCodes: an answer that is no API error body (a
// proxy's page) gets the code API.md gives its status. A 405 (nginx's
// "Not Allowed" for a POST to a path it serves files from, behind a
// misconfigured prefix) read as invalid_request, a request the broker
// found malformed, which it never saw; so did a 429 (a proxy's rate
// limit), which an agent then took for a request it could never make.
func TestError_ProxyStatusCodes(t *testing.T) {
	for _, tc := range []struct {
		status int
		want   string
	}{
		{http.StatusMethodNotAllowed, spinbroker.EMETHOD},
		{http.StatusBadRequest, spinbroker.EINVALID},
		{http.StatusUnauthorized, spinbroker.EUNAUTHORIZED},
		{http.StatusForbidden, spinbroker.EFORBIDDEN},
		{http.StatusNotFound, spinbroker.ENOTFOUND},
		{http.StatusConflict, spinbroker.ECONFLICT},
		{http.StatusRequestEntityTooLarge, spinbroker.ETOOLARGE},
		{http.StatusBadGateway, spinbroker.EUNAVAILABLE},
		{http.StatusTooManyRequests, spinbroker.EUNAVAILABLE},
		{http.StatusInternalServerError, spinbroker.EINTERNAL},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(tc.status)
			w.Write([]byte("<html><center><h1>" + http.StatusText(tc.status) + "</h1></center>nginx</html>"))
		}))
		c, err := New(srv.URL + "/spin/")
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.CreatePackage(context.Background(), spinbroker.NewPackage{})
		if got := spinbroker.ErrorCode(err); got != tc.want {
			t.Errorf("a proxy's %d: code %q, want %q (%v)", tc.status, got, tc.want, err)
		}
		srv.Close()
	}
}
