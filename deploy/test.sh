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

step "fuzz targets build (service/fuzz: cargo +nightly fuzz build --features crates)"
# All five cargo-fuzz targets, built as a fuzzing run builds them (nightly,
# AddressSanitizer, libFuzzer), so none can rot; running them is not CI's job
# (docs/benchmarks.md, Fuzzing). Their own workspace and target directory.
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    (cd service/fuzz && CARGO_TARGET_DIR=target cargo +nightly fuzz build --features crates)
else
    # rustup cannot download a toolchain here: without nightly, at least type-check
    # the targets on stable (libFuzzer itself needs no nightly to compile).
    echo "no nightly toolchain: checking the fuzz targets on stable instead"
    (cd service/fuzz && CARGO_TARGET_DIR=target cargo check --locked --features crates --bins)
fi

step "the appliance VM (deploy/vm.sh test)"
# The .deb of the binary cargo test just built, booted under systemd in a
# Debian 12 VM: install, reboot, upgrade, power cuts, purge. It needs the
# machine to itself (software emulation), so it runs after the tests.
target_dir=${CARGO_TARGET_DIR:-target}
HOPWATCH_BIN="$target_dir/debug/hopwatch" bash deploy/vm.sh test
