#!/usr/bin/env bash
# How the sink can confirm what VictoriaMetrics keeps after a 204 (docs/PERFORMANCE.md
# "Confirming what VictoriaMetrics keeps"), on Debian's victoria-metrics, on 127.0.0.1:
#   metrics  - the time of one GET /metrics (10 per round);
#   counter  - how long after a write of a row outside the retention its
#              vm_rows_ignored_total shows it (5 per round, polled every 50 ms);
#   readback - how long after a write a new series is readable through /api/v1/export
#              (5 per round, polled every 50 ms, 10 s at most).
# ROUNDS rounds (default 3), the kinds one after the other within each; per kind, the
# median and min-max over every sample (a read-back not seen in 10 s counts as 10 s).
set -euo pipefail
ROUNDS="${ROUNDS:-3}"
dir="$(mktemp -d)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
victoria-metrics -storageDataPath="$dir/data" -httpListenAddr="127.0.0.1:$port" \
    -retentionPeriod=1 >"$dir/vm.log" 2>&1 &
vm=$!
trap 'kill $vm 2>/dev/null; wait $vm 2>/dev/null; rm -rf "$dir"' EXIT
url="http://127.0.0.1:$port"
for _ in $(seq 1 100); do curl -sf "$url/health" >/dev/null && break; sleep 0.1; done
ms() { date +%s%3N; }
ignored() { curl -s "$url/metrics" | awk '/^vm_rows_ignored_total/ { n += $2 } END { print n + 0 }'; }
samples="$dir/samples"
for round in $(seq 1 "$ROUNDS"); do
    for _ in $(seq 1 10); do
        curl -s -o /dev/null -w "metrics %{time_total}\n" "$url/metrics" | awk '{ print $1, $2 * 1000 }' >>"$samples"
    done
    for i in $(seq 1 5); do
        before=$(ignored)
        old=$(( ($(date +%s) - 40 * 86400 + round * 10 + i) * 1000 ))
        t0=$(ms)
        curl -s -o /dev/null --data-binary "bench,device=c$round$i v=1 $old" "$url/write?precision=ms"
        for _ in $(seq 1 100); do [ "$(ignored)" -gt "$before" ] && break; sleep 0.05; done
        echo "counter $(( $(ms) - t0 ))" >>"$samples"
    done
    for i in $(seq 1 5); do
        now=$(( $(date +%s) * 1000 ))
        t0=$(ms)
        curl -s -o /dev/null --data-binary "bench,device=r$round$i v=1 $now" "$url/write?precision=ms"
        for _ in $(seq 1 200); do
            out=$(curl -s -G "$url/api/v1/export" --data-urlencode "match[]=bench_v{device=\"r$round$i\"}")
            [ -n "$out" ] && break
            sleep 0.05
        done
        echo "readback $(( $(ms) - t0 ))" >>"$samples"
    done
    echo "round $round done" >&2
done
for kind in metrics counter readback; do
    grep "^$kind " "$samples" | awk '{ print $2 }' | sort -n | awk -v k="$kind" '
        { v[NR] = $1 } END { printf "%s: median %.1f ms (%.1f-%.1f), %d samples\n", k, v[int((NR + 1) / 2)], v[1], v[NR], NR }'
done
