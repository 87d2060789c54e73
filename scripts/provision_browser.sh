#!/usr/bin/env bash
# The browser test (`make browser`, part of `make test`) opens the built book in Debian's Chromium
# (never a browser that a tool downloads). Installed with apt-get when we are root on a machine
# with apt-get; anywhere else the test is skipped with this message, except in CI (CI=true), where
# it fails.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "robustvae: installing Debian's chromium and fonts for the browser test with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
  exit 0
fi
echo "robustvae: no chromium here; install it (sudo apt-get install chromium fonts-dejavu-core) to run the browser test." >&2
exit 0
