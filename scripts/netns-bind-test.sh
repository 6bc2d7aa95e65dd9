#!/usr/bin/env bash
# netns-bind-test.sh — item E-10: with TOR_PT_OUTBOUND_BIND_ADDRESS_V4/_V6 set, ptkit's
# outgoing connections leave from those addresses (loopback destinations excepted).
#
# Needs root (a private network namespace). Everything happens inside that namespace, on
# documentation addresses (192.0.2.0/24, 2001:db8::/32) bound to its own loopback device:
# no packet can leave the machine.
#
#   scripts/netns-bind-test.sh PTKIT_BINARY
set -euo pipefail
PTKIT="$(realpath "${1:?usage: $0 PTKIT_BINARY}")"
[ "$(id -u)" -eq 0 ] || { echo "needs root for a network namespace"; exit 2; }
NS="ptkit-bind-$$"
WORK="$(mktemp -d)"
cleanup() {
  ip netns pids "$NS" 2>/dev/null | xargs -r kill 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
ip netns add "$NS"
ip -n "$NS" link set lo up
for a in 192.0.2.1/32 192.0.2.2/32 192.0.2.3/32; do ip -n "$NS" addr add "$a" dev lo; done
for a in 2001:db8::1/128 2001:db8::2/128; do ip -n "$NS" addr add "$a" dev lo nodad; done

# A listener that writes each client's source address back to it and closes.
cat >"$WORK/whoami.py" <<'PY'
import socket, sys, threading
def serve(family, addr):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, 7000)); s.listen(16)
    while True:
        c, peer = s.accept(); c.sendall((peer[0] + "\n").encode()); c.close()
threading.Thread(target=serve, args=(socket.AF_INET, "192.0.2.1"), daemon=True).start()
threading.Thread(target=serve, args=(socket.AF_INET, "127.0.0.1"), daemon=True).start()
serve(socket.AF_INET6, "2001:db8::1")
PY
ip netns exec "$NS" python3 "$WORK/whoami.py" &
mkfifo "$WORK/stdin"
sleep infinity >"$WORK/stdin" &
HOLD=$!
ip netns exec "$NS" env -i TOR_PT_MANAGED_TRANSPORT_VER=1 TOR_PT_STATE_LOCATION="$WORK/state" \
  TOR_PT_CLIENT_TRANSPORTS=plain TOR_PT_EXIT_ON_STDIN_CLOSE=1 \
  TOR_PT_OUTBOUND_BIND_ADDRESS_V4=192.0.2.3 TOR_PT_OUTBOUND_BIND_ADDRESS_V6='[2001:db8::2]' \
  "$PTKIT" <"$WORK/stdin" >"$WORK/stdout" &
for _ in $(seq 50); do grep -q 'CMETHODS DONE' "$WORK/stdout" 2>/dev/null && break; sleep 0.1; done
SOCKS="$(awk '/^CMETHOD plain/ {print $4}' "$WORK/stdout")"
[ -n "$SOCKS" ] || { echo "FAIL: no CMETHOD"; cat "$WORK/stdout"; exit 1; }
sleep 0.3
ask() { ip netns exec "$NS" curl -s --max-time 5 --socks5 "$SOCKS" "telnet://$1" </dev/null || true; }
fail=0
check() {
  local got
  got="$(ask "$1" | tr -d '\r\n')"
  if [ "$got" = "$2" ]; then echo "PASS: to $1 the connection came from $got"
  else echo "FAIL: to $1 the connection came from '$got', want $2"; fail=1; fi
}
check 192.0.2.1:7000 192.0.2.3          # IPv4 destination: TOR_PT_OUTBOUND_BIND_ADDRESS_V4
check '[2001:db8::1]:7000' 2001:db8::2  # IPv6 destination: TOR_PT_OUTBOUND_BIND_ADDRESS_V6
check 127.0.0.1:7000 127.0.0.1          # loopback destinations are never bound
kill "$HOLD" 2>/dev/null || true
exit $fail
