#!/usr/bin/env bash
# Benchmark of the tunnel's data path beside direct traffic, between the same two pods, in the
# same run (DESIGN.md, "Performance posture"; issue 3, "Tests and benchmarks").
#
#   cargo build --release --workspace --bins     # once; this script builds nothing
#   sudo tests/bench/ztunnel.sh                  # about 9 minutes plus the wait for a quiet machine
#
# It brings up a private 2-node lab (release binaries, a unique name), puts a server pod on
# node-2 (iperf3, sockperf, nginx with a 1 KiB file, the testapp TCP echo) and a client pod on
# node-1, and measures every metric twice: DIRECT (the namespace is not in the mesh: plain TCP
# from pod to pod over the node link) and MESH (the namespace is labelled ambient: the same
# connections go through node-1's ztunnel, HBONE/mTLS over the link, node-2's ztunnel). It
# does so in several rounds (the label is removed and set again; the pods keep running), so
# that a burst of other work on the machine shows as a spread rather than as the result, and
# reports the medians.
#
#   throughput, 1 and 4 streams    iperf3 -t SECONDS [-P 4]
#   1 KiB request/response         sockperf ping-pong -m 1024 -t SECONDS --full-rtt (p50, p99)
#   HTTP keep-alive requests/s     wrk -t1 -c16 -d SECONDS, nginx serving a 1 KiB file
#   HTTP new connections/s         the same with `Connection: close` (one request per connection)
#   ztunnel memory                 VmRSS of the ztunnels idle, and holding CONNS open connections
#                                  (tests/bench/hold_connections.py against the TCP echo)
#
# Network safety: all traffic stays inside the lab's own namespaces; every load is bounded in
# time (and the connection test in count); the lab is brought down on exit, also on failure
# or Ctrl-C.
#
# Settings (environment): BENCH_SECONDS (10) length of each load; BENCH_ROUNDS (3) rounds of
# DIRECT then MESH; BENCH_CONNS (10000) open connections for the memory test; BENCH_MAX_LOAD
# (1.0) and BENCH_LOAD_WAIT (600) wait up to that many seconds for the 1-minute load average
# to drop below that before starting; BENCH_OUT (target/bench/ztunnel-<time>.md) where the
# report is written as well as printed.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

SECONDS_PER_TEST=${BENCH_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-3}
CONNS=${BENCH_CONNS:-10000}
MAX_LOAD=${BENCH_MAX_LOAD:-1.0}
LOAD_WAIT=${BENCH_LOAD_WAIT:-600}
BIN=$ROOT/target/release
OUT=${BENCH_OUT:-$ROOT/target/bench/ztunnel-$(date -u +%Y%m%dT%H%M%SZ).md}
NS=bench
LAB=zb$(( $$ % 100000 ))
export MESH_LAB=$LAB MESH_BIN_DIR=$BIN
STATE=/var/lib/mesh-lab/$LAB
export MESH_MANIFESTS=$STATE/manifests MESH_CONTROLLER=unix:$STATE/controller/status.sock

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

# ---------------------------------------------------------------- preconditions
[[ $(id -u) -eq 0 ]] || die "the lab creates network namespaces: run as root (sudo $0)"
[[ $SECONDS_PER_TEST =~ ^[0-9]+$ && $SECONDS_PER_TEST -ge 1 && $SECONDS_PER_TEST -le 60 ]] \
    || die "BENCH_SECONDS must be 1..60"
[[ $CONNS =~ ^[0-9]+$ && $CONNS -ge 100 && $CONNS -le 15000 ]] || die "BENCH_CONNS must be 100..15000"
[[ $ROUNDS =~ ^[0-9]+$ && $ROUNDS -ge 1 && $ROUNDS -le 9 ]] || die "BENCH_ROUNDS must be 1..9"
for bin in mesh-lab meshctl controller ztunnel testapp; do
    [[ -x $BIN/$bin ]] || die "$BIN/$bin is missing: run \`cargo build --release --workspace --bins\` first"
done
newest_src=$(find ztunnel/src -name '*.rs' -newer "$BIN/ztunnel" | head -1)
[[ -z $newest_src ]] || log "WARNING: $newest_src is newer than $BIN/ztunnel; rebuild to measure the current code"

# Tools, by command and Debian package; sockperf is in Debian (bookworm: 3.7).
declare -A PACKAGES=([iperf3]=iperf3 [sockperf]=sockperf [wrk]=wrk [nginx]=nginx [python3]=python3)
missing=()
for tool in "${!PACKAGES[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("${PACKAGES[$tool]}")
done
if ((${#missing[@]})); then
    for pkg in "${missing[@]}"; do
        apt-cache policy "$pkg" | grep -q 'Candidate: (none)' && die "package $pkg is not available from apt"
    done
    log "installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
PYTHON=$(command -v /usr/bin/python3 || command -v python3)
NOFILE=$(ulimit -Hn)
[[ $NOFILE == unlimited || $NOFILE -ge $((CONNS + 1000)) ]] || die "the open-file limit ($NOFILE) is too low for $CONNS connections"
ulimit -n "$NOFILE"

# ---------------------------------------------------------------- clean-up, always
TMP=$(mktemp -d /tmp/ztbench.XXXXXX)
HOLDER_PID=
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $HOLDER_PID ]]; then kill -- "-$HOLDER_PID" 2>/dev/null || kill "$HOLDER_PID" 2>/dev/null || true; fi
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

# ---------------------------------------------------------------- the lab and the pods
lab() { timeout 120 "$BIN/mesh-lab" "$@" --name "$LAB"; }
meshctl() { timeout 30 "$BIN/meshctl" "$@"; }
# exec_in POD SECONDS COMMAND...: a command in a pod, killed (with its children) after SECONDS.
exec_in() { local pod=$1 limit=$2; shift 2; timeout -k 5 "$limit" "$BIN/mesh-lab" exec "$NS/$pod" --name "$LAB" -- "$@"; }

log "bringing lab $LAB up (release binaries)"
lab up --nodes 2 --no-context >/dev/null

mkdir -p "$TMP/www" "$TMP/nginx"
head -c 1024 /dev/zero | tr '\0' 'x' >"$TMP/www/1k.html"
cat >"$TMP/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    server {
        listen 8080 backlog=4096;
        location / { root $TMP/www; }
    }
}
EOF
chmod -R a+rX "$TMP"

cat >"$TMP/pods.yaml" <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: $NS}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: $NS, labels: {app: server}}
spec:
  nodeName: node-2
  serviceAccountName: server
  containers:
  - {name: echo, image: testapp, command: [bash, -c, "ulimit -n $NOFILE; exec $BIN/testapp serve --http 8081 --tcp-echo 9000"]}
  - {name: iperf3, image: iperf3, command: [iperf3, -s, -p, "5201", --forceflush]}
  - {name: sockperf, image: sockperf, command: [sockperf, server, --tcp, -i, 0.0.0.0, -p, "11111"]}
  - {name: nginx, image: nginx, command: [nginx, -c, $TMP/nginx.conf]}
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
meshctl apply -f "$TMP/pods.yaml" >/dev/null

status_json() { lab status --json; }
# pod_field NAME FIELD
pod_field() {
    status_json | "$PYTHON" -c '
import json, sys
status = json.load(sys.stdin)
pods = status["pods"]["pods"] if isinstance(status["pods"], dict) else status["pods"]
for p in pods:
    if p["namespace"] == sys.argv[1] and p["name"] == sys.argv[2]:
        v = p.get(sys.argv[3]); print("" if v is None else str(v).lower()); break
' "$NS" "$1" "$2"
}
ztunnel_pid() {
    status_json | "$PYTHON" -c '
import json, sys
for p in json.load(sys.stdin)["processes"]:
    if p["component"] == "ztunnel " + sys.argv[1]: print(p["pid"])
' "$1"
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
open_fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# until_ok WHAT SECONDS COMMAND...: retries COMMAND every half second until it succeeds.
until_ok() {
    local what=$1 limit=$2 deadline; shift 2
    deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "timed out after ${limit}s waiting for $what"
        sleep 0.5
    done
}

pods_running() { [[ -n $(pod_field server ip) && -n $(pod_field client ip) ]]; }
until_ok "the pods to run" 60 pods_running
SERVER_IP=$(pod_field server ip)
CLIENT_IP=$(pod_field client ip)
Z1=$(ztunnel_pid node-1)
Z2=$(ztunnel_pid node-2)
[[ -n $Z1 && -n $Z2 ]] || die "no ztunnel pids in mesh-lab status"
log "server $SERVER_IP (node-2), client $CLIENT_IP (node-1); ztunnel pids $Z1 (node-1), $Z2 (node-2)"

port_open() { exec_in client 5 bash -c "exec 3<>/dev/tcp/$SERVER_IP/$1"; }
iperf_listening() { [[ $(lab logs "$NS/server") == *"Server listening on 5201"* ]]; }
servers_ready() {
    for port in 9000 8080 11111; do until_ok "port $port of the server" 30 port_open "$port"; done
    until_ok "iperf3 to listen" 30 iperf_listening
}

# inbound_connections NODE: the mTLS connections the node's ztunnel accepted so far.
inbound_connections() {
    timeout 10 ip netns exec "$LAB-n$1" bash -c \
        "exec 3<>/dev/tcp/127.0.0.1/15020 && printf 'GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n' >&3 && cat <&3" |
        awk '/^istio_tcp_connections_opened_total/ && /reporter="destination"/ && /connection_security_policy="mutual_tls"/ { s += $NF } END { print s + 0 }'
}

# ---------------------------------------------------------------- the measurements
declare -A R   # R[MODE.key.ROUND] = value
declare -A CPU # CPU[MODE.metric.ROUND.NODE] = ztunnel CPU seconds during the load
declare -A LOAD # LOAD[MODE.ROUND] = 1-minute load average before that mode's loads
ROUND=1

run_iperf() { # MODE STREAMS KEY
    local json
    json=$(exec_in client $((SECONDS_PER_TEST + 30)) iperf3 -c "$SERVER_IP" -p 5201 -t "$SECONDS_PER_TEST" -P "$2" -J --connect-timeout 5000) \
        || { sleep 2; json=$(exec_in client $((SECONDS_PER_TEST + 30)) iperf3 -c "$SERVER_IP" -p 5201 -t "$SECONDS_PER_TEST" -P "$2" -J --connect-timeout 5000); } \
        || die "iperf3 -P $2 failed ($1): $json"
    R[$1.$3.$ROUND]=$("$PYTHON" -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))' <<<"$json")
}

run_sockperf() { # MODE
    local out clean
    out=$(exec_in client $((SECONDS_PER_TEST + 30)) sockperf ping-pong --tcp -i "$SERVER_IP" -p 11111 -m 1024 -t "$SECONDS_PER_TEST" --full-rtt 2>&1) \
        || die "sockperf failed ($1): $out"
    clean=$(sed 's/\x1b\[[0-9;]*m//g' <<<"$out")
    R[$1.p50.$ROUND]=$(awk '/percentile 50.000 =/ { print $NF }' <<<"$clean")
    R[$1.p99.$ROUND]=$(awk '/percentile 99.000 =/ { print $NF }' <<<"$clean")
    [[ -n ${R[$1.p50.$ROUND]} && -n ${R[$1.p99.$ROUND]} ]] || die "cannot read sockperf's percentiles ($1): $out"
}

WRK_ERRORS=()
run_wrk() { # MODE KEY [wrk options]
    local mode=$1 key=$2 out errors; shift 2
    out=$(exec_in client $((SECONDS_PER_TEST + 30)) wrk -t1 -c16 -d"${SECONDS_PER_TEST}s" --timeout 5s "$@" "http://$SERVER_IP:8080/1k.html" 2>&1) \
        || die "wrk failed ($mode $key): $out"
    R[$mode.$key.$ROUND]=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' <<<"$out")
    errors=$(grep -E 'Socket errors|Non-2xx' <<<"$out" || true)
    [[ -z $errors ]] || WRK_ERRORS+=("round $ROUND $mode $key: ${errors//$'\n'/; }")
    [[ -n ${R[$mode.$key.$ROUND]} ]] || die "cannot read wrk's rate ($mode $key): $out"
}

# measure MODE METRIC COMMAND...: runs one measurement, noting the tunnels' CPU.
measure() {
    local mode=$1 metric=$2 c1 c2 hz; shift 2
    sleep 2
    c1=$(cpu_ticks "$Z1"); c2=$(cpu_ticks "$Z2"); hz=$(getconf CLK_TCK)
    log "round $ROUND/$ROUNDS $mode: $metric"
    "$@"
    CPU[$mode.$metric.$ROUND.1]=$(awk -v t="$(( $(cpu_ticks "$Z1") - c1 ))" -v hz="$hz" 'BEGIN { printf "%.1f", t / hz }')
    CPU[$mode.$metric.$ROUND.2]=$(awk -v t="$(( $(cpu_ticks "$Z2") - c2 ))" -v hz="$hz" 'BEGIN { printf "%.1f", t / hz }')
}

METRICS=("1 stream" "4 streams" "1 KiB ping-pong" "HTTP keep-alive" "HTTP new connections")
measure_all() { # MODE
    LOAD[$1.$ROUND]=$(load1)
    measure "$1" "1 stream" run_iperf "$1" 1 tput1
    measure "$1" "4 streams" run_iperf "$1" 4 tput4
    measure "$1" "1 KiB ping-pong" run_sockperf "$1"
    measure "$1" "HTTP keep-alive" run_wrk "$1" rps
    measure "$1" "HTTP new connections" run_wrk "$1" cps -H 'Connection: close'
}

# Moving the namespace in and out of the mesh; the pods keep running throughout.
# `enrolled` is the controller's view of the pods; whether the tunnel really carries (or no
# longer carries) their traffic is checked with an echo and node-2's mTLS connection count.
both_enrolled() { [[ $(pod_field server enrolled) == true && $(pod_field client enrolled) == true ]]; }
neither_enrolled() { [[ $(pod_field server enrolled) != true && $(pod_field client enrolled) != true ]]; }
probe_echo() { exec_in client 10 "$BIN/testapp" echo "$SERVER_IP:9000" --message probe --timeout-ms 3000; }
tunnel_used() { local before; before=$(inbound_connections 2); probe_echo && (($(inbound_connections 2) > before)); }
tunnel_unused() { local before; before=$(inbound_connections 2); probe_echo && (($(inbound_connections 2) == before)); }
enroll() {
    log "enrolling namespace $NS"
    meshctl label namespace "$NS" istio.io/dataplane-mode=ambient >/dev/null
    until_ok "both pods to be in the mesh" 60 both_enrolled
    until_ok "traffic to go through the tunnel (mTLS at node-2)" 60 tunnel_used
    servers_ready
}
unenroll() {
    log "taking namespace $NS out of the mesh"
    meshctl label namespace "$NS" istio.io/dataplane-mode- >/dev/null
    until_ok "both pods to leave the mesh" 60 neither_enrolled
    until_ok "traffic to bypass the tunnel" 60 tunnel_unused
    servers_ready
}

[[ $(pod_field server enrolled) != true ]] || die "the namespace is in the mesh before it was labelled"
servers_ready
MESH_TUNNELS=0
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
    # DIRECT: the namespace is not in the mesh.
    ((ROUND == 1)) || unenroll
    measure_all DIRECT
    # MESH: label the namespace; the same pods, now in the mesh, without a restart.
    enroll
    if ((ROUND == 1)); then
        sleep 5
        IDLE1=$(rss_kib "$Z1"); IDLE2=$(rss_kib "$Z2")
        log "ztunnel idle RSS: node-1 ${IDLE1} KiB, node-2 ${IDLE2} KiB"
        # Memory with CONNS open connections through the mesh, before the loads grow the heaps.
        log "opening $CONNS connections through the mesh"
        FDS1_IDLE=$(open_fds "$Z1"); FDS2_IDLE=$(open_fds "$Z2")
        setsid timeout -k 5 300 "$BIN/mesh-lab" exec "$NS/client" --name "$LAB" -- \
            "$PYTHON" "$ROOT/tests/bench/hold_connections.py" "$SERVER_IP" 9000 --count "$CONNS" --hold 15 --deadline 200 \
            >"$TMP/hold.out" 2>&1 &
        HOLDER_PID=$!
        deadline=$((SECONDS + 220))
        until grep -q '^HELD' "$TMP/hold.out"; do
            kill -0 "$HOLDER_PID" 2>/dev/null || die "the connection holder ended early: $(cat "$TMP/hold.out")"
            ((SECONDS < deadline)) || die "the connections did not all open in time: $(cat "$TMP/hold.out")"
            sleep 0.5
        done
        sleep 3
        HELD1=$(rss_kib "$Z1"); HELD2=$(rss_kib "$Z2")
        FDS1=$(open_fds "$Z1"); FDS2=$(open_fds "$Z2")
        log "$(head -1 "$TMP/hold.out"); RSS node-1 ${HELD1} KiB (fds $FDS1_IDLE -> $FDS1), node-2 ${HELD2} KiB (fds $FDS2_IDLE -> $FDS2)"
        wait "$HOLDER_PID" || die "the connection holder failed: $(cat "$TMP/hold.out")"
        HOLDER_PID=
        OPEN_SECONDS=$(awk '/^HELD/ { print $3 }' "$TMP/hold.out")
        sleep 5
        AFTER1=$(rss_kib "$Z1"); AFTER2=$(rss_kib "$Z2")
    fi
    before=$(inbound_connections 2)
    measure_all MESH
    counted=$(( $(inbound_connections 2) - before ))
    ((counted > 0)) || die "node-2's ztunnel counted no mTLS connections during the MESH loads of round $ROUND"
    MESH_TUNNELS=$((MESH_TUNNELS + counted))
done
sleep 5
LOADED1=$(rss_kib "$Z1"); LOADED2=$(rss_kib "$Z2")
END_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- the report
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
# per_round MODE KEY: the values of every round.
per_round() { local r; for ((r = 1; r <= ROUNDS; r++)); do echo "${R[$1.$2.$r]}"; done; }
# ratios KEY / deltas KEY: mesh against direct, round by round.
ratios() { local r; for ((r = 1; r <= ROUNDS; r++)); do awk -v m="${R[MESH.$1.$r]}" -v d="${R[DIRECT.$1.$r]}" 'BEGIN { printf "%.2f\n", m / d }'; done; }
deltas() { local r; for ((r = 1; r <= ROUNDS; r++)); do awk -v m="${R[MESH.$1.$r]}" -v d="${R[DIRECT.$1.$r]}" 'BEGIN { printf "%.1f\n", m - d }'; done; }
spread() { # the median, and the range when there are several rounds
    local m; m=$(fmt %.2f "$(median "$@")")
    if ((ROUNDS > 1)); then printf '%s (%s – %s)' "$m" "$(printf '%s\n' "$@" | sort -g | head -1)" "$(printf '%s\n' "$@" | sort -g | tail -1)"; else printf '%s' "$m"; fi
}
ge() { awk -v a="$1" -v b="$2" 'BEGIN { print (a >= b) ? "yes" : "**no**" }'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { print (a <= b) ? "yes" : "**no**" }'; }
row() { printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$@"; }
fmt() { awk -v v="$2" -v f="$1" 'BEGIN { printf f, v }'; }
ratio_row() { # label key istio goal-ratio unit value-format
    local list; mapfile -t list < <(ratios "$2")
    row "$1" "$(fmt "$6" "$(median $(per_round DIRECT "$2"))") $5" "$(fmt "$6" "$(median $(per_round MESH "$2"))") $5" \
        "$(spread "${list[@]}")" "$3" "≥ $4" "$(ge "$(median "${list[@]}")" "$4")"
}
delta_row() { # label key istio [goal: the most µs the mesh may add]
    local list m low high
    mapfile -t list < <(deltas "$2")
    m=$(median "${list[@]}")
    low=$(printf '%s\n' "${list[@]}" | sort -g | head -1); high=$(printf '%s\n' "${list[@]}" | sort -g | tail -1)
    row "$1" "$(fmt %.1f "$(median $(per_round DIRECT "$2"))") µs" "$(fmt %.1f "$(median $(per_round MESH "$2"))") µs" \
        "$(awk -v m="$m" -v l="$low" -v h="$high" -v n="$ROUNDS" 'BEGIN { printf "%+.1f µs", m; if (n > 1) printf " (%+.1f – %+.1f)", l, h }')" \
        "$3" "$([[ -n ${4:-} ]] && echo "≤ +$4 µs" || echo –)" "$([[ -n ${4:-} ]] && le "$m" "$4" || echo –)"
}
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
per_conn() { awk -v h="$1" -v i="$2" -v n="$3" 'BEGIN { printf "%.2f", (h - i) / n }'; }

PC1=$(per_conn "$HELD1" "$IDLE1" "$CONNS")
PC2=$(per_conn "$HELD2" "$IDLE2" "$CONNS")
{
    echo "Run $(date -u '+%Y-%m-%d %H:%M UTC'), lab $LAB, $ROUNDS round(s) of DIRECT then MESH, ${SECONDS_PER_TEST} s per load, ztunnel --worker-threads 2 (default)."
    echo "Machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, kernel $(uname -r)."
    echo "Load average (1/5/15 min): $START_LOAD at the start, $END_LOAD at the end."
    echo
    echo "Medians over the rounds; mesh/direct is the median of the rounds' ratios (their range in brackets); met? judges the median."
    echo
    row metric direct mesh "mesh/direct" "Istio ratio" goal "met?"
    row --- --- --- --- --- --- ---
    ratio_row "throughput, 1 stream" tput1 0.32 0.5 Gbit/s %.2f
    ratio_row "throughput, 4 streams" tput4 0.14 0.25 Gbit/s %.2f
    delta_row "1 KiB req/resp RTT p50" p50 "+26 µs" 15
    delta_row "1 KiB req/resp RTT p99" p99 "–"
    ratio_row "HTTP keep-alive" rps 0.21 0.3 req/s %.0f
    ratio_row "HTTP new connections" cps 0.20 0.3 conn/s %.0f
    row "ztunnel RSS idle, node-1" "–" "$(mib "$IDLE1") MiB" "–" "–" "< 15 MiB" "$(le "$(mib "$IDLE1")" 15)"
    row "ztunnel memory per open connection, node-1 (client side)" "–" "$PC1 KiB" "–" "–" "< 4 KiB" "$(le "$PC1" 4)"
    row "ztunnel memory per open connection, node-2 (server side)" "–" "$PC2 KiB" "–" "–" "< 4 KiB" "$(le "$PC2" 4)"
    echo
    echo "Every round (1-minute load average before the mode's loads):"
    echo
    echo "| round | mode | load | 1 stream Gbit/s | 4 streams Gbit/s | RTT p50 µs | RTT p99 µs | keep-alive req/s | new conn/s |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    for ((r = 1; r <= ROUNDS; r++)); do
        for mode in DIRECT MESH; do
            echo "| $r | $mode | ${LOAD[$mode.$r]} | ${R[$mode.tput1.$r]} | ${R[$mode.tput4.$r]} | ${R[$mode.p50.$r]} | ${R[$mode.p99.$r]} | ${R[$mode.rps.$r]} | ${R[$mode.cps.$r]} |"
        done
    done
    echo
    echo "Memory (VmRSS, KiB): node-1 idle $IDLE1, with $CONNS connections $HELD1, 5 s after closing them $AFTER1, after all the MESH loads $LOADED1;"
    echo "node-2 idle $IDLE2, with $CONNS connections $HELD2, after closing $AFTER2, after the MESH loads $LOADED2."
    echo "Open file descriptors: node-1 $FDS1_IDLE -> $FDS1, node-2 $FDS2_IDLE -> $FDS2; the $CONNS connections opened and echoed in ${OPEN_SECONDS} s."
    echo "Per-connection memory = (RSS with $CONNS open - RSS idle) / $CONNS. Latency is the full round trip (sockperf --full-rtt); sockperf's default one-way figure is half of it."
    echo "Node-2's ztunnel counted $MESH_TUNNELS mTLS connections during the MESH loads."
    echo
    echo "ztunnel CPU seconds during each MESH load, median over the rounds (node-1 / node-2):"
    for m in "${METRICS[@]}"; do
        c1=(); c2=()
        for ((r = 1; r <= ROUNDS; r++)); do c1+=("${CPU[MESH.$m.$r.1]}"); c2+=("${CPU[MESH.$m.$r.2]}"); done
        echo "- $m: $(fmt %.1f "$(median "${c1[@]}")") / $(fmt %.1f "$(median "${c2[@]}")")"
    done
    for e in "${WRK_ERRORS[@]}"; do echo "- wrk reported for $e"; done
} | tee "$TMP/report.md"
mkdir -p "$(dirname "$OUT")"
cp "$TMP/report.md" "$OUT"
log "report written to $OUT"
