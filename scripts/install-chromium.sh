#!/bin/sh
# install-chromium.sh installs Debian's chromium for the dashboard's browser
# tests (internal/httpapi, TestBrowser*). It does nothing when a chromium is
# already on PATH, so CI can run it before every test run.
set -eu

for b in chromium chromium-browser google-chrome google-chrome-stable; do
	if command -v "$b" >/dev/null 2>&1; then
		exit 0
	fi
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq chromium >/dev/null
command -v chromium >/dev/null 2>&1
