package httpapi_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/httpapi"
	"github.com/spin-broker/spinbroker/internal/syncbuf"
)

func TestAuth(t *testing.T) {
	e := newEnv(t, httpapi.Options{Auth: true})
	tokens := map[string]string{}
	for _, role := range []struct{ name, role, resource string }{
		{"admin", spinbroker.RoleAdmin, ""},
		{"client", spinbroker.RoleClient, ""},
		{"viewer", spinbroker.RoleViewer, ""},
		{"storage", spinbroker.RoleAgent, "storage"},
		{"emulation", spinbroker.RoleAgent, "emulation"},
	} {
		secret := e.secret(role.role, role.resource, role.name)
		tokens[role.name] = secret
	}
	_, revokedSecret := e.revokedSecret(spinbroker.RoleAdmin, "", "old")

	as := func(who string) *env { c := *e; c.token = tokens[who]; return &c }
	admin := as("admin")
	p := admin.createPackage(`[{"key": "s", "resource": "storage", "action": "add_volume"}, {"resource": "emulation", "action": "start", "dependencies": ["s"]}, {"resource": "emulation", "action": "other"}]`, true)
	storageCmd, emuCmd := p.Commands[0], p.Commands[2]

	// Without or with a bad token: 401, except /healthz.
	anon := *e
	anon.want(anon.do("GET", "/healthz", ""), 200, "")
	for _, path := range []string{"/packages", "/queues", "/metrics", "/events", "/commands/" + storageCmd.ID} {
		r := anon.do("GET", path, "")
		anon.want(r, 401, spinbroker.EUNAUTHORIZED)
		if r.header.Get("WWW-Authenticate") == "" {
			t.Errorf("401 on %s without WWW-Authenticate", path)
		}
	}
	bad := *e
	bad.token = "sbt_not-a-real-token"
	bad.want(bad.do("GET", "/packages", ""), 401, spinbroker.EUNAUTHORIZED)
	bad.token = revokedSecret
	bad.want(bad.do("GET", "/packages", ""), 401, spinbroker.EUNAUTHORIZED)

	tests := []struct {
		who, method, path, body string
		status                  int
	}{
		{"viewer", "GET", "/packages", "", 200},
		{"viewer", "GET", "/metrics", "", 200},
		{"viewer", "POST", "/packages", "", 403},
		{"viewer", "POST", "/queues/storage/next", "", 403},
		{"viewer", "PATCH", "/queues/storage", `{"paused": true}`, 403},
		{"client", "POST", "/packages", "", 201},
		{"client", "GET", "/packages/" + p.ID, "", 200},
		{"client", "PATCH", "/queues/storage", `{"paused": true}`, 403},
		{"client", "POST", "/queues/storage/next", "", 403},
		{"admin", "PATCH", "/queues/other", `{"concurrency": 2}`, 200},
		// An agent reads, takes and settles only its own resource's work.
		{"storage", "GET", "/packages", "", 403},
		{"storage", "POST", "/packages", "", 403},
		{"storage", "GET", "/commands/" + storageCmd.ID, "", 200},
		{"storage", "GET", "/commands/" + emuCmd.ID, "", 403},
		{"storage", "GET", "/queues/storage", "", 200},
		{"storage", "GET", "/queues/emulation", "", 403},
		{"storage", "POST", "/queues/emulation/next", "", 403},
		{"storage", "POST", "/queues/emulation/claim", `{"max": 1}`, 403},
		{"storage", "POST", "/commands/" + emuCmd.ID + "/complete", `{"status": true, "lease": "x"}`, 403},
		{"storage", "POST", "/commands/" + emuCmd.ID + "/heartbeat", `{"lease": "x"}`, 403},
		{"storage", "POST", "/commands/" + emuCmd.ID + "/retry", "", 403},
		{"storage", "GET", "/events", "", 403},
		// A token that may not use a queue is refused before its name is
		// judged (API.md, Errors: 403 before 400).
		{"viewer", "POST", "/queues/BAD/next", "", 403},
		{"client", "POST", "/queues/BAD/claim", `{"max": 1}`, 403},
		{"storage", "POST", "/queues/BAD/next", "", 403},
		{"client", "PATCH", "/queues/BAD", `{"paused": true}`, 403},
		{"admin", "POST", "/queues/BAD/next", "", 400},
		{"storage", "POST", "/commands/" + storageCmd.ID + "/complete", `{"status": true}`, 400}, // an agent must send its lease
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s_%s_%s", tt.who, tt.method, tt.path), func(t *testing.T) {
			c := as(tt.who)
			c.t = t
			c.want(c.do(tt.method, tt.path, tt.body), tt.status, "")
		})
	}

	// An agent's token that settles by hand (as 'spinbroker message
	// complete' does, which has no lease to send) is told what it takes.
	storage := as("storage")
	if r := storage.do("POST", "/commands/"+storageCmd.ID+"/complete", `{"status": true}`); !strings.Contains(string(r.body), "settles the command by hand, which takes a client or admin token") {
		t.Errorf("an agent's result without a lease: %d %s, which does not say what settling by hand takes", r.status, r.body)
	}

	// The storage agent does its work end to end.
	c := storage.next("storage")
	if c == nil || c.ID != storageCmd.ID {
		t.Fatal("the storage agent got nothing")
	}
	storage.want(storage.do("POST", "/commands/"+c.ID+"/heartbeat", `{"lease": "`+c.Lease.Token+`"}`), 200, "")
	storage.want(storage.complete(c, true), 200, "")
	r := storage.do("GET", "/queues", "")
	var ql spinbroker.QueueList
	r.decode(t, &ql)
	if len(ql.Queues) != 1 || ql.Queues[0].Resource != "storage" {
		t.Fatalf("an agent lists only its own queue: %s", r.body)
	}
	// Its batch settles its own commands and no other resource's: each item
	// is judged on its own, as the single form would judge it (an id in
	// upper case too; the answer gives it in lower case).
	emu := as("emulation")
	ec := emu.next("emulation")
	admin.createPackage(`[{"resource": "storage", "action": "add_volume"}]`, true)
	own := storage.next("storage")
	if own == nil {
		t.Fatal("the storage agent got nothing the second time")
	}
	r = storage.do("POST", "/commands/complete", fmt.Sprintf(`{"results": [
		{"id": "%s", "status": true, "lease": "%s"},
		{"id": "%s", "status": true, "lease": "%s"},
		{"id": "00000000-0000-7000-8000-000000000000", "status": true, "lease": "x"},
		{"id": "%s", "status": true}]}`, ec.ID, ec.Lease.Token, strings.ToUpper(own.ID), own.Lease.Token, own.ID))
	storage.want(r, 200, "")
	var out spinbroker.BatchOutcomes
	r.decode(t, &out)
	if len(out.Results) != 4 {
		t.Fatalf("batch answered %d results: %s", len(out.Results), r.body)
	}
	for i, want := range []int{403, 200, 404, 400} {
		if out.Results[i].HTTPStatus != want {
			t.Errorf("batch item %d: %d, want %d: %s", i, out.Results[i].HTTPStatus, want, r.body)
		}
	}
	if out.Results[1].ID != own.ID {
		t.Errorf("batch item 1 answered as %q, want %q", out.Results[1].ID, own.ID)
	}
	if c, _ := e.db.Command(ctx, own.ID); c.State != spinbroker.Succeeded {
		t.Errorf("the agent's own command is %s after its batch", c.State)
	}
	if c, _ := e.db.Command(ctx, ec.ID); c.State != spinbroker.Leased {
		t.Errorf("the other resource's command is %s after the storage agent's batch", c.State)
	}
	// A client (a person at the CLI) may settle by hand.
	client := as("client")
	client.want(client.do("POST", "/commands/"+ec.ID+"/complete", `{"status": false, "reason": "by hand"}`), 200, "")

	// Idempotency keys are scoped to the token.
	body := `{"commands": [{"resource": "r", "action": "x"}]}`
	first := client.do("POST", "/packages", body, "Idempotency-Key", "same")
	adminAgain := admin.do("POST", "/packages", body, "Idempotency-Key", "same")
	if string(first.body) == string(adminAgain.body) {
		t.Fatal("two tokens shared an Idempotency-Key")
	}
}

func TestAuth_MetricsOpen(t *testing.T) {
	e := newEnv(t, httpapi.Options{Auth: true, MetricsOpen: true})
	e.want(e.do("GET", "/metrics", ""), 200, "")
	e.want(e.do("GET", "/packages", ""), 401, spinbroker.EUNAUTHORIZED)
}

// TestAuth_RequestLogNamesToken: with auth on, each request's log line
// names the token that made it (name and id, for an audit), never its
// secret; a refused request names none.
func TestAuth_RequestLogNamesToken(t *testing.T) {
	var log syncbuf.Buffer
	e := newEnvLogging(t, httpapi.Options{Auth: true}, &log)
	tok, secret, err := e.db.CreateToken(ctx, spinbroker.RoleClient, "", "deploy-bot")
	if err != nil {
		t.Fatal(err)
	}
	client := *e
	client.token = secret
	client.createPackage(`[{"resource": "storage", "action": "add_volume"}]`, false)
	anon := *e
	anon.want(anon.do("GET", "/queues", ""), 401, spinbroker.EUNAUTHORIZED)

	// The line is written once the answer has gone: wait for both.
	lines := map[string]map[string]any{}
	deadline := time.Now().Add(5 * time.Second)
	for len(lines) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("request lines missing from the log:\n%s", log.String())
		}
		time.Sleep(10 * time.Millisecond)
		for _, l := range strings.Split(strings.TrimSpace(log.String()), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "request" {
				lines[fmt.Sprint(m["method"], " ", m["path"])] = m
			}
		}
	}
	created := lines["POST /packages"]
	if created["token"] != "deploy-bot" || created["token_id"] != tok.ID || created["status"] != float64(201) {
		t.Errorf("the create's line does not name its token: %v", created)
	}
	if refused := lines["GET /queues"]; refused["status"] != float64(401) || refused["token"] != nil || refused["token_id"] != nil {
		t.Errorf("the refused request's line: %v", refused)
	}
	if strings.Contains(log.String(), secret) || strings.Contains(log.String(), strings.TrimPrefix(secret, "sbt_")) {
		t.Errorf("the log holds the token's secret:\n%s", log.String())
	}
}

// TestLocalHostOnly: a broker without auth on a loopback address refuses a
// request whose Host names another machine, as a page that DNS rebinding
// pointed at 127.0.0.1 would send, even with same-origin headers.
func TestLocalHostOnly(t *testing.T) {
	e := newEnv(t, httpapi.Options{LocalHostOnly: true})
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(e.srv.URL, "http://"))
	body := `{"commands": [{"resource": "emulation", "action": "start"}], "enqueue": true}`
	for host, want := range map[string]int{
		"attacker.example:" + port: 403,
		"attacker.example":         403,
		"127.0.0.1.nip.io:" + port: 403,
		"localhost:" + port:        201,
		"LOCALHOST.:" + port:       201,
		"app.localhost:" + port:    201,
		"127.0.0.1:" + port:        201,
		"127.9.9.9:" + port:        201,
		"[::1]:" + port:            201,
	} {
		req, _ := http.NewRequest("POST", e.srv.URL+"/packages", strings.NewReader(body))
		req.Host = host
		req.Header.Set("Origin", "http://"+host)
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("POST /packages with Host %q: %d, want %d", host, resp.StatusCode, want)
		}
	}
	if n, _ := e.db.Packages(ctx, spinbroker.PackageFilter{}); len(n.Packages) != 6 {
		t.Errorf("%d packages made, want the 6 of local hosts", len(n.Packages))
	}
}

// TestAuth_ReadOnlyTokensHoldNoBodies: a viewer's write is refused before
// its body is read, so bodies that never finish cannot spend the memory
// that writers' bodies wait in.
func TestAuth_ReadOnlyTokensHoldNoBodies(t *testing.T) {
	e := newEnv(t, httpapi.Options{Auth: true})
	viewer := e.secret(spinbroker.RoleViewer, "", "v")
	c, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A megabyte declared, a few bytes sent, and then nothing.
	fmt.Fprintf(c, "POST /packages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 1000000\r\n\r\n{\"commands\"", viewer)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer while the body is still coming: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Errorf("a viewer's stalled write: %d, want 403 at once", resp.StatusCode)
	}
}

// TestAuth_RevokedWhileWaiting: a token revoked while its long-poll waits
// gets no lease when work comes (401, the command stays ready), and its
// event stream ends.
func TestAuth_RevokedWhileWaiting(t *testing.T) {
	e := newEnv(t, httpapi.Options{Auth: true, TokenCacheTTL: 50 * time.Millisecond})
	agentTok, agentSecret, err := e.db.CreateToken(ctx, spinbroker.RoleAgent, "work", "a")
	if err != nil {
		t.Fatal(err)
	}
	viewerTok, viewerSecret, err := e.db.CreateToken(ctx, spinbroker.RoleViewer, "", "v")
	if err != nil {
		t.Fatal(err)
	}
	get := func(method, path, secret string) (*http.Response, error) {
		req, _ := http.NewRequest(method, e.srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+secret)
		return e.srv.Client().Do(req)
	}
	stream, err := get("GET", "/events", viewerSecret)
	if err != nil || stream.StatusCode != 200 {
		t.Fatalf("events: %v %v", stream, err)
	}
	defer stream.Body.Close()
	streamEnded := make(chan struct{})
	go func() { io.Copy(io.Discard, stream.Body); close(streamEnded) }()
	polled := make(chan int, 1)
	go func() {
		resp, err := get("POST", "/queues/work/next?wait=30s", agentSecret)
		if err != nil {
			polled <- -1
			return
		}
		resp.Body.Close()
		polled <- resp.StatusCode
	}()
	// Revoke once the long-poll waits (the broker's own gauge says so,
	// for a queue it lists), so that it is the re-check after its wake
	// that refuses it.
	one := 1
	if _, err := e.db.SetQueue(ctx, "work", spinbroker.QueueSettings{Concurrency: &one}); err != nil {
		t.Fatal(err)
	}
	admin := e.secret(spinbroker.RoleAdmin, "", "admin")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		resp, err := get("GET", "/metrics", admin)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(body), `spinbroker_queue_waiting_polls{resource="work"} 1`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent's long-poll never waited:\n%s", body)
		}
	}
	for _, id := range []string{agentTok.ID, viewerTok.ID} {
		if _, _, err := e.db.RevokeToken(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond) // past the token cache's 50ms, so the re-check reads the database
	p, _, err := e.db.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{{Resource: "work", Action: "go"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-polled:
		if code != 401 {
			t.Errorf("the revoked agent's long-poll answered %d, want 401", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the revoked agent's long-poll was not answered")
	}
	if c, _ := e.db.Command(ctx, p.Commands[0].ID); c.State != spinbroker.Ready {
		t.Errorf("the command is %s: a revoked token took it", c.State)
	}
	select {
	case <-streamEnded:
	case <-time.After(10 * time.Second):
		t.Error("the revoked viewer's event stream goes on")
	}
}

// TestAuth_RevokedLongPollEndsWithoutWork: a long-poll whose token is
// revoked ends within the token cache's time even when no work comes to
// wake it (README: "Long-polls and event streams of a revoked token end
// then too"), not only when its wait runs out, up to a minute later.
func TestAuth_RevokedLongPollEndsWithoutWork(t *testing.T) {
	e := newEnv(t, httpapi.Options{Auth: true, TokenCacheTTL: 50 * time.Millisecond})
	for _, path := range []string{"/queues/work/next?wait=30s", "/queues/work/claim"} {
		t.Run(path, func(t *testing.T) {
			tok, secret, err := e.db.CreateToken(ctx, spinbroker.RoleAgent, "work", "a")
			if err != nil {
				t.Fatal(err)
			}
			body := ""
			if strings.HasSuffix(path, "claim") {
				body = `{"max": 1, "wait": "30s"}`
			}
			polled := make(chan int, 1)
			go func() {
				req, _ := http.NewRequest("POST", e.srv.URL+path, strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+secret)
				resp, err := e.srv.Client().Do(req)
				if err != nil {
					polled <- -1
					return
				}
				resp.Body.Close()
				polled <- resp.StatusCode
			}()
			time.Sleep(200 * time.Millisecond) // the long-poll waits
			if _, _, err := e.db.RevokeToken(ctx, tok.ID); err != nil {
				t.Fatal(err)
			}
			select {
			case code := <-polled:
				if code != 401 {
					t.Errorf("the revoked agent's long-poll answered %d, want 401", code)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the revoked agent's long-poll goes on, 5s after its token was revoked (the cache's time is 50ms)")
			}
		})
	}
}

// TestAuth_AgentRefusalNamesNoOtherResource: an agent token refused a
// command of another resource is told 403, and not which resource the
// command belongs to: a token bound to storage learns nothing of another
// resource's commands, not even which queue an id it holds is on.
func TestAuth_AgentRefusalNamesNoOtherResource(t *testing.T) {
	e := newEnv(t, httpapi.Options{Auth: true})
	admin := e.secret(spinbroker.RoleAdmin, "", "admin")
	agent := e.secret(spinbroker.RoleAgent, "storage", "storage")
	e.token = admin
	p := e.createPackage(`[{"resource": "secretqueue", "action": "x"}]`, true)
	leased := e.next("secretqueue")
	id := p.Commands[0].ID
	e.token = agent
	for _, r := range []response{
		e.do("GET", "/commands/"+id, ""),
		e.do("POST", "/commands/"+id+"/heartbeat", `{"lease": "`+leased.Lease.Token+`"}`),
		e.do("POST", "/commands/"+id+"/complete", `{"status": true, "lease": "`+leased.Lease.Token+`"}`),
		e.do("POST", "/commands/"+id+"/retry", ""),
		e.do("POST", "/commands/complete", `{"results": [{"id": "`+id+`", "status": true, "lease": "`+leased.Lease.Token+`"}]}`),
	} {
		if r.status != 200 {
			e.want(r, 403, spinbroker.EFORBIDDEN)
		} else {
			var out spinbroker.BatchOutcomes
			r.decode(t, &out)
			if len(out.Results) != 1 || out.Results[0].HTTPStatus != 403 {
				t.Fatalf("batch item of another resource: %s", r.body)
			}
		}
		if strings.Contains(string(r.body), "secretqueue") {
			t.Errorf("a refusal names the other resource: %s", r.body)
		}
	}
	// A queue in the path is the agent's own words: naming it is fine.
	e.want(e.do("GET", "/queues/secretqueue", ""), 403, spinbroker.EFORBIDDEN)
}

// TestAuth_RetryRefusedBeforeLookup: a token that may retry nothing (an
// agent's, a viewer's) is answered 403 whatever the path names (API.md,
// Errors: 403 before 404), so that retry is no oracle of which command ids
// exist.
func TestAuth_RetryRefusedBeforeLookup(t *testing.T) {
	e := newEnv(t, httpapi.Options{Auth: true})
	for _, tok := range []struct{ role, resource string }{{spinbroker.RoleAgent, "storage"}, {spinbroker.RoleViewer, ""}} {
		secret := e.secret(tok.role, tok.resource, tok.role)
		e.token = secret
		for _, id := range []string{"00000000-0000-7000-8000-000000000000", "not-an-id"} {
			e.want(e.do("POST", "/commands/"+id+"/retry", ""), 403, spinbroker.EFORBIDDEN)
		}
	}
}

// TestAuth_AgentMetricsOwnResourceOnly: an agent token may scrape
// /metrics, but is shown only its own queue's series: the others' names
// and counts are other resources' business (SECURITY.md: an agent token
// sees nothing of any other resource). Other tokens see every queue.
func TestAuth_AgentMetricsOwnResourceOnly(t *testing.T) {
	e := newEnv(t, httpapi.Options{Auth: true})
	admin := e.secret(spinbroker.RoleAdmin, "", "admin")
	agent := e.secret(spinbroker.RoleAgent, "storage", "storage")
	e.token = admin
	e.createPackage(`[{"resource": "storage", "action": "x"}, {"resource": "secretqueue", "action": "x"}]`, true)
	e.next("secretqueue")
	r := e.do("GET", "/metrics", "")
	e.want(r, 200, "")
	if !strings.Contains(string(r.body), `resource="secretqueue"`) {
		t.Fatalf("an admin's scrape has no series of secretqueue:\n%s", r.body)
	}
	e.token = agent
	r = e.do("GET", "/metrics", "")
	e.want(r, 200, "")
	body := string(r.body)
	if strings.Contains(body, "secretqueue") {
		t.Errorf("an agent's scrape names another resource:\n%s", body)
	}
	for _, want := range []string{`spinbroker_queue_commands{resource="storage",state="ready"} 1`, "spinbroker_build_info", "go_goroutines"} {
		if !strings.Contains(body, want) {
			t.Errorf("an agent's scrape lacks %s:\n%s", want, body)
		}
	}
}

// TestAuth_RoleMatrix: every route, every method a client may send it
// (HEAD and OPTIONS too), the dashboard's pages and buttons, for every kind
// of token: what SECURITY.md's table and API.md's Auth say each may do. An
// agent bound to storage ("agentS") takes, settles and reads storage's work
// only; emulation's agent ("agentE") is its mirror; a viewer reads; a client
// packages and reads; a revoked, a malformed and no token get 401 except on
// the open paths. The fixtures make every allowed write a no-op or a
// refusal of state (404, 409), so rows do not depend on their order.
func TestAuth_RoleMatrix(t *testing.T) {
	e := newEnv(t, httpapi.Options{Auth: true})
	admin := e.secret(spinbroker.RoleAdmin, "", "admin")
	tokens := map[string]string{
		"admin":     admin,
		"client":    e.secret(spinbroker.RoleClient, "", "client"),
		"viewer":    e.secret(spinbroker.RoleViewer, "", "viewer"),
		"agentS":    e.secret(spinbroker.RoleAgent, "storage", "s"),
		"agentE":    e.secret(spinbroker.RoleAgent, "emulation", "e"),
		"revoked":   e.secret(spinbroker.RoleAdmin, "", "gone"),
		"malformed": "sbt_nöt a token",
		"none":      "",
	}
	toks, err := e.db.Tokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range toks {
		if tok.Name == "gone" {
			if _, _, err := e.db.RevokeToken(ctx, tok.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Both commands leased (by the admin), so that no next or claim below
	// takes anything and no complete with a made-up lease settles one.
	e.token = admin
	p := e.createPackage(`[{"resource": "storage", "action": "a"}, {"resource": "emulation", "action": "b"}]`, true)
	sc, ec := e.next("storage"), e.next("emulation")
	if sc == nil || ec == nil {
		t.Fatal("the fixtures' commands were not leased")
	}
	pkg, none := p.ID, "00000000-0000-7000-8000-000000000000"
	batch := func(id string) string {
		return `{"results": [{"id": "` + id + `", "status": true, "lease": "x"}]}`
	}

	roles := []string{"admin", "client", "viewer", "agentS", "agentE"}
	tests := []struct {
		method, path, body string
		want               [5]int // admin, client, viewer, agentS, agentE
		open               bool   // answered without a token too, as to an admin
	}{
		{"GET", "/healthz", "", [5]int{200, 200, 200, 200, 200}, true},
		{"HEAD", "/healthz", "", [5]int{200, 200, 200, 200, 200}, true},
		{"GET", "/metrics", "", [5]int{200, 200, 200, 200, 200}, false},
		{"HEAD", "/metrics", "", [5]int{200, 200, 200, 200, 200}, false},
		{"GET", "/events", "", [5]int{200, 200, 200, 403, 403}, false},
		{"GET", "/events?package=" + pkg, "", [5]int{200, 200, 200, 403, 403}, false},
		{"HEAD", "/events", "", [5]int{405, 405, 405, 405, 405}, false},
		{"GET", "/packages", "", [5]int{200, 200, 200, 403, 403}, false},
		{"HEAD", "/packages", "", [5]int{200, 200, 200, 403, 403}, false},
		{"OPTIONS", "/packages", "", [5]int{405, 405, 405, 405, 405}, false},
		{"POST", "/packages", `{"id": "` + pkg + `"}`, [5]int{409, 409, 403, 403, 403}, false},
		{"GET", "/packages/" + pkg, "", [5]int{200, 200, 200, 403, 403}, false},
		{"DELETE", "/packages/" + pkg, "", [5]int{409, 409, 403, 403, 403}, false},
		{"POST", "/packages/" + pkg + "/commands", `{"resource": "storage", "action": "x"}`, [5]int{409, 409, 403, 403, 403}, false},
		{"POST", "/packages/" + pkg + "/enqueue", "", [5]int{200, 200, 403, 403, 403}, false},
		{"POST", "/packages/" + none + "/cancel", "", [5]int{404, 404, 403, 403, 403}, false},
		{"GET", "/commands/" + sc.ID, "", [5]int{200, 200, 200, 200, 403}, false},
		{"HEAD", "/commands/" + ec.ID, "", [5]int{200, 200, 200, 403, 200}, false},
		{"GET", "/commands/" + none, "", [5]int{404, 404, 404, 404, 404}, false},
		{"POST", "/commands/" + sc.ID + "/heartbeat", `{"lease": "x"}`, [5]int{409, 409, 403, 409, 403}, false},
		{"POST", "/commands/" + ec.ID + "/complete", `{"status": true, "lease": "x"}`, [5]int{409, 409, 403, 403, 409}, false},
		{"POST", "/commands/" + sc.ID + "/retry", "", [5]int{409, 409, 403, 403, 403}, false},
		{"POST", "/commands/complete", batch(sc.ID), [5]int{200, 200, 403, 200, 200}, false},
		{"GET", "/commands/complete", "", [5]int{405, 405, 405, 405, 405}, false},
		{"GET", "/queues", "", [5]int{200, 200, 200, 200, 200}, false},
		{"GET", "/queues/storage", "", [5]int{200, 200, 200, 200, 403}, false},
		{"HEAD", "/queues/emulation", "", [5]int{200, 200, 200, 403, 200}, false},
		{"PATCH", "/queues/storage", `{}`, [5]int{200, 403, 403, 403, 403}, false},
		{"POST", "/queues/storage/next", "", [5]int{204, 403, 403, 204, 403}, false},
		{"GET", "/queues/storage/next", "", [5]int{405, 405, 405, 405, 405}, false},
		{"OPTIONS", "/queues/storage/next", "", [5]int{405, 405, 405, 405, 405}, false},
		{"POST", "/queues/emulation/claim", `{"max": 1}`, [5]int{200, 403, 403, 403, 200}, false},
		// The dashboard: pages for people, buttons by role.
		{"GET", "/", "", [5]int{302, 302, 302, 302, 302}, false},
		{"GET", "/ui/", "", [5]int{200, 200, 200, 403, 403}, false},
		{"HEAD", "/ui/", "", [5]int{200, 200, 200, 403, 403}, false},
		{"GET", "/ui/packages", "", [5]int{200, 200, 200, 403, 403}, false},
		{"GET", "/ui/packages/" + pkg, "", [5]int{200, 200, 200, 403, 403}, false},
		{"GET", "/ui/queues/storage", "", [5]int{200, 200, 200, 403, 403}, false},
		{"GET", "/ui/commands/" + sc.ID, "", [5]int{200, 200, 200, 403, 403}, false},
		{"GET", "/ui/search?q=" + pkg, "", [5]int{303, 303, 303, 403, 403}, false},
		{"POST", "/ui/packages/" + none + "/cancel", "", [5]int{404, 404, 403, 403, 403}, false},
		{"POST", "/ui/commands/" + none + "/retry", "", [5]int{404, 404, 403, 403, 403}, false},
		{"POST", "/ui/queues/matrix/resume", "", [5]int{303, 403, 403, 403, 403}, false},
		{"POST", "/ui/queues/matrix/concurrency", "", [5]int{400, 403, 403, 403, 403}, false},
		{"GET", "/ui/login", "", [5]int{200, 200, 200, 200, 200}, true},
		{"GET", "/ui/static/app.css", "", [5]int{200, 200, 200, 200, 200}, true},
		{"GET", "/favicon.ico", "", [5]int{200, 200, 200, 200, 200}, true},
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	ask := func(t *testing.T, method, path, body, token string) (int, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		if resp.Header.Get("Content-Type") == "text/event-stream" {
			return resp.StatusCode, nil // a stream: its status is the answer
		}
		if resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("%s %s answers CORS headers: another origin's page could read it", method, path)
		}
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	for _, tt := range tests {
		for i, who := range append(roles, "revoked", "malformed", "none") {
			want := http.StatusUnauthorized
			switch {
			case i < len(roles):
				want = tt.want[i]
			case tt.open:
				want = tt.want[0]
			}
			t.Run(fmt.Sprintf("%s_%s_%s", who, tt.method, tt.path), func(t *testing.T) {
				got, body := ask(t, tt.method, tt.path, tt.body, tokens[who])
				if got != want {
					t.Fatalf("%d, want %d: %.300s", got, want, body)
				}
				if tt.path == "/commands/complete" && got == 200 {
					var out spinbroker.BatchOutcomes
					if err := json.Unmarshal(body, &out); err != nil || len(out.Results) != 1 {
						t.Fatalf("batch answer: %s", body)
					}
					// A storage command: another resource's agent is refused
					// in the item; the others are judged on the lease.
					item := map[string]int{"agentE": 403}[who]
					if item == 0 {
						item = 409
					}
					if out.Results[0].HTTPStatus != item {
						t.Errorf("batch item: %d, want %d: %s", out.Results[0].HTTPStatus, item, body)
					}
				}
			})
		}
	}
	// None of it changed the fixtures.
	for _, c := range []*spinbroker.Command{sc, ec} {
		if got, _ := e.db.Command(ctx, c.ID); got.State != spinbroker.Leased {
			t.Errorf("command %s is %s after the matrix", c.ID, got.State)
		}
	}
}

// TestAuth_RefusalSaysWhichRoleMay: a token refused for its role is told
// what it was refused and which token may do it. Before, the answer was only
// "a client token may not do this": an agent author raising a queue's
// concurrency for Options.Claim, as the docs ask, with the client token that
// enqueues, did not learn that it takes an admin's.
func TestAuth_RefusalSaysWhichRoleMay(t *testing.T) {
	e := newEnv(t, httpapi.Options{Auth: true})
	for _, tc := range []struct {
		role, resource, method, path, body string
		want                               []string
	}{
		{spinbroker.RoleClient, "", "PATCH", "/queues/network", `{"concurrency": 10}`, []string{"a client token may not change a queue's settings", "admin"}},
		{spinbroker.RoleViewer, "", "POST", "/packages", `{}`, []string{"a viewer token may not", "client or admin"}},
		{spinbroker.RoleClient, "", "POST", "/queues/network/next", ``, []string{"a client token may not take commands", "agent"}},
		{spinbroker.RoleViewer, "", "POST", "/commands/00000000-0000-7000-8000-000000000000/heartbeat", `{"lease": "x"}`, []string{"a viewer token may not", "heartbeat"}},
	} {
		e.token = e.secret(tc.role, tc.resource, tc.role+tc.path)
		r := e.do(tc.method, tc.path, tc.body)
		e.want(r, 403, spinbroker.EFORBIDDEN)
		var body spinbroker.ErrorBody
		r.decode(t, &body)
		for _, w := range tc.want {
			if !strings.Contains(body.Error.Message, w) {
				t.Errorf("%s %s with a %s token: %q does not say %q", tc.method, tc.path, tc.role, body.Error.Message, w)
			}
		}
	}
}
