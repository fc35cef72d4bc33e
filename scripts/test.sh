#!/usr/bin/env bash
# The one test command (README "Test"; .ci/run calls it). On a fresh Debian machine with
# only the Rust toolchain it installs what it needs, then runs every check. Any failing
# step stops the run with a non-zero exit; no step is skipped.
#
# FUZZ_SECONDS (default 30) bounds each fuzz target's run.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS="${FUZZ_SECONDS:-30}"
# A clean clone gains nothing from incremental compilation: its caches took 1.5 GB of
# the disk a CI machine ran out of.
export CARGO_INCREMENTAL=0
TARGET_M4=thumbv7em-none-eabihf

# Each step says when it started (minutes:seconds into the run): where the time goes.
step() { printf '\n==> [%d:%02d] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }

step "disk: $(df -h --output=avail . | tail -n 1 | tr -d ' ') free (a run from a fresh clone writes 6.7 GB, README \"Test\")"
step "toolchain: rustfmt, clippy, $TARGET_M4"
rustup component add rustfmt clippy >/dev/null
rustup target add "$TARGET_M4" >/dev/null
if ! cargo fuzz --version >/dev/null 2>&1; then
    step "installing cargo-fuzz"
    cargo install cargo-fuzz --locked --version 0.13.2
fi

# Real servers for the end-to-end tests, faketime to move the gateway's clock, QEMU for
# the firmware image, lintian for the
# packages, the arm64 cross toolchain and qemu-user to run the arm64 binary, Chromium and
# its WebDriver for the status page, Prometheus for `promtool`, aiosmtpd as the alerts'
# mail server, etcd for a group of gateways' shared state (Debian packages):
# installed when missing.
packages=(mosquitto mosquitto-clients influxdb victoria-metrics qemu-system-arm faketime systemd lintian
    gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user chromium chromium-driver prometheus
    python3-aiosmtpd etcd-server etcd-client)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    step "installing Debian packages: ${missing[*]}"
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The board images: each its own workspace, see scripts/build-images.sh.
BOARDS=(boards/mps2-an386/Cargo.toml boards/nucleo-f411re/Cargo.toml)

step "format"
cargo fmt --all -- --check
for b in "${BOARDS[@]}"; do cargo fmt --manifest-path "$b" -- --check; done

step "clippy (host, all targets and features)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "layout: files of 600 lines at most, a core without I/O (docs/ARCHITECTURE.md)"
# Functions of 60 lines at most outside tests: the clippy run above, by the
# `clippy::too_many_lines` attribute at the root of the gateway, its core, the firmware
# and the simulator (clippy.toml sets the threshold).
big=$(find gateway/src core/src -name '*.rs' -exec wc -l {} + | awk '$2 != "total" && $1 > 600')
if [ -n "$big" ]; then echo "files over 600 lines:"; echo "$big"; exit 1; fi
if git grep -nE 'Result<[^>]*, ?String>' gateway/src | grep -v '^gateway/src/main.rs'; then
    echo "Result<_, String> outside main.rs: give the error a type"; exit 1
fi
if cargo tree -p vigie-core -e normal --prefix none | grep -E '^(tokio|axum|hyper|reqwest|clap|toml_edit) '; then
    echo "vigie-core depends on a runtime, server or command-line crate"; exit 1
fi
if git grep -nE 'crate::(devices|registry|access|config)' core/src; then
    echo "vigie-core reaches into the gateway's modules"; exit 1
fi

step "clippy (no_std crates on $TARGET_M4)"
cargo clippy -p protocol -p firmware --target "$TARGET_M4" --features firmware/defmt -- -D warnings
for b in "${BOARDS[@]}"; do
    cargo clippy --manifest-path "$b" --target "$TARGET_M4" --target-dir target/boards -- -D warnings
done

step "firmware images for $TARGET_M4 (sizes against the budget; the QEMU test boots one)"
scripts/build-images.sh

# The Debian packages (release builds, amd64 then arm64) and the fuzz targets (under the
# sanitizer) are built in the background at the lowest CPU and disk priority while the
# tests run: the tests mostly wait on servers (a fresh run spent 6 min on the amd64
# package before the tests, and 12 min in them), and their fsyncs must not queue behind
# the builds' writes. The install test, which installs the amd64 package on this machine,
# runs once it is built.
# cargo-fuzz passes nightly-only flags (-Zsanitizer); this machine has only the stable
# toolchain and no other can be fetched, so unlock them for the fuzz builds alone.
background_builds() {
    scripts/package.sh --arm64 &&
        RUSTC_BOOTSTRAP=1 cargo fuzz build --fuzz-dir fuzz -O &&
        RUSTC_BOOTSTRAP=1 cargo fuzz build --fuzz-dir fuzz-gateway --dev
}
step "Debian packages (amd64, arm64) and fuzz targets: built in the background during the tests"
builds_log="$(mktemp)"
(renice -n 19 -p "$BASHPID" >/dev/null && ionice -c 3 -p "$BASHPID" && background_builds) >"$builds_log" 2>&1 &
builds=$!
# A failing step ends the run: the builds go with it.
trap 'kill "$builds" 2>/dev/null || true' EXIT

step "systemd unit: exposure at most 1.2 (systemd-analyze security, docs/OPERATIONS.md)"
systemd-analyze security --offline=yes --threshold=12 deploy/vigie-gateway.service | tail -n 1

step "Prometheus alerting rules (promtool check and test, deploy/prometheus)"
promtool check rules deploy/prometheus/vigie-alerts.yml
(cd deploy/prometheus && promtool test rules vigie-alerts.test.yml)

INSTALL_TEST=the_package_installs_and_a_board_reading_reaches_the_database_as_the_docs_say
step "tests (all but the package install, below)"
cargo test --workspace -- --skip "$INSTALL_TEST"

step "Debian packages: waiting for the background builds, then lintian on each"
if ! wait "$builds"; then
    cat "$builds_log" >&2
    echo "a background build (packages, fuzz targets) failed" >&2
    exit 1
fi
rm -f "$builds_log"
for arch in amd64 arm64; do
    deb="$(ls target/debian/vigie-gateway_*_"$arch".deb)"
    dpkg-deb --field "$deb" Architecture | grep -qx "$arch"
    lintian --fail-on error,warning "$deb"
done

step "the amd64 package installed on this machine (tests/tests/install.rs)"
# The same selection of packages as the tests above: nothing is built again.
cargo test --workspace --test install -- --exact "$INSTALL_TEST"

step "arm64 package: the binary under qemu-user enrols a device and passes its own check"
deb="$(ls target/debian/vigie-gateway_*_arm64.deb)"
arm64_root="$(mktemp -d)"
dpkg-deb -x "$deb" "$arm64_root"
arm64() { qemu-aarch64 -L /usr/aarch64-linux-gnu "$arm64_root/usr/bin/vigie-gateway" "$@"; }
printf '[gateway]\ndata_dir = "%s/data"\nregistry = "%s/devices.toml"\n' "$arm64_root" "$arm64_root" >"$arm64_root/gateway.toml"
arm64 devices add --config "$arm64_root/gateway.toml" --tenant lyon --id aq-1 --kind air-quality \
    --blob-out "$arm64_root/aq-1.vgp" >/dev/null
arm64 check-config "$arm64_root/gateway.toml"
rm -rf "$arm64_root"

step "docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

step "no_std cross-builds for $TARGET_M4"
cargo build -p protocol --no-default-features --target "$TARGET_M4"
cargo build -p firmware --features defmt --target "$TARGET_M4" --release

step "demo: embedded broker, simulated fleet, full pipeline (exits non-zero unless acknowledged = stored)"
# Same profile as the tests: the binary is already built, no second compilation.
cargo run -q -p vigie-demo -- --duration 8 --devices 6

step "fuzz (${FUZZ_SECONDS}s per target; built in the background above)"
# The same nightly-only flags as their build (see above): nothing is built again.
export RUSTC_BOOTSTRAP=1
for target in open body blob; do
    log="$(mktemp)"
    # Inputs that once failed (fuzz/seeds/<target>) are run first, every time.
    mkdir -p "fuzz/corpus/$target" "fuzz/seeds/$target"
    if ! cargo fuzz run --fuzz-dir fuzz -O "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" \
        -- -max_total_time="$FUZZ_SECONDS" >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "fuzz target $target failed; the crashing input is under fuzz/artifacts/$target/" >&2
        exit 1
    fi
    echo "$target: $(grep -E '^Done' "$log")"
    rm -f "$log"
done

GATEWAY_FUZZ_SECONDS=$((FUZZ_SECONDS / 2))
step "fuzz the gateway's parsers (${GATEWAY_FUZZ_SECONDS}s per target, unoptimised)"
# The registry and configuration parsers (no error quotes a secret) and the HTTP service
# (request heads through connection handling, routing, the Host guard and the pages).
# Built without optimisation: the gateway's dependency tree under the sanitizer takes
# 3 min to build so, 6.5 min optimised (measured; without the sanitizer or debug info:
# the same 3 min), for a smoke run either way; half the protocol targets' time, to keep
# the whole command under 30 minutes.
for target in registry http; do
    log="$(mktemp)"
    mkdir -p "fuzz-gateway/corpus/$target"
    if ! cargo fuzz run --fuzz-dir fuzz-gateway --dev "$target" \
        "fuzz-gateway/corpus/$target" "fuzz-gateway/seeds/$target" \
        -- -max_total_time="$GATEWAY_FUZZ_SECONDS" >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "fuzz target $target failed; the crashing input is under fuzz-gateway/artifacts/$target/" >&2
        exit 1
    fi
    echo "$target: $(grep -E '^Done' "$log")"
    rm -f "$log"
done

step "disk written by the builds: $(du -sch target fuzz/target fuzz-gateway/target | tail -n 1 | cut -f 1)"
step "all checks passed"
echo "CPU time (user, system) of this script, then of every command it waited for:"
times
