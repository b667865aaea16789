#!/bin/sh
# install-test-deps.sh installs what `make test` needs and the machine lacks:
# Debian's chromium (the dashboard's browser tests) and QEMU (the emulation
# agent's end-to-end test). It is quiet and does nothing when both are there.
set -eu
cd "$(dirname "$0")"

sh ./install-chromium.sh

bash ../internal/emulation/testdata/install-qemu.sh
command -v qemu-system-x86_64 >/dev/null
