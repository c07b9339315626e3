#!/usr/bin/env bash
# Install Debian's chromium (plus fonts-liberation) for Playwright-driven
# browser tests. Idempotent: does nothing if /usr/bin/chromium already exists.
# Meant for CI / dev containers running as root on Debian (bookworm).
#
# Playwright then launches it with:
#   p.chromium.launch(executable_path="/usr/bin/chromium", args=[...])
set -euo pipefail

CHROMIUM_BIN=/usr/bin/chromium

if [ -x "$CHROMIUM_BIN" ]; then
    echo "chromium already installed: $("$CHROMIUM_BIN" --version 2>/dev/null || echo "$CHROMIUM_BIN")"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "error: must run as root to install chromium (try: sudo $0)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends chromium fonts-liberation

echo "installed: $("$CHROMIUM_BIN" --version 2>/dev/null || echo "$CHROMIUM_BIN")"
