#!/usr/bin/env bash
# hopwatch setup: what building hopwatch and running its demo need on a fresh
# Debian 12 machine, and nothing more (the demo's first command runs it, so
# every package here is on the way to the demo's banner). The tools only the
# test suite, packaging, the appliance VM and the arm64 cross build use are
# installed by deploy/setup-test.sh, which runs this first. Idempotent: a second
# run that finds everything in place does no network work and finishes in
# about a second.
#
# What it installs and why:
#   - Debian's rustc-web + libstd-rust-web-dev-bpf: the only toolchain here with a
#     precompiled `core` for bpfel-unknown-none (see docs/architecture.md, eBPF build)
#   - llvm-N-dev matching rustc-web's LLVM, and bpf-linker built against it
#   - what the lab network needs: iproute2 (namespaces, veths, routes),
#     iptables (loss, rate limits and the NFQUEUE delay element), ping (the
#     lab's own connectivity check), procps, and ca-certificates
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=deploy/apt.sh
source deploy/apt.sh
require_root

# 1. The kernel-side Rust toolchain and the lab's tools.
apt_install rustc-web cargo-web libstd-rust-web-dev-bpf \
    iproute2 iputils-ping iptables procps ca-certificates

# 2. LLVM dev files matching rustc-web's LLVM major, so bpf-linker links the
#    bitcode rustc-web emits.
llvm_major=$(/usr/bin/rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
if [ -z "$llvm_major" ]; then
    log "could not read the LLVM version from /usr/bin/rustc -vV"
    exit 1
fi
apt_install "llvm-${llvm_major}-dev"

# 3. bpf-linker, pinned, built against that LLVM.
BPF_LINKER_VERSION=0.13.0
export PATH="$HOME/.cargo/bin:$PATH"
if ! bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
    log "building bpf-linker $BPF_LINKER_VERSION against LLVM $llvm_major (about 80 s)"
    LLVM_PREFIX="/usr/lib/llvm-${llvm_major}" cargo install --quiet --locked \
        "bpf-linker@${BPF_LINKER_VERSION}" --no-default-features --features "llvm-${llvm_major}"
fi

log "ok (rustc-web LLVM ${llvm_major}, bpf-linker ${BPF_LINKER_VERSION})"
