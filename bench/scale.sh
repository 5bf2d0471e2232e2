#!/usr/bin/env bash
# bench/scale.sh: start-up time (time to first answer) and RSS of popdns with
# the full databases, for the benchmark's own config and for generated
# inventories of SCALE_POPS POPs x SCALE_NAMES scheduled names.
#
#   bench/scale.sh                                   # 1 + 3x3 configs, a few minutes
#   SCALE_POPS="10 1000" SCALE_NAMES="10 1000000" bench/scale.sh
#
# Per config: popdns serve on CPU 0 (workers: 1); time from spawn to the first
# answer with an address (ECS 115.236.1.0/24, polled every 5 ms); RSS (VmRSS
# of the process) at that moment; then LOAD_SECONDS of workload (c) with
# dnsperf and RSS and peak RSS (VmHWM) again, since mapped database pages and
# caches are only touched under load. Results: bench/results/<date>-scale/.
set -euo pipefail

source "$(dirname "$0")/lib.sh"
pin_self "$@"

SCALE_POPS=${SCALE_POPS:-10 100 1000}
SCALE_NAMES=${SCALE_NAMES:-10 10000 1000000}
LOAD_SECONDS=${LOAD_SECONDS:-3}
START_TIMEOUT=${START_TIMEOUT:-300}
PORT=${SCALE_PORT:-15390}
OUT=${OUT:-$BENCH/results/$(date +%Y%m%d-%H%M%S)-scale}
mkdir -p "$OUT" "$WORK/scale"

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_all
    exit $rc
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

prepare

# Workload (c) for the load phase (the same sample run.sh uses).
if [ ! -s "$WORK/data/c.bin" ]; then
    mkdir -p "$WORK/data"
    "$PBENCH" sample --city "$GEO/city.mmdb" --asn "$GEO/asn.mmdb" --n "${N24:-200000}" --out "$WORK/data/samples.tsv"
    "$PBENCH" workloads --samples "$WORK/data/samples.tsv" --out "$WORK/data"
fi

{
    echo "date: $(date -u +%FT%TZ)"
    echo "popdns: $(popdns_version)"
    echo "settings: SCALE_POPS='$SCALE_POPS' SCALE_NAMES='$SCALE_NAMES' LOAD_SECONDS=$LOAD_SECONDS"
} | tee "$OUT/versions.txt" >&2

kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

printf '| config | POPs | scheduled names | zone file MiB | time to first answer ms | RSS at first answer MiB | RSS after %ss of (c) MiB | peak RSS MiB | (c) qps |\n' "$LOAD_SECONDS" | tee "$OUT/table.md"
printf '|---|---|---|---|---|---|---|---|---|\n' | tee -a "$OUT/table.md"

# measure_config LABEL DIR NPOPS NNAMES
measure_config() {
    local label=$1 dir=$2 npops=$3 nnames=$4 t0 pid ttfa rss0 rss1 hwm qps zmb
    zmb=$(du -cm "$dir"/zones/*.yaml | tail -1 | cut -f1)
    port_free "$PORT" || die "port $PORT is in use"
    t0=$(date +%s%N)
    NO_COLOR=1 taskset -c "$SERVER_CPU" "$POPDNS" serve -c "$dir/popdns.yaml" >"$OUT/$label.log" 2>&1 &
    pid=$!
    SERVER_PID[popdns]=$pid
    if ! "$PBENCH" probe --addr "127.0.0.1:$PORT" --ecs 115.236.1.0/24 --t0-ns "$t0" --timeout "$START_TIMEOUT" >"$OUT/$label.ttfa" 2>&1; then
        log "$label: no answer within ${START_TIMEOUT}s"
        tail -5 "$OUT/$label.log" >&2
        printf '| %s | %s | %s | %s | no answer in %ss | %s | - | - | - |\n' "$label" "$npops" "$nnames" "$zmb" "$START_TIMEOUT" \
            "$(($(kb "$pid" VmRSS) / 1024))" | tee -a "$OUT/table.md"
        stop_server popdns
        return 0
    fi
    ttfa=$(sed -n 's/^ttfa_ms=\([0-9.]*\).*/\1/p' "$OUT/$label.ttfa")
    rss0=$(($(kb "$pid" VmRSS) / 1024))
    pin_tree "$pid"
    dnsperf -B -d "$WORK/data/c.bin" -s 127.0.0.1 -p "$PORT" -l "$LOAD_SECONDS" -q 300 -b 4096 -t 1 >"$OUT/$label.dnsperf" 2>&1 || true
    qps=$(awk '/Queries per second/ {printf "%.0f", $4}' "$OUT/$label.dnsperf")
    rss1=$(($(kb "$pid" VmRSS) / 1024))
    hwm=$(($(kb "$pid" VmHWM) / 1024))
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$label" "$npops" "$nnames" "$zmb" "$ttfa" "$rss0" "$rss1" "$hwm" "${qps:-?}" | tee -a "$OUT/table.md"
    stop_server popdns
}

# The benchmark's own config: the repo's POP inventory, one scheduled name.
base=$WORK/scale/base
mkdir -p "$base/zones"
"$PBENCH" scale-gen --pops 1 --names 1 --out "$base" --city "$GEO/city.mmdb" --asn "$GEO/asn.mmdb" --port "$PORT" 2>/dev/null
cp "$REPO/pops.yaml" "$base/pops.yaml"
measure_config repo-pops "$base" "$(grep -c '^- ' "$REPO/pops.yaml")" 1

for np in $SCALE_POPS; do
    for nn in $SCALE_NAMES; do
        d=$WORK/scale/p$np-n$nn
        mkdir -p "$d"
        "$PBENCH" scale-gen --pops "$np" --names "$nn" --out "$d" --city "$GEO/city.mmdb" --asn "$GEO/asn.mmdb" --port "$PORT" 2>/dev/null
        measure_config "p$np-n$nn" "$d" "$np" "$nn"
    done
done
echo "raw output: $OUT"
