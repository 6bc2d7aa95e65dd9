#!/usr/bin/env bash
# snowflake-e2e.sh — the unmodified Debian snowflake-client and snowflake-proxy (2.5.1)
# through ptkit's snowflake-broker and snowflake-server, offline, inside a private network
# namespace (specs/snowflake.md §4.4: lo plus a veth pair, nothing routes out).
#
# Usage:
#   scripts/snowflake-e2e.sh --ptkit PATH [--part data|failover|tor|all] [--keep]
#                            [--timeout SECS] [--mib N]
#
#   data      10 MiB (--mib) echoed through client -> proxy -> server -> echo ORPort;
#             PASS when the bytes come back byte-exact.
#   failover  the proxy is killed mid-transfer, a second proxy takes over, the client
#             comes back with the same ClientID; PASS when the transfer completes intact
#             and the server saw one KCP session over two WebSockets.
#   tor       a tor client using snowflake-client reaches a tor bridge whose
#             ServerTransportPlugin is ptkit's snowflake-server; PASS when the client
#             fetches the bridge descriptor and the bridge logs USERADDR 192.0.2.2 and
#             TRANSPORT snowflake from the ExtORPort.
# Needs root (unshare, veth). Exit: 0 pass, 1 fail, 2 setup error.
set -uo pipefail

PTKIT=""; PART="all"; KEEP=0; TIMEOUT=240; MIB=10
usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }
die_setup() { echo "SETUP ERROR: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --ptkit)   PTKIT="$2"; shift 2 ;;
    --part)    PART="$2"; shift 2 ;;
    --timeout) TIMEOUT="$2"; shift 2 ;;
    --mib)     MIB="$2"; shift 2 ;;
    --keep)    KEEP=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die_setup "unknown argument: $1" ;;
  esac
done
[ -n "$PTKIT" ] || die_setup "--ptkit is required"
case "$PTKIT" in /*) ;; *) PTKIT="$(cd "$(dirname "$PTKIT")" && pwd)/$(basename "$PTKIT")" ;; esac
[ -x "$PTKIT" ] || die_setup "not executable: $PTKIT"
for b in snowflake-client snowflake-proxy tor ip unshare; do
  command -v "$b" >/dev/null || die_setup "$b not found (apt-get install snowflake-client snowflake-proxy tor iproute2)"
done
PY=/usr/bin/python3
[ -x "$PY" ] || die_setup "/usr/bin/python3 not found"
[ "$(id -u)" = 0 ] || die_setup "needs root for unshare -n and veth"

if [ "$PART" = all ]; then
  for p in data failover tor; do
    env -u SNOWFLAKE_E2E_IN_NS "$0" --ptkit "$PTKIT" --part "$p" --timeout "$TIMEOUT" --mib "$MIB" \
      $([ "$KEEP" = 1 ] && echo --keep) || exit 1
  done
  exit 0
fi
if [ -z "${SNOWFLAKE_E2E_IN_NS:-}" ]; then
  SNOWFLAKE_E2E_IN_NS=1 exec unshare -n "$0" --ptkit "$PTKIT" --part "$PART" \
    --timeout "$TIMEOUT" --mib "$MIB" $([ "$KEEP" = 1 ] && echo --keep)
fi

WORK="$(mktemp -d /tmp/snowflake-e2e.XXXXXX)" || die_setup "mktemp"
PIDS=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  sleep 0.3
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
  # tor's managed PTs and anything else started in this namespace's session.
  pkill -KILL -f "$WORK" 2>/dev/null
  if [ "$KEEP" = 1 ]; then echo "kept work dir: $WORK"; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
SECONDS=0
show() { local f; for f in "$@"; do echo "----- last 25 lines of $(basename "$f") -----"; tail -n 25 "$f" 2>/dev/null; done; }
fail() { echo "FAIL: $*"; show "$WORK"/*.log; exit 1; }

# ---- network: lo, a veth pair (ICE needs a non-loopback interface), a public-looking
# address so the proxy sends client_ip (it skips private candidates) ---------------------
ip link set lo up || die_setup "ip link lo"
ip link add v0 type veth peer name v1 || die_setup "cannot create veth (needs CAP_NET_ADMIN)"
ip addr add 10.77.0.1/24 dev v0; ip addr add 10.77.0.2/24 dev v1; ip addr add 192.0.2.2/24 dev v0
ip link set v0 up; ip link set v1 up

# ---- helper programs -----------------------------------------------------------------
cat > "$WORK/echo.py" <<'EOF'
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(64)
def serve(c):
    while True:
        d = c.recv(65536)
        if not d: break
        c.sendall(d)
    c.close()
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
EOF
# SOCKS5 with the bridge args in user/pass (as tor passes them), then N bytes each way at
# once; prints progress and OK/MISMATCH. argv: port args bytes [pace-ms-per-64KiB] [idle-secs]
# With idle-secs, the connection then sits idle that long and must still echo 1 KiB.
cat > "$WORK/socks.py" <<'EOF'
import os, socket, struct, sys, threading, time
port, args, size = int(sys.argv[1]), sys.argv[2].encode(), int(sys.argv[3])
pace = float(sys.argv[4]) / 1000 if len(sys.argv) > 4 else 0
idle = float(sys.argv[5]) if len(sys.argv) > 5 else 0
s = socket.create_connection(("127.0.0.1", port))
s.sendall(b"\x05\x01\x02"); assert s.recv(2) == b"\x05\x02", "no user/pass method"
u, p = args[:255], (args[255:] or b"\x00")
s.sendall(b"\x01" + bytes([len(u)]) + u + bytes([len(p)]) + p); assert s.recv(2) == b"\x01\x00"
s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton("192.0.2.3") + struct.pack(">H", 1))
r = s.recv(10); assert r[1] == 0, r
data = os.urandom(size); t0 = time.time()
def writer():
    for i in range(0, size, 65536):
        s.sendall(data[i:i + 65536])
        if pace: time.sleep(pace)
threading.Thread(target=writer, daemon=True).start()
got = bytearray(); tenth = max(size // 10, 1)
while len(got) < size:
    d = s.recv(1 << 20)
    if not d: break
    before = len(got); got += d
    if before // tenth != len(got) // tenth:
        print(f"progress {len(got)} bytes after {time.time() - t0:.1f}s", flush=True)
ok = bytes(got) == data
print(("OK" if ok else f"MISMATCH after {len(got)} bytes"), f"{size} bytes each way in {time.time() - t0:.1f}s", flush=True)
if ok and idle:
    time.sleep(idle)
    ping = os.urandom(1024); t1 = time.time(); s.sendall(ping); back = bytearray()
    s.settimeout(30)
    while len(back) < len(ping):
        d = s.recv(4096)
        if not d: break
        back += d
    ok = bytes(back) == ping
    print(("OK" if ok else "MISMATCH"), f"after {idle:.0f}s idle: 1 KiB echoed in {time.time() - t1:.2f}s", flush=True)
sys.exit(0 if ok else 1)
EOF

DEFAULT_FP=2B280B23E1107BB62ABFC40DDCC8824814F80A72
BROKER=127.0.0.1:8080
RELAY=ws://127.0.0.1:8000/
ICE=stun:127.0.0.1:3478

start_broker() { # $1 = bridge fingerprint
  printf '{"displayName":"e2e","webSocketAddress":"%s","fingerprint":"%s"}\n' "$RELAY" "$1" > "$WORK/bridges.json"
  "$PTKIT" snowflake-broker -disable-tls -addr "$BROKER" -bridge-list-path "$WORK/bridges.json" \
    -allowed-relay-pattern '127.0.0.1$' -allow-unknown-nat-pairing -unsafe-logging \
    > "$WORK/broker.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null && return 0; sleep 0.1; done
  fail "broker did not listen on $BROKER"
}
start_proxy() { # $1 = name
  snowflake-proxy -broker "http://$BROKER/" -relay "$RELAY" -allowed-relay-hostname-pattern '127.0.0.1$' \
    -allow-non-tls-relay -keep-local-addresses -stun "$ICE" -verbose -unsafe-logging \
    -nat-retest-interval 0s > "$WORK/proxy-$1.log" 2>&1 &
  LAST_PROXY=$!
  PIDS+=("$LAST_PROXY")
}
start_server_by_hand() { # a managed snowflake-server whose ORPort is an echo server
  "$PY" "$WORK/echo.py" 9100 & PIDS+=($!)
  mkdir -p "$WORK/sstate"
  TOR_PT_MANAGED_TRANSPORT_VER=1 TOR_PT_SERVER_TRANSPORTS=snowflake \
    TOR_PT_SERVER_BINDADDR=snowflake-127.0.0.1:8000 TOR_PT_ORPORT=127.0.0.1:9100 \
    TOR_PT_STATE_LOCATION="$WORK/sstate" \
    "$PTKIT" snowflake-server -disable-tls -unsafe-logging -metrics 127.0.0.1:9200 \
    > "$WORK/server.stdout" 2> "$WORK/server.log" &
  PIDS+=($!)
  for _ in $(seq 1 50); do grep -q '^SMETHODS DONE' "$WORK/server.stdout" 2>/dev/null && break; sleep 0.1; done
  grep -q '^SMETHOD snowflake 127.0.0.1:8000 ARGS:tls=no$' "$WORK/server.stdout" \
    || fail "snowflake-server did not announce its method: $(cat "$WORK/server.stdout")"
}
start_client_by_hand() {
  mkdir -p "$WORK/cstate"
  TOR_PT_MANAGED_TRANSPORT_VER=1 TOR_PT_CLIENT_TRANSPORTS=snowflake TOR_PT_STATE_LOCATION="$WORK/cstate" \
    snowflake-client -keep-local-addresses -unsafe-logging -log "$WORK/client-pt.log" \
    > "$WORK/client.stdout" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 50); do grep -q '^CMETHODS DONE' "$WORK/client.stdout" 2>/dev/null && break; sleep 0.1; done
  SOCKS_PORT="$(sed -n 's/^CMETHOD snowflake socks5 127.0.0.1:\([0-9]*\)$/\1/p' "$WORK/client.stdout")"
  [ -n "$SOCKS_PORT" ] || fail "snowflake-client gave no CMETHOD: $(cat "$WORK/client.stdout")"
}
metric() { # $1 = metric name; prints its value from the server's /metrics
  "$PY" - "$1" <<'EOF'
import sys, urllib.request
for line in urllib.request.urlopen("http://127.0.0.1:9200/metrics", timeout=5).read().decode().splitlines():
    if line.startswith(sys.argv[1] + " "): print(line.split()[1])
EOF
}
ARGS="url=http://$BROKER/;ice=$ICE;fingerprint=$DEFAULT_FP"

part_data() {
  echo "== data: $MIB MiB each way through snowflake-client -> snowflake-proxy -> snowflake-server,"
  echo "   then 35 s idle (the proxy drops a silent server after 30 s, the client a silent proxy after 20 s)"
  start_server_by_hand; start_broker "$DEFAULT_FP"; start_proxy a; start_client_by_hand
  timeout "$TIMEOUT" "$PY" "$WORK/socks.py" "$SOCKS_PORT" "$ARGS" $((MIB << 20)) 0 35 | tee "$WORK/data.out" \
    || fail "data transfer"
  ! grep -q "no messages received" "$WORK/client-pt.log" || fail "the client dropped an idle proxy (no downstream liveness)"
  # Had the proxy dropped the silent path, the client would have come back on a new
  # WebSocket: one WebSocket for the whole run proves the path stayed up.
  local ws; ws="$(metric ptkit_snowflake_websockets_total)"
  [ "$ws" = 1 ] || fail "expected one WebSocket for the whole run (idle included), got $ws"
  local with_ip; with_ip="$(metric ptkit_snowflake_streams_with_client_ip_total)"
  [ "${with_ip:-0}" -ge 1 ] || fail "the proxy's client_ip never reached the server (streams with client_ip: $with_ip)"
  echo "PASS data after ${SECONDS}s"
}

part_failover() {
  echo "== failover: the proxy dies mid-transfer, the client returns through another proxy"
  start_server_by_hand; start_broker "$DEFAULT_FP"; start_proxy a; local first=$LAST_PROXY
  start_client_by_hand
  # ~6 s of paced transfer, so the proxy can be killed in the middle.
  timeout "$TIMEOUT" "$PY" "$WORK/socks.py" "$SOCKS_PORT" "$ARGS" $((3 << 20)) 120 > "$WORK/failover.out" 2>&1 &
  local xfer=$!
  for _ in $(seq 1 600); do grep -q '^progress' "$WORK/failover.out" && break; sleep 0.1; done
  grep -q '^progress' "$WORK/failover.out" || fail "transfer never started: $(cat "$WORK/failover.out")"
  echo "killing proxy a mid-transfer: $(tail -n1 "$WORK/failover.out")"
  kill -KILL "$first"
  start_proxy b
  wait "$xfer" || fail "transfer after failover: $(cat "$WORK/failover.out")"
  cat "$WORK/failover.out"
  local sessions websockets
  sessions="$(metric ptkit_snowflake_sessions_total)"; websockets="$(metric ptkit_snowflake_websockets_total)"
  [ "$sessions" = 1 ] || fail "expected one KCP session across proxies, got $sessions"
  [ "${websockets:-0}" -ge 2 ] || fail "expected a second WebSocket after failover, got $websockets"
  grep -q 'connected to relay' "$WORK/proxy-b.log" || fail "proxy b never carried the client"
  echo "PASS failover after ${SECONDS}s (1 session, $websockets WebSockets)"
}

DUMMY_FP="0123456789ABCDEF0123456789ABCDEF01234567"
DUMMY_DIRAUTH="DirAuthority e2edummy orport=1 no-v2 v3ident=${DUMMY_FP} 127.0.0.1:1 ${DUMMY_FP}"
part_tor() {
  echo "== tor: tor client + snowflake-client -> proxy -> ptkit snowflake-server -> tor bridge"
  : > "$WORK/geoip-empty"
  mkdir -p "$WORK/bridge" "$WORK/tclient"; chmod 700 "$WORK/bridge" "$WORK/tclient"
  cat > "$WORK/bridge.torrc" <<EOF
DataDirectory $WORK/bridge
BridgeRelay 1
Nickname sfbridge
ORPort 127.0.0.1:9001
ExtORPort 127.0.0.1:auto
ServerTransportPlugin snowflake exec $PTKIT snowflake-server -disable-tls -unsafe-logging -log $WORK/bridge-pt.log
ServerTransportListenAddr snowflake 127.0.0.1:8000
PublishServerDescriptor 0
AssumeReachable 1
ExitRelay 0
ExitPolicy reject *:*
$DUMMY_DIRAUTH
UseDefaultFallbackDirs 0
SocksPort 0
Log info file $WORK/bridge.log
Log debug file $WORK/bridge-debug.log
SafeLogging 0
GeoIPFile $WORK/geoip-empty
GeoIPv6File $WORK/geoip-empty
EOF
  tor -f "$WORK/bridge.torrc" --quiet > "$WORK/bridge.stdout" 2>&1 & PIDS+=($!)
  for _ in $(seq 1 300); do
    [ -s "$WORK/bridge/fingerprint" ] && grep -q "Registered server transport 'snowflake'" "$WORK/bridge.log" 2>/dev/null && break
    sleep 0.1
  done
  grep -q "Registered server transport 'snowflake'" "$WORK/bridge.log" || fail "bridge did not register snowflake"
  local fp; fp="$(awk '{print $2; exit}' "$WORK/bridge/fingerprint")"
  start_broker "$fp"; start_proxy a
  cat > "$WORK/client.torrc" <<EOF
DataDirectory $WORK/tclient
UseBridges 1
Bridge snowflake 192.0.2.3:1 $fp fingerprint=$fp url=http://$BROKER/ ice=$ICE
ClientTransportPlugin snowflake exec /usr/bin/snowflake-client -keep-local-addresses -unsafe-logging -log $WORK/tclient-pt.log
$DUMMY_DIRAUTH
UseDefaultFallbackDirs 0
SocksPort 127.0.0.1:auto
Log info file $WORK/tclient.log
SafeLogging 0
GeoIPFile $WORK/geoip-empty
GeoIPv6File $WORK/geoip-empty
EOF
  tor -f "$WORK/client.torrc" --quiet > "$WORK/tclient.stdout" 2>&1 & PIDS+=($!)
  local ok=0
  while [ "$SECONDS" -lt "$TIMEOUT" ]; do
    if grep -q "new bridge descriptor 'sfbridge'" "$WORK/tclient.log" 2>/dev/null; then ok=1; break; fi
    sleep 0.5
  done
  [ "$ok" = 1 ] || fail "tor client did not fetch the bridge descriptor within ${TIMEOUT}s"
  grep -q "Received USERADDR.*to '192.0.2.2:1'" "$WORK/bridge-debug.log" || fail "bridge got no USERADDR 192.0.2.2:1"
  grep -q "with transport 'snowflake'" "$WORK/bridge-debug.log" || fail "bridge got no TRANSPORT snowflake"
  echo "PASS tor after ${SECONDS}s: $(grep -m1 "new bridge descriptor" "$WORK/tclient.log")"
}

case "$PART" in
  data) part_data ;;
  failover) part_failover ;;
  tor) part_tor ;;
  *) die_setup "unknown --part $PART" ;;
esac
