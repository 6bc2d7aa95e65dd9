#!/usr/bin/env bash
# scripts/test.sh — the one test command: installs the real peers the tests need (Debian
# packages, when run as root), then runs every check. CI runs exactly this (.ci/run).
#
#   scripts/test.sh            everything (about 10 minutes on 2 cores from a clean clone)
#   FUZZ_SECONDS=600 scripts/test.sh    longer fuzzing per target (default 5 s: a smoke)
#   SKIP_FUZZ=1 scripts/test.sh         everything but the fuzz smoke (not for CI)
#
# With CI=true a missing peer is a failure, never a skip.
set -uo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS="${FUZZ_SECONDS:-5}"
passed=0
failed=0
failures=()

step() {
  local name="$1"
  shift
  echo
  echo "=== $name"
  local start=$SECONDS
  if "$@"; then
    echo "--- ok: $name ($((SECONDS - start)) s)"
    passed=$((passed + 1))
  else
    echo "--- FAILED: $name ($((SECONDS - start)) s)"
    failed=$((failed + 1))
    failures+=("$name")
  fi
}

# Debian packages of the real peers: tor (client and bridge), obfs4proxy and snowflake-client
# (third-party PTs for the host side), snowflake-proxy (with snowflake-client, the official
# Snowflake peers of our server and broker), Go with kcp-go, smux and gorilla/websocket (a
# reference turbotunnel peer built from Debian's sources), pebble (ACME), websockify,
# python3-websockets and chromium (WebSocket peers), coturn (a real TURN client).
install_peers() {
  local want=(tor obfs4proxy snowflake-client snowflake-proxy pebble websockify python3-websockets
    chromium golang-go golang-github-xtaci-kcp-dev golang-github-xtaci-smux-dev
    golang-github-gorilla-websocket-dev coturn iproute2)
  local missing=()
  for p in "${want[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${missing[*]} (run as root to install them)"
    [ "${CI:-}" = "true" ] && return 1
    return 0
  fi
  echo "installing: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The single-crypto-provider rule: ring must never be compiled in.
no_ring() {
  # `cargo tree -i` fails when ring is not in the lockfile and prints nothing when it is there
  # but unused; either is fine. Any "ring v…" line means it would be compiled in.
  local tree
  tree="$(cargo tree --workspace --locked -e normal,build,dev -i ring 2>/dev/null || true)"
  if printf '%s\n' "$tree" | grep -q '^ring v'; then
    echo "ring is in the dependency tree:"
    printf '%s\n' "$tree"
    return 1
  fi
  echo "ring: not compiled (normal, build and dev dependencies)"
}

cargo_deny() {
  if ! command -v cargo-deny >/dev/null 2>&1; then
    cargo install --locked cargo-deny@0.20.2 >/dev/null 2>&1 || {
      echo "cannot install cargo-deny"
      return 1
    }
  fi
  # Advisories need the network to fetch the database; bans, licenses and sources do not.
  cargo deny --workspace check bans licenses sources
}

tor_e2e() {
  if ! command -v tor >/dev/null 2>&1; then
    echo "tor is not installed"
    [ "${CI:-}" = "true" ] && return 1
    echo "SKIP (not CI)"
    return 0
  fi
  # The harness must pass with the reference PT too, or a pass proves nothing.
  scripts/tor-e2e.sh --pt-bin /usr/bin/obfs4proxy --transport obfs4 --timeout 90 &&
    scripts/tor-e2e.sh --pt-bin target/release/ptkit --transport plain --timeout 90 &&
    scripts/tor-e2e.sh --pt-bin target/release/ptkit --transport websocket --timeout 90 &&
    scripts/tor-e2e.sh --pt-bin target/release/ptkit --transport quic --timeout 90
}

# The official snowflake-client and snowflake-proxy through ptkit's broker and server, in a
# private network namespace: data, proxy failover, and a real tor client and bridge.
snowflake_e2e() {
  if [ "$(id -u)" -ne 0 ] || ! command -v snowflake-proxy >/dev/null 2>&1; then
    echo "needs root (network namespace) and snowflake-client/snowflake-proxy"
    [ "${CI:-}" = "true" ] && return 1
    echo "SKIP (not CI)"
    return 0
  fi
  scripts/snowflake-e2e.sh --ptkit target/release/ptkit --timeout 150
}

netns_bind() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "needs root for a network namespace"
    [ "${CI:-}" = "true" ] && return 1
    echo "SKIP (not root, not CI)"
    return 0
  fi
  scripts/netns-bind-test.sh target/release/ptkit
}

fuzz_smoke() {
  if [ "${SKIP_FUZZ:-}" = "1" ]; then
    echo "SKIP_FUZZ=1"
    return 0
  fi
  scripts/fuzz.sh "$FUZZ_SECONDS"
}

step "install real peers" install_peers
step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy -D warnings" cargo clippy --workspace --all-targets --locked -- -D warnings
step "cargo test (unit, property, integration, real peers)" cargo test --workspace --locked
step "single crypto provider (no ring)" no_ring
step "cargo deny (bans, licenses, sources)" cargo_deny
step "release build" cargo build --release --locked -p ptkit
step "real tor, both roles, offline on loopback (plain, websocket, quic)" tor_e2e
step "Snowflake: official client and proxy through ptkit's broker and server (netns)" snowflake_e2e
step "outbound bind addresses in a network namespace (E-10)" netns_bind
step "fuzz smoke (${FUZZ_SECONDS}s per target)" fuzz_smoke

echo
echo "=== summary"
for f in "${failures[@]}"; do echo "FAILED: $f"; done
echo "test.sh: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
