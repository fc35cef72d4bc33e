#!/usr/bin/env bash
# Instructions and allocator calls per reading of the gateway draining a backlog
# (docs/PERFORMANCE.md, "Instructions per reading"): the drain benchmark runs with a
# `gateway` beside it that is the release gateway under `valgrind --tool=callgrind`, then
# each database phase's count (the process that drained, not the one that only opened the
# session) is divided by the readings. Valgrind slows the gateway about 40 times, so its
# stored-readings counter is read once a second (--poll-ms 1000), not every 20 ms.
# Arguments: --readings N (100000), --rounds R (1). Needs valgrind (Debian package).
set -euo pipefail
cd "$(dirname "$0")/.."
readings=100000
rounds=1
while [ $# -gt 0 ]; do
    case "$1" in
        --readings) readings="$2"; shift 2 ;;
        --rounds) rounds="$2"; shift 2 ;;
        *) echo "usage: $0 [--readings N] [--rounds R]" >&2; exit 2 ;;
    esac
done
command -v valgrind > /dev/null || { echo "valgrind missing: apt-get install valgrind" >&2; exit 1; }
cargo build --release --quiet -p gateway -p vigie-tests --bin gateway --bin drain
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp target/release/drain "$work/"
cat > "$work/gateway" <<EOF
#!/bin/sh
exec valgrind --tool=callgrind --callgrind-out-file=$work/callgrind.%p.out $PWD/target/release/gateway "\$@"
EOF
chmod +x "$work/gateway"
"$work/drain" --readings "$readings" --rounds "$rounds" --max-rss 400 --poll-ms 1000 \
    | grep -E '^round|^  gateway.* stored '
python3 - "$work" "$readings" <<'EOF'
import glob, re, sys
work, readings = sys.argv[1], int(sys.argv[2])
# The C allocator's entry points: Rust's `__rust_alloc` shims are inlined away by the
# release profile's LTO, and libc's own internal calls go to `_int_malloc` instead.
ALLOC = {"malloc", "calloc", "realloc", "posix_memalign", "aligned_alloc", "memalign"}
runs = {}
for path in glob.glob(f"{work}/callgrind.*.out"):
    names, total, calls, target, cfn = {}, 0, 0, "", None
    for line in open(path, errors="replace"):
        if line.startswith("cmd:"):
            target = "VictoriaMetrics" if "gw-v2" in line else "InfluxDB 1.x"
        elif line.startswith("totals:"):
            total = int(line.split()[1])
        elif line.startswith(("fn=", "cfn=")):
            # Names are compressed: "(id) name" the first time, in either kind of line.
            m = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line.strip())
            if m and m.group(2):
                names[m.group(1)] = m.group(2)
            if m and line.startswith("cfn="):
                cfn = names.get(m.group(1), "").split("::")[-1]
        elif line.startswith("calls=") and cfn in ALLOC:
            calls += int(line.split("=")[1].split()[0])
    runs.setdefault(target, []).append((total, calls, path))
for target, counted in sorted(runs.items()):
    # Per phase and round, the session's short start, then the drain: the drains are the
    # largest counts.
    drains = sorted(counted, reverse=True)[: len(counted) // 2]
    for total, calls, _ in drains:
        print(f"gateway → {target}: {total / readings:,.0f} instructions and "
              f"{calls / readings:.2f} allocator calls per reading")
EOF
