#!/bin/sh
# install-test-deps.sh installs what `make test` needs and the machine lacks:
# Debian's chromium (the dashboard's browser tests) and QEMU (the emulation
# agent's end-to-end test). It is quiet and does nothing when both are there.
set -eu
cd "$(dirname "$0")"

sh ./install-chromium.sh

if ! command -v qemu-system-x86_64 >/dev/null 2>&1 || ! command -v qemu-img >/dev/null 2>&1; then
	SUDO=""
	if [ "$(id -u)" -ne 0 ]; then
		SUDO="sudo"
	fi
	export DEBIAN_FRONTEND=noninteractive
	$SUDO apt-get update -qq >/dev/null
	$SUDO apt-get install -y -qq --no-install-recommends qemu-system-x86 qemu-utils >/dev/null
fi
command -v qemu-system-x86_64 >/dev/null
