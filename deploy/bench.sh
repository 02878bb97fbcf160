#!/usr/bin/env bash
# hopwatch's probe engine benchmarks (docs/benchmarks.md): installs the peers
# they compare against, builds release binaries, runs them in the network lab.
# Not part of CI and not in deploy/setup-test.sh: trippy alone takes minutes to build.
#
#   sudo bash deploy/bench.sh accuracy     # per-probe RTT error against a capture, idle and loaded
#   sudo bash deploy/bench.sh throughput   # probes/s and CPU per probe against mtr
#   sudo bash deploy/bench.sh monitor      # the daemon's CPU, memory, disk writes; history size, queries
#   sudo bash deploy/bench.sh history      # every row of issue 15's table, old format beside new (~40 min)
#   sudo bash deploy/bench.sh all          # accuracy and throughput
#   sudo bash deploy/bench.sh install      # only install the peers
#
# Arguments after the benchmark name go to its binary (see --help), e.g.
#   sudo bash deploy/bench.sh accuracy --rounds 50 --conditions idle
# Each run prints a Markdown section and keeps it, with the captures and the
# tools' raw outputs, under target/bench/<benchmark>/. Each benchmark stops by
# itself well within 10 minutes; stress-ng is started and stopped by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

TRIPPY_VERSION=0.13.0

log() { printf 'bench: %s\n' "$*" >&2; }

usage() {
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

[ $# -ge 1 ] || usage
what=$1
shift
case "$what" in
accuracy | throughput | all | install | monitor | history) ;;
*) usage ;;
esac

if [ "$(id -u)" -ne 0 ]; then
    log "must run as root (network namespaces, eBPF, packet capture); try: sudo bash $0 $what"
    exit 1
fi

# 1. The build toolchain, the lab's tools and the test tools (tcpdump among them).
bash deploy/setup-test.sh

# The monitoring daemon benchmark compares against no peer: build and run it.
if [ "$what" = monitor ]; then
    log "building release binaries"
    cargo build --release --locked -p hopwatch-service --bin hopwatch
    cargo build --release --locked -p hopwatch-tests --bin bench-monitor
    out=target/bench/monitor
    mkdir -p "$out"
    log "monitor benchmark (about 12 minutes); outputs in $out"
    target/release/bench-monitor run \
        --hopwatch target/release/hopwatch \
        --out-dir "$out" "$@" | tee "$out/report.md"
    exit 0
fi

# The history store's bars (issue 15, docs/benchmarks.md "Every row of
# issue 15's table in one run"): the first release's layouts (sled) measured
# beside today's in the same run, then the daemon's memory over 30 minutes.
if [ "$what" = history ]; then
    log "building release binaries and examples"
    cargo build --release --locked -p hopwatch-service --bin hopwatch \
        --example store_chunk --example rollup_encodings --example store_layouts
    cargo build --release --locked -p hopwatch-tests --bin bench-monitor
    out=target/bench/history
    rm -rf "$out" && mkdir -p "$out"
    report="$out/report.md"
    section() { printf '\n### %s\n\n' "$*" | tee -a "$report"; log "$*"; }
    section "Bytes handed to the store per hop sample (store_chunk)"
    target/release/examples/store_chunk | tee -a "$report"
    section "Rollups per byte: the first release's rows against columns (rollup_encodings)"
    target/release/examples/rollup_encodings | tee -a "$report"
    section "Written per 10-hop target and day, 100 targets, and every default window full (store_layouts)"
    target/release/examples/store_layouts "$out/layouts-100" --targets 100 --hours 3 \
        --layouts store,sled-rounds,sled-rollups | tee -a "$report"
    section "Written by a lone 10-hop target (store_layouts)"
    target/release/examples/store_layouts "$out/layouts-1" --targets 1 --hours 3 \
        --layouts store,sled-rounds,sled-rollups | tee -a "$report"
    rm -rf "$out/layouts-100" "$out/layouts-1"
    section "Query times (bench-monitor store)"
    target/release/bench-monitor store | tee -a "$report"
    section "The daemon at 1,000 targets for 30 minutes (bench-monitor run)"
    # Arguments after `history` replace the daemon run's window (a short
    # check: --warmup-s 10 --window-s 60 --sample-s 30).
    daemon_window=(--warmup-s 60 --window-s 1800 --sample-s 60)
    [ $# -gt 0 ] && daemon_window=("$@")
    target/release/bench-monitor run --hopwatch target/release/hopwatch \
        --out-dir "$out/daemon" --no-store "${daemon_window[@]}" | tee -a "$report"
    log "report: $report"
    exit 0
fi

# 2. The peers and the load generator, only when missing.
missing=()
for pkg in mtr-tiny stress-ng; do
    if ! dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null | grep -qx installed; then
        missing+=("$pkg")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! trip --version 2>/dev/null | grep -qx "trip $TRIPPY_VERSION"; then
    log "building trippy $TRIPPY_VERSION (a few minutes)"
    cargo install --quiet --locked "trippy@$TRIPPY_VERSION"
fi
[ "$what" = install ] && { log "peers installed: $(mtr --version), $(trip --version), $(stress-ng --version | head -1)"; exit 0; }

# 3. Release builds: the benchmarks measure what users run.
log "building release binaries"
cargo build --release --locked -p hopwatch-service --bin hopwatch
cargo build --release --locked -p hopwatch-tests --bin bench-accuracy --bin bench-throughput

run_accuracy() {
    local out=target/bench/accuracy
    mkdir -p "$out"
    log "accuracy benchmark (about 4 minutes); outputs in $out"
    target/release/bench-accuracy \
        --hopwatch target/release/hopwatch \
        --mtr "$(command -v mtr)" \
        --trippy "$(command -v trip)" \
        --stress-ng "$(command -v stress-ng)" \
        --out-dir "$out" "$@" | tee "$out/report.md"
}

run_throughput() {
    local out=target/bench/throughput
    mkdir -p "$out"
    log "throughput benchmark (about 3 minutes); outputs in $out"
    target/release/bench-throughput run \
        --mtr "$(command -v mtr)" \
        --out-dir "$out" "$@" | tee "$out/report.md"
}

case "$what" in
accuracy) run_accuracy "$@" ;;
throughput) run_throughput "$@" ;;
all)
    run_accuracy
    run_throughput
    ;;
esac
