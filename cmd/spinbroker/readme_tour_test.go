package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// readmeSection is the README's text under the heading line given, up to
// the next heading of the same level or above.
func readmeSection(t *testing.T, heading string) string {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("the README has no heading %q", heading)
	}
	level := strings.Index(heading, " ") // "###" is 3
	fenced := false                      // a "# comment" in a code block is no heading
	for _, line := range strings.SplitAfter(rest, "\n") {
		if strings.HasPrefix(line, "```") {
			fenced = !fenced
		}
		if n := strings.Index(line, " "); n > 0 && n <= level && !fenced && strings.Trim(line[:n], "#") == "" {
			rest, _, _ = strings.Cut(rest, line)
			break
		}
	}
	return rest
}

// shBlocks is the ```sh blocks of text, in order.
func shBlocks(text string) []string {
	var blocks []string
	for _, part := range strings.Split(text, "```sh\n")[1:] {
		b, _, _ := strings.Cut(part, "```")
		blocks = append(blocks, b)
	}
	return blocks
}

// tourStep is a command line of a README block as a reader pastes it, or
// a comment between them.
type tourStep struct {
	comment bool
	text    string
}

// tourSteps splits a block into its comments and its commands, a command
// going on over lines while a single quote is open or a line ends in a
// backslash.
func tourSteps(block string) []tourStep {
	var steps []tourStep
	var cmd strings.Builder
	for _, line := range strings.Split(block, "\n") {
		if cmd.Len() == 0 {
			switch trimmed := strings.TrimSpace(line); {
			case trimmed == "":
				continue
			case strings.HasPrefix(trimmed, "#"):
				steps = append(steps, tourStep{comment: true, text: trimmed})
				continue
			}
		}
		cmd.WriteString(line + "\n")
		if s := cmd.String(); strings.Count(s, "'")%2 == 0 && !strings.HasSuffix(line, `\`) {
			steps = append(steps, tourStep{text: s})
			cmd.Reset()
		}
	}
	if cmd.Len() > 0 {
		steps = append(steps, tourStep{text: cmd.String()})
	}
	return steps
}

// tourAnswer is what the tour's commands answer, as much as it checks.
type tourAnswer struct {
	ID           string   `json:"id"`
	Action       string   `json:"action"`
	State        string   `json:"state"`
	Dependencies []string `json:"dependencies"`
	Lease        *struct {
		Token string `json:"token"`
	} `json:"lease"`
	Counts   map[string]int `json:"counts"`
	Commands []tourAnswer   `json:"commands"`
	Queues   []struct {
		Resource string          `json:"resource"`
		Counts   map[string]int  `json:"counts"`
		Oldest   json.RawMessage `json:"oldest_ready_age_seconds"`
	} `json:"queues"`
}

// tourPlaceholders are the words of the tour a reader replaces with what
// an earlier answer said.
var tourPlaceholders = regexp.MustCompile(`\b(PKG_ID|CMD_ID|LEASE_TOKEN)\b`)

// TestReadme_CurlTour runs the README's "With curl" tour as a reader
// would, against a real broker: each command as written, its address the
// test broker's, PKG_ID, CMD_ID and LEASE_TOKEN filled from the answers
// the comments name, "the same way" done again; then the jq block as
// written. It holds the broker to what the prose promises: the second
// command waits for the first, both succeed, the package ends succeeded,
// /queues lists storage.
func TestReadme_CurlTour(t *testing.T) {
	for _, tool := range []string{"curl", "jq"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing: make test installs it (scripts/install-test-deps.sh)", tool)
		}
	}
	blocks := shBlocks(readmeSection(t, "### With curl"))
	if len(blocks) != 2 || !strings.Contains(blocks[1], "jq") {
		t.Fatalf("the README's curl tour has %d blocks, not the tour and its jq block:\n%q", len(blocks), blocks)
	}
	b := startBroker(t, filepath.Join(t.TempDir(), "tour.db"))
	addr := strings.TrimPrefix(b.url, "http://")
	run := func(t *testing.T, script string) []byte {
		t.Helper()
		if !strings.Contains(script, "localhost:8080") {
			t.Fatalf("a command of the tour does not name localhost:8080, the broker the tour starts:\n%s", script)
		}
		script = strings.ReplaceAll(script, "localhost:8080", addr)
		cmd := exec.Command("bash", "-eu", "-o", "pipefail", "-c", script)
		cmd.Dir = t.TempDir()
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: %v\n%s", script, err, out)
		}
		return out
	}
	decode := func(t *testing.T, script string, out []byte) tourAnswer {
		t.Helper()
		var a tourAnswer
		if err := json.Unmarshal(out, &a); err != nil {
			t.Fatalf("%s answered what is not JSON (%v):\n%s", script, err, out)
		}
		return a
	}
	// checkCreated: the package the tour creates, its second command
	// blocked on the first; it returns the two commands' ids.
	checkCreated := func(t *testing.T, a tourAnswer) (string, string) {
		t.Helper()
		if a.ID == "" || a.State != "queued" || len(a.Commands) != 2 {
			t.Fatalf("the tour's package was not created and enqueued with two commands: %+v", a)
		}
		first, second := a.Commands[0], a.Commands[1]
		if first.Action != "add_volume" || first.State != "ready" ||
			second.Action != "create_image" || second.State != "blocked" ||
			len(second.Dependencies) != 1 || second.Dependencies[0] != first.ID {
			t.Fatalf("the tour promises create_image waiting for add_volume, and the broker made %+v", a.Commands)
		}
		return first.ID, second.ID
	}
	toured := t.Run("Curl", func(t *testing.T) {
		steps := tourSteps(blocks[0])
		vars := map[string]string{}
		var delivered []string // the commands next gave, in order
		var since []string     // the commands since the last comment, for "the same way"
		var lastComment bool
		var want1, want2 string
		sawPackage, sawQueues := false, false
		do := func(script string) {
			script = tourPlaceholders.ReplaceAllStringFunc(script, func(p string) string {
				if v, ok := vars[p]; ok {
					return v
				}
				t.Fatalf("the tour uses %s before an answer gives it:\n%s", p, script)
				return ""
			})
			out := run(t, script)
			a := decode(t, script, out)
			switch {
			case strings.Contains(script, "/packages -d"):
				want1, want2 = checkCreated(t, a)
				vars["PKG_ID"] = a.ID
			case strings.Contains(script, "/next"):
				if a.Lease == nil || a.ID == "" {
					t.Fatalf("%s gave no command with a lease:\n%s", script, out)
				}
				vars["CMD_ID"], vars["LEASE_TOKEN"] = a.ID, a.Lease.Token
				delivered = append(delivered, a.ID)
			case strings.Contains(script, "/complete"):
				if a.State != "succeeded" {
					t.Fatalf("%s did not leave the command succeeded:\n%s", script, out)
				}
			case strings.Contains(script, "/packages/"):
				sawPackage = true
				if a.State != "succeeded" || a.Counts["succeeded"] != 2 || len(a.Commands) != 2 {
					t.Errorf("the tour's package ends %s with counts %v, not succeeded with both commands", a.State, a.Counts)
				}
			case strings.Contains(script, "/queues"):
				sawQueues = true
				if len(a.Queues) != 1 || a.Queues[0].Resource != "storage" {
					t.Fatalf("/queues lists %+v, not the storage queue", a.Queues)
				}
				// "every queue: ready, blocked, leased, oldest ready"
				q := a.Queues[0]
				for _, k := range []string{"ready", "blocked", "leased"} {
					if _, ok := q.Counts[k]; !ok {
						t.Errorf("/queues says no %s count of storage:\n%s", k, out)
					}
				}
				if q.Oldest == nil {
					t.Errorf("/queues says not how long storage's oldest ready command waited:\n%s", out)
				}
			default:
				t.Fatalf("the test does not know what this command of the tour should do:\n%s", script)
			}
		}
		for _, s := range steps {
			if s.comment {
				if strings.Contains(s.text, "the same way") {
					for _, script := range since {
						do(script)
					}
				}
				if !lastComment {
					since = nil
				}
				lastComment = true
				continue
			}
			lastComment = false
			since = append(since, s.text)
			do(s.text)
		}
		if len(delivered) != 2 || delivered[0] != want1 || delivered[1] != want2 {
			t.Errorf("the tour's agent was given %v, not add_volume %s then create_image %s", delivered, want1, want2)
		}
		if !sawPackage || !sawQueues {
			t.Errorf("the tour no longer shows the package (%v) and the queues (%v)", sawPackage, sawQueues)
		}
	})

	// The jq block does the agent's two calls: run as written, once per
	// command of a second package made as the tour makes it.
	t.Run("Jq", func(t *testing.T) {
		if !toured {
			t.Skip("the tour failed: its queue is not as the jq block expects it")
		}
		var create, show string
		for _, s := range tourSteps(blocks[0]) {
			switch {
			case s.comment:
			case strings.Contains(s.text, "/packages -d"):
				create = s.text
			case strings.Contains(s.text, "/packages/PKG_ID"):
				show = s.text
			}
		}
		created := decode(t, create, run(t, create))
		first, second := checkCreated(t, created)
		for _, want := range []string{first, second} {
			out := run(t, blocks[1])
			if a := decode(t, blocks[1], out); a.ID != want || a.State != "succeeded" {
				t.Fatalf("the jq block answered, not %s succeeded:\n%s", want, out)
			}
		}
		show = strings.ReplaceAll(show, "PKG_ID", created.ID)
		if a := decode(t, show, run(t, show)); a.State != "succeeded" {
			t.Errorf("after the jq block twice, the package is %s, not succeeded", a.State)
		}
	})
}
