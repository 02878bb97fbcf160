#!/usr/bin/env bash
# The hopwatch demo, from a fresh machine with no internet:
#
#   sudo bash deploy/demo.sh [--port N] [--duration SECS] [--fast]
#
# Installs what the demo needs (deploy/setup.sh, idempotent), builds hopwatch and the
# demo driver, then runs the driver (tests/src/demo): a lab network of
# namespaces with several targets, the real `hopwatch run` daemon monitoring it
# with its web UI on http://127.0.0.1:<port>/ (8080, or the next free port),
# a webhook receiver that prints every alert, and scripted events (loss
# bursts, a latency step, route changes, a router that rate-limits ICMP).
# It runs until Ctrl-C (or --duration), then stops the daemon and removes the
# lab. Packets never leave the lab's namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

usage() {
    cat <<'EOF'
usage: sudo bash deploy/demo.sh [--port N] [--duration SECS] [--fast]

  --port N         web UI on http://127.0.0.1:N/ (default: 8080, or the next free port)
  --duration SECS  stop by itself after SECS seconds (default: run until Ctrl-C)
  --fast           four times faster: rounds every 250 ms, every event within 105 s
EOF
}

# Checked before the (long) set-up and build, so a typo fails at once.
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --port | --duration)
            if [ $# -lt 2 ] || ! [[ "$2" =~ ^[0-9]+$ ]]; then
                echo "demo: $1 needs a number" >&2
                usage >&2
                exit 2
            fi
            args+=("$1" "$2")
            shift 2
            ;;
        --fast)
            args+=("$1")
            shift
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            echo "demo: unknown option $1" >&2
            usage >&2
            exit 2
            ;;
    esac
done

if [ "$(id -u)" -ne 0 ]; then
    echo "demo: run it as root (sudo bash deploy/demo.sh): it installs packages and builds network namespaces" >&2
    exit 1
fi

# Only what the demo needs: the toolchain and the lab's tools. The test suite's
# tools (a browser, Prometheus, qemu, the arm64 cross build, ...) are
# deploy/setup-test.sh's.
bash deploy/setup.sh
echo "demo: building hopwatch and the demo (profile demo: optimised, quicker to build than release)" >&2
# Without the test suite's parts of the lab crate (feature `suite`: benchmarks,
# browser, Prometheus), and with the `demo` profile (Cargo.toml: opt-level 1,
# no link-time optimisation): fewer crates and less work on the way to the banner.
cargo build --profile demo --locked --no-default-features -p hopwatch-service --bin hopwatch -p hopwatch-tests --bin hopwatch-demo

# exec: Ctrl-C and SIGTERM go straight to the driver, which cleans up.
built="${CARGO_TARGET_DIR:-target}/demo"
exec "$built/hopwatch-demo" --hopwatch "$built/hopwatch" "${args[@]}"
