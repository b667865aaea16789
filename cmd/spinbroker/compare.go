package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
)

// benchLine is one JSON line of `spinbroker bench --json` or of the peers
// benchmark (bench/peers -json): whichever fields it has.
type benchLine struct {
	// spinbroker bench
	Scenario       string  `json:"scenario"`
	Protocol       string  `json:"protocol"`
	CommandsPerSec float64 `json:"commands_per_sec"`
	MicrosPerCycle float64 `json:"micros_per_next_complete"`
	ParameterBytes int     `json:"parameter_bytes"`
	OK             *bool   `json:"ok"`
	Machine        machine `json:"machine"`
	// bench/peers
	Peer       string  `json:"peer"`
	JobsPerSec float64 `json:"jobs_per_sec"`
	Duplicates int     `json:"duplicates"`
	Lost       int     `json:"lost"`
	// both
	Sync string `json:"sync"`
	// Set by scripts/bench-peers.sh on the lines of runs against
	// bench/ceiling: spin-broker's HTTP layer over a store that stores
	// nothing, the most a durable broker could reach on the machine.
	Ceiling bool `json:"ceiling"`
}

// compare reads JSON lines of spinbroker's and the peers' runs from files
// and prints each spin-broker throughput beside River's and goqite's in the
// same sync mode, with the ratios, and the share of the storage-free
// ceiling it reaches when the ceiling was measured too.
func (a *app) compare(files []string) error {
	type key struct{ name, sync string }
	rate := map[key]float64{}
	ceiling := map[string]float64{} // by protocol
	var names, machines []string
	seen := map[string]bool{}
	sized := map[string]bool{} // runs with --parameter-bytes
	bad := 0
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return err
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if !strings.HasPrefix(line, "{") {
				continue
			}
			var l benchLine
			if err := json.Unmarshal([]byte(line), &l); err != nil {
				fh.Close()
				return fmt.Errorf("%s: %w", f, err)
			}
			var name string
			var r float64
			switch {
			case l.Ceiling && l.Scenario == "throughput":
				ceiling[l.Protocol] = l.CommandsPerSec
				continue
			case l.Peer != "":
				name, r = l.Peer, l.JobsPerSec
				if l.Duplicates+l.Lost > 0 {
					bad++
				}
			case l.Scenario == "throughput":
				name, r = "spin-broker "+l.Protocol, l.CommandsPerSec
				if l.ParameterBytes > 0 {
					// Not the shape the peers and the ceiling ran: a row
					// of its own, without their ratios.
					name = fmt.Sprintf("%s, %d-byte parameters", name, l.ParameterBytes)
					sized[name] = true
				}
				if l.OK != nil && !*l.OK {
					bad++
				}
				if l.Machine.CPUs > 0 && !slices.Contains(machines, l.Machine.String()) {
					machines = append(machines, l.Machine.String())
				}
			default:
				continue
			}
			if l.Sync != "normal" && l.Sync != "full" {
				continue // a run against --url: its broker's settings are not known
			}
			if !seen[name] {
				seen[name] = true
				names = append(names, name)
			}
			rate[key{name, l.Sync}] = r
		}
		fh.Close()
		if err := sc.Err(); err != nil {
			return err
		}
	}
	if len(rate) == 0 {
		// An empty table and exit 0 read as "compared, nothing to say".
		return fmt.Errorf("nothing to compare in %s: no throughput line of a bench run that started its own broker (--json; a run against --url has no known sync mode), nor of bench/peers (-json)", strings.Join(files, ", "))
	}
	sort.SliceStable(names, func(i, j int) bool {
		return strings.HasPrefix(names[i], "spin-broker") && !strings.HasPrefix(names[j], "spin-broker")
	})
	switch len(machines) {
	case 0: // lines of a bench from before it named its machine
	case 1:
		fmt.Fprintf(a.stdout, "machine: %s\n", machines[0])
	default:
		fmt.Fprintf(a.stdout, "these runs come from %d machines; ratios across them mean little:\n", len(machines))
		for _, m := range machines {
			fmt.Fprintf(a.stdout, "  %s\n", m)
		}
	}
	w := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "\tsync\tcommands/s\t× River\t× goqite\tof ceiling\t")
	for _, sync := range []string{"normal", "full"} {
		for _, n := range names {
			r, ok := rate[key{n, sync}]
			if !ok {
				continue
			}
			ratio := func(peer string) string {
				if p := rate[key{peer, sync}]; p > 0 && strings.HasPrefix(n, "spin-broker") && !sized[n] {
					return fmt.Sprintf("%.1f", r/p)
				}
				return ""
			}
			share := ""
			if c := ceiling[strings.TrimPrefix(n, "spin-broker ")]; c > 0 && strings.HasPrefix(n, "spin-broker") {
				share = fmt.Sprintf("%.0f%%", 100*r/c)
			}
			fmt.Fprintf(w, "%s\t%s\t%.0f\t%s\t%s\t%s\t\n", n, sync, r, ratio("river"), ratio("goqite"), share)
		}
	}
	for _, proto := range []string{"inline", "seed", "claim"} {
		if c, ok := ceiling[proto]; ok {
			fmt.Fprintf(w, "ceiling %s\tno storage\t%.0f\t\t\t\t\n", proto, c)
		}
	}
	for _, n := range names {
		if strings.HasPrefix(n, "spin-broker") && rate[key{n, "normal"}] > 0 && rate[key{n, "full"}] > 0 {
			fmt.Fprintf(w, "%s\tfull/normal\t%.0f%%\t\t\t\t\n", n, 100*rate[key{n, "full"}]/rate[key{n, "normal"}])
		}
	}
	w.Flush()
	if bad > 0 {
		return &exitError{code: 1, msg: fmt.Sprintf("%d run(s) lost or duplicated work", bad)}
	}
	return nil
}
