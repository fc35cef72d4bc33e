#!/usr/bin/env bash
# Open-data export memory benchmark (docs/PERFORMANCE.md, "Export"): release builds of
# the gateway and the benchmark, then `export_memory`, which starts its own InfluxDB and
# VictoriaMetrics on 127.0.0.1, writes a small and a large range of one commune's
# readings into each and runs `export` over it as CSV and NGSI-LD, printing seconds,
# readings/s and the export's peak RSS. It fails if a peak passes --max-rss or the large
# range's peak exceeds the small range's by more than 20 %.
# Arguments go to `export_memory`: --small N (100000), --large N (1000000),
# --devices D (100), --max-rss MiB (64).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p gateway -p vigie-tests --bin gateway --bin export_memory
exec target/release/export_memory "$@"
