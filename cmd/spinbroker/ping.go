package main

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/client"
)

// pingReport is what 'ping' found, as -o json prints it. What it did not
// get to is left empty.
type pingReport struct {
	URL string `json:"url"` // as given, its password masked
	// Reached: an answer of spin-broker's came (even a 503).
	Reached     bool     `json:"reached"`
	RoundTripMS *float64 `json:"round_trip_ms,omitempty"` // the median of three GET /healthz
	Health      string   `json:"health,omitempty"`        // ok, degraded or unavailable
	Writes      string   `json:"writes,omitempty"`        // why a degraded broker is
	Auth        string   `json:"auth,omitempty"`          // on or off, when known
	// Token: accepted, refused, or none (none given). With Auth off, any
	// token is accepted.
	Token      string `json:"token,omitempty"`
	AgentToken bool   `json:"agent_token,omitempty"`
	// Error is the sentence the command also prints on stderr when it
	// fails; it then exits 1 or 4.
	Error string `json:"error,omitempty"`
}

// pingTries is how many times ping asks /healthz: the first answer pays
// for the connection (and a TLS handshake), the median is a round trip.
const pingTries = 3

func (a *app) pingCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "ping",
		Short: "Check that this host reaches the broker, and that it takes the token",
		Long: `ping checks what every other client command needs, and changes nothing: that
the broker at --url (or SPINBROKER_URL) answers, over the scheme the URL
names, with a certificate this host trusts; that what answers is spin-broker
and how healthy it is (GET /healthz, three times: the round trip shown is
their median); and whether it takes the token of --token (or
SPINBROKER_TOKEN), by listing one package (GET /packages?limit=1). An agent
token is accepted but may read only its own resource's queue and commands,
and ping says so. It also says when auth is off, and no token is needed.

It prints one line for each, or one JSON object with -o json (which has an
"error" when a check failed); what failed is also said on stderr.

Exit status: 0 all is well, or the broker is degraded (its writes fail, a
full disk say: this host is set up right, stderr warns, and the broker's own
alert is spinbroker_store_writes_failing); 1 this host's configuration is
wrong (what answers is not spin-broker, the wrong scheme, an untrusted
certificate, a redirect, a token refused or missing); 4 the broker cannot be
reached, did not answer within 30s, or answered that it is unavailable (503).`,
		Example: `  spinbroker ping
  spinbroker ping --url https://broker.example.com:8443
  SPINBROKER_TOKEN=sbt_... spinbroker ping -o json | jq .token`,
		Args: args(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := a.checkOutput(); err != nil {
				return usagef(cmd, "%v", err)
			}
			cl, err := a.dial(cmd)
			if err != nil {
				return err
			}
			r := &pingReport{URL: client.RedactURL(a.url)}
			err = a.ping(cmd, cl, r)
			if err != nil {
				r.Error = describeWithToken(err, a.tokenFrom(cmd.Root()))
			}
			if perr := a.printPing(r, err); perr != nil {
				return perr
			}
			if err == nil && r.Health == "degraded" {
				fmt.Fprintln(a.stderr, "spinbroker: warning: the broker is degraded: its writes fail (reads work); every write is answered 503 until it recovers")
			}
			return err
		},
	}
}

// ping fills r as it goes and returns the first check that failed.
func (a *app) ping(cmd *cobra.Command, cl *client.Client, r *pingReport) error {
	ctx := cmd.Context()
	var took []time.Duration
	for range pingTries {
		start := time.Now()
		h, err := cl.HealthStatus(ctx)
		if err != nil {
			var ce *client.Error
			if errors.As(err, &ce) && ce.RequestID != "" {
				// The broker's own answer: a 503 while it stops or its
				// database does not answer.
				r.Reached = true
				if ce.StatusCode == http.StatusServiceUnavailable {
					r.Health = "unavailable"
				}
			}
			return err
		}
		took = append(took, time.Since(start))
		if h.Status != "ok" && h.Status != "degraded" {
			// A 200 of JSON, but not the broker's: another service's
			// health check at that address.
			return errors.New(notBrokerJSON)
		}
		r.Health, r.Writes = h.Status, h.Writes
	}
	r.Reached = true
	slices.Sort(took)
	ms := math.Round(float64(took[len(took)/2])/float64(time.Millisecond)*1000) / 1000
	r.RoundTripMS = &ms

	// GET /packages, not /queues: every role that reads may list queues,
	// an agent only its own, so /queues would tell an agent token from the
	// others by nothing. A token the broker does not take is refused (401)
	// before what it may do is asked (403): a 403 says it was taken.
	_, err := cl.Packages(ctx, client.ListOptions{Limit: 1})
	var ce *client.Error
	given := strings.TrimSpace(a.token) != ""
	switch {
	case err == nil && given:
		r.Token = "accepted"
		// With auth off any token is: asked without one, such a broker
		// answers too. (With auth on, this costs one 401 in its log.)
		bare, cerr := a.clientWithToken("")
		if cerr != nil {
			return cerr
		}
		_, err := bare.Packages(ctx, client.ListOptions{Limit: 1})
		switch {
		case err == nil:
			r.Auth = "off"
		case spinbroker.ErrorCode(err) == spinbroker.EUNAUTHORIZED:
			r.Auth = "on"
		default:
			return err
		}
	case err == nil:
		r.Auth, r.Token = "off", "none"
	case errors.As(err, &ce) && ce.RequestID != "" && ce.Err.Code == spinbroker.EFORBIDDEN &&
		given && strings.HasPrefix(ce.Err.Message, "an agent token "):
		r.Auth, r.Token, r.AgentToken = "on", "accepted", true
	case errors.As(err, &ce) && ce.RequestID != "" && ce.Err.Code == spinbroker.EUNAUTHORIZED:
		r.Auth, r.Token = "on", "refused"
		if !given {
			r.Token = "none"
		}
		return err
	case errors.As(err, &ce) && ce.RequestID == "":
		// Not the broker's answer: what answered /healthz as the broker
		// does is another server's health check.
		*r = pingReport{URL: r.URL}
		return err
	default:
		return err
	}
	return nil
}

// printPing prints r: as JSON, or as aligned lines up to the check that
// failed (err), whose sentence run prints on stderr.
func (a *app) printPing(r *pingReport, err error) error {
	if a.jsonOutput() {
		return a.printJSON(r)
	}
	tw := newTable(a.stdout)
	field(tw, "URL", r.URL)
	switch {
	case r.RoundTripMS != nil:
		field(tw, "Broker", fmt.Sprintf("reachable, spin-broker, %.1f ms", *r.RoundTripMS))
	case r.Reached:
		field(tw, "Broker", "reachable, spin-broker")
	case exitCodeOf(err) == exitTryAgain:
		field(tw, "Broker", "not reached")
	default:
		field(tw, "Broker", "not usable from here")
	}
	switch r.Health {
	case "":
	case "degraded":
		field(tw, "Health", "degraded: writes "+oneLine(r.Writes))
	default:
		field(tw, "Health", r.Health)
	}
	switch {
	case r.AgentToken:
		field(tw, "Token", "accepted (an agent token: it may read only its own resource's queue and commands)")
	case r.Token == "accepted" && r.Auth == "off":
		field(tw, "Token", "not needed: auth is off (the broker takes any request, with a token or without)")
	case r.Token == "accepted":
		field(tw, "Token", "accepted")
	case r.Auth == "off":
		field(tw, "Token", "none needed: auth is off")
	case r.Token == "refused":
		field(tw, "Token", "refused: "+tokenRefusal(err))
	case r.Token == "none":
		field(tw, "Token", "none given, and auth is on")
	}
	return tw.Flush()
}

// tokenRefusal is the broker's reason for refusing a token.
func tokenRefusal(err error) string {
	var ce *client.Error
	if errors.As(err, &ce) {
		return oneLine(ce.Err.Message)
	}
	return "-"
}
