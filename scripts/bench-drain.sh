#!/usr/bin/env bash
# Backlog-drain benchmark (docs/PERFORMANCE.md): release builds of the gateway and the
# benchmark, then `drain`, which starts its own Mosquitto, InfluxDB and VictoriaMetrics on
# 127.0.0.1, preloads a backlog while each consumer is away and times its drain: the
# broker's own (mosquitto_sub), then the gateway into each database. It prints readings/s,
# the ratio to the broker, CPU µs per reading of consumer, broker and database, and peak
# RSS, and fails unless each database holds exactly the backlog and the gateway's peak RSS
# stays under --max-rss.
# Arguments go to `drain`: --readings N (1000000), --devices D (100), --max-rss MiB (48),
# --gzip 1 (database.gzip on).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p gateway -p vigie-tests --bin gateway --bin drain
exec target/release/drain "$@"
