#!/usr/bin/env bash
# Load benchmark (docs/PERFORMANCE.md): release builds of the gateway and the benchmark,
# then `load`, which starts its own Mosquitto and InfluxDB on 127.0.0.1 and prints the
# broker's drain limit, the gateway's rate, latency, CPU, peak RSS and `ratio=`.
# Arguments go to `load`: --devices N (200), --seconds S (15), --probes P (60), --accel A
# (100000: the simulated clock's speed; the fleet offers N × A / 300 readings/s).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p gateway -p vigie-tests --bin gateway --bin load
exec target/release/load "$@"
