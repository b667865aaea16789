package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// certCheckEvery is how often, at most, a TLS handshake looks at the
// certificate's files for a change.
const certCheckEvery = time.Second

// certReloader serves the TLS certificate in a pair of files and loads it
// again when the files change on disk (a renewal by certbot, cert-manager
// or an operator) or when asked to (SIGHUP), so that a renewed
// certificate takes effect without a restart. A pair that fails to load
// (a renewal half written, a key that does not match) is logged, and the
// certificate before it kept.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	loaded  fileStamp // the files' stamp when cert was loaded
	failed  fileStamp // the stamp of the last pair that failed, not retried until it changes
	checked time.Time
}

// fileStamp tells whether a certificate's files changed.
type fileStamp struct {
	certMod, keyMod   time.Time
	certSize, keySize int64
}

// newCertReloader loads the pair once; it fails if the pair does not load,
// so that a wrong file stops the start instead of the first connection.
func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, log: log}
	stamp, _ := r.stamp()
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	r.cert, r.loaded, r.checked = &cert, stamp, time.Now()
	return r, nil
}

// stamp reads the files' modification times and sizes.
func (r *certReloader) stamp() (fileStamp, error) {
	c, err := os.Stat(r.certFile)
	if err != nil {
		return fileStamp{}, err
	}
	k, err := os.Stat(r.keyFile)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{certMod: c.ModTime(), keyMod: k.ModTime(), certSize: c.Size(), keySize: k.Size()}, nil
}

// GetCertificate is tls.Config's GetCertificate: the current certificate,
// loaded again first if its files changed since the last look.
func (r *certReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := time.Now(); now.Sub(r.checked) >= certCheckEvery {
		r.checked = now
		if stamp, err := r.stamp(); err == nil && stamp != r.loaded && stamp != r.failed {
			r.load(stamp, "the files changed", slog.LevelWarn) // a renewal may be half written: the next look will do

		}
	}
	return r.cert, nil
}

// Reload loads the pair again whether or not the files changed, and
// reports whether the new pair is served.
func (r *certReloader) Reload() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	stamp, _ := r.stamp()
	return r.load(stamp, "SIGHUP", slog.LevelError)
}

// load loads the pair the files hold now; r.mu is held.
func (r *certReloader) load(stamp fileStamp, why string, failure slog.Level) bool {
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		r.failed = stamp
		r.log.Log(context.Background(), failure, "could not load the TLS certificate; still serving the one before it",
			"why", why, "cert", r.certFile, "key", r.keyFile, "err", err, "not_after", r.notAfterLocked())
		return false
	}
	r.cert, r.loaded, r.failed = &cert, stamp, fileStamp{}
	r.log.Info("TLS certificate loaded", "why", why, "subject", cert.Leaf.Subject.String(),
		"serial", fmt.Sprintf("%x", cert.Leaf.SerialNumber), "not_after", cert.Leaf.NotAfter)
	return true
}

// NotAfter is when the certificate being served expires.
func (r *certReloader) NotAfter() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.notAfterLocked()
}

func (r *certReloader) notAfterLocked() time.Time {
	if r.cert == nil || r.cert.Leaf == nil {
		return time.Time{}
	}
	return r.cert.Leaf.NotAfter
}
