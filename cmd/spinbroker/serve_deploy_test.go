package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spin-broker/spinbroker/internal/syncbuf"
)

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns
// their files and a pool that trusts the certificate.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	cert := writeSelfSigned(t, certFile, keyFile, 1)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// writeSelfSigned writes a new key and a certificate for 127.0.0.1 with
// the given serial number to certFile and keyFile.
func writeSelfSigned(t *testing.T, certFile, keyFile string, serial int64) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "spin-broker test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Duration(serial) * time.Hour).Truncate(time.Second),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// padTo appends newlines to the file at path until it is size bytes long.
func padTo(t *testing.T, path string, size int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) > size {
		t.Fatalf("%s is %d bytes, more than %d", path, len(b), size)
	}
	if err := os.WriteFile(path, append(b, strings.Repeat("\n", int(size)-len(b))...), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestServe_TLS: with --tls-cert and --tls-key the broker answers HTTPS
// (the API to a Go client, the CLI through SSL_CERT_FILE), and a
// certificate it cannot load stops the start with a message naming it.
func TestServe_TLS(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t)
	db := filepath.Join(t.TempDir(), "tls.db")
	b := startBroker(t, db, "--tls-cert", certFile, "--tls-key", keyFile)
	if !strings.HasPrefix(b.url, "https://") {
		t.Fatalf("the broker says it listens on %s", b.url)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := hc.Get(b.url + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz over TLS: %v %v", resp, err)
	}
	resp.Body.Close()
	if resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 {
		t.Fatalf("the answer's TLS: %+v", resp.TLS)
	}
	// The CLI trusts the certificate the way Go programs on Linux do.
	r := spinEnv(t, []string{"SSL_CERT_FILE=" + certFile}, "message", "new", "--url", b.url)
	if r.code != 0 || len(strings.TrimSpace(r.stdout)) != 36 {
		t.Fatalf("the CLI over TLS: %s", r)
	}
	// Without trusting it, the CLI says why.
	r = spin(t, "queue", "ls", "--url", b.url)
	if r.code != 1 || !strings.Contains(r.stderr, "certificate") {
		t.Fatalf("the CLI with an unknown certificate: %s", r)
	}
	if err := b.stop(t); err != nil {
		t.Fatalf("exit: %v\n%s", err, b.logs)
	}

	missing := filepath.Join(t.TempDir(), "missing.pem")
	r = spin(t, "serve", "--addr", "127.0.0.1:0", "--db", db, "--tls-cert", missing, "--tls-key", keyFile)
	if r.code != 1 || !strings.Contains(r.stderr, "load the TLS certificate") || !strings.Contains(r.stderr, missing) {
		t.Fatalf("a missing certificate: %s", r)
	}
	if strings.Contains(r.stderr, "cannot reach the broker") || strings.Contains(r.stderr, "listening") {
		t.Fatalf("a missing certificate is told as something else: %s", r)
	}
}

// TestServe_TLSRenewal: a renewed certificate is served without a restart,
// on SIGHUP and when its files change; a pair that does not load leaves
// the certificate before it in service; /metrics tells when the one served
// expires.
func TestServe_TLSRenewal(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeSelfSigned(t, certFile, keyFile, 1)
	// Padded to one size (PEM ignores what follows its blocks), so that a
	// renewal can keep the files' sizes: an ECDSA signature's length varies.
	padTo(t, certFile, 4096)
	padTo(t, keyFile, 4096)
	b := startBroker(t, filepath.Join(dir, "renew.db"), "--tls-cert", certFile, "--tls-key", keyFile)
	// A new connection each time, without checking the chain: the test
	// reads which certificate the broker presents.
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // reads the served certificate
	served := func() (serial int64, metric string) {
		t.Helper()
		resp, err := hc.Get(b.url + "/metrics")
		if err != nil {
			t.Fatalf("metrics over TLS: %v\n%s", err, b.logs)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		for _, line := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(line, "spinbroker_tls_certificate_expiry_timestamp_seconds ") {
				metric = strings.TrimPrefix(line, "spinbroker_tls_certificate_expiry_timestamp_seconds ")
			}
		}
		return resp.TLS.PeerCertificates[0].SerialNumber.Int64(), metric
	}
	waitFor := func(want int64, what string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			got, _ := served()
			if got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the broker still serves certificate %d, not %d\n%s", what, got, want, b.logs)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if serial, _ := served(); serial != 1 {
		t.Fatalf("the first certificate served is %d", serial)
	}

	// Renewed with the files' sizes and times as they were, so that only
	// the signal can tell the broker.
	// Made beside them, padded and dated first, then renamed into place, so
	// that the broker's polling never sees them differ.
	oldCert, oldKey := stat(t, certFile), stat(t, keyFile)
	second := writeSelfSigned(t, certFile+".new", keyFile+".new", 2)
	for f, fi := range map[string]os.FileInfo{certFile: oldCert, keyFile: oldKey} {
		padTo(t, f+".new", 4096)
		if err := os.Chtimes(f+".new", fi.ModTime(), fi.ModTime()); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(f+".new", f); err != nil {
			t.Fatal(err)
		}
		if st := stat(t, f); st.Size() != fi.Size() || !st.ModTime().Equal(fi.ModTime()) {
			t.Fatalf("%s renewed looks changed: %d bytes at %v, was %d at %v", f, st.Size(), st.ModTime(), fi.Size(), fi.ModTime())
		}
	}
	time.Sleep(2 * certCheckEvery)
	if serial, _ := served(); serial != 1 {
		t.Fatalf("files that look unchanged were loaded again (certificate %d served)", serial)
	}
	b.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(2, "after SIGHUP")
	if _, metric := served(); metric != strconv.FormatInt(second.NotAfter.Unix(), 10) &&
		metric != strconv.FormatFloat(float64(second.NotAfter.Unix()), 'e', -1, 64) {
		t.Fatalf("the expiry metric is %q, the certificate expires at %d", metric, second.NotAfter.Unix())
	}

	// Renewed in place with no signal: the broker sees the files change.
	writeSelfSigned(t, certFile, keyFile, 3)
	waitFor(3, "after the files changed")

	// A broken renewal: the broker says so and keeps serving the last good one.
	if err := os.WriteFile(certFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	b.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, b, "could not load the TLS certificate")
	if serial, _ := served(); serial != 3 {
		t.Fatalf("after a broken renewal the broker serves certificate %d, not 3", serial)
	}

	if err := b.stop(t); err != nil {
		t.Fatalf("exit: %v\n%s", err, b.logs)
	}
}

// TestServe_SIGHUPWithoutTLS: SIGHUP, systemctl reload's signal, never
// stops the broker, TLS or not.
func TestServe_SIGHUPWithoutTLS(t *testing.T) {
	b := startBroker(t, filepath.Join(t.TempDir(), "hup.db"))
	b.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, b, "nothing to reload")
	resp, err := http.Get(b.url + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz after SIGHUP: %v %v\n%s", resp, err, b.logs)
	}
	resp.Body.Close()
	if err := b.stop(t); err != nil {
		t.Fatalf("exit: %v\n%s", err, b.logs)
	}
}

func stat(t *testing.T, name string) os.FileInfo {
	t.Helper()
	fi, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

// TestServe_SystemdNotify: under a Type=notify unit (NOTIFY_SOCKET set),
// serve tells systemd it is ready once it listens, and that it is stopping
// when told to stop.
func TestServe_SystemdNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	read := func() string {
		t.Helper()
		conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		buf := make([]byte, 4096)
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("no notification: %v", err)
		}
		return string(buf[:n])
	}
	t.Setenv("NOTIFY_SOCKET", sock)
	b := startBroker(t, filepath.Join(t.TempDir(), "n.db"))
	if got := read(); !strings.Contains(got, "READY=1\n") || !strings.Contains(got, "STATUS=serving "+b.url) {
		t.Fatalf("the first notification: %q", got)
	}
	b.signal(t, syscall.SIGTERM)
	if got := read(); got != "STOPPING=1" {
		t.Fatalf("the notification on SIGTERM: %q", got)
	}
	if err := b.wait(t); err != nil {
		t.Fatalf("exit: %v\n%s", err, b.logs)
	}
}

// TestSystemdUnits: the example units in examples/systemd pass
// systemd-analyze verify without a warning, and their command lines are
// ones the programs accept.
func TestSystemdUnits(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatal("systemd-analyze is missing: make test installs it (scripts/install-test-deps.sh)")
	}
	bins := map[string]string{"spinbroker": binary}
	dir := t.TempDir()
	for _, agent := range []string{"sa-host-path", "sa-emulation"} {
		bins[agent] = filepath.Join(dir, agent)
		if out, err := exec.Command("go", "build", "-o", bins[agent], "../"+agent).CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", agent, err, out)
		}
	}
	units, err := filepath.Glob("../../examples/systemd/*.service")
	if err != nil || len(units) != 3 {
		t.Fatalf("the example units: %v %v", units, err)
	}
	var files []string
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		var argv []string
		for _, line := range strings.Split(text, "\n") {
			if rest, ok := strings.CutPrefix(line, "ExecStart="); ok {
				argv = strings.Fields(rest)
			}
		}
		if len(argv) == 0 || bins[filepath.Base(argv[0])] == "" || argv[0] != "/usr/local/bin/"+filepath.Base(argv[0]) {
			t.Fatalf("%s: ExecStart %v runs none of this project's programs from /usr/local/bin", u, argv)
		}
		bin := bins[filepath.Base(argv[0])]
		// The program accepts the unit's flags: --help after them exits 0,
		// an unknown flag would not.
		help := exec.Command(bin, append(argv[1:len(argv):len(argv)], "--help")...)
		help.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
		if out, err := help.CombinedOutput(); err != nil {
			t.Errorf("%s: %v rejects its flags: %v\n%s", u, argv, err, out)
		}
		local := filepath.Join(dir, filepath.Base(u))
		if err := os.WriteFile(local, []byte(strings.ReplaceAll(text, argv[0], bin)), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, local)
	}
	out, err := exec.Command("systemd-analyze", append([]string{"verify"}, files...)...).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestVersion: spinbroker --version and the agents' -version say which
// build they are, and a packager's -X version replaces the module's.
func TestVersion(t *testing.T) {
	r := spin(t, "--version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "spinbroker version ") || !strings.Contains(r.stdout, runtime.Version()) {
		t.Fatalf("spinbroker --version: %s", r)
	}
	dir := t.TempDir()
	for _, prog := range []string{"sa-host-path", "sa-emulation"} {
		bin := filepath.Join(dir, prog)
		build := exec.Command("go", "build", "-o", bin, "-ldflags",
			"-X github.com/spin-broker/spinbroker/internal/version.version=v9.8.7", "../"+prog)
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", prog, err, out)
		}
		// -version needs no --url: it answers before anything else.
		cmd := exec.Command(bin, "-version")
		cmd.Env = append(os.Environ(), "SPINBROKER_URL=")
		out, err := cmd.Output()
		if err != nil || !strings.HasPrefix(string(out), prog+" version v9.8.7") || !strings.Contains(string(out), runtime.Version()) {
			t.Fatalf("%s -version: %v\n%s", prog, err, out)
		}
		// -help says what the agent is and which actions it takes before
		// its flags, and exits 0.
		help, err := exec.Command(bin, "-help").CombinedOutput()
		if err != nil || !strings.HasPrefix(string(help), prog+" is spin-broker's") ||
			!strings.Contains(string(help), "Actions: ") || !strings.Contains(string(help), "-url") {
			t.Fatalf("%s -help: %v\n%s", prog, err, help)
		}
	}
}

// TestSystemdUnitHeaders: each example unit's head is enough on its own to
// install it: it makes the user the unit runs as, names the groups the
// unit joins (systemd refuses to start a unit whose group is missing), and
// installs the Debian packages of the programs its agent runs. The
// emulation agent's head once counted on the storage agent's for its user
// and never said that it runs QEMU.
func TestSystemdUnitHeaders(t *testing.T) {
	// The Debian packages each program runs programs from.
	needs := map[string][]string{
		"sa-emulation": {"qemu-system-x86"}, // qemu-system-x86_64
		"sa-host-path": {"qemu-utils"},      // qemu-img, for qcow2 images
	}
	units, err := filepath.Glob("../../examples/systemd/*.service")
	if err != nil || len(units) != 3 {
		t.Fatalf("the example units: %v %v", units, err)
	}
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		var head []string // the comments before the first section
		var user, prog string
		var groups []string
		inHead := true
		for _, line := range strings.Split(string(b), "\n") {
			inHead = inHead && !strings.HasPrefix(line, "[")
			if c, ok := strings.CutPrefix(line, "#"); ok && inHead {
				head = append(head, c)
			}
			if v, ok := strings.CutPrefix(line, "User="); ok {
				user = v
			}
			if v, ok := strings.CutPrefix(line, "SupplementaryGroups="); ok {
				groups = append(groups, strings.Fields(v)...)
			}
			if v, ok := strings.CutPrefix(line, "ExecStart="); ok {
				prog = filepath.Base(strings.Fields(v)[0])
			}
		}
		text := strings.Join(head, "\n")
		if user != "" && !regexp.MustCompile(`useradd [^\n]*\b`+regexp.QuoteMeta(user)+`\b`).MatchString(text) {
			t.Errorf("%s runs as %s, and its head does not make that user:\n%s", u, user, text)
		}
		for _, g := range groups {
			if !strings.Contains(text, g) {
				t.Errorf("%s joins the group %s, and its head does not say where it comes from:\n%s", u, g, text)
			}
		}
		for _, pkg := range needs[prog] {
			if !regexp.MustCompile(`apt-get install [^\n]*\b` + regexp.QuoteMeta(pkg) + `\b`).MatchString(text) {
				t.Errorf("%s runs %s, and its head does not install %s:\n%s", u, prog, pkg, text)
			}
		}
	}
}

// TestAgents_StartLineHidesPassword: a --url with a password (a proxy's
// basic auth) is masked in every line the agents log. Their own start
// lines printed it whole, right above the SDK's line that masked it.
func TestAgents_StartLineHidesPassword(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://user:hunter2@" + ln.Addr().String() // nothing answers there: the agents retry
	ln.Close()
	dir := t.TempDir()
	for prog, args := range map[string][]string{
		"sa-host-path": {"-root", filepath.Join(dir, "images")},
		"sa-emulation": {"-state-dir", filepath.Join(dir, "state"), "-qemu", "/bin/true"},
	} {
		bin := filepath.Join(dir, prog)
		if out, err := exec.Command("go", "build", "-o", bin, "../"+prog).CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", prog, err, out)
		}
		cmd := exec.Command(bin, append([]string{"-url", url}, args...)...)
		var logs syncbuf.Buffer
		cmd.Stderr = &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(20 * time.Second); !strings.Contains(logs.String(), `msg="agent started"`); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("%s did not start:\n%s", prog, logs.String())
			}
		}
		cmd.Process.Signal(syscall.SIGINT)
		cmd.Wait()
		if got := logs.String(); strings.Contains(got, "hunter2") || !strings.Contains(got, "user:xxxxx@") {
			t.Errorf("%s logs the URL's password:\n%s", prog, got)
		}
	}
}
