#!/usr/bin/env bash
# Builds the Debian packages of the gateway (docs/OPERATIONS.md, "Install"):
# target/debian/vigie-gateway_<version>-1_<arch>.deb for this machine's architecture
# (amd64), and with --arm64 also for arm64 (Raspberry Pi class boxes), cross-built with
# Debian's cross toolchain (gcc-aarch64-linux-gnu, installed when missing, as is the Rust
# target and cargo-deb). --arm64-only builds just the arm64 package, from the man pages
# and completions an earlier amd64 run generated (scripts/test.sh runs it in the
# background while the tests run).
# The binaries (the gateway, and the fleet simulator `vigie-sim` so that a fleet can be
# tried without Rust) are release builds; man pages and shell completions come from the
# binaries' own command-line definitions.
set -euo pipefail
cd "$(dirname "$0")/.."

amd64=true
arm64=false
case "${1:-}" in
    "") ;;
    --arm64) arm64=true ;;
    --arm64-only) amd64=false; arm64=true ;;
    *) echo "usage: $0 [--arm64 | --arm64-only]" >&2; exit 2 ;;
esac

CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version >/dev/null 2>&1; then
    echo "==> installing cargo-deb $CARGO_DEB_VERSION"
    cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"
fi

# The Mosquitto drop-in names Debian's plugin path, which holds the architecture.
dropin() {
    sed "s|/usr/lib/x86_64-linux-gnu/|/usr/lib/$1/|" deploy/mosquitto.conf >target/package/mosquitto.conf
}

if $amd64; then
    # One package per architecture in target/debian: this version's.
    rm -f target/debian/vigie-gateway_*.deb
    # What goes into every package besides the binary, from this machine's build.
    cargo build --release --quiet -p gateway --bin gateway -p vigie-sim --bin vigie-sim
    rm -rf target/package
    target/release/gateway generate --out-dir target/package
    target/release/vigie-sim --man-dir target/package/man
    gzip -9n target/package/man/*.1
    dropin x86_64-linux-gnu
    cargo deb -p gateway --no-build --quiet
fi

if $arm64; then
    [ -d target/package/man ] || { echo "$0: run it without --arm64-only first (man pages)" >&2; exit 1; }
    rm -f target/debian/vigie-gateway_*_arm64.deb
    triple=aarch64-unknown-linux-gnu
    if ! command -v aarch64-linux-gnu-gcc >/dev/null; then
        echo "==> installing Debian's arm64 cross toolchain"
        sudo_cmd=""
        [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
        $sudo_cmd apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends \
            gcc-aarch64-linux-gnu libc6-dev-arm64-cross >/dev/null
    fi
    rustup target add "$triple" >/dev/null
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
    cargo build --release --quiet -p gateway --bin gateway -p vigie-sim --bin vigie-sim \
        --target "$triple"
    dropin aarch64-linux-gnu
    # cargo-deb takes the binary from target/$triple/release and strips it with the
    # cross binutils.
    cargo deb -p gateway --no-build --quiet --target "$triple"
fi
ls target/debian/vigie-gateway_*.deb
