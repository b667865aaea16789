package spinbroker

// Change is one state transition of one command, as committed.
type Change struct {
	CommandID string       `json:"id"`
	PackageID string       `json:"package_id"`
	Resource  string       `json:"resource"`
	From      CommandState `json:"from,omitempty"`
	To        CommandState `json:"state"`
	Attempts  int          `json:"attempts"`
}

// Commit tells what one committed write changed, so that waiting long-polls
// wake, live pages update and counters move. It is reported only after the
// transaction has committed.
type Commit struct {
	// Commands are the command transitions, in the order they happened.
	Commands []Change
	// Packages are packages created, changed or deleted (see Deleted).
	Packages []string
	// Deleted are packages that no longer exist.
	Deleted []string
	// Queues are resources whose settings changed, or whose deliverable
	// commands may have changed for a reason that is not a transition (a
	// lease extended, say).
	Queues []string
	// Forgotten are queues the sweeper forgot: idle for the retention
	// period, with default settings and no unfinished commands.
	Forgotten []string
	// Expired are the leases that ran out in this commit, one per lease,
	// each as its command's change from leased: back to ready, or failed
	// (those changes are in Commands too, with a failure's cascade).
	Expired []Change
}

// Empty reports whether the commit changed nothing anyone listens for.
func (c *Commit) Empty() bool {
	return len(c.Commands) == 0 && len(c.Packages) == 0 && len(c.Deleted) == 0 && len(c.Queues) == 0 && len(c.Forgotten) == 0
}
