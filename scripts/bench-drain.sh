#!/usr/bin/env bash
# Backlog-drain benchmark (docs/PERFORMANCE.md): release builds of the gateway and the
# benchmark, then `drain`, which starts its own Mosquitto, InfluxDB and VictoriaMetrics on
# 127.0.0.1 per phase, preloads a backlog of six-value readings while each consumer is
# away and times its drain: the reference consumer (`drain --consume`, the least a
# consumer can do), then the gateway into each database, phases alternating over
# --rounds rounds. It prints readings/s, CPU µs per reading of consumer, broker and
# database, the two-core bound they give and the drain's share of it, peak RSS, and per
# phase the median of the rounds with min-max; it fails unless each database holds
# exactly the backlog and the gateway's peak RSS stays under --max-rss.
# Arguments go to `drain`: --readings N (1000000), --devices D (100), --rounds R (3),
# --max-rss MiB (48), --gzip 1 (database.gzip on), --group 1 (two more phases: one gateway
# and a group of three with `[group]` on a three-member etcd cluster), --txn-ops N (their
# group.max_txn_ops, 1024), --poll-ms N (how often the gateway's counter is read, 20).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p gateway -p vigie-tests --bin gateway --bin drain
exec target/release/drain "$@"
