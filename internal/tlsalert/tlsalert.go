// Package tlsalert serves, for tests, a TLS server that is not Go's: to
// bytes that open no TLS handshake (a plain HTTP request) it answers as
// OpenSSL does, with a fatal alert record, and hangs up. net/http reads the
// record as the start of an answer: "malformed HTTP response \x15\x03…".
// Go's own TLS server answers a 400 page instead (httptest.NewTLSServer).
//
// It is for _test.go files only; nothing else imports it.
package tlsalert

import (
	"io"
	"net"
	"testing"
)

// Listen serves until tb ends and returns the server's address.
func Listen(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				if _, err := io.ReadFull(conn, make([]byte, 5)); err != nil {
					return
				}
				// alert, TLS 1.0 record, 2 bytes: fatal, protocol_version
				conn.Write([]byte{0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x46})
			}()
		}
	}()
	return ln.Addr().String()
}
