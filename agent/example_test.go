package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/spin-broker/spinbroker/agent"
	"github.com/spin-broker/spinbroker/client"
)

// Greet is the parameters of the greeter's one action.
type Greet struct {
	Name string `json:"name" spin:"required"`
}

// An agent of the resource "greeter": the broker's URL from the
// environment, one handler, and Run until SIGINT or SIGTERM.
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, err := client.New(os.Getenv("SPINBROKER_URL"), client.WithToken(os.Getenv("SPINBROKER_TOKEN")))
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

// A handler's parameters are decoded strictly before it runs: what it
// returns becomes the command's output, and parameters it cannot use fail
// the command without running it. Call runs a handler without a broker,
// as a test would.
func ExampleHandle() {
	greet := agent.Handle("greet", func(ctx context.Context, p Greet) (any, error) {
		return map[string]string{"greeting": "hello, " + p.Name}, nil
	})
	ctx := context.Background()

	out, err := greet.Call(ctx, json.RawMessage(`{"name": "world"}`))
	fmt.Println(string(out), err)

	_, err = greet.Call(ctx, json.RawMessage(`{"nmae": "world"}`))
	fmt.Println(err)

	_, err = greet.Call(ctx, json.RawMessage(`{}`))
	fmt.Println(err)
	// Output:
	// {"greeting":"hello, world"} <nil>
	// invalid parameter "nmae": unknown parameter
	// invalid parameter "name": required parameter is missing
}

// A handler's error fails its command; wrapped with Transient, it asks the
// broker to run the command again later (while attempts remain).
func ExampleTransient() {
	fetch := agent.Handle("fetch", func(ctx context.Context, p struct{ URL string }) (any, error) {
		return nil, agent.Transient(errors.New("the mirror answered 503"))
	})
	_, err := fetch.Call(context.Background(), json.RawMessage(`{"url": "https://mirror.example/image"}`))
	fmt.Println(err, agent.IsTransient(err))
	// Output:
	// the mirror answered 503 true
}
