package spinbroker

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// logCall is one call that logs at warn or error: its message, where it
// is, and the level it logs at.
type logCall struct {
	msg    string // "" when the message is built at run time
	prefix string // the literal a message built at run time starts with ("" for none)
	pos    string // file:line
	level  string // "warn", "error", or runAtLevel
	src    string // the message argument as written, for a message built at run time
}

// runAtLevel is the level of a Log call whose level is a variable: the
// request line's is warn for a 503 and error for another 5xx, for one.
const runAtLevel = "a level chosen at run time"

// levelOf is the level a Warn or Error method logs at; a Log or LogAttrs
// call's level is its second argument.
var levelOf = map[string]string{
	"Warn": "warn", "WarnContext": "warn", "Error": "error", "ErrorContext": "error",
	"Log": "", "LogAttrs": "",
}

// msgArg is the place of the message among a logging call's arguments.
var msgArg = map[string]int{
	"Warn": 0, "Error": 0, "WarnContext": 1, "ErrorContext": 1, "Log": 2, "LogAttrs": 2,
}

// goFile is a parsed non-test file of the module.
type goFile struct {
	f       *ast.File
	dir     string
	imports map[string]string // name in the file → import path
}

// paramMessage is a logging call whose message is a parameter of the
// function around it (db.logFailure(msg, …) logging msg): each literal
// its callers give is a message.
type paramMessage struct {
	call  logCall
	fn    string // the function's name
	index int    // the parameter's place
	dir   string // the package's directory, where its callers are
}

// warnAndErrorLogs finds, in the module's non-test Go files, every call of
// a method (or slog function) Warn, Error, WarnContext, ErrorContext, and
// every Log or LogAttrs whose level is not slog.LevelDebug or
// slog.LevelInfo (a level chosen at run time may be warn or error, as the
// request line's is). Calls of another package's Error (http.Error) and of
// testing's (t.Error in test helpers) are not logging. A message held in
// a variable is followed as far as the literals assigned to it in its
// function, or given for it, as a parameter, by the callers in its package.
func warnAndErrorLogs(t *testing.T) []logCall {
	t.Helper()
	fset := token.NewFileSet()
	var files []goFile
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != "." && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		imports := map[string]string{}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			name := p[strings.LastIndex(p, "/")+1:]
			if imp.Name != nil {
				name = imp.Name.Name
			}
			imports[name] = p
		}
		files = append(files, goFile{f: f, dir: filepath.Dir(path), imports: imports})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	var calls []logCall
	var params []paramMessage
	for _, gf := range files {
		testingNames := testingReceivers(gf.f, gf.imports)
		for _, decl := range gf.f.Decls {
			// A call outside a function (in a package-level func literal)
			// has no function to follow its message's variable in.
			fn, _ := decl.(*ast.FuncDecl)
			ast.Inspect(decl, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				level, ok := levelOf[sel.Sel.Name]
				if !ok || len(call.Args) <= msgArg[sel.Sel.Name] {
					return true
				}
				if x, ok := sel.X.(*ast.Ident); ok {
					if p, isPkg := gf.imports[x.Name]; isPkg && p != "log/slog" {
						return true // http.Error and the like
					}
					if testingNames[x.Name] {
						return true // t.Error in a test helper
					}
				}
				if level == "" {
					level = runAtLevel
					if lv, ok := call.Args[1].(*ast.SelectorExpr); ok {
						switch lv.Sel.Name {
						case "LevelDebug", "LevelInfo":
							return true
						case "LevelWarn":
							level = "warn"
						case "LevelError":
							level = "error"
						}
					}
				}
				p := fset.Position(call.Pos())
				c := logCall{pos: filepath.ToSlash(p.Filename) + ":" + strconv.Itoa(p.Line), level: level}
				arg := call.Args[msgArg[sel.Sel.Name]]
				if s, ok := stringConstant(arg); ok {
					c.msg = s
					calls = append(calls, c)
					return true
				}
				c.src = exprString(fset, arg)
				c.prefix = literalPrefix(arg)
				if id, ok := arg.(*ast.Ident); ok && fn != nil && fn.Body != nil {
					if i := paramIndex(fn, id.Name); i >= 0 {
						params = append(params, paramMessage{call: c, fn: fn.Name.Name, index: i, dir: gf.dir})
						return true
					}
					if msgs := assignedLiterals(fn.Body, id.Name); msgs != nil {
						for _, m := range msgs {
							c.msg = m
							calls = append(calls, c)
						}
						return true
					}
				}
				calls = append(calls, c)
				return true
			})
		}
	}

	for _, pm := range params {
		msgs := callerLiterals(files, pm)
		if msgs == nil {
			calls = append(calls, pm.call)
			continue
		}
		for _, m := range msgs {
			c := pm.call
			c.msg = m
			calls = append(calls, c)
		}
	}
	return calls
}

// paramIndex is the place of the parameter name among fn's, or -1.
func paramIndex(fn *ast.FuncDecl, name string) int {
	i := 0
	for _, field := range fn.Type.Params.List {
		if len(field.Names) == 0 {
			i++
			continue
		}
		for _, n := range field.Names {
			if n.Name == name {
				return i
			}
			i++
		}
	}
	return -1
}

// assignedLiterals is every value assigned to the variable name in body,
// when each is a string literal; nil when one is not.
func assignedLiterals(body *ast.BlockStmt, name string) []string {
	var msgs []string
	literal := true
	note := func(e ast.Expr) {
		if s, ok := stringConstant(e); ok {
			msgs = append(msgs, s)
		} else {
			literal = false
		}
	}
	ast.Inspect(body, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.AssignStmt:
			for i, l := range n.Lhs {
				if id, ok := l.(*ast.Ident); ok && id.Name == name {
					if len(n.Lhs) != len(n.Rhs) {
						literal = false
						continue
					}
					note(n.Rhs[i])
				}
			}
		case *ast.ValueSpec:
			for i, id := range n.Names {
				if id.Name == name {
					if len(n.Values) != len(n.Names) {
						literal = false
						continue
					}
					note(n.Values[i])
				}
			}
		}
		return true
	})
	if !literal {
		return nil
	}
	return msgs
}

// callerLiterals is the literal each call of pm's function in its package
// gives for the message parameter; nil when one gives something else.
func callerLiterals(files []goFile, pm paramMessage) []string {
	var msgs []string
	literal := true
	for _, gf := range files {
		if gf.dir != pm.dir {
			continue
		}
		ast.Inspect(gf.f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			var name string
			switch fun := call.Fun.(type) {
			case *ast.Ident:
				name = fun.Name
			case *ast.SelectorExpr:
				name = fun.Sel.Name
			}
			if name != pm.fn || len(call.Args) <= pm.index {
				return true
			}
			if s, ok := stringConstant(call.Args[pm.index]); ok {
				msgs = append(msgs, s)
			} else {
				literal = false
			}
			return true
		})
	}
	if !literal {
		return nil
	}
	return msgs
}

// testingReceivers names the parameters of f's functions whose type is one
// of testing's (t *testing.T, tb testing.TB), whose Error is no log line.
func testingReceivers(f *ast.File, imports map[string]string) map[string]bool {
	names := map[string]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		field, ok := n.(*ast.Field)
		if !ok {
			return true
		}
		typ := field.Type
		if star, ok := typ.(*ast.StarExpr); ok {
			typ = star.X
		}
		if sel, ok := typ.(*ast.SelectorExpr); ok {
			if x, ok := sel.X.(*ast.Ident); ok && imports[x.Name] == "testing" {
				for _, name := range field.Names {
					names[name.Name] = true
				}
			}
		}
		return true
	})
	return names
}

// literalPrefix is the literal a message built with + starts with
// ("--auth is on … --db "+path+" …": "--auth is on … --db ").
func literalPrefix(e ast.Expr) string {
	for {
		if s, ok := stringConstant(e); ok {
			return s
		}
		b, ok := e.(*ast.BinaryExpr)
		if !ok || b.Op != token.ADD {
			return ""
		}
		e = b.X
	}
}

// stringConstant is the value of a string literal, or of literals joined
// with +.
func stringConstant(e ast.Expr) (string, bool) {
	switch e := e.(type) {
	case *ast.BasicLit:
		if e.Kind != token.STRING {
			return "", false
		}
		s, err := strconv.Unquote(e.Value)
		return s, err == nil
	case *ast.ParenExpr:
		return stringConstant(e.X)
	case *ast.BinaryExpr:
		if e.Op != token.ADD {
			return "", false
		}
		l, ok := stringConstant(e.X)
		if !ok {
			return "", false
		}
		r, ok := stringConstant(e.Y)
		return l + r, ok
	}
	return "", false
}

func exprString(fset *token.FileSet, e ast.Expr) string {
	p, q := fset.Position(e.Pos()), fset.Position(e.End())
	src, err := os.ReadFile(p.Filename)
	if err != nil || q.Offset > len(src) {
		return "?"
	}
	return string(src[p.Offset:q.Offset])
}

// runbookHeading is a heading of OPERATIONS.md that names one message: its
// whole text one code span.
var runbookHeading = regexp.MustCompile("^#### (`+)(.+?)(`+)\\s*$")

// runbookEntry is one message's entry in OPERATIONS.md.
type runbookEntry struct {
	line  int    // of its heading
	level string // the line under its heading, which starts with the level
}

// runbookMessages reads the messages OPERATIONS.md has an entry for, and
// the #### headings that are not one message in backticks.
func runbookMessages(t *testing.T) (msgs map[string]runbookEntry, bad []string) {
	t.Helper()
	b, err := os.ReadFile("OPERATIONS.md")
	if err != nil {
		t.Fatal(err)
	}
	msgs = map[string]runbookEntry{}
	lines := strings.Split(string(b), "\n")
	for i, line := range lines {
		if !strings.HasPrefix(line, "#### ") {
			continue
		}
		m := runbookHeading.FindStringSubmatch(line)
		if m == nil || m[1] != m[3] {
			bad = append(bad, strconv.Itoa(i+1)+": "+line)
			continue
		}
		msg := m[2]
		if len(m[1]) > 1 {
			msg = strings.TrimSpace(msg) // ``a `b` c``, CommonMark's way to quote a backtick
		}
		e := runbookEntry{line: i + 1}
		if i+1 < len(lines) {
			e.level = lines[i+1]
		}
		msgs[msg] = e
	}
	return msgs, bad
}

// saysLevel reports whether an entry's first line gives the level a call
// logs at: "warn" or "error" first, and either for a level chosen at run
// time ("warn for a 503, error for another 5xx").
func saysLevel(first, level string) bool {
	if level == runAtLevel {
		return strings.HasPrefix(first, "warn") || strings.HasPrefix(first, "error")
	}
	word, _, _ := strings.Cut(first, " ")
	return strings.TrimRight(word, ".,") == level
}

// TestOperationsCoversEveryWarning keeps OPERATIONS.md, the runbook of
// what each warning and error in the logs means, true: every message the
// code logs at warn or error has its entry, and every entry names a
// message the code still logs. An entry whose text ends in "…" stands for
// the messages built at run time that start with the text before it.
func TestOperationsCoversEveryWarning(t *testing.T) {
	calls := warnAndErrorLogs(t)
	if len(calls) < 50 {
		t.Fatalf("found only %d calls that log at warn or error; the walk of the source lost its way", len(calls))
	}
	documented, bad := runbookMessages(t)
	for _, line := range bad {
		t.Errorf("OPERATIONS.md line %s: a #### heading there names one logged message, in backticks and nothing else (#### `message`)", line)
	}

	logged := map[string][]logCall{}
	used := map[string]bool{} // entries ending in … that a message starts with
	for _, c := range calls {
		if c.msg != "" {
			logged[c.msg] = append(logged[c.msg], c)
			continue
		}
		covered := ""
		for entry := range documented {
			if p, ok := strings.CutSuffix(entry, "…"); ok && p != "" && strings.HasPrefix(c.prefix, p) {
				covered, used[entry] = entry, true
			}
		}
		if covered != "" {
			t.Logf("built at run time: %s logs %s at %s; OPERATIONS.md's entry %q covers it", c.pos, c.src, c.level, covered)
			continue
		}
		t.Logf("skipped: %s logs a message built at run time (%s) at %s; OPERATIONS.md cannot be checked for it", c.pos, c.src, c.level)
	}
	var missing []string
	for msg, cs := range logged {
		e, ok := documented[msg]
		if !ok {
			missing = append(missing, msg)
			continue
		}
		for _, c := range cs {
			if !saysLevel(e.level, c.level) {
				t.Errorf("OPERATIONS.md line %d: the entry for %q must start with the level %s logs it at, %s (the line under its heading starts %q)",
					e.line+1, msg, c.pos, c.level, Truncate(e.level, 40))
			}
		}
	}
	slices.Sort(missing)
	for _, msg := range missing {
		var where []string
		for _, c := range logged[msg] {
			where = append(where, c.pos+" at "+c.level)
		}
		t.Errorf("OPERATIONS.md has no entry for %q, logged by %s.\n"+
			"\tAdd one under the section of its situation: a heading #### `%s` (the exact text),\n"+
			"\tthen which program logs it and at what level, what it means, what to do, and what shows more.", msg, strings.Join(where, ", "), msg)
	}
	var stale []string
	for msg := range documented {
		if _, ok := logged[msg]; !ok && !used[msg] {
			stale = append(stale, msg)
		}
	}
	slices.Sort(stale)
	for _, msg := range stale {
		t.Errorf("OPERATIONS.md line %d has an entry for %q, which no code logs at warn or error any more.\n"+
			"\tIf the message was reworded, put its new text in the heading; if it is gone or now logged at info or debug, remove the entry.",
			documented[msg].line, msg)
	}
}

// TestWarnAndErrorLogs checks the walk itself on calls it must find and
// calls it must leave out.
func TestWarnAndErrorLogs(t *testing.T) {
	byMsg := map[string]logCall{}
	for _, c := range warnAndErrorLogs(t) {
		if c.msg != "" {
			byMsg[c.msg] = c
		}
	}
	for msg, level := range map[string]string{
		"write stalled":  "error",    // s.log.Error
		"sweep failed":   "warn",     // log.Warn
		"request":        runAtLevel, // Log with a level chosen at run time
		"unavailable":    runAtLevel, // the same, in json.go
		"command failed": "warn",     // the broker's line, not the agent's
		"could not load the TLS certificate; still serving the one before it": runAtLevel,
		"database unavailable": "error", // a parameter of logFailure, given by its callers
		"the batch's results are still not delivered after a lease's duration; no longer extending their leases, so that the broker can give the commands again": "warn", // a variable assigned twice
	} {
		if got := byMsg[msg].level; got != level {
			t.Errorf("%q: level %q, want %q", msg, got, level)
		}
	}
	for _, msg := range []string{"spin-broker listening", "stalled write ended"} { // at info
		if c, ok := byMsg[msg]; ok {
			t.Errorf("%q (logged at info) found at %s", msg, c.pos)
		}
	}
}

// TestOperationsNamesOnlyMetricsThatExist keeps OPERATIONS.md to the
// metrics README's table names (the broker's test of /metrics keeps that
// table true): a runbook that sends on-call to a metric the broker does
// not serve is worse than none.
func TestOperationsNamesOnlyMetricsThatExist(t *testing.T) {
	ops, err := os.ReadFile("OPERATIONS.md")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, m := range regexp.MustCompile("`(spinbroker_[a-z_]+)`").FindAllStringSubmatch(string(readme), -1) {
		known[m[1]] = true
	}
	if len(known) < 10 {
		t.Fatalf("README.md names only %d metrics in backticks; its metrics table moved?", len(known))
	}
	seen := map[string]bool{}
	for _, name := range regexp.MustCompile(`spinbroker_[a-z_]+`).FindAllString(string(ops), -1) {
		if seen[name] {
			continue
		}
		seen[name] = true
		base := name
		for _, suffix := range []string{"_bucket", "_count", "_sum"} { // a histogram's series
			if b, ok := strings.CutSuffix(name, suffix); ok && known[b] {
				base = b
			}
		}
		if !known[base] {
			t.Errorf("OPERATIONS.md names the metric %s, which README.md's metrics table does not have: use one the broker serves", name)
		}
	}
}
