#!/usr/bin/env bash
# hopwatch setup: installs everything this project needs to build, test and run
# its demo on a fresh Debian 12 machine. Idempotent: a second run that finds
# everything in place does no network work and finishes in about a second.
#
# What it installs and why:
#   - Debian's rustc-web + libstd-rust-web-dev-bpf: the only toolchain here with a
#     precompiled `core` for bpfel-unknown-none (see docs/architecture.md, eBPF build)
#   - llvm-N-dev matching rustc-web's LLVM, and bpf-linker built against it
#   - the lab's tools: iproute2, iptables (NFQUEUE, statistic), ping, tcpdump
#   - the appliance VM (deploy/vm.sh): qemu-system-x86, qemu-utils, e2fsprogs;
#     its Debian image is built by vm.sh itself with debootstrap
#   - the arm64 cross build (deploy/arm64.sh): the foreign architecture arm64,
#     Debian's arm64 std for the same rustc-web (libstd-rust-web-dev:arm64), the
#     cross gcc and binutils as linker and C compiler, the arm64 libc to link
#     against (libc6-dev-arm64-cross) and to run with (libc6:arm64), and
#     qemu-user-static to run the arm64 unit tests
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    log "must run as root (it installs Debian packages); try: sudo $0"
    exit 1
fi

# Packages whose absence we can detect cheaply with dpkg-query.
missing_packages() {
    local pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null | grep -qx installed; then
            printf '%s\n' "$pkg"
        fi
    done
}

apt_updated=0
apt_install() {
    local -a missing
    mapfile -t missing < <(missing_packages "$@")
    [ "${#missing[@]}" -eq 0 ] && return 0
    if [ "$apt_updated" -eq 0 ]; then
        log "apt-get update"
        apt-get update -qq
        apt_updated=1
    fi
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# 1. The kernel-side Rust toolchain and the lab/test tools.
apt_install rustc-web cargo-web libstd-rust-web-dev-bpf \
    iproute2 iputils-ping iptables tcpdump procps ethtool ca-certificates dnsmasq-base debootstrap dpkg-dev \
    prometheus chromium chromium-driver wrk qemu-system-x86 qemu-utils e2fsprogs

# 1b. The arm64 cross build. The foreign architecture first, so apt sees the
#     arm64 package lists; libstd-rust-web-dev:arm64 must be the same version as
#     the amd64 rustc-web (Multi-Arch: same), which apt resolves on its own.
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    log "adding the foreign architecture arm64 (for the arm64 cross build)"
    dpkg --add-architecture arm64
    apt_updated=0
fi
apt_install libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu binutils-aarch64-linux-gnu \
    libc6-dev-arm64-cross libc6:arm64 qemu-user-static

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

# 4. stamp-suite: an independent STAMP (RFC 8762) implementation the peer
#    measurement tests interoperate with (tests/tests/peer_lab.rs).
STAMP_SUITE_VERSION=1.0.0
if ! stamp-suite --version 2>/dev/null | grep -q "$STAMP_SUITE_VERSION"; then
    log "building stamp-suite $STAMP_SUITE_VERSION for the STAMP interop tests (about 2.5 min)"
    cargo install --quiet --locked "stamp-suite@${STAMP_SUITE_VERSION}"
fi

# 5. cargo-fuzz, pinned, for building the fuzz targets in service/fuzz (CI builds
#    them with the nightly toolchain rustup has on these machines; see
#    service/fuzz/README.md).
CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    log "building cargo-fuzz $CARGO_FUZZ_VERSION (about a minute)"
    cargo install --quiet --locked "cargo-fuzz@${CARGO_FUZZ_VERSION}"
fi

# 6. Userspace toolchain components CI checks with.
if command -v rustup >/dev/null; then
    for component in rustfmt clippy; do
        rustup component list --installed 2>/dev/null | grep -q "^${component}" ||
            rustup component add "$component"
    done
fi

log "ok (rustc-web LLVM ${llvm_major}, bpf-linker ${BPF_LINKER_VERSION})"
