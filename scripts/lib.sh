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

# wine_prefix [RUNNER...]: makes $WINEPREFIX a Wine prefix that runs our
# x86_64 exe (installing Wine and mingw when missing), the commands run
# through RUNNER (say `ip netns exec NS`, so that its wineserver starts in
# that namespace). Wine 8 lacks bcryptprimitives.dll, which Rust's std
# imports: a test-only shim goes into the prefix (scripts/wine/).
wine_prefix() {
    need_apt wine wine wine64
    need_apt x86_64-w64-mingw32-gcc gcc-mingw-w64-x86-64
    [ -d "$WINEPREFIX/drive_c" ] || "$@" wine wineboot --init >/dev/null 2>&1 || true
    local dll="$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll"
    if [ ! -f "$dll" ] || ! grep -q ProcessPrng "$dll"; then
        x86_64-w64-mingw32-gcc -shared -O2 -o "$dll" scripts/wine/bcryptprimitives.c \
            scripts/wine/bcryptprimitives.def -ladvapi32
    fi
}

# windows_exe SCRIPT [EXE]: prints EXE, or the dist/ build of the x86_64
# Windows exe; exits 2 with how to build it when it is missing.
windows_exe() {
    local exe=${2:-dist/socksbalance-$(crate_version)-x86_64-pc-windows-gnu.exe}
    [ -f "$exe" ] || { echo "$1: $exe missing; run scripts/build.sh --local x86_64-pc-windows-gnu" >&2; exit 2; }
    echo "$exe"
}

# until_ SECONDS COMMAND...: runs COMMAND every 0.2 s until it succeeds;
# fails after SECONDS.
until_() {
    local limit=$(( $1 * 5 )) n=0; shift
    until "$@" >/dev/null 2>&1; do
        n=$((n + 1))
        [ $n -lt $limit ] || return 1
        sleep 0.2
    done
}

# For the tests on the OpenWrt userland, which define r() (a command line
# inside the router): the daemon's PID as procd has it, and whether it runs.
pid() { r "ubus call service list '{\"name\":\"socksbalance\"}' | jsonfilter -e '@.socksbalance.instances.*.pid'" 2>/dev/null | head -n1; }
running() { [ -n "$(pid)" ] && r '/etc/init.d/socksbalance running'; }

# The crate's version, from Cargo.toml.
crate_version() {
    sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1
}

# Rustflags (a TOML array) for linking with zig: zig supplies the C
# runtime, and the result is a static executable.
# shellcheck disable=SC2034 # used by the scripts that source this file
ZIG_FLAGS="['-C','link-self-contained=no','-C','target-feature=+crt-static']"

# Size settings for the targets whose std is built from source (nightly
# -Zbuild-std: all MIPS, and armv7/arm/riscv64 where rustup has no std).
# docs/performance.md#binary-size measures each one (scripts/size-levers.sh);
# docs/architecture.md#release-profile says why they are safe.
#
# Extra rustflags, as TOML array items to append after a comma:
# immediate-abort panics (no panic message, no backtrace machinery; a
# panic is a bug and aborts either way), and no unwind tables (nothing
# unwinds with immediate-abort).
SIZE_RUSTFLAGS="'-Zunstable-options','-Cpanic=immediate-abort','-Cforce-unwind-tables=no','-Zlocation-detail=none'"

# size_rustflags TARGET: SIZE_RUSTFLAGS, plus on MIPS the static relocation
# model. The binaries are static, non-PIE executables (EXEC) either way,
# but rustc compiles MIPS code position-independent by default: every call
# goes through the GOT with $gp set up in each function. Direct calls and
# absolute addresses take 13 % off .text (docs/performance.md#binary-size).
size_rustflags() {
    if [[ "$1" == mips* ]]; then
        echo "$SIZE_RUSTFLAGS,'-Crelocation-model=static'"
    else
        echo "$SIZE_RUSTFLAGS"
    fi
}

# size_cargo_args TARGET: extra cargo arguments, one per line: std's
# size-over-speed code paths, and opt-level z on MIPS (the slowest CPUs
# in the matrix, but their relay is kernel-bound: docs/architecture.md).
size_cargo_args() {
    echo "-Zbuild-std-features=optimize_for_size"
    if [[ "$1" == mips* ]]; then
        echo "--config"
        echo "profile.release.opt-level='z'"
    fi
}

# An llvm-objcopy that understands every target's ELF: from PATH, else
# rustup's llvm-tools component.
find_objcopy() {
    if command -v llvm-objcopy >/dev/null 2>&1; then
        command -v llvm-objcopy
        return
    fi
    local bin
    bin="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/llvm-objcopy"
    [ -x "$bin" ] || rustup component add llvm-tools >/dev/null 2>&1
    echo "$bin"
}

# strip_pdr FILE: drops a MIPS binary's .pdr section (procedure
# descriptors that only debuggers read; `strip` keeps it). No-op if absent.
strip_pdr() {
    "$(find_objcopy)" --remove-section=.pdr "$1"
}
