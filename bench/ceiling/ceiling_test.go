package main

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"testing"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/client"
	"github.com/spin-broker/spinbroker/internal/httpapi"
	"github.com/spin-broker/spinbroker/internal/loadgen"
)

// TestCeiling_KeepsTheRules: the ceiling store passes the load generator's
// checks (no loss, no duplicate, queue order, every package succeeded) in
// each throughput protocol, so that its figures are of the same work the
// broker does.
func TestCeiling_KeepsTheRules(t *testing.T) {
	for _, cfg := range []loadgen.Config{
		{Scenario: "throughput", Producers: 2, Resources: 2, Agents: 2, Size: 5, Commands: 400, Protocol: "inline"},
		{Scenario: "throughput", Producers: 2, Resources: 2, Agents: 1, Size: 5, Commands: 200, Protocol: "seed"},
		{Scenario: "throughput", Producers: 2, Resources: 3, Agents: 1, Size: 10, Commands: 600, Protocol: "claim", Claim: 20},
	} {
		t.Run(cfg.Protocol, func(t *testing.T) {
			api := httpapi.New(newMemStore(), slog.New(slog.NewTextHandler(io.Discard, nil)), httpapi.Options{})
			srv := httptest.NewServer(api.Handler())
			t.Cleanup(func() { api.Shutdown(); srv.Close() })
			c, err := client.New(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			res, err := loadgen.Run(context.Background(), c, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if !res.OK() || res.Commands != cfg.Commands {
				t.Fatalf("%d commands, violations: %v", res.Commands, res.Violations)
			}
		})
	}
}

// TestCeiling_RefusesWhatItCannotDo: a dependency, which the ceiling store
// does not track, is refused rather than ignored.
func TestCeiling_RefusesWhatItCannotDo(t *testing.T) {
	s := newMemStore()
	_, _, err := s.CreatePackage(context.Background(), spinbroker.NewPackage{Commands: []spinbroker.NewCommand{
		{Resource: "r", Action: "a", Key: "a"},
		{Resource: "r", Action: "b", Dependencies: []string{"a"}},
	}}, nil)
	if spinbroker.ErrorCode(err) != spinbroker.EUNAVAILABLE {
		t.Fatalf("a dependency: %v", err)
	}
}
