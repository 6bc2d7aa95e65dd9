#!/usr/bin/env bash
# bench-quic.sh — QUIC tunnel numbers for docs/BENCHMARKS.md ("QUIC tunnels"): single- and
# 16-stream throughput vs raw TCP and the websocket transport, tunnel setup time (QUIC
# handshake + HMAC authentication), and memory per idle tunnel, all on loopback in one
# process (crates/ptkit-quic/examples/quic_bench.rs).
#
# Usage: scripts/bench-quic.sh [--bytes N] [--setup-count K] [--tunnels T] [--no-build]
#   --bytes        bytes per throughput measurement, split across the streams (default 1 GiB)
#   --setup-count  sequential tunnels timed for setup (default 200)
#   --tunnels      idle tunnels for the memory figure (default 1000)
# Prints key=value lines. Targets (reported, not enforced): >= 500 MiB/s single stream,
# <= 1 ms setup, <= 64 KiB per idle tunnel.
set -euo pipefail
cd "$(dirname "$0")/.."
BYTES=1073741824; SETUP=200; TUNNELS=1000; BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --bytes) BYTES="$2"; shift 2 ;;
    --setup-count) SETUP="$2"; shift 2 ;;
    --tunnels) TUNNELS="$2"; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
if [ "$BUILD" = 1 ]; then
  cargo build --release -q -p ptkit-quic --example quic_bench
fi
ulimit -n 65536 2>/dev/null || true
echo "host: $(nproc) cores, $(uname -r); bytes=$BYTES setup=$SETUP tunnels=$TUNNELS"
"$TARGET_DIR/release/examples/quic_bench" --bytes "$BYTES" --setup-count "$SETUP" --tunnels "$TUNNELS"
