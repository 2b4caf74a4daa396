#!/usr/bin/env bash
# Headless Chromium and its WebDriver from Debian's packages, for the web
# view's browser test (tests/browser/). Idempotent: installs only what is
# missing, and prints the two paths as shell assignments that the browser
# test reads (hack/python.sh browser exports them):
#
#   hack/chromium.sh   # VISION_CHROMIUM=/usr/bin/chromium
#                      # VISION_CHROMEDRIVER=/usr/bin/chromedriver
#
# Needs root (or sudo) and apt-get; the log of the install goes to
# .local/logs/chromium-apt.log.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOGS="$ROOT/.local/logs"
die() { echo "[chromium] $*" >&2; exit 1; }

find_bins() {
  browser="$(command -v chromium || command -v chromium-browser || true)"
  driver="$(command -v chromedriver || true)"
  [ -z "$driver" ] && [ -x /usr/lib/chromium/chromedriver ] && driver=/usr/lib/chromium/chromedriver
  [ -n "$browser" ] && [ -n "$driver" ]
}

if ! find_bins; then
  command -v apt-get >/dev/null || die "chromium/chromedriver missing and no apt-get: install Chromium and its chromedriver"
  sudo=()
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || die "installing chromium needs root (or sudo)"
    sudo=(sudo)
  fi
  mkdir -p "$LOGS"
  echo "[chromium] installing chromium chromium-driver with apt-get (log: $LOGS/chromium-apt.log)" >&2
  # A stale package index (a fresh container) makes the first install fail:
  # update once and retry.
  if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    chromium chromium-driver fonts-dejavu-core >"$LOGS/chromium-apt.log" 2>&1; then
    "${sudo[@]}" apt-get update >>"$LOGS/chromium-apt.log" 2>&1
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      chromium chromium-driver fonts-dejavu-core >>"$LOGS/chromium-apt.log" 2>&1 ||
      die "apt-get install chromium chromium-driver failed (log: $LOGS/chromium-apt.log)"
  fi
  find_bins || die "chromium installed but chromium/chromedriver not found on PATH"
fi
echo "VISION_CHROMIUM=$browser"
echo "VISION_CHROMEDRIVER=$driver"
