#!/usr/bin/env bash
# What sleeping saves (docs/PERFORMANCE.md "The node asleep while nothing is due"): the
# reference image in QEMU with a valid blob and a modem that never answers, its QEMU
# process's host CPU over three 7 s windows (the test `the_image_sleeps_while_its_modem_is_silent`),
# for the shipped image (`wfi` between interrupts) and the same image built with feature
# `spin` (the busy loop it replaced: a full core, the ceiling), alternating, ROUNDS rounds.
# Prints each round's median and, per image, the median of the rounds with min-max.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${ROUNDS:-3}"
TARGET=thumbv7em-none-eabihf
bash scripts/build-images.sh >/dev/null
cargo build --quiet --manifest-path boards/mps2-an386/Cargo.toml --release \
    --target "$TARGET" --target-dir target/boards-spin --features spin
sleeping="target/boards/$TARGET/release/vigie-node-mps2"
spinning="target/boards-spin/$TARGET/release/vigie-node-mps2"
cargo test --quiet -p vigie-tests --test qemu_node --no-run
results="$(mktemp)"
for round in $(seq 1 "$ROUNDS"); do
    for phase in spinning sleeping; do
        image="$sleeping"
        [ "$phase" = spinning ] && image="$spinning"
        line=$(VIGIE_QEMU_IMAGE="$PWD/$image" cargo test --quiet -p vigie-tests --test qemu_node \
            the_image_sleeps_while_its_modem_is_silent -- --nocapture 2>&1 | grep -o 'median [0-9.]* %' || true)
        # The spinning image fails the test's bound by design: only its figure counts.
        value=$(echo "$line" | awk '{print $2}')
        [ -n "$value" ] || { echo "round $round $phase: no figure" >&2; exit 1; }
        echo "round $round $phase: $value % of a core"
        echo "$phase $value" >>"$results"
    done
done
for phase in spinning sleeping; do
    grep "^$phase " "$results" | awk '{print $2}' | sort -n | awk -v p="$phase" '
        { v[NR] = $1 } END { printf "%s: median %.1f %% (%.1f-%.1f), %d rounds\n", p, v[int((NR + 1) / 2)], v[1], v[NR], NR }'
done
rm -f "$results"
