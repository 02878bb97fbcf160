#!/usr/bin/env bash
# The whole test suite, from a fresh machine: set-up, formatting, lints, and
# every test (the privileged network-lab tests included; they need root).
# This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

step() { printf '\n== %s\n' "$*"; }

step "setup"
bash deploy/setup.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
# Lab tests spend their time waiting on packets, not CPU: run more of them at
# once than there are cores.
cargo test --workspace --locked -- --test-threads "${HOPWATCH_TEST_THREADS:-8}"

step "fuzz targets build (service/fuzz)"
# The cargo-fuzz targets must not rot; running them is not CI's job
# (docs/benchmarks.md, Fuzzing). The three light ones (reply, STAMP packet,
# TCP framing) are built as a fuzzing run builds them (nightly, sanitizer,
# libFuzzer: about 45 s); the two that link the service and web crates
# (config_parse, api_query) are type-checked on stable, since their sanitizer
# build takes about 7 minutes of the suite's budget. Their own workspace and
# target directory.
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    (cd service/fuzz && CARGO_TARGET_DIR=target cargo +nightly fuzz build)
else
    # A machine with only its one toolchain: type-check the light targets too.
    echo "no nightly toolchain: type-checking every fuzz target on stable"
fi
(cd service/fuzz && CARGO_TARGET_DIR=target cargo check --locked --features crates --bins)

step "the appliance VM (deploy/vm.sh test)"
# The .deb of the binary cargo test just built, booted under systemd in a
# Debian 12 VM: install, reboot, upgrade, power cuts, purge. It needs the
# machine to itself (software emulation), so it runs after the tests.
target_dir=${CARGO_TARGET_DIR:-target}
HOPWATCH_BIN="$target_dir/debug/hopwatch" bash deploy/vm.sh test
