#!/bin/bash
# bench/feed_split.sh: where (e) goes, thread by thread. Runs popdns as
# bench/run.sh set it up (bench/work/popdns, after one run.sh), pinned to CPU 0,
# and per round measures (c) and then (e) (the same feed: 20 reporters x 50
# reports/s) for DURATION seconds each, reading CPU ticks per thread from
# /proc/PID/task/*/stat. Prints per round: (c) and (e) per core, the feed
# writer thread's ticks during (e), and (e) per core without the writer.
#
# With QPS set, dnsperf offers that rate (-Q) in both runs, so (c) and (e)
# compare at the same load instead of at what one dnsperf reaches in each.
#
#   bench/feed_split.sh                 # 3 rounds x 10 s, the repo's release build
#   POPDNS=/path/to/popdns ROUNDS=5 bench/feed_split.sh
#   QPS=80000 bench/feed_split.sh       # both at a fixed 80k queries/s
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
QPS=${QPS:-}
DIR=$WORK/popdns
[ -f "$DIR/popdns.yaml" ] && [ -f "$WORK/data/c.bin" ] || die "run bench/run.sh once first (it writes $DIR and $WORK/data)"
PORT=$(sed -n 's/.*dns: \["127.0.0.1:\([0-9]*\)"\].*/\1/p' "$DIR/popdns.yaml")
FEED=$(sed -n 's/.*feed: "\(127.0.0.1:[0-9]*\)".*/\1/p' "$DIR/popdns.yaml")
cd "$DIR"
trap stop_all EXIT
park_kthreads
start_server popdns "$PORT" "$DIR/log" "$POPDNS" serve -c "$DIR/popdns.yaml" || die "popdns did not start"
PID=${SERVER_PID[popdns]}
HZ=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "$1"; }
all() { ticks "/proc/$PID/stat"; }
writer() {
    local f
    for f in /proc/$PID/task/*; do
        [ "$(cat "$f/comm")" = popdns-feed ] && ticks "$f/stat"
    done
}
queries() {
    taskset -c "$CLIENT_CPU" dnsperf -B -d "$WORK/data/c.bin" -s 127.0.0.1 -p "$PORT" -l "$DURATION" \
        -q 300 -b 4096 -t 1 ${QPS:+-Q "$QPS"} 2>&1 | awk '/Queries completed/{print $3}'
}
echo "round  (c)/core  (e)/core  (e)/(c)  writer ticks  writer core  (e)/core without writer"
for r in $(seq 1 "$ROUNDS"); do
    a=$(all); q=$(queries); b=$(all)
    c=$((q * HZ / (b - a)))
    sleep 1
    taskset -c "$CLIENT_CPU" "$PBENCH" feed --to "$FEED" --keys feed-keys.yaml --pops "$WORK/data/pops.tsv" \
        --rate 50 --duration $((DURATION + 2)) 2>/dev/null &
    FPID=$!
    sleep 1
    a=$(all); wa=$(writer); q=$(queries); b=$(all); wb=$(writer)
    wait "$FPID"
    e=$((q * HZ / (b - a)))
    w=$((wb - wa))
    printf '%5d  %8d  %8d  %7.3f  %12d  %11.3f  %d\n' "$r" "$c" "$e" "$(echo "$e / $c" | bc -l)" "$w" \
        "$(echo "$w / ($DURATION * $HZ)" | bc -l)" $((q * HZ / (b - a - w)))
    sleep 1
done
