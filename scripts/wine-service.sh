#!/usr/bin/env bash
# The Windows service under Wine: `socksbalance service install`, Wine's
# boot starting the auto-start service, a download through it, a stop that
# drains a running download, `service start`/`stop`, Wine's `net start`/
# `net stop`, a start that fails (port taken) with the reason in the log,
# and `service uninstall`; each command's exit code and message checked
# (scripts/wine_service_test.py). What Wine cannot show is in
# packaging/windows/README.txt and docs/building.md.
#
# Usage: scripts/wine-service.sh [EXE]  (default: the dist/ build)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
exe=$(windows_exe wine-service.sh "${1:-}")
need_apt microsocks microsocks
work=$(mktemp -d /tmp/sb-wine-svc.XXXXXX)
export WINEDEBUG=-all WINEPREFIX=$work/prefix
cleanup() {
    set +e
    wineserver -k 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
wine_prefix
# The service outlives each `wine` command only while the wineserver
# stays: Wine ends its services when the last other process exits. So a
# persistent one takes over once the one that set up the prefix has gone
# (two at once would start two service managers, each with its own list).
wineserver -w
wineserver -p
python3 scripts/wine_service_test.py "$exe" "$work"
