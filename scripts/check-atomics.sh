#!/usr/bin/env bash
# 32-bit MIPS and ARMv5 have no 64-bit atomics. Fails if our own code names
# a 64-bit atomic type; the dependency audit is in docs/architecture.md.
set -euo pipefail
cd "$(dirname "$0")/.."
# Comment lines may name the type (to explain why it is avoided).
if grep -rnE '\bAtomic[UI]64\b' src tests examples | grep -vE '^[^:]+:[0-9]+:[[:space:]]*//'; then
    echo "error: 64-bit atomics do not exist on mips/mipsel/armv5; use stats::Counter" >&2
    exit 1
fi
echo "check-atomics: no 64-bit atomics in src/, tests/, examples/"
