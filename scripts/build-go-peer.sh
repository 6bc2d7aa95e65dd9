#!/usr/bin/env bash
# scripts/build-go-peer.sh OUT — builds ptkit's Go turbotunnel reference peer
# (tests/go-turbotunnel) offline, against Debian's packaged Go libraries:
#   golang-go (1.19), golang-github-xtaci-kcp-dev (kcp-go 5.6.1),
#   golang-github-xtaci-smux-dev (smux 1.5.16), golang-github-gorilla-websocket-dev (1.5.0).
# GOPATH mode: imports resolve from /usr/share/gocode/src; no module proxy, no network.
# Exit 3 when Go or a package is missing (the tests skip on that unless CI=true).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:?usage: $0 OUTPUT-PATH}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

gocode=/usr/share/gocode
command -v go >/dev/null 2>&1 || { echo "build-go-peer: go is not installed (apt-get install golang-go)" >&2; exit 3; }
for d in github.com/xtaci/kcp-go github.com/xtaci/smux github.com/gorilla/websocket; do
  if [ ! -d "$gocode/src/$d" ]; then
    echo "build-go-peer: $gocode/src/$d is missing (apt-get install golang-go golang-github-xtaci-kcp-dev golang-github-xtaci-smux-dev golang-github-gorilla-websocket-dev)" >&2
    exit 3
  fi
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/src/ptkit.invalid/go-turbotunnel" "$(dirname "$out")"
cp "$here/tests/go-turbotunnel/main.go" "$tmp/src/ptkit.invalid/go-turbotunnel/"
cd "$tmp/src/ptkit.invalid/go-turbotunnel"
# Reuse Go's build cache when there is one (a rebuild then takes about a second).
cache="${GOCACHE:-$(go env GOCACHE 2>/dev/null || true)}"
if [ -z "$cache" ] || ! mkdir -p "$cache" 2>/dev/null; then cache="$tmp/cache"; fi
env GO111MODULE=off GOPATH="$gocode:$tmp" GOPROXY=off GOFLAGS= CGO_ENABLED=0 \
  GOCACHE="$cache" \
  go build -o "$out.tmp" .
mv -f "$out.tmp" "$out"
echo "built $out"
