#!/usr/bin/env bash
# The whole test suite: what README.md calls "run all tests", and what CI runs.
# Installs missing tools, checks formatting, lints, generated-code freshness,
# then builds and runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup.sh
ulimit -n 65536 2>/dev/null || true
# A CI build is built once: incremental caches would only take disk
# (2 GB of target/ on a fresh clone).
if [ "${CI:-}" = "true" ]; then
  export CARGO_INCREMENTAL=0
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== generated flatbuffers code is fresh"
bash tools/check-generated.sh
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast --failure-output final
  # nextest does not run doctests.
  cargo test --workspace --doc
else
  cargo test --workspace --no-fail-fast
fi
