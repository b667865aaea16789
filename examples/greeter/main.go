// Command greeter is the smallest spin-broker agent: it serves the queue
// "greeter" with one action, greet{name}, and answers {"greeting": ...}.
//
//	go run ./examples/greeter          # the broker at $SPINBROKER_URL, else http://localhost:8080
//	spinbroker message new | xargs -I{} sh -c 'spinbroker message add {} greeter greet name=world && spinbroker message enqueue {}'
//
// With auth on, it sends $SPINBROKER_TOKEN.
package main

import (
	"context"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/spin-broker/spinbroker/agent"
	"github.com/spin-broker/spinbroker/client"
)

// Greet is the parameters of greet: a missing name fails the command.
type Greet struct {
	Name string `json:"name" spin:"required"`
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { <-ctx.Done(); stop() }() // a second signal ends the program at once
	url := os.Getenv("SPINBROKER_URL")
	if url == "" {
		url = "http://localhost:8080"
	}
	c, err := client.New(url, client.WithToken(os.Getenv("SPINBROKER_TOKEN")))
	if err != nil {
		log.Fatal(err)
	}
	greet := agent.Handle("greet", func(ctx context.Context, p Greet) (any, error) {
		return map[string]string{"greeting": "hello, " + p.Name}, nil
	})
	if err := agent.Run(ctx, c, "greeter", []agent.Handler{greet}, agent.Options{}); err != nil {
		os.Exit(1) // Run has logged why
	}
}
