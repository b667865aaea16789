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
for sync in normal full; do
	for proto in inline seed claim; do
		echo "== spin-broker: throughput, protocol $proto, sync $sync" >&2
		"$out/spinbroker" bench --scenarios throughput --protocol "$proto" --commands "$n" --sync "$sync" --json | tee -a "$out/spinbroker.json" >&2
	done
done
echo "== River and goqite, in-process" >&2
go run -C bench/peers . -jobs "$n" -json | tee "$out/peers.json" >&2
echo >&2
"$out/spinbroker" bench --compare "$out/spinbroker.json,$out/peers.json"
