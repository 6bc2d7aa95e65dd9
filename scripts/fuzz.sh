#!/usr/bin/env bash
# Fuzz ptkit's parsers of untrusted bytes with cargo-fuzz (libFuzzer + ASan, nightly).
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#   scripts/fuzz.sh                      # CI smoke: every target, 20 s each
#   scripts/fuzz.sh 3600 socks_server    # one target for an hour
#   scripts/fuzz.sh 600 env args         # some targets, 10 minutes each
#   scripts/fuzz.sh 0 cstring            # 0 = no time limit (until a crash or Ctrl-C)
# Targets (fuzz/fuzz_targets/): socks_server env host_lines args extorport cstring proxy_url host_parser websocket_base64 websocket_client_addr websocket_frames turbotunnel_encapsulation kcp_input smux_frames broker_messages stun_turn mux_header quic_header.
#
# Longer runs: new interesting inputs accumulate in fuzz/corpus/<target>/ (only the seed-*
# files are tracked), so repeated runs continue where the last one stopped. To use both cores
# on one target, pass libFuzzer options through FUZZ_ARGS, e.g.
#   FUZZ_ARGS="-fork=2" scripts/fuzz.sh 3600 socks_server
# Minimise the corpus now and then: cargo +nightly fuzz cmin --fuzz-dir fuzz <target>.
#
# A crash, timeout or OOM makes the script exit 1 after the remaining targets ran; it prints
# the artifact (fuzz/artifacts/<target>/...), its hex, its decoded form (`cargo fuzz fmt`) and
# the command that reproduces it. Full libFuzzer logs: fuzz/artifacts/logs/<target>.log.
# Seeds (fuzz/corpus/*/seed-*) are regenerated and checked by:
#   cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds
#
# Environment: FUZZ_TOOLCHAIN (default nightly), CARGO_FUZZ_VERSION (installed with
# `cargo install --locked` when `cargo fuzz` is missing; default 0.13.2), FUZZ_TIMEOUT
# (seconds one input may take before it counts as a hang; default 10), FUZZ_ARGS (extra
# libFuzzer options), FUZZ_VERBOSE=1 (stream libFuzzer output instead of logging it).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

TOOLCHAIN="${FUZZ_TOOLCHAIN:-nightly}"
CARGO_FUZZ_VERSION="${CARGO_FUZZ_VERSION:-0.13.2}"
HANG_SECS="${FUZZ_TIMEOUT:-10}"
SECS=20
if [[ $# -gt 0 && "$1" =~ ^[0-9]+$ ]]; then
    SECS="$1"
    shift
fi

t0=$SECONDS
say() { printf '[fuzz.sh %4ds] %s\n' "$((SECONDS - t0))" "$*"; }

if ! cargo "+$TOOLCHAIN" --version >/dev/null 2>&1; then
    echo "fuzz.sh: toolchain '$TOOLCHAIN' is not installed (rustup toolchain install $TOOLCHAIN)" >&2
    exit 2
fi
if ! cargo "+$TOOLCHAIN" fuzz --version >/dev/null 2>&1; then
    say "cargo-fuzz not found: installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi
say "$(cargo "+$TOOLCHAIN" fuzz --version)"

FUZZ=(cargo "+$TOOLCHAIN" fuzz)
if [[ $# -gt 0 ]]; then
    TARGETS=("$@")
else
    mapfile -t TARGETS < <("${FUZZ[@]}" list --fuzz-dir fuzz)
fi
known=" $("${FUZZ[@]}" list --fuzz-dir fuzz | tr '\n' ' ') "
for t in "${TARGETS[@]}"; do
    if [[ "$known" != *" $t "* ]]; then
        echo "fuzz.sh: unknown target '$t' (known:$known)" >&2
        exit 2
    fi
done

say "building ${#TARGETS[@]} target(s)"
if [[ $# -gt 0 ]]; then
    for t in "${TARGETS[@]}"; do "${FUZZ[@]}" build --fuzz-dir fuzz "$t"; done
else
    "${FUZZ[@]}" build --fuzz-dir fuzz
fi
say "build done"

mkdir -p fuzz/artifacts/logs
stamp=$(mktemp)
trap 'rm -f "$stamp"' EXIT
failed=()
for t in "${TARGETS[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    log="fuzz/artifacts/logs/$t.log"
    touch "$stamp"
    say "fuzzing $t for ${SECS}s"
    read -r -a extra <<<"${FUZZ_ARGS:-}"
    cmd=("${FUZZ[@]}" run --fuzz-dir fuzz "$t" "fuzz/corpus/$t" --
        "-max_total_time=$SECS" -rss_limit_mb=2048 "-timeout=$HANG_SECS" -print_final_stats=1
        "${extra[@]}")
    status=0
    if [[ "${FUZZ_VERBOSE:-0}" == 1 ]]; then
        "${cmd[@]}" 2>&1 | tee "$log" || status=$?
    else
        "${cmd[@]}" >"$log" 2>&1 || status=$?
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
    mapfile -t found < <(find "fuzz/artifacts/$t" -maxdepth 1 -type f -newer "$stamp" \
        \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) | sort)
    if [[ $status -eq 0 && ${#found[@]} -eq 0 ]]; then
        say "$t: ok (${runs:-?} runs)"
        continue
    fi
    failed+=("$t")
    say "$t: FAILED (exit $status), full log: $log"
    {
        sed -n '/panicked at\|ERROR: libFuzzer\|==ERROR: /,/^SUMMARY/p' "$log" | head -n 80
        grep -q 'panicked at\|ERROR: libFuzzer\|==ERROR: ' "$log" || tail -n 40 "$log"
    } | sed 's/^/    /'
    for a in "${found[@]}"; do
        echo "    artifact: $a"
        echo "    hex: $(od -An -v -tx1 "$a" | tr -s ' \n' ' ' | cut -c1-900)"
        if [[ "$t" == socks_server || "$t" == env ]]; then
            echo "    decoded (arbitrary):"
            "${FUZZ[@]}" fmt --fuzz-dir fuzz "$t" "$a" 2>&1 | grep -v '^$' | tail -n 20 | sed 's/^/      /' || true
        fi
        echo "    reproduce: RUST_BACKTRACE=1 cargo +$TOOLCHAIN fuzz run --fuzz-dir fuzz $t $a"
    done
    if [[ ${#found[@]} -eq 0 ]]; then
        echo "    (no artifact written: see $log)"
    fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    say "FAILED: ${failed[*]}"
    exit 1
fi
say "all ${#TARGETS[@]} target(s) clean, ${SECS}s each"
