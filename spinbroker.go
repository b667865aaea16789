// Package spinbroker holds the domain of spin-broker: packages of commands,
// their states, the error codes, and the JSON shapes of HTTP API version 1.
//
// It imports only the standard library. The store, the HTTP layer, the client
// and the agents all speak in these types.
package spinbroker

import (
	"encoding/json"
	"time"
)

// CommandState is the state of one command (API.md, States).
type CommandState string

// The command states, in the order a command passes through them.
const (
	Staged    CommandState = "staged"    // in a package not yet enqueued
	Blocked   CommandState = "blocked"   // enqueued; a dependency has not succeeded, or not_before is ahead
	Ready     CommandState = "ready"     // may be delivered (or waits out a retry back-off in place)
	Leased    CommandState = "leased"    // an agent holds it
	Succeeded CommandState = "succeeded" // terminal
	Failed    CommandState = "failed"    // terminal
	Cancelled CommandState = "cancelled" // terminal
)

// CommandStates lists every command state in order.
var CommandStates = []CommandState{Staged, Blocked, Ready, Leased, Succeeded, Failed, Cancelled}

// Terminal reports whether no further transition happens without a retry.
func (s CommandState) Terminal() bool {
	return s == Succeeded || s == Failed || s == Cancelled
}

// Valid reports whether s is one of the command states.
func (s CommandState) Valid() bool {
	for _, v := range CommandStates {
		if s == v {
			return true
		}
	}
	return false
}

// PackageState is the state of a package, derived from its commands.
type PackageState string

// The package states.
const (
	PackageStaging   PackageState = "staging"
	PackageQueued    PackageState = "queued"
	PackageRunning   PackageState = "running"
	PackageSucceeded PackageState = "succeeded"
	PackageFailed    PackageState = "failed"
	PackageCancelled PackageState = "cancelled"
)

// PackageStates lists every package state.
var PackageStates = []PackageState{PackageStaging, PackageQueued, PackageRunning, PackageSucceeded, PackageFailed, PackageCancelled}

// Terminal reports whether the package is finished.
func (s PackageState) Terminal() bool {
	return s == PackageSucceeded || s == PackageFailed || s == PackageCancelled
}

// Valid reports whether s is one of the package states.
func (s PackageState) Valid() bool {
	for _, v := range PackageStates {
		if s == v {
			return true
		}
	}
	return false
}

// Defaults and limits of API version 1.
const (
	MaxBodyBytes        = 1 << 20 // a request body, in bytes
	MaxDependencies     = 1000    // entries in one command's dependencies
	MaxNameLen          = 64      // resource and action names
	MaxKeyLen           = 128     // a command's key
	DefaultMaxAttempts  = 3
	MaxMaxAttempts      = 1000
	DefaultLease        = 60 * time.Second
	MinLease            = time.Second
	MaxLease            = 24 * time.Hour
	MaxWait             = 60 * time.Second // a long-poll's wait is clamped to this
	DefaultConcurrency  = 1
	MaxConcurrency      = 10000
	MaxClaim            = 1000 // commands in one claim
	DefaultListLimit    = 50
	MaxListLimit        = 1000
	MaxBatchComplete    = 1000 // results in one batched completion
	MaxCommandsPerBatch = 10000
	// ClaimBytes bounds a claim's answer: it leases commands in queue
	// order until their parameters, outputs, reasons and dependencies'
	// ids pass this many bytes (the one that passes it included),
	// whatever its max. Its answer is built whole, at about six times its
	// size: a claim of 1,000 commands of 1 MiB would take the broker to
	// 6 GB, and one of 64 was past the 64 MiB the Go client reads.
	ClaimBytes = 4 << 20
	// MaxCommandsPerPackage bounds a package, built up over many
	// requests: its enqueue, cancel and delete are each one transaction
	// that holds every other write back (50,000 commands: about 2s), and
	// every read of it answers all of its commands.
	MaxCommandsPerPackage = 50000
	BackoffBase           = time.Second
	BackoffCap            = 5 * time.Minute
	IdempotencyTTL        = 24 * time.Hour
	DefaultStagingTTL     = 24 * time.Hour
)

// Backoff is the delay before the attempt that follows attempt n (n ≥ 1)
// after a failure with retry: 1s, 2s, 4s, … capped at 5 minutes.
func Backoff(attempts int) time.Duration {
	if attempts < 1 {
		attempts = 1
	}
	d := BackoffBase
	for i := 1; i < attempts; i++ {
		d *= 2
		if d >= BackoffCap {
			return BackoffCap
		}
	}
	return d
}

// NewCommand is a command in a request: what a client sends to add it.
//
// A field tagged spin:"nonempty" may be left out but not given as "": the
// HTTP API refuses "key": "" and "id": "" rather than read them as no key or
// no id (API.md: a key is 1 to 128 characters). A field tagged
// spin:"nonnull" (a number, true or false, a duration, a time) may be left
// out but not given as null: in a PATCH, null could as well mean "back to
// the default" as "leave it", and elsewhere it is most likely a client's
// unset variable. Its refusal says to leave the field out for its default;
// with the option "keep" (spin:"nonnull,keep", a PATCH's settings), to
// leave it out to keep the current value; with "required", nothing, as the
// field may not be left out. The agent SDK's spin:"required", on handlers'
// parameter structs, is a different tag, on other structs.
type NewCommand struct {
	ID            string          `json:"id,omitempty" spin:"nonempty"`
	Key           string          `json:"key,omitempty" spin:"nonempty"`
	Resource      string          `json:"resource"`
	Action        string          `json:"action"`
	Parameters    json.RawMessage `json:"parameters,omitempty"`
	Dependencies  []string        `json:"dependencies,omitempty"`
	MaxAttempts   *int            `json:"max_attempts,omitempty" spin:"nonnull"`
	LeaseDuration *Duration       `json:"lease_duration,omitempty" spin:"nonnull"`
	NotBefore     *time.Time      `json:"not_before,omitempty" spin:"nonnull"`
}

// NewPackage is the optional body of POST /packages: create a package with
// its commands, and enqueue it, in one transaction.
type NewPackage struct {
	ID       string       `json:"id,omitempty" spin:"nonempty"`
	Commands []NewCommand `json:"commands,omitempty"`
	Enqueue  bool         `json:"enqueue,omitempty" spin:"nonnull"`
}

// Lease is what an agent holds while it runs a command.
type Lease struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Command is a command as every response shows it.
type Command struct {
	ID             string          `json:"id"`
	PackageID      string          `json:"package_id"`
	Key            *string         `json:"key"`
	Resource       string          `json:"resource"`
	Action         string          `json:"action"`
	Parameters     json.RawMessage `json:"parameters"`
	Dependencies   []string        `json:"dependencies"`
	MaxAttempts    int             `json:"max_attempts"`
	LeaseDuration  *Duration       `json:"lease_duration"`
	NotBefore      *time.Time      `json:"not_before"`
	State          CommandState    `json:"state"`
	Seq            *int64          `json:"seq"`
	Attempts       int             `json:"attempts"`
	Reason         *string         `json:"reason"`
	Output         json.RawMessage `json:"output"`
	LeaseExpiresAt *time.Time      `json:"lease_expires_at"`
	CreatedAt      time.Time       `json:"created_at"`
	EnqueuedAt     *time.Time      `json:"enqueued_at"`
	StartedAt      *time.Time      `json:"started_at"`
	FinishedAt     *time.Time      `json:"finished_at"`
	// Lease is set only in the answer to next and claim: the token the agent
	// must send back with its heartbeats and its result.
	Lease *Lease `json:"lease,omitempty"`
}

// Counts are a package's commands per state.
type Counts struct {
	Staged    int `json:"staged"`
	Blocked   int `json:"blocked"`
	Ready     int `json:"ready"`
	Leased    int `json:"leased"`
	Succeeded int `json:"succeeded"`
	Failed    int `json:"failed"`
	Cancelled int `json:"cancelled"`
}

// Done is the number of commands in a terminal state.
func (c Counts) Done() int { return c.Succeeded + c.Failed + c.Cancelled }

// Add adds n to the count of state s.
func (c *Counts) Add(s CommandState, n int) {
	switch s {
	case Staged:
		c.Staged += n
	case Blocked:
		c.Blocked += n
	case Ready:
		c.Ready += n
	case Leased:
		c.Leased += n
	case Succeeded:
		c.Succeeded += n
	case Failed:
		c.Failed += n
	case Cancelled:
		c.Cancelled += n
	}
}

// Package is a package as every response shows it. Commands is nil (and
// left out of the JSON) in lists.
type Package struct {
	ID         string       `json:"id"`
	State      PackageState `json:"state"`
	CreatedAt  time.Time    `json:"created_at"`
	EnqueuedAt *time.Time   `json:"enqueued_at"`
	FinishedAt *time.Time   `json:"finished_at"`
	Total      int          `json:"total"`
	Counts     Counts       `json:"counts"`
	Causer     *string      `json:"causer"`
	Reason     *string      `json:"reason"`
	Commands   []Command    `json:"commands,omitzero"`
}

// PackageList is a page of packages, newest first.
type PackageList struct {
	Packages   []Package `json:"packages"`
	NextCursor *string   `json:"next_cursor"`
}

// QueueCounts are a queue's enqueued, unfinished commands per state.
type QueueCounts struct {
	Blocked int `json:"blocked"`
	Ready   int `json:"ready"`
	Leased  int `json:"leased"`
}

// Queue is one resource's queue. Commands is set only by GET /queues/{resource}.
type Queue struct {
	Resource              string      `json:"resource"`
	Concurrency           int         `json:"concurrency"`
	Paused                bool        `json:"paused"`
	Counts                QueueCounts `json:"counts"`
	OldestReadyAgeSeconds float64     `json:"oldest_ready_age_seconds"`
	Commands              []Command   `json:"commands,omitzero"`
}

// QueueList is the answer of GET /queues.
type QueueList struct {
	Queues []Queue `json:"queues"`
}

// QueueSettings is the body of PATCH /queues/{resource}.
type QueueSettings struct {
	Concurrency *int  `json:"concurrency,omitempty" spin:"nonnull,keep"`
	Paused      *bool `json:"paused,omitempty" spin:"nonnull,keep"`
}

// Heartbeat is the body of POST /commands/{id}/heartbeat.
type Heartbeat struct {
	Lease  string    `json:"lease"`
	Extend *Duration `json:"extend,omitempty" spin:"nonnull"`
}

// HeartbeatResult is the answer of a heartbeat.
type HeartbeatResult struct {
	LeaseExpiresAt time.Time `json:"lease_expires_at"`
}

// Result is the body of POST /commands/{id}/complete: the outcome of a
// command. Status is a pointer so that a missing status is an error rather
// than a silent failure.
type Result struct {
	Status *bool           `json:"status" spin:"nonnull,required"`
	Reason *string         `json:"reason,omitempty"`
	Output json.RawMessage `json:"output,omitempty"`
	Retry  bool            `json:"retry,omitempty" spin:"nonnull"`
	Lease  string          `json:"lease,omitempty" spin:"nonempty"`
}

// BatchResult is one item of POST /commands/complete.
type BatchResult struct {
	ID string `json:"id"`
	Result
}

// BatchComplete is the body of POST /commands/complete.
type BatchComplete struct {
	Results []BatchResult `json:"results"`
}

// BatchOutcome is the verdict on one item of a batched completion.
type BatchOutcome struct {
	ID         string `json:"id"`
	HTTPStatus int    `json:"http_status"`
	Error      *Error `json:"error,omitempty"`
}

// BatchOutcomes is the answer of POST /commands/complete.
type BatchOutcomes struct {
	Results []BatchOutcome `json:"results"`
}

// Claim is the body of POST /queues/{resource}/claim.
type Claim struct {
	Max   int       `json:"max" spin:"nonnull,required"`
	Wait  *Duration `json:"wait,omitempty" spin:"nonnull"`
	Lease *Duration `json:"lease,omitempty" spin:"nonnull"`
}

// ClaimResult is the answer of a claim.
type ClaimResult struct {
	Commands []Command `json:"commands"`
}

// Health is the answer of GET /healthz with a 200: Status "ok", or
// "degraded" while the broker's writes fail, Writes then saying so
// ("failing", and its cause to a request with a token that works).
type Health struct {
	Status string `json:"status"`
	Writes string `json:"writes,omitempty"`
}
