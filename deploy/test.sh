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

step "the appliance VM (deploy/vm.sh test)"
# The .deb of the binary cargo test just built, booted under systemd in a
# Debian 12 VM: install, reboot, upgrade, power cuts, purge. It needs the
# machine to itself (software emulation), so it runs after the tests.
target_dir=${CARGO_TARGET_DIR:-target}
HOPWATCH_BIN="$target_dir/debug/hopwatch" bash deploy/vm.sh test
