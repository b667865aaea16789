#!/bin/sh
# install-test-deps.sh installs what `make test` needs and the machine lacks:
# Debian's chromium (the dashboard's browser tests), QEMU (the emulation
# agent's end-to-end test), curl and jq (the README's blocks) and
# systemd-analyze (the example units). It is quiet and does nothing when all are there.
set -eu
cd "$(dirname "$0")"

sh ./install-chromium.sh

bash ../internal/emulation/testdata/install-qemu.sh
command -v qemu-system-x86_64 >/dev/null

# curl and jq run in the README's blocks that the tests run as written.
for tool in curl jq; do
	if ! command -v $tool >/dev/null 2>&1; then
		SUDO=""
		[ "$(id -u)" -ne 0 ] && SUDO="sudo"
		export DEBIAN_FRONTEND=noninteractive
		$SUDO apt-get update -qq >/dev/null
		$SUDO apt-get install -y -qq $tool >/dev/null
	fi
	command -v $tool >/dev/null
done

# systemd-analyze checks the example units (examples/systemd); the package
# brings the tool without starting anything.
if ! command -v systemd-analyze >/dev/null 2>&1; then
	SUDO=""
	[ "$(id -u)" -ne 0 ] && SUDO="sudo"
	export DEBIAN_FRONTEND=noninteractive
	$SUDO apt-get update -qq >/dev/null
	$SUDO apt-get install -y -qq systemd >/dev/null
fi
command -v systemd-analyze >/dev/null
