#!/usr/bin/env bash
# The seed's walk-through, for real: a broker, the storage agent and the
# emulation agent on this machine, and three packages sent with the CLI.
#
#   1. storage makes a volume and a 1 GiB disk image in it; emulation writes
#      a VM's config naming that image and starts the VM (QEMU);
#   2. emulation reports the VM's status over QMP;
#   3. emulation stops it: ACPI power-down first, then by force after the
#      timeout (this VM boots no OS, so nothing answers the power button);
#   then a last package removes the config, the image and the volume.
#
# Usage: examples/seed-walkthrough.sh   (from anywhere in the repository)
# Needs go and qemu-system-x86_64 (internal/emulation/testdata/install-qemu.sh
# installs it). PORT (default 18123) is where the broker listens; KEEP=1
# keeps the work folder (logs, database, images) for a look afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d "${TMPDIR:-/tmp}/spin-seed.XXXXXX")
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	if [ -n "${KEEP:-}" ]; then echo "work folder kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
fail() {
	echo "walk-through failed: $*" >&2
	for f in "$work"/*.log; do echo "--- $f" >&2; tail -n 20 "$f" >&2; done
	exit 1
}

echo "== building spinbroker, sa-host-path and sa-emulation"
go build -o "$work/bin/" ./cmd/spinbroker ./cmd/sa-host-path ./cmd/sa-emulation
PATH="$work/bin:$PATH"

port=${PORT:-18123}
export SPINBROKER_URL="http://127.0.0.1:$port"
spinbroker serve --addr "127.0.0.1:$port" --db "$work/broker.db" >"$work/broker.log" 2>&1 &
broker=$!
pids+=($broker)
# Ready once this broker says it listens: another broker already on the
# port would answer a request too, and get this walk-through's work.
for _ in $(seq 100); do
	grep -qs 'spin-broker listening' "$work/broker.log" && break
	kill -0 "$broker" 2>/dev/null || break
	sleep 0.1
done
grep -qs 'spin-broker listening' "$work/broker.log" || fail "the broker did not start (is port $port taken? PORT= gives another)"

sa-host-path --root "$work/images" >"$work/storage.log" 2>&1 &
pids+=($!)
sa-emulation --supervisor process --state-dir "$work/state" --images-root "$work/images" >"$work/emulation.log" 2>&1 &
pids+=($!)

# run [FIELD...]: enqueue the package PKG, wait for it, and show its
# commands and the named fields of their outputs.
run() {
	spinbroker message enqueue "$PKG" >/dev/null
	spinbroker message status "$PKG" --wait --timeout 2m >/dev/null || true
	spinbroker package show "$PKG" | sed -n '/^ID  /,$p' | sed 's/^/   /'
	spinbroker message status "$PKG" >/dev/null || fail "package $PKG did not succeed"
	if [ $# -gt 0 ]; then
		spinbroker package show "$PKG" -o json | grep -E "^ +\"($(IFS='|'; echo "$*"))\":" | sed 's/^ */   output: /' || true
	fi
}

echo
echo "== 1. a volume, a disk image, the VM's config, start"
PKG=$(spinbroker message new)
spinbroker message add "$PKG" storage add_volume path=vm1 --key vol >/dev/null
spinbroker message add "$PKG" storage create_image volume_path=vm1 image_name=disk.raw image_size=1 \
	--key img --dep vol >/dev/null
spinbroker message add "$PKG" emulation write_config id=vm1 \
	vm='{"Name":"vm1","Cpus":1,"Memory":256,"Images":[{"Path":"disk.raw","Volume":"vm1"}]}' \
	--key cfg --dep img >/dev/null
spinbroker message add "$PKG" emulation start id=vm1 --dep cfg >/dev/null
run host_path size pid vnc accel

echo
echo "== 2. status over QMP"
PKG=$(spinbroker message new)
spinbroker message add "$PKG" emulation status id=vm1 >/dev/null
run status running

echo
echo "== 3. stop: ACPI power-down, forced after 5s"
PKG=$(spinbroker message new)
spinbroker message add "$PKG" emulation stop id=vm1 timeout=5s >/dev/null
run forced took

echo
echo "== 4. clean up: config, image, volume"
PKG=$(spinbroker message new)
spinbroker message add "$PKG" emulation remove_config id=vm1 --key cfg >/dev/null
spinbroker message add "$PKG" storage delete_image image_path=vm1/disk.raw --key img --dep cfg >/dev/null
spinbroker message add "$PKG" storage remove_volume path=vm1 --dep img >/dev/null
run

echo
echo "walk-through done"
