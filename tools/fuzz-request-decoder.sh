#!/usr/bin/env bash
# The differential fuzzer of the hand-written request reader (issue #4) run
# for as long as asked: random requests from the encoder, mutated (bit flips,
# byte overwrites, truncation, extension, offsets pointed anywhere, vtables
# overlapping, union tags changed, splices, fully random bytes) and decoded
# both by `decode_request` and by the generic flatbuffers path
# (`decode_request_generic`); any disagreement fails with the seed to replay.
# CI runs the same test for 20,000 iterations (tests/protocol_differential.rs).
#   tools/fuzz-request-decoder.sh               # 10 minutes, default seed
#   tools/fuzz-request-decoder.sh 60 12345      # 60 seconds, seed 12345
# Prints the iterations done and how they split (both accepted, both
# rejected, rejected only by the hand-written reader's stricter checks).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_RUN=${1:-600}
SEED=${2:-$((0xd1ff5eed))}
DYNAKV_DIFF_SECONDS=$SECONDS_TO_RUN DYNAKV_DIFF_SEED=$SEED \
  cargo test --release --test protocol_differential mutated_frames -- --nocapture 2>&1 \
  | grep -E '^differential fuzz|panicked|replay|^test result|assertion|left|right'
