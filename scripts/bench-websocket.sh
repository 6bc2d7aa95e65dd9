#!/usr/bin/env bash
# bench-websocket.sh — ptkit's websocket transport (ws and wss pairs) against raw TCP loopback,
# websockify and obfs4proxy, all on 127.0.0.1, in one run: throughput both ways, connection
# setup, PT CPU seconds per GiB, and server memory per idle tunnel.
#
# Usage:
#   scripts/bench-websocket.sh [--bytes N] [--wss-bytes N] [--slow-bytes N] [--count K]
#                              [--reps R] [--idle N] [--idle-websockify N] [--no-build] [--keep]
#
#   --bytes            bytes per throughput run for raw TCP and the ws pair (default 1 GiB)
#   --wss-bytes        bytes per throughput run for the wss pair (default 512 MiB)
#   --slow-bytes       bytes per throughput run for websockify and obfs4proxy (default 256 MiB)
#   --count            sequential connections timed for connection setup (default 200)
#   --reps             repetitions of each throughput run; the table shows the median (3)
#   --idle             idle tunnels held open against ptkit's and obfs4proxy's servers (10000;
#                      capped so 2 sockets per tunnel fit in the open-files hard limit)
#   --idle-websockify  idle tunnels held open against websockify, which forks a Python
#                      process per connection (default 200)
#   --no-build         use the existing release binaries
#   --keep             keep the temp dir (logs, raw result lines) and print its path
#
# Binaries come from ${CARGO_TARGET_DIR:-target}/release: ptkit, examples/loadgen and
# examples/idle_tunnels. Paths measured (1 connection; loadgen server is the target):
#   raw         loadgen client -> loadgen server
#   ws          loadgen -SOCKS5-> ptkit client websocket =ws=> ptkit server websocket -> loadgen
#   wss         as ws, over TLS (self-signed P-256 cert for ws.test, client --ca-file)
#   websockify  loadgen -SOCKS5-> ptkit client websocket =ws=> websockify -> loadgen
#   obfs4       loadgen -SOCKS5-> obfs4proxy client =obfs4=> obfs4proxy server -> loadgen
# "PT CPU" = utime+stime from /proc/<pid>/stat of the PT client and server over that path's
# throughput runs, per GiB carried; websockify's forked children are included (live ones
# directly, reaped ones through the parent's cutime+cstime). "idle KiB/tunnel" = growth of the
# server's VmRSS (websockify: summed over parent and children, and PSS) from just before the
# first tunnel to 1 s after the last one is open, divided by the tunnels open; each tunnel has
# completed the upgrade (or obfs4 handshake) and echoed one byte through the server's TCP
# connection to the target, then sits idle.
# Exit: 0 measured (targets are reported, not enforced), 1 a measurement failed, 2 setup error.
set -euo pipefail

BYTES=$((1 << 30))
WSS_BYTES=$((512 << 20))
SLOW_BYTES=$((256 << 20))
COUNT=200
REPS=3
IDLE=10000
IDLE_WSK=200
BUILD=1
KEEP=0
STEP_TIMEOUT=90  # seconds, per loadgen client run
OPEN_SECS=120    # seconds allowed for opening all idle tunnels
OBFS4_BIN=/usr/bin/obfs4proxy
WSK_BIN="$(command -v websockify || echo /usr/bin/websockify)"

die_setup() { echo "SETUP ERROR: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --bytes)           [ $# -ge 2 ] || die_setup "$1 needs a value"; BYTES="$2"; shift 2 ;;
    --wss-bytes)       [ $# -ge 2 ] || die_setup "$1 needs a value"; WSS_BYTES="$2"; shift 2 ;;
    --slow-bytes)      [ $# -ge 2 ] || die_setup "$1 needs a value"; SLOW_BYTES="$2"; shift 2 ;;
    --count)           [ $# -ge 2 ] || die_setup "$1 needs a value"; COUNT="$2"; shift 2 ;;
    --reps)            [ $# -ge 2 ] || die_setup "$1 needs a value"; REPS="$2"; shift 2 ;;
    --idle)            [ $# -ge 2 ] || die_setup "$1 needs a value"; IDLE="$2"; shift 2 ;;
    --idle-websockify) [ $# -ge 2 ] || die_setup "$1 needs a value"; IDLE_WSK="$2"; shift 2 ;;
    --no-build)        BUILD=0; shift ;;
    --keep)            KEEP=1; shift ;;
    -h|--help)         sed -n '2,38p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *)                 die_setup "unknown argument: $1 (see --help)" ;;
  esac
done

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
if [ "$BUILD" = 1 ]; then
  echo "== building (release)" >&2
  cargo build --release -p ptkit --bins --examples >&2 || die_setup "cargo build failed"
fi
PTKIT="$TARGET_DIR/release/ptkit"
LOADGEN="$TARGET_DIR/release/examples/loadgen"
IDLER="$TARGET_DIR/release/examples/idle_tunnels"
for b in "$PTKIT" "$LOADGEN" "$IDLER"; do [ -x "$b" ] || die_setup "$b missing"; done
command -v openssl >/dev/null || die_setup "openssl missing"
HAVE_OBFS4=1; [ -x "$OBFS4_BIN" ] || { echo "note: $OBFS4_BIN missing; skipping obfs4" >&2; HAVE_OBFS4=0; }
HAVE_WSK=1; [ -x "$WSK_BIN" ] || { echo "note: websockify missing (apt-get install -y websockify); skipping it" >&2; HAVE_WSK=0; }

# Open files: raise the soft limit to the hard one (at most 65536) for every process started
# below. Each idle tunnel holds two sockets in the server (client side + target side).
HARD="$(ulimit -Hn)"
[ "$HARD" = unlimited ] && HARD=65536
NOFILE=$(( HARD < 65536 ? HARD : 65536 ))
ulimit -n "$NOFILE" || die_setup "cannot raise ulimit -n to $NOFILE"
IDLE_MAX=$(( (NOFILE - 100) / 2 ))
IDLE_ASKED="$IDLE"
if [ "$IDLE" -gt "$IDLE_MAX" ]; then
  echo "note: ulimit -n is $NOFILE (hard limit); holding $IDLE_MAX idle tunnels instead of $IDLE" >&2
  IDLE="$IDLE_MAX"
fi

TMP="$(mktemp -d /tmp/ptkit-bench-ws.XXXXXX)"
PIDS=()   # plain processes we started
PGIDS=()  # websockify sessions (setsid), killed as a group
cleanup() {
  local p
  for p in "${PGIDS[@]}"; do kill -- "-$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}" "${PGIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  exec 3>&- 2>/dev/null || true
  if [ "$KEEP" = 1 ]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# stop PID...: kill processes we started and reap them.
stop() {
  local p
  for p in "$@"; do kill "$p" 2>/dev/null || true; done
  for p in "$@"; do wait "$p" 2>/dev/null || true; done
}
# stop_group PGID: kill a setsid'd process group (websockify and its children).
stop_group() {
  kill -- "-$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  for _ in $(seq 1 50); do
    [ -z "$(ps -o pid= --sid "$1" 2>/dev/null)" ] && return 0
    sleep 0.1
  done
}

# wait_for FILE REGEX: print the first match of REGEX in FILE, polling for up to 10 s.
wait_for() {
  local m
  for _ in $(seq 1 100); do
    m="$(grep -Eo "$2" "$1" 2>/dev/null | head -n 1 || true)"
    if [ -n "$m" ]; then echo "$m"; return 0; fi
    sleep 0.1
  done
  echo "SETUP ERROR: nothing matching /$2/ in $1:" >&2
  cat "$1" >&2 || true
  return 1
}
# wait_port PORT: wait up to 10 s for something to listen on 127.0.0.1:PORT.
wait_port() {
  for _ in $(seq 1 100); do
    if (exec 9<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

HZ="$(getconf CLK_TCK)"
# stat_fields PID: /proc/PID/stat from utime on ($1 utime, $2 stime, $3 cutime, $4 cstime).
stat_fields() { sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f12-15; }
# cpu_ticks PID...: summed utime+stime of the given processes.
cpu_ticks() {
  local p total=0
  for p in "$@"; do
    total=$((total + $(stat_fields "$p" | awk '{print $1 + $2}')))
  done
  echo "$total"
}
# cpu_ticks_group LEADER: the leader's utime+stime+cutime+cstime (its reaped children) plus
# utime+stime of the session's live processes.
cpu_ticks_group() {
  local total p v
  total="$(stat_fields "$1" | awk '{print $1 + $2 + $3 + $4}')"
  for p in $(ps -o pid= --sid "$1" 2>/dev/null); do
    [ "$p" = "$1" ] && continue
    v="$(stat_fields "$p" | awk '{print $1 + $2}')"
    total=$((total + ${v:-0}))
  done
  echo "$total"
}
# quiesce LEADER: wait up to 5 s until the session leader has no children left (so a child
# is never counted both live and, once reaped, in the leader's cutime).
quiesce() {
  for _ in $(seq 1 50); do
    [ -z "$(ps -o pid= --ppid "$1" 2>/dev/null)" ] && return 0
    sleep 0.1
  done
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# group_mem LEADER: "RSS_KiB PSS_KiB" summed over the session's processes.
group_mem() {
  local p r=0 s=0 a b
  for p in $(ps -o pid= --sid "$1"); do
    a="$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)"
    b="$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)"
    r=$((r + ${a:-0})); s=$((s + ${b:-0}))
  done
  echo "$r $s"
}

# ---- processes -------------------------------------------------------------------------------
# start_loadgen NAME: a loadgen server; sets LG_PID, LG_ADDR.
start_loadgen() {
  "$LOADGEN" server --listen 127.0.0.1:0 --max-secs 900 --idle-secs 600 \
    >"$TMP/$1.out" 2>"$TMP/$1.err" &
  LG_PID=$!; PIDS+=($!)
  LG_ADDR="$(wait_for "$TMP/$1.out" 'listen=[0-9.]+:[0-9]+' | cut -d= -f2)"
}
# start_ws_server NAME TARGET [ARGS...]: sets WS_S_PID, WS_S_ADDR.
start_ws_server() {
  local name="$1" target="$2"; shift 2
  env -u RUST_LOG "$PTKIT" --log-level info server websocket --listen 127.0.0.1:0 \
    --target "$target" --state-dir "$TMP/state" "$@" >/dev/null 2>"$TMP/$name.err" &
  WS_S_PID=$!; PIDS+=($!)
  WS_S_ADDR="$(wait_for "$TMP/$name.err" 'on 127\.0\.0\.1:[0-9]+' | cut -d' ' -f2)"
}
# start_ws_client NAME ARGS...: sets WS_C_PID, WS_C_ADDR (its SOCKS port).
start_ws_client() {
  local name="$1"; shift
  env -u RUST_LOG "$PTKIT" --log-level info client websocket --listen 127.0.0.1:0 "$@" \
    >/dev/null 2>"$TMP/$name.err" &
  WS_C_PID=$!; PIDS+=($!)
  WS_C_ADDR="$(wait_for "$TMP/$name.err" 'on 127\.0\.0\.1:[0-9]+' | cut -d' ' -f2)"
}
# start_websockify NAME TARGET: in its own session; sets WSK_PID, WSK_PORT.
start_websockify() {
  WSK_PORT="$(free_port)"
  setsid "$WSK_BIN" "127.0.0.1:$WSK_PORT" "$2" >"$TMP/$1.out" 2>&1 &
  WSK_PID=$!; PGIDS+=($!)
  wait_port "$WSK_PORT" || { cat "$TMP/$1.out" >&2; die_setup "websockify did not start"; }
}
# start_obfs4 NAME ORPORT: a managed-mode obfs4proxy server + client (as scripts/bench.sh);
# sets O4_S_PID, O4_C_PID, O4_S, O4_C, O4_ARGS.
start_obfs4() {
  local name="$1" orport="$2" sline cline cert iat
  if [ ! -p "$TMP/stdin" ]; then
    # Keep stdin open: a FIFO opened read-write by this shell never reports EOF.
    mkfifo "$TMP/stdin"
    exec 3<>"$TMP/stdin"
  fi
  mkdir -p "$TMP/$name-server" "$TMP/$name-client"
  env TOR_PT_MANAGED_TRANSPORT_VER=1 TOR_PT_STATE_LOCATION="$TMP/$name-server" \
    TOR_PT_SERVER_TRANSPORTS=obfs4 TOR_PT_SERVER_BINDADDR=obfs4-127.0.0.1:0 \
    TOR_PT_ORPORT="$orport" "$OBFS4_BIN" <&3 >"$TMP/$name-server.out" 2>&1 &
  O4_S_PID=$!; PIDS+=($!)
  env TOR_PT_MANAGED_TRANSPORT_VER=1 TOR_PT_STATE_LOCATION="$TMP/$name-client" \
    TOR_PT_CLIENT_TRANSPORTS=obfs4 "$OBFS4_BIN" <&3 >"$TMP/$name-client.out" 2>&1 &
  O4_C_PID=$!; PIDS+=($!)
  sline="$(wait_for "$TMP/$name-server.out" '^SMETHOD obfs4 .*')"
  cline="$(wait_for "$TMP/$name-client.out" '^CMETHOD obfs4 socks5 .*')"
  O4_S="$(echo "$sline" | awk '{print $3}')"
  O4_C="$(echo "$cline" | awk '{print $4}')"
  cert="$(echo "$sline" | sed -n 's/.*ARGS:.*cert=\([^,]*\).*/\1/p')"
  iat="$(echo "$sline" | sed -n 's/.*iat-mode=\([0-9]\).*/\1/p')"
  [ -n "$cert" ] || die_setup "no cert in: $sline"
  O4_ARGS="cert=$cert;iat-mode=${iat:-0}"
}

# Self-signed P-256 certificate for ws.test. CA:FALSE because webpki refuses a CA
# certificate as the server's own (CaUsedAsEndEntity); the client trusts it via --ca-file.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=ws.test -addext subjectAltName=DNS:ws.test \
  -addext basicConstraints=critical,CA:FALSE \
  -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>"$TMP/openssl.err" \
  || { cat "$TMP/openssl.err" >&2; die_setup "openssl failed"; }

start_loadgen loadgen; LG="$LG_ADDR"
start_ws_server ws-server "$LG"; WS_S="$WS_S_ADDR"; WS_S_PIDX="$WS_S_PID"
start_ws_client ws-client --url "ws://$WS_S/"; WS_C="$WS_C_ADDR"; WS_C_PIDX="$WS_C_PID"
start_ws_server wss-server "$LG" --tls-cert "$TMP/cert.pem" --tls-key "$TMP/key.pem"
WSS_S="$WS_S_ADDR"; WSS_S_PIDX="$WS_S_PID"
start_ws_client wss-client --url "wss://ws.test:${WSS_S##*:}/" --server "$WSS_S" \
  --ca-file "$TMP/cert.pem"
WSS_C="$WS_C_ADDR"; WSS_C_PIDX="$WS_C_PID"
PATHS=(raw ws wss)
if [ "$HAVE_WSK" = 1 ]; then
  start_websockify websockify "$LG"; WSK_PIDX="$WSK_PID"
  start_ws_client wsk-client --url "ws://127.0.0.1:$WSK_PORT/"; WSK_C="$WS_C_ADDR"; WSK_C_PIDX="$WS_C_PID"
  PATHS+=(websockify)
fi
if [ "$HAVE_OBFS4" = 1 ]; then
  start_obfs4 obfs4 "$LG"; O4_S_PIDX="$O4_S_PID"; O4_C_PIDX="$O4_C_PID"
  O4_SX="$O4_S"; O4_CX="$O4_C"; O4_ARGSX="$O4_ARGS"
  PATHS+=(obfs4)
fi
echo "== loadgen $LG | ws $WS_S via $WS_C | wss $WSS_S via $WSS_C" >&2

# ---- throughput, setup, CPU ------------------------------------------------------------------
declare -A R  # R[path.key] = value shown in the table
declare -A S  # S[path.key] = per-rep values

run() {  # run PATH ARGS...: one loadgen client run over PATH; echoes its result line.
  local path="$1"; shift
  local via=()
  case "$path" in
    raw)        via=(--target "$LG") ;;
    ws)         via=(--target "$LG" --socks "$WS_C") ;;
    wss)        via=(--target "$LG" --socks "$WSS_C") ;;
    websockify) via=(--target "$LG" --socks "$WSK_C") ;;
    obfs4)      via=(--target "$O4_SX" --socks "$O4_CX" --socks-args "$O4_ARGSX") ;;
  esac
  timeout "$STEP_TIMEOUT" "$LOADGEN" client "${via[@]}" --label "$path" \
    --timeout-secs "$STEP_TIMEOUT" "$@" | tee -a "$TMP/results.txt"
}
field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
# ticks PATH WHICH: CPU ticks so far of the path's PT client + server (WHICH=all) or server.
ticks() {
  local s=0 c=0
  case "$1" in
    raw)        echo 0; return ;;
    ws)         s="$(cpu_ticks "$WS_S_PIDX")"; c="$(cpu_ticks "$WS_C_PIDX")" ;;
    wss)        s="$(cpu_ticks "$WSS_S_PIDX")"; c="$(cpu_ticks "$WSS_C_PIDX")" ;;
    websockify) quiesce "$WSK_PIDX"; s="$(cpu_ticks_group "$WSK_PIDX")"; c="$(cpu_ticks "$WSK_C_PIDX")" ;;
    obfs4)      s="$(cpu_ticks "$O4_S_PIDX")"; c="$(cpu_ticks "$O4_C_PIDX")" ;;
  esac
  if [ "$2" = server ]; then echo "$s"; else echo $((s + c)); fi
}
per_gib() { awk -v t="$1" -v hz="$HZ" -v b="$2" 'BEGIN{printf "%.2f", t / hz / (b / 1073741824)}'; }

START=$SECONDS
for path in "${PATHS[@]}"; do
  case "$path" in
    raw|ws)           bytes="$BYTES" ;;
    wss)              bytes="$WSS_BYTES" ;;
    websockify|obfs4) bytes="$SLOW_BYTES" ;;
  esac
  R[$path.bytes]="$bytes"
  all=0; srv=0; moved=0
  for mode in up down; do
    vals=()
    for _ in $(seq 1 "$REPS"); do
      a0="$(ticks "$path" all)"; s0="$(ticks "$path" server)"
      line="$(run "$path" --mode "$mode" --bytes "$bytes")" || { echo "FAILED: $path $mode" >&2; exit 1; }
      all=$((all + $(ticks "$path" all) - a0)); srv=$((srv + $(ticks "$path" server) - s0))
      moved=$((moved + bytes))
      vals+=("$(field "$line" mib_s)")
    done
    S[$path.$mode]="${vals[*]}"
    R[$path.$mode]="$(printf '%s\n' "${vals[@]}" | sort -g | awk '{v[NR]=$1} END{print v[int((NR+1)/2)]}')"
  done
  if [ "$path" = raw ]; then
    R[$path.cpu]="-"; R[$path.cpus]="-"
  else
    R[$path.cpu]="$(per_gib "$all" "$moved")"; R[$path.cpus]="$(per_gib "$srv" "$moved")"
  fi
  line="$(run "$path" --mode setup --count "$COUNT")" || { echo "FAILED: $path setup" >&2; exit 1; }
  R[$path.med]="$(field "$line" median_ms)"
  R[$path.p90]="$(field "$line" p90_ms)"
done
T_THROUGHPUT=$((SECONDS - START))

# ---- memory per idle tunnel ------------------------------------------------------------------
# idle_run NAME ARGS...: start idle_tunnels in the background and wait for its open= line;
# sets IC_PID, IC_LINE.
idle_run() {
  local name="$1"; shift
  "$IDLER" "$@" --open-secs "$OPEN_SECS" --hold-secs $((OPEN_SECS + 120)) \
    >"$TMP/$name.out" 2>"$TMP/$name.err" &
  IC_PID=$!; PIDS+=($!)
  IC_LINE=""
  for _ in $(seq 1 $(((OPEN_SECS + 15) * 10))); do
    IC_LINE="$(grep -m1 '^open=' "$TMP/$name.out" 2>/dev/null || true)"
    [ -n "$IC_LINE" ] && break
    kill -0 "$IC_PID" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$IC_LINE" ] || { cat "$TMP/$name.err" >&2; return 1; }
  [ -s "$TMP/$name.err" ] && cat "$TMP/$name.err" >&2
  sleep 1  # let the servers settle
}
kib_per() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN{ if (n + 0 == 0) print "-"; else printf "%.1f", (b - a) / n }'; }

START=$SECONDS
echo "== idle tunnels: ptkit ws server, $IDLE" >&2
start_loadgen idle-target-ws; T_PID="$LG_PID"
start_ws_server idle-ws-server "$LG_ADDR"
r0="$(rss_kib "$WS_S_PID")"
idle_run idle-ws --url "ws://$WS_S_ADDR/" --count "$IDLE" || { echo "FAILED: idle ws" >&2; exit 1; }
r1="$(rss_kib "$WS_S_PID")"
n="$(field "$IC_LINE" open)"
R[ws.idle_n]="$n"; R[ws.idle_rss0]="$r0"; R[ws.idle_rss1]="$r1"
R[ws.idle_fds]="$(find "/proc/$WS_S_PID/fd" -mindepth 1 | wc -l)"
R[ws.idle]="$(kib_per "$r0" "$r1" "$n")"; R[ws.idle_secs]="$(field "$IC_LINE" secs)"
stop "$IC_PID" "$WS_S_PID" "$T_PID"

if [ "$HAVE_OBFS4" = 1 ]; then
  echo "== idle tunnels: obfs4proxy server, $IDLE" >&2
  start_loadgen idle-target-obfs4; T_PID="$LG_PID"
  start_obfs4 idle-obfs4 "$LG_ADDR"
  r0="$(rss_kib "$O4_S_PID")"
  if idle_run idle-obfs4 --socks "$O4_C" --target "$O4_S" --socks-args "$O4_ARGS" \
      --count "$IDLE" --concurrency 32; then
    r1="$(rss_kib "$O4_S_PID")"
    n="$(field "$IC_LINE" open)"
    R[obfs4.idle_n]="$n"; R[obfs4.idle_rss0]="$r0"; R[obfs4.idle_rss1]="$r1"
    R[obfs4.idle]="$(kib_per "$r0" "$r1" "$n")"; R[obfs4.idle_secs]="$(field "$IC_LINE" secs)"
  else
    echo "note: obfs4proxy idle measurement failed" >&2
  fi
  stop "$IC_PID" "$O4_S_PID" "$O4_C_PID" "$T_PID"
fi

if [ "$HAVE_WSK" = 1 ]; then
  echo "== idle tunnels: websockify, $IDLE_WSK" >&2
  start_loadgen idle-target-wsk; T_PID="$LG_PID"
  start_websockify idle-websockify "$LG_ADDR"
  read -r r0 p0 < <(group_mem "$WSK_PID")
  if idle_run idle-wsk --url "ws://127.0.0.1:$WSK_PORT/" --count "$IDLE_WSK" --concurrency 8; then
    read -r r1 p1 < <(group_mem "$WSK_PID")
    n="$(field "$IC_LINE" open)"
    R[websockify.idle_n]="$n"; R[websockify.idle_rss0]="$r0"; R[websockify.idle_rss1]="$r1"
    R[websockify.idle]="$(kib_per "$r0" "$r1" "$n")"; R[websockify.idle_pss]="$(kib_per "$p0" "$p1" "$n")"
    R[websockify.idle_procs]="$(ps -o pid= --sid "$WSK_PID" | wc -l)"
    R[websockify.idle_secs]="$(field "$IC_LINE" secs)"
  else
    echo "note: websockify idle measurement failed" >&2
  fi
  stop "$IC_PID"
  stop_group "$WSK_PID"
  stop "$T_PID"
fi
T_IDLE=$((SECONDS - START))

# ---- table -----------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }
get() { echo "${R[$1]:--}"; }
mib() { awk -v b="$1" 'BEGIN{printf "%d", b / 1048576}'; }

echo
echo "ptkit websocket bench: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "1 connection per throughput run: raw/ws $(mib "$BYTES") MiB, wss $(mib "$WSS_BYTES") MiB, websockify/obfs4 $(mib "$SLOW_BYTES") MiB; medians of $REPS reps; setup over $COUNT connections; ${T_THROUGHPUT} s + ${T_IDLE} s idle"
echo
echo "| metric | raw TCP | ptkit ws | ptkit wss | websockify | obfs4proxy | ws / raw | wss / raw | websockify / raw | obfs4 / raw | ws / websockify | ws / obfs4 |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
row() {  # row LABEL KEY
  local r w t k o
  r="$(get "raw.$2")"; w="$(get "ws.$2")"; t="$(get "wss.$2")"; k="$(get "websockify.$2")"; o="$(get "obfs4.$2")"
  echo "| $1 | $r | $w | $t | $k | $o | $(ratio "$w" "$r") | $(ratio "$t" "$r") | $(ratio "$k" "$r") | $(ratio "$o" "$r") | $(ratio "$w" "$k") | $(ratio "$w" "$o") |"
}
row "up MiB/s" up
row "down MiB/s" down
row "setup median ms" med
row "setup p90 ms" p90
row "PT CPU s/GiB (client+server)" cpu
row "server CPU s/GiB" cpus
echo
echo "| idle tunnels (server memory) | ptkit ws server | obfs4proxy server | websockify (all processes) |"
echo "|---|---:|---:|---:|"
echo "| tunnels open | $(get ws.idle_n) | $(get obfs4.idle_n) | $(get websockify.idle_n) |"
echo "| seconds to open them all | $(get ws.idle_secs) | $(get obfs4.idle_secs) | $(get websockify.idle_secs) |"
echo "| VmRSS before → after, KiB | $(get ws.idle_rss0) → $(get ws.idle_rss1) | $(get obfs4.idle_rss0) → $(get obfs4.idle_rss1) | $(get websockify.idle_rss0) → $(get websockify.idle_rss1) ($(get websockify.idle_procs) processes) |"
echo "| **KiB RSS per idle tunnel** | **$(get ws.idle)** | **$(get obfs4.idle)** | **$(get websockify.idle)** (PSS: $(get websockify.idle_pss)) |"
echo
[ "$IDLE" != "$IDLE_ASKED" ] && echo "note: $IDLE idle tunnels, not $IDLE_ASKED: the open-files hard limit here is $NOFILE and a server holds 2 sockets per tunnel (ptkit server had $(get ws.idle_fds) fds open)."
echo "throughput per rep (MiB/s; the table shows the median):"
for path in "${PATHS[@]}"; do
  for mode in up down; do
    printf '  %-10s %-4s %s\n' "$path" "$mode" "${S[$path.$mode]}"
  done
done

# ---- targets ---------------------------------------------------------------------------------
echo
verdict() { if [ "$1" = 1 ]; then echo PASS; else echo MISS; fi; }
for mode in up down; do
  x="$(ratio "$(get "ws.$mode")" "$(get "raw.$mode")")"
  ok="$(awk -v x="$x" 'BEGIN{print (x != "-" && x + 0 >= 0.25) ? 1 : 0}')"
  echo "$(verdict "$ok") target ws pair >= 0.25x raw TCP ($mode): ${x}x (websockify: $(ratio "$(get "websockify.$mode")" "$(get "raw.$mode")")x)"
done
c="$(get ws.cpu)"
ok="$(awk -v x="$c" 'BEGIN{print (x != "-" && x + 0 <= 1.5) ? 1 : 0}')"
echo "$(verdict "$ok") target ws pair <= 1.5 CPU-s/GiB: $c (obfs4proxy $(get obfs4.cpu), websockify+ptkit client $(get websockify.cpu))"
m="$(get ws.idle)"
ok="$(awk -v x="$m" 'BEGIN{print (x != "-" && x + 0 <= 16) ? 1 : 0}')"
echo "$(verdict "$ok") target <= 16 KiB RSS per idle tunnel (ptkit ws server, $(get ws.idle_n) tunnels): $m KiB"
