package main

import (
	"bytes"
	"context"
	"go/ast"
	"go/parser"
	"go/printer"
	"go/token"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestReadmeShowsThisProgram: the README's "An agent" shows this program
// (without its package clause, imports and comments); a change to one that
// is not made to the other fails here.
func TestReadmeShowsThisProgram(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(readme), "\n### An agent\n")
	if !ok {
		t.Fatal(`the README has no "### An agent" section`)
	}
	_, block, ok := strings.Cut(after, "```go\n")
	if !ok {
		t.Fatal(`the README's "An agent" has no Go block`)
	}
	block, _, _ = strings.Cut(block, "```")
	want := decls(t, "main.go", nil)
	got := decls(t, "README.md", "package main\n"+block)
	for name, w := range want {
		if g, ok := got[name]; !ok {
			t.Errorf("the README's greeter lacks %s of examples/greeter/main.go", name)
		} else if g != w {
			t.Errorf("the README's %s is not examples/greeter's:\nREADME:\n%s\nmain.go:\n%s", name, g, w)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("the README's greeter has %s, which examples/greeter/main.go lacks", name)
		}
	}
}

// decls are the top-level declarations of a Go file other than its
// imports, by name, as gofmt prints them without their comments.
func decls(t *testing.T, name string, src any) map[string]string {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, name, src, 0) // no comments
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, d := range f.Decls {
		var key string
		switch d := d.(type) {
		case *ast.FuncDecl:
			key = "func " + d.Name.Name
		case *ast.GenDecl:
			if d.Tok == token.IMPORT {
				continue
			}
			key = d.Tok.String() + " " + specName(d.Specs[0])
		}
		var b bytes.Buffer
		if err := printer.Fprint(&b, fset, d); err != nil {
			t.Fatal(err)
		}
		out[key] = b.String()
	}
	return out
}

func specName(s ast.Spec) string {
	switch s := s.(type) {
	case *ast.TypeSpec:
		return s.Name.Name
	case *ast.ValueSpec:
		return s.Names[0].Name
	}
	return "?"
}

// TestErrorPrintedOnce: a broker that refuses the agent stops it with
// status 1 and the reason printed once. Run logs the error it returns,
// and log.Fatal(err) after it printed it a second time.
func TestErrorPrintedOnce(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "greeter")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	broker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"error":{"code":"unauthorized","message":"the token is not valid or was revoked"}}`)
	}))
	defer broker.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = append(os.Environ(), "SPINBROKER_URL="+broker.URL, "SPINBROKER_TOKEN=sbt_revoked")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if code := cmd.ProcessState.ExitCode(); code != 1 {
		t.Fatalf("the greeter exited %d (%v), want 1:\n%s", code, err, stderr.String())
	}
	if n := strings.Count(stderr.String(), "the token is not valid or was revoked"); n != 1 {
		t.Errorf("the greeter printed the broker's refusal %d times, want once:\n%s", n, stderr.String())
	}
}
