#!/usr/bin/env bash
# Installs what `make bench` needs beyond the build: redis-server, nats-server (Debian packages)
# and matplotlib for the chart (pip, else Debian's python3-matplotlib). Quiet when all is there.
set -u
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
missing=""
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing="$missing nats-server"
if [ -n "$missing" ]; then
  echo "bench: installing$missing"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null || exit 1
fi
if ! python3 -c 'import matplotlib' >/dev/null 2>&1; then
  echo "bench: installing matplotlib"
  python3 -m pip install --quiet matplotlib >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-matplotlib >/dev/null; } \
    || echo "bench: warning: no matplotlib, the chart will be skipped"
fi
exit 0
