#!/usr/bin/env bash
# Runs the chaos soak (docs/chaos.md) against a release build: builds
# `dynakv` and `dynakv-chaos`, then passes every argument to the tool, e.g.
#   tools/chaos.sh --duration-s 1800 --seed 42 --report chaos-report.txt
# Needs root for the nftables partition faults (skipped otherwise).
# DYNAKV_CHAOS_PROFILE=debug uses a debug build instead.
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${DYNAKV_CHAOS_PROFILE:-release}"
if [ "$profile" = "release" ]; then
  cargo build --release --bin dynakv --bin dynakv-chaos
else
  cargo build --bin dynakv --bin dynakv-chaos
fi
exec "target/$profile/dynakv-chaos" --bin "target/$profile/dynakv" "$@"
