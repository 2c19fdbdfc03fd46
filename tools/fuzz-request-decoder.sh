#!/usr/bin/env bash
# The differential fuzzer of the hand-written request and response readers
# (issue #4) run for as long as asked: random frames from the encoders
# (requests and responses each from both the hand-written writer and the
# builder), mutated
# (bit flips, byte overwrites, truncation, extension, offsets pointed
# anywhere, vtables overlapping, union tags changed, splices, fully random
# bytes) and decoded both by the hand-written reader (`decode_request`,
# `decode_response`) and by the generic flatbuffers path
# (`decode_request_generic`, `decode_response_generic`); any disagreement
# fails with the seed to replay. CI runs the same tests for 20,000
# iterations each (tests/protocol_differential.rs).
#   tools/fuzz-request-decoder.sh                       # requests, 10 minutes, default seed
#   tools/fuzz-request-decoder.sh 60 12345              # requests, 60 seconds, seed 12345
#   tools/fuzz-request-decoder.sh 300 12345 responses   # responses
#   tools/fuzz-request-decoder.sh 300 12345 both        # each for the time given
# Prints the iterations done and how they split (both accepted, both
# rejected, rejected only by the hand-written reader's stricter checks).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_RUN=${1:-600}
SEED=${2:-$((0xd1ff5eed))}
MODE=${3:-requests}
case "$MODE" in
requests) FILTER=mutated_frames ;;
responses) FILTER=mutated_replies ;;
both) FILTER=mutated_ ;;
*)
  echo "mode must be requests, responses or both, not $MODE" >&2
  exit 2
  ;;
esac
DYNAKV_DIFF_SECONDS=$SECONDS_TO_RUN DYNAKV_DIFF_SEED=$SEED \
  cargo test --release --test protocol_differential "$FILTER" -- --nocapture --test-threads 1 2>&1 \
  | grep -oE 'differential fuzz.*|panicked.*|replay.*|test result.*|assertion.*|left.*|right.*'
