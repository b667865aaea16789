package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"testing"

	spinbroker "github.com/spin-broker/spinbroker"
)

// TestWriteDoneAnswerTooLarge: a write the broker carried out whose answer
// is larger than the client reads (an enqueue or a cancel answers the whole
// package, its commands' parameters and outputs included) exited 1, which a
// script reads as "failed" and may answer by making the change again. It
// exits 0, says on stderr that it was done and how to look at what it
// changed, and prints nothing a script would take for the answer. The
// broker is real; a proxy in front of it pads its answer to each write past
// the client's 64 MiB.
func TestWriteDoneAnswerTooLarge(t *testing.T) {
	b := newBroker(t)
	target, err := url.Parse(b.url)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.Method == http.MethodPost && resp.StatusCode < 300 {
			// Spaces after the JSON: an answer too large to read, of a
			// write that was made.
			pad := io.LimitReader(spaces{}, 64<<20+1)
			resp.Body = struct {
				io.Reader
				io.Closer
			}{io.MultiReader(resp.Body, pad), resp.Body}
			resp.ContentLength = -1
			resp.Header.Del("Content-Length")
		}
		return nil
	}
	front := httptest.NewServer(proxy)
	t.Cleanup(front.Close)
	ctx := context.Background()

	for _, tc := range []struct {
		name  string
		args  func(id string) []string
		state spinbroker.PackageState
	}{
		{"enqueue", func(id string) []string { return []string{"message", "enqueue", id} }, spinbroker.PackageQueued},
		{"cancel", func(id string) []string { return []string{"package", "cancel", id} }, spinbroker.PackageCancelled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := b.cl.CreatePackage(ctx, spinbroker.NewPackage{Commands: []spinbroker.NewCommand{{Resource: "storage", Action: "add_volume"}}})
			if err != nil {
				t.Fatal(err)
			}
			// Newer packages than a page of 'package ls' shows: the
			// package changed is not among the newest.
			for range spinbroker.DefaultListLimit + 10 {
				if _, err := b.cl.CreatePackage(ctx, spinbroker.NewPackage{}); err != nil {
					t.Fatal(err)
				}
			}
			r := spin(t, append(tc.args(p.ID), "--url", front.URL)...)
			if r.code != 0 {
				t.Errorf("exit %d, want 0: the change was made, and must not be made again", r.code)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q, want nothing: the answer was not read", r.stdout)
			}
			for _, want := range []string{"warning", "was done", "do not run it again", p.ID, "spinbroker package ls"} {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("stderr does not say %q:\n%s", want, r.stderr)
				}
			}
			got, err := b.cl.Package(ctx, p.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.State != tc.state {
				t.Errorf("the package is %s, want %s", got.State, tc.state)
			}
			// The way the warning gives to look at the package shows it.
			m := regexp.MustCompile(`'spinbroker ([^']+)'`).FindStringSubmatch(r.stderr)
			if m == nil {
				t.Fatalf("stderr names no command to look with:\n%s", r.stderr)
			}
			look := spin(t, append(strings.Fields(m[1]), "--url", b.url)...)
			if look.code != 0 || !strings.Contains(look.stdout, p.ID+"  "+string(tc.state)) {
				t.Errorf("'spinbroker %s', as the warning says, does not show package %s %s: exit %d\n%.400s\n%s", m[1], p.ID, tc.state, look.code, look.stdout, look.stderr)
			}
		})
	}
}

// spaces reads as an endless run of spaces.
type spaces struct{}

func (spaces) Read(p []byte) (int, error) {
	copy(p, bytes.Repeat([]byte{' '}, len(p)))
	return len(p), nil
}
