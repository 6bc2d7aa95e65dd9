#!/usr/bin/env bash
# tor-e2e.sh — prove that a tor client reaches a tor bridge through a
# pluggable transport, fully offline on loopback.
#
# Usage:
#   scripts/tor-e2e.sh --pt-bin PATH --transport NAME [--pt-args "..."]
#                      [--keep] [--timeout SECS] [--tor-bin PATH]
#
# Examples:
#   scripts/tor-e2e.sh --pt-bin /usr/bin/obfs4proxy --transport obfs4
#   scripts/tor-e2e.sh --pt-bin target/debug/ptkit --transport plain
#
# Topology (everything bound to 127.0.0.1):
#   client tor --SOCKS--> client PT --NAME--> bridge PT --ExtORPort--> bridge tor
#
# PASS requires both:
#   (a) client.log: "new bridge descriptor '<nick>' (fresh): $<FP>~..." after
#       "Connected to pluggable transport" — the client fetched the bridge's
#       descriptor over a connection made through the client PT.
#   (b) bridge.log (debug): "connection_ext_or_handle_cmd_useraddr(): Received
#       USERADDR.We rewrite our address from '...' to '127.0.0.1:<port>'." and
#       "geoip_note_client_seen(): Seen client from '127.0.0.1' with transport
#       '<NAME>'." — the server PT spoke the Extended ORPort protocol and
#       passed the client address (USERADDR) and transport name (TRANSPORT).
#
# Exit codes: 0 pass, 1 fail, 2 usage/setup error.

set -uo pipefail

PT_BIN=""
TRANSPORT=""
PT_ARGS=""
KEEP=0
TIMEOUT=120
TOR_BIN="${TOR_BIN:-tor}"

# A syntactically valid but unreachable directory authority.  Having any
# DirAuthority line replaces the public authorities (so nothing tries to reach
# the internet) and allows the bridge to run on a private (127.0.0.1) address.
DUMMY_FP="0123456789ABCDEF0123456789ABCDEF01234567"
DUMMY_DIRAUTH="DirAuthority e2edummy orport=1 no-v2 v3ident=${DUMMY_FP} 127.0.0.1:1 ${DUMMY_FP}"

usage() {
  sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'
}

die_setup() { echo "SETUP ERROR: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --pt-bin)    [ $# -ge 2 ] || die_setup "--pt-bin needs a value"; PT_BIN="$2"; shift 2 ;;
    --transport) [ $# -ge 2 ] || die_setup "--transport needs a value"; TRANSPORT="$2"; shift 2 ;;
    --pt-args)   [ $# -ge 2 ] || die_setup "--pt-args needs a value"; PT_ARGS="$2"; shift 2 ;;
    --timeout)   [ $# -ge 2 ] || die_setup "--timeout needs a value"; TIMEOUT="$2"; shift 2 ;;
    --tor-bin)   [ $# -ge 2 ] || die_setup "--tor-bin needs a value"; TOR_BIN="$2"; shift 2 ;;
    --keep)      KEEP=1; shift ;;
    -h|--help)   usage; exit 0 ;;
    *)           usage >&2; die_setup "unknown argument: $1" ;;
  esac
done

[ -n "$PT_BIN" ]    || die_setup "--pt-bin is required"
[ -n "$TRANSPORT" ] || die_setup "--transport is required"
[[ "$TRANSPORT" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die_setup "transport name must be a C identifier: $TRANSPORT"
[[ "$TIMEOUT" =~ ^[0-9]+$ ]] && [ "$TIMEOUT" -gt 0 ] || die_setup "--timeout must be a positive integer"
command -v "$TOR_BIN" >/dev/null 2>&1 || die_setup "tor binary not found: $TOR_BIN"
TOR_BIN="$(command -v "$TOR_BIN")"
# tor execs the PT with a relative path resolved against its cwd; make it absolute.
case "$PT_BIN" in
  /*) ;;
  *)  if [ -e "$PT_BIN" ]; then PT_BIN="$(cd "$(dirname "$PT_BIN")" && pwd)/$(basename "$PT_BIN")";
      else PT_BIN="$(command -v "$PT_BIN" || echo "$PT_BIN")"; fi ;;
esac
[ -f "$PT_BIN" ] && [ -x "$PT_BIN" ] || die_setup "PT binary not found or not executable: $PT_BIN"
case "$PT_BIN $PT_ARGS" in *'"'*|*$'\n'*) die_setup "PT path/args must not contain quotes or newlines" ;; esac

WORK="$(mktemp -d "${TMPDIR:-/tmp}/tor-e2e.XXXXXX")" || die_setup "mktemp failed"
BDIR="$WORK/bridge"; CDIR="$WORK/client"
BLOG="$WORK/bridge.log"; CLOG="$WORK/client.log"
mkdir -p "$BDIR/data" "$CDIR/data" && chmod 700 "$BDIR/data" "$CDIR/data" || die_setup "cannot create data dirs"

BRIDGE_PID=""; CLIENT_PID=""
stop_tor() { # $1 = pid
  local pid="$1" i
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  # tor exits on the first SIGTERM (it is not a relay with ShutdownWaitLength
  # applying to SIGTERM), and terminates its managed PTs itself.
  for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_tor "$CLIENT_PID"; stop_tor "$BRIDGE_PID"
  if [ "$KEEP" = 1 ]; then echo "kept work dir: $WORK"; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# ---- free loopback ports --------------------------------------------------
port_is_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_ports() { # $1 = how many; prints distinct free ports, one per line
  local n="$1"
  if command -v python3 >/dev/null 2>&1 && python3 - "$n" 2>/dev/null <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print("\n".join(str(s.getsockname()[1]) for s in socks))
PY
  then return 0; fi
  local got=() p tries=0
  while [ "${#got[@]}" -lt "$n" ] && [ $tries -lt 1000 ]; do
    tries=$((tries + 1)); p=$((20000 + RANDOM % 40000))
    [[ " ${got[*]-} " == *" $p "* ]] && continue
    port_is_free "$p" && got+=("$p")
  done
  [ "${#got[@]}" -eq "$n" ] || return 1
  printf '%s\n' "${got[@]}"
}
mapfile -t PORTS < <(free_ports 2) || true
[ "${#PORTS[@]}" -eq 2 ] || die_setup "could not find free loopback ports"
OR_PORT="${PORTS[0]}"; PT_PORT="${PORTS[1]}"

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
T_START="$(now)"
DEADLINE=$(( $(date +%s) + TIMEOUT ))
time_left() { [ "$(date +%s)" -lt "$DEADLINE" ]; }

show_logs() {
  local f
  for f in "$BLOG" "$CLOG"; do
    echo "----- last 30 lines of $(basename "$f") -----"
    if [ -f "$f" ]; then tail -n 30 "$f"; else echo "(no log)"; fi
  done
  [ -s "$WORK/bridge.stderr" ] && { echo "----- bridge stderr -----"; tail -n 20 "$WORK/bridge.stderr"; }
  [ -s "$WORK/client.stderr" ] && { echo "----- client stderr -----"; tail -n 20 "$WORK/client.stderr"; }
  return 0
}
setup_fail() { echo "SETUP ERROR: $*" >&2; show_logs; exit 2; }

# ---- bridge ----------------------------------------------------------------
cat > "$BDIR/torrc" <<EOF
DataDirectory $BDIR/data
BridgeRelay 1
Nickname e2ebridge
ContactInfo tor-e2e@localhost
ORPort 127.0.0.1:$OR_PORT
ExtORPort 127.0.0.1:auto
ServerTransportPlugin $TRANSPORT exec $PT_BIN${PT_ARGS:+ $PT_ARGS}
ServerTransportListenAddr $TRANSPORT 127.0.0.1:$PT_PORT
PublishServerDescriptor 0
AssumeReachable 1
ExitRelay 0
ExitPolicy reject *:*
$DUMMY_DIRAUTH
UseDefaultFallbackDirs 0
SocksPort 0
ControlPort 0
DirPort 0
Log debug file $BLOG
LogTimeGranularity 1
SafeLogging 0
RunAsDaemon 0
EOF

echo "INFO: work dir $WORK; bridge ORPort 127.0.0.1:$OR_PORT, $TRANSPORT listener 127.0.0.1:$PT_PORT"
"$TOR_BIN" -f "$BDIR/torrc" --quiet >"$WORK/bridge.stdout" 2>"$WORK/bridge.stderr" &
BRIDGE_PID=$!

# Wait until the bridge has registered the server transport and built its
# descriptor (otherwise the client's first fetch would get a 404 and back off).
while :; do
  kill -0 "$BRIDGE_PID" 2>/dev/null || setup_fail "bridge tor exited early"
  time_left || setup_fail "bridge did not become ready within ${TIMEOUT}s"
  if [ -s "$BDIR/data/fingerprint" ] \
     && grep -q "Registered server transport '$TRANSPORT'" "$BLOG" 2>/dev/null \
     && grep -q "router_rebuild_descriptor(): Rebuilding relay descriptor" "$BLOG" 2>/dev/null; then
    break
  fi
  sleep 0.1
done
T_BRIDGE="$(elapsed "$T_START")"

# ---- bridge line -----------------------------------------------------------
FP="$(awk '{print $2; exit}' "$BDIR/data/fingerprint")"
[[ "$FP" =~ ^[0-9A-F]{40}$ ]] || setup_fail "cannot parse bridge fingerprint"
PT_ADDR="127.0.0.1:$PT_PORT"
BRIDGE_ARGS=""; ARGS_SRC=""
# tor >= 0.4.9 writes <DataDirectory>/bridgelines; give it a moment after the
# transport registers.
for _ in $(seq 1 20); do
  [ -f "$BDIR/data/bridgelines" ] && grep -q "^Bridge $TRANSPORT " "$BDIR/data/bridgelines" && break
  sleep 0.1
done
if [ -f "$BDIR/data/bridgelines" ] && grep -q "^Bridge $TRANSPORT " "$BDIR/data/bridgelines"; then
  LINE="$(grep -m1 "^Bridge $TRANSPORT " "$BDIR/data/bridgelines")"
  # fields: Bridge NAME ADDR:PORT FP [k=v ...]; keep our own addr/FP (the file
  # may carry placeholders or a wildcard address) and take only the args.
  BRIDGE_ARGS="$(awk '{ s = ""; for (i = 5; i <= NF; i++) s = s (s == "" ? "" : " ") $i; print s }' <<<"$LINE")"
  ARGS_SRC="bridgelines"
elif [ -f "$BDIR/data/pt_state/${TRANSPORT}_bridgeline.txt" ]; then
  # obfs4proxy-style state file (pre-0.4.9 tor): last "Bridge ..." line.
  LINE="$(grep "^Bridge $TRANSPORT " "$BDIR/data/pt_state/${TRANSPORT}_bridgeline.txt" | tail -n1)"
  BRIDGE_ARGS="$(awk '{ s = ""; for (i = 5; i <= NF; i++) s = s (s == "" ? "" : " ") $i; print s }' <<<"$LINE")"
  ARGS_SRC="pt_state/${TRANSPORT}_bridgeline.txt"
else
  ARGS_SRC="fingerprint only (no args)"
fi
BRIDGE_LINE="Bridge $TRANSPORT $PT_ADDR $FP${BRIDGE_ARGS:+ $BRIDGE_ARGS}"
echo "INFO: bridge ready after ${T_BRIDGE}s; bridge line from $ARGS_SRC: $BRIDGE_LINE"

# ---- client ----------------------------------------------------------------
cat > "$CDIR/torrc" <<EOF
DataDirectory $CDIR/data
UseBridges 1
$BRIDGE_LINE
ClientTransportPlugin $TRANSPORT exec $PT_BIN${PT_ARGS:+ $PT_ARGS}
$DUMMY_DIRAUTH
UseDefaultFallbackDirs 0
SocksPort 127.0.0.1:auto
ControlPort 0
Log info file $CLOG
LogTimeGranularity 1
SafeLogging 0
RunAsDaemon 0
EOF

"$TOR_BIN" -f "$CDIR/torrc" --quiet >"$WORK/client.stdout" 2>"$WORK/client.stderr" &
CLIENT_PID=$!

# ---- evidence ----------------------------------------------------------------
EV_PT="" EV_DESC="" EV_USERADDR="" EV_TRANSPORT=""
collect() {
  EV_PT="$(grep -m1 "Bootstrapped [0-9]*% (conn_done_pt): Connected to pluggable transport" "$CLOG" 2>/dev/null)"
  EV_DESC="$(grep -m1 "new bridge descriptor '[^']*' (fresh): \\\$$FP" "$CLOG" 2>/dev/null)"
  EV_USERADDR="$(grep -m1 "Received USERADDR.*to '127\.0\.0\.1:[1-9][0-9]*'" "$BLOG" 2>/dev/null)"
  EV_TRANSPORT="$(grep -m1 "Seen client from '127\.0\.0\.1' with transport '$TRANSPORT'\." "$BLOG" 2>/dev/null)"
}
while :; do
  collect
  [ -n "$EV_PT" ] && [ -n "$EV_DESC" ] && [ -n "$EV_USERADDR" ] && [ -n "$EV_TRANSPORT" ] && break
  kill -0 "$CLIENT_PID" 2>/dev/null || { echo "FAIL: client tor exited early"; break; }
  kill -0 "$BRIDGE_PID" 2>/dev/null || { echo "FAIL: bridge tor exited early"; break; }
  time_left || { echo "FAIL: timed out after ${TIMEOUT}s"; break; }
  sleep 0.1
done
collect
TOTAL="$(elapsed "$T_START")"

ok=1
report() { # $1 = label, $2 = evidence line, $3 = description
  if [ -n "$2" ]; then echo "PASS: $1 $3"; echo "      $2";
  else echo "FAIL: $1 $3 — not found"; ok=0; fi
}
report "(a1) client.log:" "$EV_PT" "client connected to the bridge through the '$TRANSPORT' client PT"
report "(a2) client.log:" "$EV_DESC" "fresh bridge descriptor for $FP fetched through the transport"
report "(b1) bridge.log:" "$EV_USERADDR" "ExtORPort USERADDR carried the client's address"
report "(b2) bridge.log:" "$EV_TRANSPORT" "ExtORPort TRANSPORT carried transport name '$TRANSPORT'"

if [ "$ok" = 1 ]; then
  echo "PASS: tor client reached the bridge through '$TRANSPORT' (${TOTAL}s total, bridge ready at ${T_BRIDGE}s)"
  exit 0
fi
echo "FAIL: end-to-end check failed after ${TOTAL}s"
show_logs
exit 1
