#!/usr/bin/env bash
# Installs what the emulation tests run: qemu-system-x86_64 (package
# qemu-system-x86) and qemu-img (qemu-utils), on Debian or Ubuntu, where they
# are missing. Run as root, or with sudo available. CI and `make test` call
# it before the tests; the end-to-end test calls it too when qemu is missing
# outside CI.
set -euo pipefail

need=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
command -v qemu-img >/dev/null 2>&1 || need+=(qemu-utils)
if [ ${#need[@]} -eq 0 ]; then
	exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
	echo "install-qemu.sh: no apt-get here; install ${need[*]} by hand" >&2
	exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
	sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
echo "install-qemu.sh: installing ${need[*]}" >&2
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
command -v qemu-system-x86_64 >/dev/null && command -v qemu-img >/dev/null
