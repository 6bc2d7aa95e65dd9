#!/usr/bin/env bash
# tor-e2e.sh — prove that a tor client reaches a tor bridge through a
# pluggable transport, fully offline on loopback (everything on 127.0.0.1).
#
# Usage:
#   scripts/tor-e2e.sh --pt-bin PATH --transport NAME [--pt-args "..."]
#                      [--keep] [--timeout SECS] [--tor-bin PATH]
#   e.g. scripts/tor-e2e.sh --pt-bin /usr/bin/obfs4proxy --transport obfs4
#        scripts/tor-e2e.sh --pt-bin target/debug/ptkit --transport plain
#
#   --pt-args  extra words appended to both ClientTransportPlugin and
#              ServerTransportPlugin exec lines (word-split, no quoting)
#   --keep     keep the temp dir (torrcs, logs, data dirs) and print its path
#   --timeout  overall bound in seconds (default 120)
#
# client tor -SOCKS-> client PT =NAME=> bridge PT -ExtORPort-> bridge tor
# PASS needs all of:
#   (a1) client.log "Bootstrapped 2% (conn_done_pt): Connected to pluggable transport"
#   (a2) client.log "new bridge descriptor '<nick>' (fresh): $<FP>~..."
#   (b1) bridge-debug.log "Received USERADDR.We rewrite our address from
#        '127.0.0.1:<p>' to '127.0.0.1:<client port>'."   (ExtORPort USERADDR)
#   (b2) bridge-debug.log "Seen client from '127.0.0.1' with transport '<NAME>'."
#        (ExtORPort TRANSPORT; without it tor records '<??>')
# Exit: 0 pass, 1 fail (incl. PT errors), 2 usage/setup error.
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
  sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'
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
if ! [[ "$TIMEOUT" =~ ^[0-9]+$ ]] || [ "$TIMEOUT" -eq 0 ]; then die_setup "--timeout must be a positive integer"; fi
command -v "$TOR_BIN" >/dev/null 2>&1 || die_setup "tor binary not found: $TOR_BIN"
TOR_BIN="$(command -v "$TOR_BIN")"
# tor execs the PT with a relative path resolved against its cwd; make it absolute.
case "$PT_BIN" in
  /*) ;;
  *)  if [ -e "$PT_BIN" ]; then PT_BIN="$(cd "$(dirname "$PT_BIN")" && pwd)/$(basename "$PT_BIN")";
      else PT_BIN="$(command -v "$PT_BIN" || echo "$PT_BIN")"; fi ;;
esac
if ! [ -f "$PT_BIN" ] || ! [ -x "$PT_BIN" ]; then die_setup "PT binary not found or not executable: $PT_BIN"; fi
case "$PT_BIN $PT_ARGS" in *'"'*|*$'\n'*) die_setup "PT path/args must not contain quotes or newlines" ;; esac

WORK="$(mktemp -d "${TMPDIR:-/tmp}/tor-e2e.XXXXXX")" || die_setup "mktemp failed"
BDIR="$WORK/bridge"; CDIR="$WORK/client"
BLOG="$WORK/bridge.log"; BDLOG="$WORK/bridge-debug.log"; CLOG="$WORK/client.log"
if ! mkdir -p "$BDIR/data" "$CDIR/data" || ! chmod 700 "$BDIR/data" "$CDIR/data"; then die_setup "cannot create data dirs"; fi
# Empty GeoIP databases: parsing the real ones costs ~0.4 s per tor and we
# don't need country codes (the bridge still records the client + transport).
: > "$WORK/geoip-empty" || die_setup "cannot write to $WORK"

BRIDGE_PID=""; CLIENT_PID=""
# shellcheck disable=SC2317  # functions below are invoked from traps
stop_tor() { # $1 = pid of a tor we started; also reaps its managed PTs
  local pid="$1" i kids
  [ -n "$pid" ] || return 0
  kids="$(ps -o pid= --ppid "$pid" 2>/dev/null | tr -s ' \n' ' ')"
  if kill -TERM "$pid" 2>/dev/null; then
    # tor exits on SIGTERM (it is not a public relay) and SIGTERMs its PTs.
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  # Safety net for PTs that ignore both SIGTERM and TOR_PT_EXIT_ON_STDIN_CLOSE.
  for i in $kids; do kill -0 "$i" 2>/dev/null && kill -KILL "$i" 2>/dev/null; done
  return 0
}
# shellcheck disable=SC2317
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

now() { if [ -n "${EPOCHREALTIME:-}" ]; then echo "${EPOCHREALTIME/,/.}"; else date +%s.%N; fi; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
T_START="$(now)"
DEADLINE="$(awk -v a="$T_START" -v t="$TIMEOUT" 'BEGIN { printf "%.3f", a + t }')"
time_left() { awk -v d="$DEADLINE" -v n="$(now)" 'BEGIN { exit !(n < d) }'; }

show_logs() {
  local f
  for f in "$BLOG" "$CLOG"; do
    echo "----- last 30 lines of $(basename "$f") (info level) -----"
    if [ -f "$f" ]; then tail -n 30 "$f"; else echo "(no log)"; fi
  done
  for f in "$BLOG" "$CLOG"; do
    [ -f "$f" ] || continue
    echo "----- warnings and PT lines in $(basename "$f") (last 20) -----"
    grep -E "\[(warn|err)\]|managed proxy|transport" "$f" | grep -v "SafeLogging\|running Tor as root\|DirAuthority or AlternateDirAuthority" | tail -n 20
  done
  [ -s "$WORK/bridge.stderr" ] && { echo "----- bridge stderr -----"; tail -n 20 "$WORK/bridge.stderr"; }
  [ -s "$WORK/client.stderr" ] && { echo "----- client stderr -----"; tail -n 20 "$WORK/client.stderr"; }
  return 0
}
setup_fail() { echo "SETUP ERROR: $*"; show_logs; exit 2; }
fail_now() { echo "FAIL: $*"; show_logs; exit 1; }
# Fatal PT problems tor reports (PT answered *METHOD-ERROR, offered no
# listener, or exited).  Tor keeps respawning a dead PT, so don't wait.
PT_ERR_RE="managed proxy encountered a method error|didn't launch any pluggable transport listeners|Managed proxy at '.*' died in state|Could not launch managed proxy|PROXY-ERROR|ENV-ERROR|VERSION-ERROR"
pt_error() { grep -m1 -E "$PT_ERR_RE" "$1" 2>/dev/null; }

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
Log info file $BLOG
Log debug file $BDLOG
LogTimeGranularity 1
SafeLogging 0
RunAsDaemon 0
GeoIPFile $WORK/geoip-empty
GeoIPv6File $WORK/geoip-empty
EOF

echo "INFO: work dir $WORK; bridge ORPort 127.0.0.1:$OR_PORT, $TRANSPORT listener 127.0.0.1:$PT_PORT"
"$TOR_BIN" -f "$BDIR/torrc" --quiet >"$WORK/bridge.stdout" 2>"$WORK/bridge.stderr" &
BRIDGE_PID=$!

# Wait until the bridge has registered the server transport and built its
# descriptor (otherwise the client's first fetch would get a 404 and back off).
while :; do
  kill -0 "$BRIDGE_PID" 2>/dev/null || setup_fail "bridge tor exited early (see bridge.stderr/bridge.log)"
  e="$(pt_error "$BLOG")" && fail_now "bridge-side PT error: $e"
  time_left || fail_now "bridge did not register transport '$TRANSPORT' / build its descriptor within ${TIMEOUT}s"
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
# k=v transport args of a "Bridge NAME ADDR FP k=v ..." line (the obfs4proxy
# template has "<IP ADDRESS>:<PORT>" with a space, so don't count fields).
bridge_args() { awk '{ s = ""; for (i = 3; i <= NF; i++) if ($i ~ /^[^<>]+=/) s = s (s == "" ? "" : " ") $i; print s }'; }
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
  BRIDGE_ARGS="$(bridge_args <<<"$LINE")"
  ARGS_SRC="bridgelines"
elif [ -f "$BDIR/data/pt_state/${TRANSPORT}_bridgeline.txt" ]; then
  # obfs4proxy-style state file (pre-0.4.9 tor): last "Bridge ..." line.
  LINE="$(grep "^Bridge $TRANSPORT " "$BDIR/data/pt_state/${TRANSPORT}_bridgeline.txt" | tail -n1)"
  BRIDGE_ARGS="$(bridge_args <<<"$LINE")"
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
GeoIPFile $WORK/geoip-empty
GeoIPv6File $WORK/geoip-empty
EOF

"$TOR_BIN" -f "$CDIR/torrc" --quiet >"$WORK/client.stdout" 2>"$WORK/client.stderr" &
CLIENT_PID=$!

# ---- evidence ----------------------------------------------------------------
EV_PT="" EV_DESC="" EV_USERADDR="" EV_TRANSPORT=""
collect() {
  EV_PT="$(grep -m1 "Bootstrapped [0-9]*% (conn_done_pt): Connected to pluggable transport" "$CLOG" 2>/dev/null)"
  EV_DESC="$(grep -m1 "new bridge descriptor '[^']*' (fresh): \\\$$FP" "$CLOG" 2>/dev/null)"
  EV_USERADDR="$(grep -m1 "Received USERADDR.*to '127\.0\.0\.1:[1-9][0-9]*'" "$BDLOG" 2>/dev/null)"
  EV_TRANSPORT="$(grep -m1 "Seen client from '127\.0\.0\.1' with transport '$TRANSPORT'\." "$BDLOG" 2>/dev/null)"
}
while :; do
  collect
  [ -n "$EV_PT" ] && [ -n "$EV_DESC" ] && [ -n "$EV_USERADDR" ] && [ -n "$EV_TRANSPORT" ] && break
  kill -0 "$CLIENT_PID" 2>/dev/null || { echo "FAIL: client tor exited early"; break; }
  kill -0 "$BRIDGE_PID" 2>/dev/null || { echo "FAIL: bridge tor exited early"; break; }
  e="$(pt_error "$CLOG")" && { echo "FAIL: client-side PT error: $e"; break; }
  e="$(pt_error "$BLOG")" && { echo "FAIL: bridge-side PT error: $e"; break; }
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
report "(b1) bridge-debug.log:" "$EV_USERADDR" "ExtORPort USERADDR carried the client's address"
report "(b2) bridge-debug.log:" "$EV_TRANSPORT" "ExtORPort TRANSPORT carried transport name '$TRANSPORT'"
if [ -z "$EV_TRANSPORT" ]; then
  seen="$(grep -m1 "Seen client from" "$BDLOG" 2>/dev/null)"
  [ -n "$seen" ] && echo "      (instead saw: $seen)"
fi
if [ -z "$EV_USERADDR" ] && [ -n "$EV_PT" ]; then
  echo "      (hint: the server PT must connect to TOR_PT_EXTENDED_SERVER_PORT and send USERADDR, not to TOR_PT_ORPORT)"
fi

if [ "$ok" = 1 ]; then
  echo "PASS: tor client reached the bridge through '$TRANSPORT' (${TOTAL}s total, bridge ready at ${T_BRIDGE}s)"
  exit 0
fi
echo "FAIL: end-to-end check failed after ${TOTAL}s"
show_logs
exit 1
