package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/client"
)

// A package of two commands, the second waiting for the first by its key,
// created and enqueued at once; then its state until it finishes.
func Example() {
	ctx := context.Background()
	c, err := client.New(os.Getenv("SPINBROKER_URL"), client.WithToken(os.Getenv("SPINBROKER_TOKEN")))
	if err != nil {
		log.Fatal(err)
	}
	pkg, err := c.CreatePackage(ctx, spinbroker.NewPackage{
		Commands: []spinbroker.NewCommand{
			{Key: "vol", Resource: "storage", Action: "add_volume", Parameters: json.RawMessage(`{"path": "vm1"}`)},
			{Resource: "storage", Action: "create_image", Dependencies: []string{"vol"},
				Parameters: json.RawMessage(`{"volume_path": "vm1", "image_name": "disk.raw", "image_size": 1}`)},
		},
		Enqueue: true,
	}, client.IdempotencyKey("vm1-storage")) // sent again after a timeout, it creates nothing new
	if err != nil {
		log.Fatal(err)
	}
	p, err := c.WaitPackage(ctx, pkg.ID, client.OnRead(func(p *spinbroker.Package) {
		fmt.Printf("%s: %d/%d succeeded\n", p.State, p.Counts.Succeeded, p.Total)
	}))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("finished:", p.State)
}

// Wait up to ten minutes for a package to finish, saying when the broker
// goes away (it restarts) and comes back; the wait goes on meanwhile.
func ExampleClient_WaitPackage() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c, err := client.New(os.Getenv("SPINBROKER_URL"), client.WithToken(os.Getenv("SPINBROKER_TOKEN")))
	if err != nil {
		log.Fatal(err)
	}
	p, err := c.WaitPackage(ctx, os.Getenv("PKG"),
		client.OnBrokerAway(func(err error) { log.Printf("the broker is away (%v); still waiting", err) }),
		client.OnBrokerBack(func() { log.Print("the broker answers again") }))
	switch {
	case errors.Is(err, context.DeadlineExceeded) && p != nil:
		fmt.Printf("not finished after 10m: %s, %d/%d done\n", p.State, p.Counts.Done(), p.Total)
	case err != nil:
		log.Fatal(err) // the package is not found, the token refused, …
	case p.State == spinbroker.PackageSucceeded:
		fmt.Println("done")
	default:
		fmt.Println("package", p.State) // failed or cancelled; p.Causer and p.Reason say why
	}
}

// The broker's errors carry API.md's codes: test the code, not the text.
// Temporary says whether the same call may succeed later.
func ExampleError() {
	ctx := context.Background()
	c, err := client.New(os.Getenv("SPINBROKER_URL"))
	if err != nil {
		log.Fatal(err)
	}
	_, err = c.Complete(ctx, "0190c3a4-5a6b-7c8d-9e0f-a1b2c3d4e5f6", spinbroker.Result{})
	switch {
	case spinbroker.ErrorCode(err) == spinbroker.ESTALE:
		fmt.Println("another agent holds the command now; drop this result")
	case client.Temporary(err):
		fmt.Println("the broker is away or busy; try again:", err)
	case err != nil:
		fmt.Println(err)
	}
}
