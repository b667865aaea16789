// Package client is the Go client of spin-broker's HTTP API, version 1.
//
// Start with New, then create a package of commands with CreatePackage
// (with Enqueue set, or Enqueue later) and wait for it with WaitPackage;
// see the package's Example. An agent, which takes and runs commands, is
// best written with package agent, which calls Next or Claim, Heartbeat
// and Complete for it.
//
// Every method maps to one endpoint of API.md and returns the API's own
// types. An error answered by the broker is an *Error carrying the HTTP
// status and the API error code, so callers test codes, not strings:
//
//	if spinbroker.ErrorCode(err) == spinbroker.ESTALE { ... }
//
// # Errors
//
// The errors a caller may need to tell apart, all pointers, found with
// errors.As (and the codes with spinbroker.ErrorCode):
//   - *Error: the broker (or a proxy in front of it) answered with a
//     status that is not a success;
//   - *RedirectError: a call was redirected to where the client does not
//     follow it (a write to where it would have lost its body, any call
//     more than 10 times), and was not sent there;
//   - *SilentError: Events heard nothing, not even a keep-alive, for its
//     IdleTimeout;
//   - *NotStreamError: Events was answered with something that is not an
//     event stream (and ErrStreamEnded, found with errors.Is, a stream the
//     broker ended itself);
//   - *SchemeError: the server at the broker URL speaks another protocol
//     than its scheme says (plain HTTP at an https:// URL, TLS at an
//     http:// one);
//   - *AnswerTooLargeError: an answer larger than the client reads; its
//     Done says that the call was a write the broker carried out.
//
// Anything else is an error below HTTP (the net/http client's *url.Error:
// the broker unreachable, no answer in time) or the client's own. Temporary
// says which errors may go away if the call is made again, and lists them;
// Untrusted says that the broker's TLS certificate is not trusted here.
//
// The client does not retry: whether a call is safe to repeat is the
// caller's decision (the agent SDK retries what is safe). WaitPackage is
// the exception, as it only reads: it waits for a package to finish
// through a broker's restart and a dropped event stream.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
)

// Client talks to one broker. It is safe for concurrent use: one Client
// serves an agent's long-polls, heartbeats and completions at once, and a
// program's every goroutine may share it (and its connections).
type Client struct {
	base      *url.URL
	token     string
	hc        *http.Client
	userAgent string
}

// Option configures a Client.
type Option func(*Client)

// WithToken sends token as a bearer token with every request. Spaces and
// line breaks around it are dropped: a token read from a file (a mounted
// secret) ends in a newline, which no HTTP header may carry. New refuses a
// token with a control character left inside, and one given as "Bearer …"
// (the header's scheme is the client's to add).
func WithToken(token string) Option { return func(c *Client) { c.token = token } }

// ErrTokenScheme is New's error for a token given as "Bearer …": the
// client adds the header's scheme itself.
var ErrTokenScheme = errors.New(`client: give the token without "Bearer ": the client adds it`)

// WithHTTPClient uses hc instead of a default client (for TLS settings,
// proxies or tests). Its Timeout, if set, shortens the long-polls of Next
// and Claim to within it, and cuts event streams (Events). When its
// CheckRedirect is nil, the client uses a copy of hc whose CheckRedirect
// stops a write that a redirect would turn into a GET (see RedirectError);
// hc itself is not changed.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// WithUserAgent sets the User-Agent header. New refuses one with a control
// character (but a tab) in it, which no HTTP header may carry.
func WithUserAgent(ua string) Option { return func(c *Client) { c.userAgent = ua } }

// New returns a client of the broker at baseURL (http or https), such as
// "http://localhost:8080"; a path is kept as a prefix (a proxy's), a query
// or fragment is refused.
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	// The refusals name the URL, masked: the CLI prints them and an agent
	// logs them, and a proxy's password has no place in either.
	shown := MaskURL(baseURL)
	var ue *url.Error
	if errors.As(err, &ue) {
		ue.URL = MaskURL(ue.URL)
	}
	switch {
	case err != nil && !strings.Contains(baseURL, "://"):
		// "127.0.0.1:8080" does not parse ("first path segment in URL
		// cannot contain colon"): say what is missing instead.
		return nil, fmt.Errorf("client: broker URL %q must be http:// or https:// with a host, such as http://%s", shown, shown)
	case err != nil:
		return nil, fmt.Errorf("client: broker URL %q (want http:// or https:// with a host): %w", shown, err)
	case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
		return nil, fmt.Errorf("client: broker URL %q must be http:// or https:// with a host", shown)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		// A query would be sent with some requests and replaced in
		// others (next's wait), a fragment never: neither does anything.
		return nil, fmt.Errorf("client: broker URL %q must be http:// or https:// with a host and no query or fragment", shown)
	case !validPort(u.Port()):
		// url.Parse takes any digits; every request would fail to dial.
		return nil, fmt.Errorf("client: broker URL %q has port %s: a port is 1 to 65535", shown, u.Port())
	}
	c := &Client{base: u, userAgent: "spinbroker-client/1"}
	for _, o := range opts {
		o(c)
	}
	c.token = strings.TrimSpace(c.token)
	if strings.ContainsFunc(c.token, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		// Every request would fail below HTTP ("invalid header field
		// value"), an error that looks like a network's and is retried.
		return nil, errors.New("client: the token has a control character in it: no HTTP header can carry it (is it the token as printed by spinbroker token create?)")
	}
	if scheme, _, ok := strings.Cut(c.token, " "); ok && strings.EqualFold(scheme, "Bearer") {
		// Copied from a curl line: sent as "Bearer Bearer …", every call
		// would answer 401 without saying why.
		return nil, ErrTokenScheme
	}
	if !headerValue(c.userAgent) {
		// As the token: every request would fail below HTTP.
		return nil, fmt.Errorf("client: the user agent %q has a control character in it: no HTTP header can carry it", c.userAgent)
	}
	if c.hc == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		// Agents and producers keep connections busy at once: a program
		// may run 64 agents on one Client, each in a long-poll. With 32
		// kept idle, each round of their calls closed 32 connections and
		// dialed 32 anew (TLS handshakes included).
		t.MaxIdleConns = 256
		t.MaxIdleConnsPerHost = 128
		c.hc = &http.Client{Transport: t}
	}
	if c.hc.CheckRedirect == nil {
		hc := *c.hc
		hc.CheckRedirect = stopRewrite
		c.hc = &hc
	}
	return c, nil
}

// RedirectError is a call that the broker's URL redirected to where the
// client does not follow it, and that was not sent there: a write to
// where Go's HTTP client would send it again as a GET, without its body (a
// proxy sending http to https answers 301, 302 or 303), or, with Loop set,
// any call redirected 10 times already, in a loop or a chain too long.
// Asking again changes nothing; New must be given the URL the broker
// answers at, which To names for a write. Reads follow up to 10 redirects.
type RedirectError struct {
	Method string   // the call's method
	Path   string   // its path, as sent to the URL given to New
	To     *url.URL // where the URL redirected it (the last time)
	As     string   // the method it would have been sent again with
	Loop   bool     // it was redirected 10 times: As is Method
}

// Error says where the call was redirected and what to give New instead.
func (e *RedirectError) Error() string {
	if e.Loop {
		return fmt.Sprintf("client: %s %s was redirected 10 times, the last to %s, and not followed further: the URL redirects in a loop or too far; use the URL the broker answers at itself",
			e.Method, e.Path, e.To.Redacted())
	}
	return fmt.Sprintf("client: %s %s was redirected to %s, where it would be sent again as %s without its body: it was not; use the URL the broker answers at (%s://%s)",
		e.Method, e.Path, e.To.Redacted(), e.As, e.To.Scheme, e.To.Host)
}

// stopRewrite is the CheckRedirect of the client's http.Client: it follows
// redirects as Go's client does, at most 10, and stops with a
// *RedirectError before anything is sent the 11th time (Go's own "stopped
// after 10 redirects" is an error a caller cannot tell from a network's)
// or a redirect that would change a request's method (a POST sent again
// as a GET).
func stopRewrite(req *http.Request, via []*http.Request) error {
	first := via[0]
	if len(via) >= 10 {
		return &RedirectError{Method: first.Method, Path: first.URL.Path, To: req.URL, As: req.Method, Loop: true}
	}
	if req.Method != first.Method {
		return &RedirectError{Method: first.Method, Path: first.URL.Path, To: req.URL, As: req.Method}
	}
	return nil
}

// SchemeError is a call to a broker URL whose scheme is not what the
// server at its address speaks: an https:// URL answered in plain HTTP,
// an http:// URL answered in TLS (a TLS alert, or the 400 page Go's
// server answers plain HTTP with). Asking again gets the same answer; New
// must be given the URL with the scheme Want names, at the same address,
// which Error names.
type SchemeError struct {
	URL  *url.URL // the broker URL given to New
	Want string   // the scheme its server speaks: "http" or "https"
	Err  error    // net/http's error, or the *Error of Go's 400 page
}

// Error says what the server speaks and which URL to give New instead.
func (e *SchemeError) Error() string {
	speaks, not := "plain HTTP", "HTTPS"
	if e.Want == "https" {
		speaks, not = "TLS (HTTPS)", "plain HTTP"
	}
	return fmt.Sprintf("client: %s answers in %s, not %s: use an %s:// URL (%s)", e.URL.Redacted(), speaks, not, e.Want, e.Instead().Redacted())
}

// Instead is the broker URL to give New: URL with the scheme Want, at the
// same host and port.
func (e *SchemeError) Instead() *url.URL {
	u := *e.URL
	u.Scheme = e.Want
	if e.URL.Port() == "" {
		// The call went to its scheme's own port, which the other
		// scheme's is not.
		port := "443"
		if e.URL.Scheme == "http" {
			port = "80"
		}
		u.Host = net.JoinHostPort(e.URL.Hostname(), port)
	}
	return &u
}

// Unwrap gives net/http's error (errors.Is finds http.ErrSchemeMismatch),
// or the *Error of a 400 page.
func (e *SchemeError) Unwrap() error { return e.Err }

// schemeError is err, the failure of a call to the broker URL base, as a
// *SchemeError when it says that the server there speaks another protocol
// than base's scheme; else err.
func schemeError(base *url.URL, err error) error {
	var ce *Error
	switch {
	case base.Scheme == "https" && errors.Is(err, http.ErrSchemeMismatch):
		return &SchemeError{URL: base, Want: "http", Err: err}
	case base.Scheme != "http":
	case tlsRecord(err):
		return &SchemeError{URL: base, Want: "https", Err: err}
	case errors.As(err, &ce) && ce.StatusCode == http.StatusBadRequest && ce.RequestID == "" &&
		strings.HasPrefix(ce.Err.Message, "Client sent an HTTP request to an HTTPS server"):
		// Go's server answers plain HTTP on a TLS port so, in plain
		// text, before any handler (the broker's) sees the request.
		return &SchemeError{URL: base, Want: "https", Err: err}
	}
	return err
}

// tlsRecord reports whether err is net/http reading a TLS record where an
// answer should start, which a TLS server sends (an alert) to a request
// in plain HTTP: net/http keeps no type for it, only a sentence quoting
// the bytes, a record's type (\x15 alert, \x16 handshake) and TLS's major
// version (\x03).
func tlsRecord(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, `malformed HTTP response "\x15\x03`) || strings.Contains(msg, `malformed HTTP response "\x16\x03`)
}

// headerValue reports whether v can be sent as an HTTP header's value:
// it holds no control character but a tab (RFC 9110 5.5), which net/http
// refuses to send.
func headerValue(v string) bool {
	return !strings.ContainsFunc(v, func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f })
}

// validPort reports whether port, from a URL, is none (the scheme's) or one
// a host can listen on.
func validPort(port string) bool {
	if port == "" {
		return true
	}
	n, err := strconv.Atoi(port)
	return err == nil && n >= 1 && n <= 65535
}

// URL returns the broker's base URL.
func (c *Client) URL() string { return c.base.String() }

// RedactedURL is the broker's base URL fit for a log line: a password in it
// (a proxy's basic auth) is masked.
func (c *Client) RedactedURL() string { return c.base.Redacted() }

// RedactURL is raw, a broker URL as a user gave it, fit for a log line or
// a --help text, masked as RedactedURL masks it; a URL that does not parse
// is left out (""), since it might be all secret.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Redacted()
}

// MaskURL is raw, a broker URL as a user gave it, with the password of its
// user info masked as RedactURL masks it, whether or not it parses: for a
// message that must show the URL it refuses. In a URL that does not parse,
// the user info is read generously (up to the last '@'), so that a
// password holding a '/' or an '@' is masked too, along with whatever
// else came before that '@'.
func MaskURL(raw string) string {
	prefix, rest, authority := "", raw, raw
	if i := strings.Index(raw, "://"); i >= 0 {
		prefix, rest, authority = raw[:i+3], raw[i+3:], raw[i+3:]
		if _, err := url.Parse(raw); err == nil {
			if end := strings.IndexAny(rest, "/?#"); end >= 0 {
				authority = rest[:end]
			}
		}
	}
	at := strings.LastIndex(authority, "@")
	if at < 0 {
		return raw
	}
	user, _, hasPassword := strings.Cut(rest[:at], ":")
	if !hasPassword {
		return raw
	}
	return prefix + user + ":xxxxx" + rest[at:]
}

// Error is an answer of the broker that is not a success.
type Error struct {
	// StatusCode is the answer's HTTP status (409, 503, …).
	StatusCode int
	// Err is the API's error: its Code (spinbroker.ESTALE, …) and
	// Message. An answer that is no API error body (a proxy's page) gets
	// the code of its status and the start of its body as the message.
	Err *spinbroker.Error
	// RequestID is the broker's id of the request (X-Request-Id), the one
	// its log line carries.
	RequestID string
	// RetryAfter is how long the answer asks the caller to wait before
	// trying again (its Retry-After header, in seconds or as an HTTP
	// date; the broker sends it with 503 unavailable); 0 when the answer
	// has none, or one that does not parse or names a time gone by. It is
	// the answerer's word, from whatever proxy answered too: bound it
	// before sleeping on it.
	RetryAfter time.Duration
}

// Error implements the error interface.
func (e *Error) Error() string {
	if e.Err == nil {
		// One made by hand (a caller's test), not by the client.
		return fmt.Sprintf("%s (HTTP %d)", http.StatusText(e.StatusCode), e.StatusCode)
	}
	return fmt.Sprintf("%s (HTTP %d)", e.Err.Message, e.StatusCode)
}

// Unwrap makes spinbroker.ErrorCode and errors.As see the API error; an
// Error without one (made by hand) wraps nothing.
func (e *Error) Unwrap() error {
	if e.Err == nil {
		// Not a nil *spinbroker.Error in an error, which errors.As
		// would find and spinbroker.ErrorCode read through.
		return nil
	}
	return e.Err
}

// Temporary reports whether err may go away if the same call is made again
// later: the broker was unreachable, timed out, or answered 5xx or 429.
// It does not say that repeating the call is safe: a write whose answer
// was lost (a timeout, a dropped connection) may have been committed, so a
// create is repeated only with the IdempotencyKey it was first sent with.
//
// Temporary reports:
//   - an *Error of status 5xx or 429 (503 unavailable: the broker is
//     stopping, or its database is; a proxy's 502 or 504);
//   - a call that failed below HTTP: the connection refused, reset or
//     dropped, no answer in time (context.DeadlineExceeded), an answer
//     cut off (io.EOF, io.ErrUnexpectedEOF), a certificate that expired
//     (the broker takes a renewed one without a restart);
//   - a *SilentError, and the end of an event stream by the broker.
//
// It does not report:
//   - an *Error of any other status (a 409 conflict, a 401, a 404): the
//     broker answered, and its answer is about the call, not an outage;
//   - a *RedirectError (a write's redirect, a redirect loop) or a
//     *NotStreamError: the URL given to New answers something else,
//     however often it is asked;
//   - a *SchemeError: the URL's server speaks plain HTTP and the URL is
//     https://, or the other way round;
//   - a certificate that Untrusted reports: only a change of
//     configuration mends it;
//   - context.Canceled: the caller gave up;
//   - an error of the client itself (a broker URL, a token or a user
//     agent New refuses, an Idempotency-Key no header can carry, a body
//     that does not encode, an answer too large or that does not decode).
func Temporary(err error) bool {
	if err == nil {
		return false
	}
	var e *Error
	if errors.As(err, &e) {
		return e.StatusCode >= 500 || e.StatusCode == http.StatusTooManyRequests
	}
	var (
		re *RedirectError
		se *SchemeError
	)
	if errors.Is(err, context.Canceled) || errors.As(err, &re) || errors.As(err, &se) || Untrusted(err) {
		return false
	}
	// A call that failed below HTTP: http.Client wraps it in a *url.Error,
	// and a body cut off while being read is a *net.OpError. Not any
	// net.Error: a bare syscall.Errno is one too, and a missing file is
	// not a network that may come back.
	var ue *url.Error
	if errors.As(err, &ue) {
		// Not url.Parse's, whose Op is "parse": New's refusal of a URL
		// wraps it, and the same URL is refused again.
		return ue.Op != "parse"
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return true
	}
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, context.DeadlineExceeded)
}

// Untrusted reports whether err is the broker's TLS certificate failing
// verification in a way that only a change of configuration mends: signed
// by an authority this host does not trust (SSL_CERT_FILE names one), for
// another name, for another use, with a broken algorithm. An expired
// certificate (or one not valid yet, to a clock behind) is not: the broker
// takes a renewed one without a restart, so asking again may succeed.
func Untrusted(err error) bool {
	var (
		cve *tls.CertificateVerificationError
		ua  x509.UnknownAuthorityError
		he  x509.HostnameError
		ci  x509.CertificateInvalidError
		ia  x509.InsecureAlgorithmError
	)
	if errors.As(err, &ci) && ci.Reason == x509.Expired {
		return false // expired, or not yet valid
	}
	return errors.As(err, &cve) || errors.As(err, &ua) || errors.As(err, &he) || errors.As(err, &ci) || errors.As(err, &ia)
}

// CallOption adjusts one request.
type CallOption func(*http.Request)

// IdempotencyKey sends an Idempotency-Key header, so that a create retried
// with the same key and body creates nothing new. A key with a control
// character in it (a newline kept from a file) is refused before anything
// is sent, with an error that Temporary does not report; the broker
// refuses what else it does not take (API.md: 1 to 255 printable ASCII
// characters) with a 400.
func IdempotencyKey(key string) CallOption {
	return func(r *http.Request) { r.Header.Set("Idempotency-Key", key) }
}

// endpoint is the URL of path, escaped already (its ids and resource names
// through esc), under the base URL's path, escaped as given to New. Setting
// Path alone, the URL escaped it again when sent ("a b" reached the broker
// as "a%20b") and dropped the base's own escapes (a prefix's %2F).
func (c *Client) endpoint(path string) url.URL {
	u := *c.base
	u.RawPath = c.base.EscapedPath() + path
	p, err := url.PathUnescape(u.RawPath)
	if err != nil {
		// Both parts are escaped already, so it does not happen; were it
		// to, escape the path as a whole rather than send a bad one.
		u.RawPath, p = "", c.base.Path+path
	}
	u.Path = p
	return u
}

// do sends a request with an optional JSON body and decodes a JSON answer
// into out (unless out is nil). It returns the HTTP status.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, in, out any, opts ...CallOption) (int, error) {
	u := c.endpoint(path)
	if query != nil {
		u.RawQuery = query.Encode()
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, fmt.Errorf("client: encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return 0, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for _, o := range opts {
		o(req)
	}
	for name, values := range req.Header {
		for _, v := range values {
			if !headerValue(v) {
				// net/http would refuse it below HTTP, in a *url.Error
				// that Temporary reads as a network's: a caller that
				// retries while Temporary would send it for ever.
				return 0, fmt.Errorf("client: %s %s: the %s header %q has a control character in it: no HTTP header can carry it", method, path, name, v)
			}
		}
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, schemeError(c.base, err)
	}
	defer resp.Body.Close()
	if resp.Request != nil && resp.Request.Method != method {
		// An http.Client of WithHTTPClient with a CheckRedirect of its
		// own followed a 301, 302 or 303 and sent a POST again as a GET
		// without its body: its 200 answers something else, and a create
		// that never happened would look done.
		return resp.StatusCode, &RedirectError{Method: method, Path: u.Path, To: resp.Request.URL, As: resp.Request.Method}
	}
	data, err := readAnswer(resp)
	if err != nil {
		return resp.StatusCode, err
	}
	if len(data) > maxAnswer {
		// Cut off here, it would read as JSON that ends too soon.
		return resp.StatusCode, &AnswerTooLargeError{Method: method, Path: path, StatusCode: resp.StatusCode, Limit: maxAnswer,
			Done: method != http.MethodGet && method != http.MethodHead && resp.StatusCode < 300}
	}
	if resp.StatusCode >= 300 {
		return resp.StatusCode, schemeError(c.base, answerError(resp, data))
	}
	if out != nil && resp.StatusCode != http.StatusNoContent {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("client: decode %s %s answer: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

// readAnswer reads an answer's body, up to one byte past maxAnswer: into a
// buffer of its Content-Length when it has one (the broker's answers do),
// rather than one grown as it is read. io.ReadAll's growing buffer
// allocated about twice a large answer (a claim's, of megabytes of
// parameters), all of it garbage at once, in every agent taking them.
func readAnswer(resp *http.Response) ([]byte, error) {
	n := resp.ContentLength
	if n < 0 || n > int64(maxAnswer) {
		// No length (a chunked answer: a large package's), or one past
		// what the client reads, which reading finds out without
		// allocating a buffer of whatever length it claims.
		return io.ReadAll(io.LimitReader(resp.Body, int64(maxAnswer)+1))
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(resp.Body, data); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF // a body cut short of its length
		}
		return nil, err
	}
	return data, nil
}

// AnswerTooLargeError is an answer larger than the client reads (64 MiB):
// a package whose commands' parameters and outputs add up to more. Cut
// off, it would not decode. Events returns it, with Path "/events", for
// an event of a stream past the same size, which the broker never sends.
type AnswerTooLargeError struct {
	Method     string // of the call: GET, POST, …
	Path       string // of the call, without its query
	StatusCode int    // the answer's HTTP status
	Limit      int    // the bytes the client reads of an answer
	// Done reports a write that the broker carried out (it answered
	// 2xx): only its answer is lost, and making the call again would make
	// the change again, or find it made (a conflict). Read what it made
	// in another way instead.
	Done bool
}

// Error implements the error interface.
func (e *AnswerTooLargeError) Error() string {
	limit := fmt.Sprintf("%d MiB", e.Limit>>20)
	if e.Limit < 1<<20 {
		limit = fmt.Sprintf("%d bytes", e.Limit)
	}
	if e.Path == "/events" {
		return fmt.Sprintf("client: an event of GET /events is larger than %s, more than the client reads: the broker sends none so large", limit)
	}
	if e.Done {
		// "Ask for less" would read as a refusal, and have it made again.
		return fmt.Sprintf("client: %s %s was done (%d), but its answer is larger than %s, more than the client reads (a package's commands hold their parameters and outputs)",
			e.Method, e.Path, e.StatusCode, limit)
	}
	return fmt.Sprintf("client: the answer to %s %s is larger than %s, more than the client reads; ask for less (a package's commands hold their parameters and outputs)",
		e.Method, e.Path, limit)
}

// maxAnswer bounds the answer the client reads, so that a broker (or
// whatever answers at its address) cannot make it hold any amount of memory.
var maxAnswer = 64 << 20

// retryAfter reads a Retry-After header (RFC 9110 10.2.3): delay-seconds
// or an HTTP date, as a wait from now; 0 for none, for a value that does not
// parse or does not fit a Duration, and for a date gone by.
func retryAfter(h string, now time.Time) time.Duration {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0
	}
	if n, err := strconv.ParseInt(h, 10, 64); err == nil {
		if n < 0 || n > int64(math.MaxInt64/time.Second) {
			return 0
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// answerError is the error of an answer that is not a success, whose body
// is data: decodeError's, with the request's id and the Retry-After of the
// answer's headers.
func answerError(resp *http.Response, data []byte) error {
	err := decodeError(resp.StatusCode, data)
	var ce *Error
	if errors.As(err, &ce) {
		ce.RequestID = resp.Header.Get("X-Request-Id")
		ce.RetryAfter = retryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
	return err
}

// decodeError reads an API error body; a body that is not one (a proxy's
// page, say) still yields a code from the status.
func decodeError(status int, data []byte) error {
	var body spinbroker.ErrorBody
	if err := json.Unmarshal(data, &body); err == nil && body.Error != nil && body.Error.Code != "" {
		return &Error{StatusCode: status, Err: body.Error}
	}
	code := spinbroker.EINTERNAL
	switch {
	case status == http.StatusUnauthorized:
		code = spinbroker.EUNAUTHORIZED
	case status == http.StatusForbidden:
		code = spinbroker.EFORBIDDEN
	case status == http.StatusNotFound:
		code = spinbroker.ENOTFOUND
	case status == http.StatusMethodNotAllowed:
		code = spinbroker.EMETHOD
	case status == http.StatusRequestEntityTooLarge:
		code = spinbroker.ETOOLARGE
	case status == http.StatusConflict:
		code = spinbroker.ECONFLICT
	case status == http.StatusTooManyRequests:
		// The broker never answers 429; a proxy's rate limit is an
		// outage of a moment, asked again later as Temporary says, not
		// the invalid request other 4xx read as (an agent stops on that,
		// and reports an output refused as its command's failure).
		code = spinbroker.EUNAVAILABLE
	case status >= 400 && status < 500:
		code = spinbroker.EINVALID
	case status == http.StatusServiceUnavailable || status == http.StatusBadGateway || status == http.StatusGatewayTimeout:
		code = spinbroker.EUNAVAILABLE
	}
	msg := spinbroker.Truncate(strings.TrimSpace(string(data)), 200)
	if msg == "" {
		msg = http.StatusText(status)
	}
	return &Error{StatusCode: status, Err: &spinbroker.Error{Code: code, Message: msg}}
}

func esc(s string) string { return url.PathEscape(s) }

// CreatePackage creates a package, with commands and enqueued when in asks.
//
// A create that failed with a Temporary error may still have been
// committed. Sent again with the same IdempotencyKey and the same in (the
// client encodes it again to the same bytes), it answers the first
// package and creates nothing new; sent again without a key it creates a
// second package, or, when in.ID is set, answers 409 conflict.
func (c *Client) CreatePackage(ctx context.Context, in spinbroker.NewPackage, opts ...CallOption) (*spinbroker.Package, error) {
	var p spinbroker.Package
	_, err := c.do(ctx, http.MethodPost, "/packages", nil, in, &p, opts...)
	if err != nil {
		return nil, err
	}
	return &p, nil
}

// AddCommand adds a command to a package in staging. As with
// CreatePackage, only a call with an IdempotencyKey (or in.ID) is safe to
// repeat after a Temporary error.
func (c *Client) AddCommand(ctx context.Context, pkgID string, in spinbroker.NewCommand, opts ...CallOption) (*spinbroker.Command, error) {
	var cmd spinbroker.Command
	_, err := c.do(ctx, http.MethodPost, "/packages/"+esc(pkgID)+"/commands", nil, in, &cmd, opts...)
	if err != nil {
		return nil, err
	}
	return &cmd, nil
}

// Enqueue enqueues a package; enqueuing it again changes nothing.
func (c *Client) Enqueue(ctx context.Context, pkgID string) (*spinbroker.Package, error) {
	return c.packageCall(ctx, http.MethodPost, "/packages/"+esc(pkgID)+"/enqueue")
}

// CancelPackage cancels a package that has not finished.
func (c *Client) CancelPackage(ctx context.Context, pkgID string) (*spinbroker.Package, error) {
	return c.packageCall(ctx, http.MethodPost, "/packages/"+esc(pkgID)+"/cancel")
}

// Package reads a package with its commands.
func (c *Client) Package(ctx context.Context, pkgID string) (*spinbroker.Package, error) {
	return c.packageCall(ctx, http.MethodGet, "/packages/"+esc(pkgID))
}

func (c *Client) packageCall(ctx context.Context, method, path string) (*spinbroker.Package, error) {
	var p spinbroker.Package
	if _, err := c.do(ctx, method, path, nil, nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// DeletePackage deletes a package in staging or one that has finished.
func (c *Client) DeletePackage(ctx context.Context, pkgID string) error {
	_, err := c.do(ctx, http.MethodDelete, "/packages/"+esc(pkgID), nil, nil, nil)
	return err
}

// ListOptions select a page of packages.
type ListOptions struct {
	State  spinbroker.PackageState // empty for every state
	Limit  int                     // 0 (or less) for the server's default (50); at most 1,000
	Cursor string                  // NextCursor of the previous page
}

// Packages lists packages, newest first, without their commands.
func (c *Client) Packages(ctx context.Context, o ListOptions) (*spinbroker.PackageList, error) {
	q := url.Values{}
	if o.State != "" {
		q.Set("state", string(o.State))
	}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.Cursor != "" {
		q.Set("cursor", o.Cursor)
	}
	var list spinbroker.PackageList
	if _, err := c.do(ctx, http.MethodGet, "/packages", q, nil, &list); err != nil {
		return nil, err
	}
	return &list, nil
}

// Command reads one command.
func (c *Client) Command(ctx context.Context, id string) (*spinbroker.Command, error) {
	var cmd spinbroker.Command
	if _, err := c.do(ctx, http.MethodGet, "/commands/"+esc(id), nil, nil, &cmd); err != nil {
		return nil, err
	}
	return &cmd, nil
}

// Complete records a command's result. An agent sends its lease token in
// res.Lease; a person settling a command by hand leaves it empty.
func (c *Client) Complete(ctx context.Context, id string, res spinbroker.Result) (*spinbroker.Command, error) {
	var cmd spinbroker.Command
	if _, err := c.do(ctx, http.MethodPost, "/commands/"+esc(id)+"/complete", nil, res, &cmd); err != nil {
		return nil, err
	}
	return &cmd, nil
}

// CompleteBatch records many results in one request. The call fails only
// when the request as a whole does; each item has its own verdict.
func (c *Client) CompleteBatch(ctx context.Context, results []spinbroker.BatchResult) ([]spinbroker.BatchOutcome, error) {
	var out spinbroker.BatchOutcomes
	if _, err := c.do(ctx, http.MethodPost, "/commands/complete", nil, spinbroker.BatchComplete{Results: results}, &out); err != nil {
		return nil, err
	}
	return out.Results, nil
}

// Heartbeat extends a lease by extend from now (0: the lease's own
// duration) and returns when it now expires. A lease that is no longer
// this token's is refused with code spinbroker.ESTALE (the command was
// settled, or given to another agent), and ENOTFOUND once the command is
// deleted.
func (c *Client) Heartbeat(ctx context.Context, id, lease string, extend time.Duration) (time.Time, error) {
	in := spinbroker.Heartbeat{Lease: lease}
	if extend > 0 {
		d := spinbroker.Duration(extend)
		in.Extend = &d
	}
	var out spinbroker.HeartbeatResult
	if _, err := c.do(ctx, http.MethodPost, "/commands/"+esc(id)+"/heartbeat", nil, in, &out); err != nil {
		return time.Time{}, err
	}
	return out.LeaseExpiresAt, nil
}

// Retry runs a failed or cancelled command again, with the commands its
// failure cancelled.
func (c *Client) Retry(ctx context.Context, id string) (*spinbroker.Command, error) {
	var cmd spinbroker.Command
	if _, err := c.do(ctx, http.MethodPost, "/commands/"+esc(id)+"/retry", nil, nil, &cmd); err != nil {
		return nil, err
	}
	return &cmd, nil
}

// Queues lists every queue that has had commands or settings.
func (c *Client) Queues(ctx context.Context) ([]spinbroker.Queue, error) {
	var out spinbroker.QueueList
	if _, err := c.do(ctx, http.MethodGet, "/queues", nil, nil, &out); err != nil {
		return nil, err
	}
	return out.Queues, nil
}

// Queue reads one queue with its first unfinished commands.
func (c *Client) Queue(ctx context.Context, resource string) (*spinbroker.Queue, error) {
	var q spinbroker.Queue
	if _, err := c.do(ctx, http.MethodGet, "/queues/"+esc(resource), nil, nil, &q); err != nil {
		return nil, err
	}
	return &q, nil
}

// SetQueue changes a queue's concurrency and whether it is paused.
func (c *Client) SetQueue(ctx context.Context, resource string, s spinbroker.QueueSettings) (*spinbroker.Queue, error) {
	var q spinbroker.Queue
	if _, err := c.do(ctx, http.MethodPatch, "/queues/"+esc(resource), nil, s, &q); err != nil {
		return nil, err
	}
	return &q, nil
}

// longPoll is the wait to ask the broker for: wait, but within the HTTP
// client's Timeout (with a quarter of it, at most 5s, left for the answer
// to come back), which would otherwise cut an idle long-poll off as an
// error, and a command leased as it struck would stay leased to no one.
func (c *Client) longPoll(wait time.Duration) time.Duration {
	t := c.hc.Timeout
	if t <= 0 || wait <= 0 {
		return wait
	}
	return min(wait, t-min(t/4, 5*time.Second))
}

// Next leases the next command of a queue, waiting up to wait (the broker
// clamps it to 60s, and the client to within its HTTP client's Timeout; 0
// does not wait) for one, and blocks meanwhile; it returns nil, nil when
// nothing came. lease 0 leaves the lease to the command (else 60s). The
// command's Lease holds the token that Heartbeat and Complete must send.
func (c *Client) Next(ctx context.Context, resource string, wait, lease time.Duration) (*spinbroker.Command, error) {
	wait = c.longPoll(wait)
	q := url.Values{}
	if wait > 0 {
		q.Set("wait", wait.String())
	}
	if lease > 0 {
		q.Set("lease", lease.String())
	}
	var cmd spinbroker.Command
	status, err := c.do(ctx, http.MethodPost, "/queues/"+esc(resource)+"/next", q, nil, &cmd)
	if err != nil || status == http.StatusNoContent {
		return nil, err
	}
	return &cmd, nil
}

// Claim leases up to max (1 to 1,000) commands of a queue in queue order,
// no more than the queue's concurrency lets be leased at once, and none
// past the one whose parameters and outputs take the answer past
// spinbroker.ClaimBytes (4 MiB), waiting up
// to wait for the first (within the HTTP client's Timeout, as Next) and
// blocking meanwhile; it returns an empty slice and a nil error when
// nothing came. Each command's Lease holds its token.
func (c *Client) Claim(ctx context.Context, resource string, max int, wait, lease time.Duration) ([]spinbroker.Command, error) {
	wait = c.longPoll(wait)
	in := spinbroker.Claim{Max: max}
	if wait > 0 {
		d := spinbroker.Duration(wait)
		in.Wait = &d
	}
	if lease > 0 {
		d := spinbroker.Duration(lease)
		in.Lease = &d
	}
	var out spinbroker.ClaimResult
	if _, err := c.do(ctx, http.MethodPost, "/queues/"+esc(resource)+"/claim", nil, in, &out); err != nil {
		return nil, err
	}
	return out.Commands, nil
}

// Health reports whether the broker and its database answer. A broker
// whose writes are failing (a full disk, say) still answers, with
// {"status": "degraded"} in its /healthz body and a 200, so Health returns
// nil for it: alert on spinbroker_store_writes_failing in /metrics for that.
func (c *Client) Health(ctx context.Context) error {
	_, err := c.do(ctx, http.MethodGet, "/healthz", nil, nil, nil)
	return err
}

// HealthStatus is Health with what the broker's answer says: its Status,
// "ok" or "degraded", and for a degraded broker why (Writes).
func (c *Client) HealthStatus(ctx context.Context) (*spinbroker.Health, error) {
	var h spinbroker.Health
	if _, err := c.do(ctx, http.MethodGet, "/healthz", nil, nil, &h); err != nil {
		return nil, err
	}
	return &h, nil
}
