package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns
// their files and a pool that trusts the certificate.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "spin-broker test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
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
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
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
	b.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-b.done; err != nil {
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
