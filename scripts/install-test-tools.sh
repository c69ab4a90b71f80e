#!/usr/bin/env bash
# Test-only tools that do not come from PyPI: Debian's Chromium for the browser tests
# (Playwright's own browser download does not work offline), and pinned npm front-end packages.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = "0" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
fi
if [ -f src/alize/chat/static/package-lock.json ] && command -v npm >/dev/null; then
  npm ci --silent --prefix src/alize/chat/static
fi
