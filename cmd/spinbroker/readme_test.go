package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReadme_GreeterBlock runs the README's block that starts the greeter
// and gives it work, as written, and holds its output to what the comment
// on its last line shows: that comment once showed the greeting on one
// line while the jq it shows prints three.
func TestReadme_GreeterBlock(t *testing.T) {
	if _, err := exec.LookPath("jq"); err != nil {
		t.Fatal("jq is missing: make test installs it (scripts/install-test-deps.sh)")
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var block string
	for _, part := range strings.Split(string(readme), "```sh\n")[1:] {
		if b, _, _ := strings.Cut(part, "```"); strings.Contains(b, "go run ./examples/greeter &") {
			block = b
		}
	}
	lines := strings.Split(strings.TrimSpace(block), "\n")
	last, want, ok := strings.Cut(lines[len(lines)-1], "# ")
	if block == "" || !ok {
		t.Fatalf("the README has no greeter block whose last line shows its output:\n%s", block)
	}
	lines[len(lines)-1] = last
	want = strings.TrimSpace(want)

	// The spinbroker the block runs is this one, on PATH; its greeter is
	// go run's, from the top of the repository, as the README has it.
	b := startBroker(t, filepath.Join(t.TempDir(), "greeter.db"))
	script := strings.Join(lines, "\n")
	cmd := exec.Command("bash", "-eu", "-o", "pipefail", "-c", script)
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(binary)+":"+os.Getenv("PATH"), "SPINBROKER_URL="+b.url, "GORACE=atexit_sleep_ms=0")
	// The greeter left running in the background ends with its group, and
	// holds no pipe of this test open: its output goes to files.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	dir := t.TempDir()
	stdout, err := os.Create(filepath.Join(dir, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	defer stdout.Close()
	stderr, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(3*time.Minute, func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	err = cmd.Wait()
	timer.Stop()
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	out, _ := os.ReadFile(stdout.Name())
	if err != nil {
		errs, _ := os.ReadFile(stderr.Name())
		t.Fatalf("the README's greeter block: %v\n%s\n%s%s", err, script, out, errs)
	}
	if got := strings.TrimSpace(string(out)); !strings.HasSuffix(got, "\n"+want) {
		t.Errorf("the README's greeter block ends its output with\n%s\nand its comment shows\n%s", got, want)
	}
}

// TestReadme_MakeTargets: every make target the README names is one the
// Makefile has, and the README says what each of the Makefile's targets
// is for: its list of "the other targets" once left out deps and clean.
func TestReadme_MakeTargets(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	makefile, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	// The targets make help lists: "name: ... ## what it does".
	targets := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^([a-zA-Z_-]+):.*## `).FindAllStringSubmatch(string(makefile), -1) {
		targets[m[1]] = true
	}
	if !targets["help"] || !targets["test"] {
		t.Fatalf("the Makefile's targets: %v", targets)
	}
	text := string(readme)
	named := map[string]bool{}
	for _, m := range regexp.MustCompile("`make ([a-z-]+)[^`]*`").FindAllStringSubmatch(text, -1) {
		named[m[1]] = true
		if !targets[m[1]] {
			t.Errorf("the README names `make %s`, a target the Makefile does not have", m[1])
		}
	}
	// The list that make help's line gives, in the README's own words.
	_, list, ok := strings.Cut(text, "`make help`\nlists the other targets")
	if !ok {
		_, list, ok = strings.Cut(text, "`make help` lists the other targets")
	}
	if !ok {
		t.Fatal("the README does not say what `make help` lists")
	}
	list, _, _ = strings.Cut(list, "\n\n")
	for tg := range targets {
		if !named[tg] && !strings.Contains(list, "`"+tg+"`") {
			t.Errorf("the README does not say what `make %s` does", tg)
		}
	}
}
