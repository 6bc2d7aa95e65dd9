#!/usr/bin/env bash
# bench.sh — throughput and connection-setup cost of ptkit's `plain` pair against raw TCP
# loopback and against Debian's obfs4proxy, all on 127.0.0.1, in one run.
#
# Usage:
#   scripts/bench.sh [--bytes N] [--obfs4-bytes N] [--conns "1 4"] [--count K]
#                    [--reps R] [--obfs4-bin PATH] [--no-build] [--keep]
#
#   --bytes        bytes per throughput measurement for raw TCP and ptkit plain
#                  (default 1073741824 = 1 GiB)
#   --obfs4-bytes  bytes per throughput measurement for obfs4proxy (default 536870912)
#   --conns        parallel-connection counts to measure throughput with (default "1 4")
#   --count        sequential connections timed for connection setup (default 300)
#   --reps         repetitions of each throughput measurement; the table shows the median
#                  and the per-rep values are listed under it (default 3)
#   --obfs4-bin    obfs4proxy binary (default /usr/bin/obfs4proxy; skipped if missing)
#   --no-build     use the existing target/release binaries
#   --keep         keep the temp dir (logs, raw result lines) and print its path
#
# Paths measured (loadgen = target/release/examples/loadgen):
#   raw    loadgen client -> loadgen server
#   plain  loadgen client -SOCKS5-> ptkit client plain -> ptkit server plain -> loadgen server
#   obfs4  loadgen client -SOCKS5-> obfs4proxy client =obfs4=> obfs4proxy server -> loadgen server
# "up" is client->server, "down" server->client; MiB/s = bytes / wall time once every
# connection is open. "setup" = TCP connect start -> first byte echoed back through the whole
# path (SOCKS handshake and, for obfs4, its handshake included); median and p90.
# "PT CPU" = utime+stime of both PT processes (from /proc/<pid>/stat) per GiB carried, over
# that path's throughput runs.
# Exit: 0 measured (targets are reported, not enforced), 1 a measurement failed, 2 setup error.
set -euo pipefail

BYTES=$((1 << 30))
OBFS4_BYTES=$((512 << 20))
CONNS_LIST="1 4"
COUNT=300
REPS=3
OBFS4_BIN=/usr/bin/obfs4proxy
BUILD=1
KEEP=0
STEP_TIMEOUT=90  # seconds, per loadgen client run

die_setup() { echo "SETUP ERROR: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --bytes)       [ $# -ge 2 ] || die_setup "--bytes needs a value"; BYTES="$2"; shift 2 ;;
    --obfs4-bytes) [ $# -ge 2 ] || die_setup "--obfs4-bytes needs a value"; OBFS4_BYTES="$2"; shift 2 ;;
    --conns)       [ $# -ge 2 ] || die_setup "--conns needs a value"; CONNS_LIST="$2"; shift 2 ;;
    --count)       [ $# -ge 2 ] || die_setup "--count needs a value"; COUNT="$2"; shift 2 ;;
    --reps)        [ $# -ge 2 ] || die_setup "--reps needs a value"; REPS="$2"; shift 2 ;;
    --obfs4-bin)   [ $# -ge 2 ] || die_setup "--obfs4-bin needs a value"; OBFS4_BIN="$2"; shift 2 ;;
    --no-build)    BUILD=0; shift ;;
    --keep)        KEEP=1; shift ;;
    -h|--help)     sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *)             die_setup "unknown argument: $1 (see --help)" ;;
  esac
done

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
if [ "$BUILD" = 1 ]; then
  echo "== building (release)" >&2
  cargo build --release -p ptkit --bins --examples >&2 || die_setup "cargo build failed"
fi
PTKIT="$ROOT/target/release/ptkit"
LOADGEN="$ROOT/target/release/examples/loadgen"
[ -x "$PTKIT" ] || die_setup "$PTKIT missing"
[ -x "$LOADGEN" ] || die_setup "$LOADGEN missing"
HAVE_OBFS4=1
[ -x "$OBFS4_BIN" ] || { echo "note: $OBFS4_BIN not found; skipping obfs4" >&2; HAVE_OBFS4=0; }

TMP="$(mktemp -d /tmp/ptkit-bench.XXXXXX)"
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  exec 3>&- 2>/dev/null || true
  if [ "$KEEP" = 1 ]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

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

HZ="$(getconf CLK_TCK)"
# cpu_ticks PID...: summed utime+stime (fields 14, 15) of the given processes.
cpu_ticks() {
  local p total=0 f
  for p in "$@"; do
    # Drop "pid (comm) " so a comm with spaces cannot shift the fields; utime is then $12.
    f="$(sed 's/^.*) //' "/proc/$p/stat")"
    total=$((total + $(echo "$f" | awk '{print $12 + $13}')))
  done
  echo "$total"
}

# ---- servers ---------------------------------------------------------------------------------
"$LOADGEN" server --listen 127.0.0.1:0 --max-secs 600 >"$TMP/loadgen.out" 2>"$TMP/loadgen.err" &
PIDS+=($!)
LG="$(wait_for "$TMP/loadgen.out" 'listen=[0-9.]+:[0-9]+' | cut -d= -f2)"

env -u RUST_LOG "$PTKIT" --log-level info server plain --listen 127.0.0.1:0 --target "$LG" \
  >/dev/null 2>"$TMP/ptkit-server.err" &
PLAIN_S_PID=$!; PIDS+=($!)
PLAIN_S="$(wait_for "$TMP/ptkit-server.err" 'on 127\.0\.0\.1:[0-9]+' | cut -d' ' -f2)"
env -u RUST_LOG "$PTKIT" --log-level info client plain --listen 127.0.0.1:0 --server "$PLAIN_S" \
  >/dev/null 2>"$TMP/ptkit-client.err" &
PLAIN_C_PID=$!; PIDS+=($!)
PLAIN_C="$(wait_for "$TMP/ptkit-client.err" 'on 127\.0\.0\.1:[0-9]+' | cut -d' ' -f2)"

if [ "$HAVE_OBFS4" = 1 ]; then
  # Managed mode reads stdin only with TOR_PT_EXIT_ON_STDIN_CLOSE=1, but keep it open anyway:
  # a FIFO opened read-write by this shell never reports EOF.
  mkfifo "$TMP/stdin"
  exec 3<>"$TMP/stdin"
  mkdir -p "$TMP/obfs4-server" "$TMP/obfs4-client"
  env TOR_PT_MANAGED_TRANSPORT_VER=1 TOR_PT_STATE_LOCATION="$TMP/obfs4-server" \
    TOR_PT_SERVER_TRANSPORTS=obfs4 TOR_PT_SERVER_BINDADDR=obfs4-127.0.0.1:0 \
    TOR_PT_ORPORT="$LG" "$OBFS4_BIN" <&3 >"$TMP/obfs4-server.out" 2>&1 &
  OBFS4_S_PID=$!; PIDS+=($!)
  env TOR_PT_MANAGED_TRANSPORT_VER=1 TOR_PT_STATE_LOCATION="$TMP/obfs4-client" \
    TOR_PT_CLIENT_TRANSPORTS=obfs4 "$OBFS4_BIN" <&3 >"$TMP/obfs4-client.out" 2>&1 &
  OBFS4_C_PID=$!; PIDS+=($!)
  SLINE="$(wait_for "$TMP/obfs4-server.out" '^SMETHOD obfs4 .*')"
  CLINE="$(wait_for "$TMP/obfs4-client.out" '^CMETHOD obfs4 socks5 .*')"
  OBFS4_S="$(echo "$SLINE" | awk '{print $3}')"
  OBFS4_C="$(echo "$CLINE" | awk '{print $4}')"
  CERT="$(echo "$SLINE" | sed -n 's/.*ARGS:.*cert=\([^,]*\).*/\1/p')"
  IAT="$(echo "$SLINE" | sed -n 's/.*iat-mode=\([0-9]\).*/\1/p')"
  [ -n "$CERT" ] || die_setup "no cert in: $SLINE"
  OBFS4_ARGS="cert=$CERT;iat-mode=${IAT:-0}"
fi

echo "== loadgen $LG | plain server $PLAIN_S, SOCKS $PLAIN_C" >&2
[ "$HAVE_OBFS4" = 1 ] && echo "== obfs4 server $OBFS4_S, SOCKS $OBFS4_C" >&2

# ---- measurements ----------------------------------------------------------------------------
declare -A R  # R[path.key] = value shown in the table
declare -A S  # S[path.key] = per-rep values
PATHS=(raw plain)
[ "$HAVE_OBFS4" = 1 ] && PATHS+=(obfs4)

# run PATH ARGS...: one loadgen client run over PATH; echoes its result line.
run() {
  local path="$1"; shift
  local via=()
  case "$path" in
    raw)   via=(--target "$LG") ;;
    plain) via=(--target "$LG" --socks "$PLAIN_C") ;;
    obfs4) via=(--target "$OBFS4_S" --socks "$OBFS4_C" --socks-args "$OBFS4_ARGS") ;;
  esac
  timeout "$STEP_TIMEOUT" "$LOADGEN" client "${via[@]}" --label "$path" \
    --timeout-secs "$STEP_TIMEOUT" "$@" | tee -a "$TMP/results.txt"
}
field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }

for path in "${PATHS[@]}"; do
  case "$path" in
    raw)   pids=() ;;
    plain) pids=("$PLAIN_S_PID" "$PLAIN_C_PID") ;;
    obfs4) pids=("$OBFS4_S_PID" "$OBFS4_C_PID") ;;
  esac
  bytes="$BYTES"; [ "$path" = obfs4 ] && bytes="$OBFS4_BYTES"
  ticks=0; moved=0
  for c in $CONNS_LIST; do
    for mode in up down; do
      vals=()
      for _ in $(seq 1 "$REPS"); do
        [ ${#pids[@]} -gt 0 ] && t0="$(cpu_ticks "${pids[@]}")"
        line="$(run "$path" --mode "$mode" --bytes "$bytes" --conns "$c")" || exit 1
        [ ${#pids[@]} -gt 0 ] && ticks=$((ticks + $(cpu_ticks "${pids[@]}") - t0))
        moved=$((moved + bytes))
        vals+=("$(field "$line" mib_s)")
      done
      S[$path.$mode.$c]="${vals[*]}"
      R[$path.$mode.$c]="$(printf '%s\n' "${vals[@]}" | sort -g | awk '{v[NR]=$1} END{print v[int((NR+1)/2)]}')"
    done
  done
  if [ ${#pids[@]} -gt 0 ]; then
    R[$path.cpu]="$(awk -v t="$ticks" -v hz="$HZ" -v b="$moved" 'BEGIN{printf "%.2f", t / hz / (b / 1073741824)}')"
  else
    R[$path.cpu]="-"
  fi
  line="$(run "$path" --mode setup --count "$COUNT")" || exit 1
  R[$path.med]="$(field "$line" median_ms)"
  R[$path.p90]="$(field "$line" p90_ms)"
done

# ---- table -----------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }
get() { echo "${R[$1]:--}"; }

echo
echo "ptkit bench: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), raw/plain $((BYTES >> 20)) MiB, obfs4 $((OBFS4_BYTES >> 20)) MiB per throughput run, setup over $COUNT connections"
echo
if [ "$HAVE_OBFS4" = 1 ]; then
  echo "| metric | raw TCP | ptkit plain | obfs4proxy | plain / raw | plain / obfs4 | obfs4 / raw |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
else
  echo "| metric | raw TCP | ptkit plain | plain / raw |"
  echo "|---|---:|---:|---:|"
fi
row() {  # row LABEL KEY
  local r p o
  r="$(get "raw.$2")"; p="$(get "plain.$2")"
  if [ "$HAVE_OBFS4" = 1 ]; then
    o="$(get "obfs4.$2")"
    echo "| $1 | $r | $p | $o | $(ratio "$p" "$r") | $(ratio "$p" "$o") | $(ratio "$o" "$r") |"
  else
    echo "| $1 | $r | $p | $(ratio "$p" "$r") |"
  fi
}
for c in $CONNS_LIST; do
  row "up MiB/s, $c conn" "up.$c"
  row "down MiB/s, $c conn" "down.$c"
done
row "setup median ms" med
row "setup p90 ms" p90
row "PT CPU s/GiB (client+server)" cpu
echo
echo "throughput per rep (MiB/s; table shows the median):"
for path in "${PATHS[@]}"; do
  for c in $CONNS_LIST; do
    for mode in up down; do
      printf '  %-5s %-4s %s conn: %s\n' "$path" "$mode" "$c" "${S[$path.$mode.$c]}"
    done
  done
done

# ---- targets ---------------------------------------------------------------------------------
echo
verdict() { if [ "$1" = 1 ]; then echo MET; else echo "NOT MET"; fi; }
for c in $CONNS_LIST; do
  for mode in up down; do
    x="$(ratio "$(get "plain.$mode.$c")" "$(get "raw.$mode.$c")")"
    ok="$(awk -v x="$x" 'BEGIN{print (x != "-" && x + 0 >= 0.30) ? 1 : 0}')"
    echo "target plain >= 0.30x raw ($mode, $c conn): ${x}x  $(verdict "$ok")"
  done
done
m="$(get plain.med)"
ok="$(awk -v x="$m" 'BEGIN{print (x != "-" && x + 0 <= 0.5) ? 1 : 0}')"
echo "target plain setup median <= 0.5 ms: ${m} ms  $(verdict "$ok")"
