#!/usr/bin/env bash
# Builds the firmware images (each its own cargo workspace under boards/, since a
# cortex-m-rt binary does not build for the host) into target/boards, prints their flash
# (.vector_table + .text + .rodata) and static RAM (.data + .bss), and fails when one is
# over the budget: 64 KiB flash, 16 KiB static RAM.
#
# Flags: registry and checkout paths are remapped out of the panic locations (shorter,
# and no build machine paths in a shipped image); an LLVM inline threshold of 25 was the
# smallest of 0/10/25/50 (measured, docs/PERFORMANCE.md).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=thumbv7em-none-eabihf
FLASH_BUDGET=$((64 * 1024))
RAM_BUDGET=$((16 * 1024))
export RUSTFLAGS="--remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}/registry/src= --remap-path-prefix=$PWD/= -C llvm-args=-inline-threshold=25"

size_of() { # section sizes of an ELF: flash ram
    size -A "$1" | awk '
        $1 == ".vector_table" || $1 == ".text" || $1 == ".rodata" { flash += $2 }
        $1 == ".data" || $1 == ".bss" { ram += $2 }
        END { print flash, ram }'
}

status=0
for board in mps2-an386 nucleo-f411re; do
    cargo build --quiet --manifest-path "boards/$board/Cargo.toml" --release \
        --target "$TARGET" --target-dir target/boards
    name=$(sed -n 's/^name = "\(.*\)"/\1/p' "boards/$board/Cargo.toml" | head -n 1)
    elf="target/boards/$TARGET/release/$name"
    read -r flash ram < <(size_of "$elf")
    awk -v b="$board" -v f="$flash" -v r="$ram" \
        'BEGIN { printf "%s: flash %d B (%.1f KiB), static RAM %d B (%.1f KiB)\n", b, f, f / 1024, r, r / 1024 }'
    if [ "$flash" -gt "$FLASH_BUDGET" ] || [ "$ram" -gt "$RAM_BUDGET" ]; then
        echo "$board: over budget (flash <= $FLASH_BUDGET B, static RAM <= $RAM_BUDGET B)" >&2
        status=1
    fi
done
exit $status
