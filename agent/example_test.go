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
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
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

// An agent in claim (batch) mode: it claims up to 10 commands of
// "greeter" at once, runs them side by side, and reports their results
// in one request. The queue hands out no more at once than its
// concurrency, 1 unless an admin raises it (spinbroker queue set greeter
// --concurrency 10, or client.SetQueue with an admin token): raise both,
// and only for a resource whose commands may run side by side. The
// handler then runs on several goroutines at once.
func ExampleOptions_claim() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, err := client.New(os.Getenv("SPINBROKER_URL"), client.WithToken(os.Getenv("SPINBROKER_TOKEN")))
	if err != nil {
		log.Fatal(err)
	}
	greet := agent.Handle("greet", func(ctx context.Context, p Greet) (any, error) {
		agent.Logger(ctx).Info("greeting", "name", p.Name) // the line carries the command's id
		return map[string]string{"greeting": "hello, " + p.Name}, nil
	}).WithTimeout(time.Minute) // a stuck one holds up its whole batch: bound it
	opts := agent.Options{
		Claim: 10,               // up to 10 commands per claim
		Lease: 30 * time.Second, // how long a dead agent's batch waits before it is given again
		Grace: 10 * time.Second, // on SIGTERM, how long the running batch may go on
	}
	if err := agent.Run(ctx, c, "greeter", []agent.Handler{greet}, opts); err != nil {
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

// Bridge is the parameters of create_bridge, checked after decoding.
type Bridge struct {
	Name string `json:"name" spin:"required"`
	MTU  int    `json:"mtu"`
}

// Validate names the field at fault with a *ParamError; any other error
// would be the reason of the parameters as a whole.
func (b Bridge) Validate() error {
	if b.MTU != 0 && (b.MTU < 68 || b.MTU > 9000) {
		return &agent.ParamError{Field: "mtu", Problem: fmt.Sprintf("must be from 68 to 9000, not %d", b.MTU)}
	}
	return nil
}

// A parameter type with a Validate method is checked before the handler
// runs: the command fails, for good, with its error as the reason.
func ExampleValidator() {
	create := agent.Handle("create_bridge", func(ctx context.Context, p Bridge) (any, error) {
		return map[string]any{"name": p.Name, "mtu": p.MTU}, nil
	})
	_, err := create.Call(context.Background(), json.RawMessage(`{"name": "br0", "mtu": 1}`))
	fmt.Println(err)
	// Output:
	// invalid parameter "mtu": must be from 68 to 9000, not 1
}

// Stop is the parameters of a stop action: an optional duration, and
// nested structs.
type Stop struct {
	ID      string               `json:"id" spin:"required"`
	Timeout *spinbroker.Duration `json:"timeout"` // nil when not given
	Disks   []struct {
		Path string `json:"path" spin:"required"`
	} `json:"disks"`
}

// Parameters decode into nested structs, a pointer tells a field left out
// from its zero value, and a spinbroker.Duration takes a duration string
// as API.md writes them (a time.Duration would want nanoseconds). A
// required field is required at any depth.
func ExampleDecode() {
	var p Stop
	err := agent.Decode(json.RawMessage(`{"id": "vm1", "timeout": "90s", "disks": [{"path": "a.raw"}]}`), &p)
	fmt.Println(p.ID, p.Timeout.D(), p.Disks[0].Path, err)

	p = Stop{}
	err = agent.Decode(json.RawMessage(`{"id": "vm1"}`), &p)
	fmt.Println(p.Timeout == nil, err)

	err = agent.Decode(json.RawMessage(`{"id": "vm1", "disks": [{"path": "a.raw"}, {}]}`), &p)
	fmt.Println(err)
	// Output:
	// vm1 1m30s a.raw <nil>
	// true <nil>
	// invalid parameter "disks[1].path": required parameter is missing
}
