// Command ceiling serves spin-broker's HTTP API, its real handlers and
// middleware, over a store that keeps everything in memory and stores
// nothing: the ceiling a durable broker can approach on a machine, measured
// with the same load generator (spinbroker bench --url). It is a measuring
// instrument, not a broker: it loses everything when it stops, knows no
// dependencies, retries or lease expiry, and refuses what the throughput
// scenarios do not use.
//
//	go run ./bench/ceiling -addr localhost:8090 &
//	spinbroker bench --url http://localhost:8090 --procs 1 --protocol claim
//
// It prints its URL on stdout; scripts/bench-peers.sh runs it beside the
// broker and the peers.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/spin-broker/spinbroker/internal/httpapi"
)

func main() {
	addr := flag.String("addr", "localhost:8090", "where to listen (loopback: it has no auth)")
	flag.Parse()
	if err := run(*addr); err != nil {
		fmt.Fprintln(os.Stderr, "ceiling:", err)
		os.Exit(1)
	}
}

func run(addr string) error {
	// What serve runs with, so that the two differ only in their store.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(200)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	api := httpapi.New(newMemStore(), log, httpapi.Options{})
	srv := &http.Server{
		Handler:           api.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	// The URL alone on stdout, for scripts that listen on port 0.
	fmt.Printf("http://%s\n", ln.Addr())
	fmt.Fprintf(os.Stderr, "ceiling: serving the API with no storage on http://%s\n", ln.Addr())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		api.Shutdown()
		srv.Close()
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
