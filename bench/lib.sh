# shellcheck shell=bash
# bench/lib.sh: shared by run.sh and scale.sh (sourced, not run).
# Installs what the benchmark needs, builds popdns and the helpers, starts and
# stops servers (only the ones it started, by pid), pins them to CPU 0.

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH")
GEO=${GEO:-$(cd "$REPO/.." && pwd)/shared/geo}
WORK=${WORK:-$BENCH/work}          # generated configs, workloads, binaries (git-ignored)
PBENCH=$BENCH/tools/target/release/pbench
POPDNS=${POPDNS:-$REPO/target/release/popdns}   # another build to measure: POPDNS=/path/to/popdns
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Run the harness itself (and so dnsperf, the feed and the meter) on CLIENT_CPU.
pin_self() {
    if [ "${BENCH_PINNED:-}" != 1 ] && [ "$(nproc --all)" -ge 2 ]; then
        export BENCH_PINNED=1
        exec taskset -c "$CLIENT_CPU" bash "$0" "$@"
    fi
}

# apt packages for the peers and the load generator. policy-rc.d exiting 101
# keeps the packages' daemons (nsd, knot, gdnsd, pdns) from starting on :53
# (removed again only if we created it).
install_deps() {
    local need=()
    command -v dnsperf >/dev/null || need+=(dnsperf)
    command -v gdnsd >/dev/null || need+=(gdnsd)
    command -v knotd >/dev/null || need+=(knot)
    [ -e /usr/lib/x86_64-linux-gnu/knot/modules-3.2/geoip.so ] || ls /usr/lib/*/knot/modules-*/geoip.so >/dev/null 2>&1 || need+=(knot-module-geoip)
    command -v nsd >/dev/null || need+=(nsd)
    command -v pdns_server >/dev/null || need+=(pdns-server)
    ls /usr/lib/*/pdns/libgeoipbackend.so >/dev/null 2>&1 || need+=(pdns-backend-geoip)
    command -v cc >/dev/null || need+=(gcc libc6-dev)
    if [ "${PERF:-0}" = 1 ] && ! command -v perf >/dev/null; then need+=(linux-perf); fi
    if [ ${#need[@]} -gt 0 ]; then
        [ "$(id -u)" = 0 ] || die "need root to install: ${need[*]}"
        local made_policy=0
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
            chmod +x /usr/sbin/policy-rc.d
            made_policy=1
        fi
        log "installing: ${need[*]}"
        apt-get update -q >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >&2
        [ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
    fi
    # gdnsd's run and state directories are compiled in.
    mkdir -p /run/gdnsd /var/lib/gdnsd
}

build_all() {
    mkdir -p "$WORK/bin"
    if [ "${SKIP_BUILD:-0}" != 1 ]; then
        log "building popdns (release)"
        (cd "$REPO" && cargo build --release -q) || die "cargo build of popdns failed"
    fi
    [ -x "$POPDNS" ] || die "$POPDNS missing"
    log "building bench helpers"
    (cd "$BENCH/tools" && cargo build --release -q) || die "cargo build of bench/tools failed"
    cc -O2 -Wall -o "$WORK/bin/bare" "$BENCH/tools/bare.c" || die "cc bare.c failed"
}

# All pids of the process tree under $1 (itself included).
tree_pids() {
    local root=$1
    ps -e -o pid=,ppid= | awk -v root="$root" '
        { parent[$1] = $2; pids[NR] = $1 }
        END {
            keep[root] = 1; changed = 1
            while (changed) { changed = 0
                for (i in pids) { p = pids[i]; if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; changed = 1 } } }
            for (p in keep) if (p != "") print p
        }'
}

# Pin every thread of every process of the tree to SERVER_CPU.
pin_tree() {
    local p
    for p in $(tree_pids "$1"); do
        taskset -a -p -c "$SERVER_CPU" "$p" >/dev/null 2>&1 || true
    done
}

port_free() {
    ! ss -Hlun "sport = :$1" 2>/dev/null | grep -q . && ! ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
}

declare -A SERVER_PID=()

# The popdns build measured, for versions.txt: the checkout's commit, or
# the binary given in POPDNS (whose commit the checkout cannot vouch for).
popdns_version() {
    local head
    head=$(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null)
    (cd "$REPO" && git diff --quiet HEAD -- src Cargo.toml 2>/dev/null) || head="$head (+ uncommitted changes in src/)"
    if [ "$POPDNS" = "$REPO/target/release/popdns" ]; then
        echo "$head"
    else
        echo "$POPDNS, given in POPDNS (the checkout is at $head)"
    fi
}

# start_server NAME PORT LOGFILE CMD...: start under taskset on SERVER_CPU, wait
# for an answer (time to first answer in $WORK/NAME.ttfa), pin its whole tree.
start_server() {
    local name=$1 port=$2 logf=$3
    shift 3
    port_free "$port" || die "port $port (for $name) is in use"
    local t0
    t0=$(date +%s%N)
    taskset -c "$SERVER_CPU" "$@" >"$logf" 2>&1 &
    local pid=$!
    SERVER_PID[$name]=$pid
    if ! "$PBENCH" probe --addr "127.0.0.1:$port" --ecs 115.236.1.0/24 --t0-ns "$t0" \
        --timeout "${START_TIMEOUT:-180}" >"$WORK/$name.ttfa" 2>&1; then
        log "$name did not answer; its log:"
        tail -20 "$logf" >&2
        return 1
    fi
    pin_tree "$pid"
    log "$name up (pid $pid, $(cut -d' ' -f1 "$WORK/$name.ttfa"), rss $(rss_mib "$pid") MiB)"
}

# rss_mib PID [VmRSS|VmHWM]: summed over the process tree, MiB.
rss_mib() {
    local kb=0 p v field=${2:-VmRSS}
    for p in $(tree_pids "$1"); do
        v=$(awk -v f="$field:" '$1 == f {print $2}' "/proc/$p/status" 2>/dev/null || true)
        kb=$((kb + ${v:-0}))
    done
    echo $((kb / 1024))
}

stop_server() {
    local name=$1 pid=${SERVER_PID[$1]:-}
    [ -n "$pid" ] || return 0
    local pids
    pids=$(tree_pids "$pid")
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    unset "SERVER_PID[$name]"
}

stop_all() {
    local n
    for n in "${!SERVER_PID[@]}"; do stop_server "$n"; done
    unpark_kthreads
}

# Kernel threads that wake on a timer and then run for milliseconds. On this
# VM kdamond (DAMON sampling physical memory every 0.5 s) takes 1.5-2 ms of
# the core it lands on twice a second: on the server's core that stalls the
# server (about 35 responses at 20k qps held up each time, a spike in p99),
# on the load core it delays dnsperf. Where it lands was chance, so one
# server's p99 carried it and the next one's did not. Parked on CLIENT_CPU for
# the run, it costs every server alike. Restored by stop_all.
declare -A PARKED_KTHREADS=()
park_kthreads() {
    local pid mask
    [ "$(nproc --all)" -ge 2 ] || return 0
    for pid in $(pgrep '^kdamond' 2>/dev/null); do
        mask=$(taskset -p "$pid" 2>/dev/null | awk '{print $NF}') || continue
        if taskset -p -c "$CLIENT_CPU" "$pid" >/dev/null 2>&1; then
            PARKED_KTHREADS[$pid]=$mask
            log "parked kernel thread $(cat "/proc/$pid/comm" 2>/dev/null) (pid $pid) on CPU $CLIENT_CPU for the run"
        fi
    done
}

unpark_kthreads() {
    local pid
    for pid in "${!PARKED_KTHREADS[@]}"; do
        taskset -p "${PARKED_KTHREADS[$pid]}" "$pid" >/dev/null 2>&1 || true
        unset "PARKED_KTHREADS[$pid]"
    done
}

# What both scripts need first: the real databases, the packages, the builds.
prepare() {
    if [ ! -r "$GEO/city.mmdb" ] || [ ! -r "$GEO/asn.mmdb" ]; then die "real databases not found in $GEO (set GEO=)"; fi
    install_deps
    build_all
    park_kthreads
}
