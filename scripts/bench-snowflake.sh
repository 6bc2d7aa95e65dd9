#!/usr/bin/env bash
# bench-snowflake.sh — ptkit's snowflake-server under turbotunnel load (no WebRTC): 1, 100,
# 1,000 and 5,000 concurrent sessions, against raw TCP and, when it can be built, a reference
# server made of the Go libraries the real snowflake-server uses (kcp-go, smux, gorilla), all
# on loopback in one run.
#
# Usage: scripts/bench-snowflake.sh [--sessions "1 100 1000 5000"] [--mib 512] [--no-build]
#                                   [--no-go] [--keep]
#
# For each session count N, on a fresh server:
#   up / down   --mib MiB in all through N sessions (loadgen U / D through the server's
#               upstream); MiB/s, and server CPU seconds per GiB (utime+stime from /proc)
#   rtt         64-byte round trips, each session one every 100 ms, 20 each: p50 / p99 ms
#   idle        N sessions with one open stream each, held idle: server RSS per session
# The load client (`ptkit turbotunnel`) shares the 2 cores with the server, so aggregate
# throughput is bounded by both; CPU per GiB is the server's own.
# Exit: 0 measured (targets reported, not enforced), 1 a run failed, 2 setup error.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SESSIONS="1 100 1000 5000"; MIB=512; BUILD=1; GO=1; KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --sessions) SESSIONS="$2"; shift 2 ;;
    --mib) MIB="$2"; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --no-go) GO=0; shift ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ "$BUILD" = 1 ]; then
  cargo build --release -p ptkit --bin ptkit --example loadgen >&2 || exit 2
fi
PTKIT=target/release/ptkit; LOADGEN=target/release/examples/loadgen
[ -x "$PTKIT" ] && [ -x "$LOADGEN" ] || { echo "build ptkit and loadgen first" >&2; exit 2; }
GOPEER=""
if [ "$GO" = 1 ] && [ -x scripts/build-go-peer.sh ] && scripts/build-go-peer.sh target/go-turbotunnel >&2; then
  GOPEER=target/go-turbotunnel
fi
WORK="$(mktemp -d /tmp/bench-snowflake.XXXXXX)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; [ "$KEEP" = 1 ] && echo "kept $WORK" >&2 || rm -rf "$WORK"; }
trap cleanup EXIT

"$LOADGEN" server --listen 127.0.0.1:0 --max-secs 7200 > "$WORK/loadgen.out" 2>&1 & PIDS+=($!)
for _ in $(seq 1 50); do grep -q '^listen=' "$WORK/loadgen.out" && break; sleep 0.1; done
UPSTREAM="$(sed -n 's/^listen=//p' "$WORK/loadgen.out")"
[ -n "$UPSTREAM" ] || { echo "loadgen did not start" >&2; exit 2; }

SERVER_PID=""; PORT=18500
start_server() { # $1 = ptkit|go
  stop_server
  PORT=$((PORT + 1))
  if [ "$1" = go ]; then
    "$GOPEER" server -listen "127.0.0.1:$PORT" -upstream "$UPSTREAM" > "$WORK/server.log" 2>&1 &
  else
    TOR_PT_MANAGED_TRANSPORT_VER=1 TOR_PT_SERVER_TRANSPORTS=snowflake \
      TOR_PT_SERVER_BINDADDR="snowflake-127.0.0.1:$PORT" TOR_PT_ORPORT="$UPSTREAM" \
      TOR_PT_STATE_LOCATION="$WORK/state" "$PTKIT" snowflake-server -disable-tls \
      > "$WORK/server.out" 2> "$WORK/server.log" &
  fi
  SERVER_PID=$!
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0; sleep 0.05; done
  echo "server ($1) did not listen" >&2; exit 1
}
stop_server() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null; SERVER_PID=""; }
ticks() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$SERVER_PID/status"; }
HZ=$(getconf CLK_TCK)
field() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$2"; }
load() { timeout 600 "$PTKIT" turbotunnel --url "ws://127.0.0.1:$PORT/" "$@" 2>"$WORK/load.err"; }

raw() { # raw TCP through loadgen, one connection
  local mode="$1" out
  out="$("$LOADGEN" client --target "$UPSTREAM" --mode "$mode" --bytes $((MIB << 20)) --conns 1 2>/dev/null)"
  field 'mib_s' "$out"
}

echo "| server | sessions | up MiB/s | down MiB/s | server CPU-s/GiB (up, down) | RTT p50 / p99 ms | idle RSS KiB/session |"
echo "|---|---:|---:|---:|---:|---:|---:|"
printf '| raw TCP (loadgen, 1 conn) | - | %s | %s | - | - | - |\n' "$(raw up)" "$(raw down)"
SERVERS="ptkit"; [ -n "$GOPEER" ] && SERVERS="ptkit go"
for server in $SERVERS; do
  for n in $SESSIONS; do
    bytes=$((MIB << 20))
    res=()
    cpus=()
    for mode in up down; do
      start_server "$server"
      t0=$(ticks)
      out="$(load --mode "$mode" --sessions "$n" --bytes "$bytes")" || { echo "FAILED $server $mode $n: $(cat "$WORK/load.err")" >&2; res+=("fail"); cpus+=("-"); continue; }
      t1=$(ticks)
      res+=("$(field mib_s "$out")")
      cpus+=("$(awk -v t=$((t1 - t0)) -v hz="$HZ" -v b="$(field bytes "$out")" 'BEGIN { printf "%.2f", (t / hz) / (b / 1073741824) }')")
    done
    start_server "$server"
    out="$(load --mode rtt --sessions "$n" --round-trips 20 --interval-ms 100)" || out=""
    rtt="$(field rtt_p50_ms "$out") / $(field rtt_p99_ms "$out")"
    start_server "$server"
    base=$(rss_kb)
    load --mode idle --sessions "$n" --hold 8 > "$WORK/idle.out" &
    lp=$!
    for _ in $(seq 1 600); do grep -q '^ready' "$WORK/idle.out" && break; sleep 0.1; done
    sleep 3
    per=$(awk -v a="$(rss_kb)" -v b="$base" -v n="$n" 'BEGIN { printf "%.1f", (a - b) / n }')
    wait "$lp" || per="$per (failures)"
    printf '| %s | %s | %s | %s | %s, %s | %s | %s |\n' "$server" "$n" "${res[0]}" "${res[1]}" "${cpus[0]}" "${cpus[1]}" "$rtt" "$per"
  done
done
stop_server
