#!/usr/bin/env bash
# bench-peers.sh runs spin-broker's throughput shapes and the same shape on
# River and goqite (bench/peers) one after the other on this machine, then
# prints the ratios. Figures from one run only are comparable: the machine is
# shared and its speed varies from hour to hour.
#
#   COMMANDS=20000 scripts/bench-peers.sh        (or: make bench-peers)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${COMMANDS:-20000}
out=$(mktemp -d "${TMPDIR:-/tmp}/spin-bench.XXXXXX")
trap 'rm -rf "$out"' EXIT

go build -o "$out/spinbroker" ./cmd/spinbroker
go build -o "$out/ceiling" ./bench/ceiling
for sync in normal full; do
	for proto in inline seed claim; do
		echo "== spin-broker: throughput, protocol $proto, sync $sync" >&2
		"$out/spinbroker" bench --scenarios throughput --protocol "$proto" --commands "$n" --sync "$sync" --json | tee -a "$out/spinbroker.json" >&2
	done
done
echo "== River and goqite, in-process" >&2
go run -C bench/peers . -jobs "$n" -json | tee "$out/peers.json" >&2

# The ceiling: spin-broker's own HTTP layer over a store that stores
# nothing, driven by the same generator, so that "how far from the most
# this machine allows" is measured in the same run too.
echo "== the ceiling: spin-broker's HTTP layer with no storage (bench/ceiling)" >&2
# A ceiling that does not start or fails costs only its column: the
# figures measured before it are compared all the same.
"$out/ceiling" -addr 127.0.0.1:0 >"$out/ceiling.url" 2>"$out/ceiling.err" &
ceiling=$!
trap 'kill $ceiling 2>/dev/null || true; rm -rf "$out"' EXIT
for _ in $(seq 100); do
	[ -s "$out/ceiling.url" ] && break
	kill -0 $ceiling 2>/dev/null || break # it exited
	sleep 0.1
done
url=$(head -n 1 "$out/ceiling.url")
: >"$out/ceiling.json"
if [ -z "$url" ]; then
	echo "== the ceiling did not start; comparing without it:" >&2
	cat "$out/ceiling.err" >&2
else
	for proto in inline seed claim; do
		if ! "$out/spinbroker" bench --url "$url" --procs 1 --scenarios throughput --protocol "$proto" --commands "$n" --json >"$out/ceiling.run"; then
			echo "== the ceiling's $proto run failed; comparing without it" >&2
			continue
		fi
		sed 's/^{/{"ceiling":true,/' "$out/ceiling.run" | tee -a "$out/ceiling.json" >&2
	done
fi
kill $ceiling 2>/dev/null || true
echo >&2
"$out/spinbroker" bench --compare "$out/spinbroker.json,$out/peers.json,$out/ceiling.json"
