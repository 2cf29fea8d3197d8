# shellcheck shell=bash
# Shared by the scripts in this folder: source it, don't run it.

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
apt_updated=0

# need_apt COMMAND PACKAGE...: installs PACKAGEs with apt unless COMMAND
# is already on PATH.
need_apt() {
    command -v "$1" >/dev/null 2>&1 && return 0
    shift
    command -v apt-get >/dev/null 2>&1 || { echo "please install: $*" >&2; exit 1; }
    if [ $apt_updated -eq 0 ]; then
        # A mirror mid-sync can fail one index; the install still fails
        # loudly if the package is really missing.
        $sudo apt-get update -qq || echo "warning: apt-get update reported errors; continuing" >&2
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# The crate's version, from Cargo.toml.
crate_version() {
    sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1
}
