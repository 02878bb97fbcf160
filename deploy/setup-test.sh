#!/usr/bin/env bash
# hopwatch test setup: everything deploy/test.sh (CI) needs on a fresh Debian 12
# machine. It runs deploy/setup.sh first (the toolchain and the lab's tools the
# demo needs too), then installs what only the tests, packaging, the appliance
# VM and the arm64 cross build use. Idempotent: a second run that finds
# everything in place does no network work and finishes in about a second.
#
# What it adds and why:
#   - test tools: tcpdump (captures the accuracy tests compare against),
#     ethtool, dnsmasq-base (the reverse-DNS tests' resolver), prometheus (with
#     promtool), chromium and chromium-driver (the headless browser tests), wrk
#     (the API load test), nftables (nft: the middlebox test's stateless NAT,
#     which this kernel's missing tc actions cannot do)
#   - packaging: dpkg-dev (dpkg-shlibdeps computes the package's Depends)
#   - the appliance VM (deploy/vm.sh): qemu-system-x86, qemu-utils, e2fsprogs;
#     its Debian image is built by vm.sh itself with debootstrap
#   - the arm64 cross build (deploy/arm64.sh): the foreign architecture arm64,
#     Debian's arm64 std for the same rustc-web (libstd-rust-web-dev:arm64), the
#     cross gcc and binutils as linker and C compiler, the arm64 libc to link
#     against (libc6-dev-arm64-cross) and to run with (libc6:arm64), and
#     qemu-user-static to run the arm64 unit tests (and, through binfmt_misc,
#     the arm64 VM image's debootstrap)
#   - the arm64 VM (deploy/vm.sh --arch arm64): qemu-system-arm, which has
#     qemu-system-aarch64 (the kernel is booted directly: no UEFI firmware)
#   - stamp-suite (the STAMP interop peer), cargo-fuzz and cargo-nextest (the
#     test runner deploy/test.sh uses), built with cargo
#   - rustfmt and clippy, which CI checks with
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=deploy/apt.sh
source deploy/apt.sh
require_root

bash deploy/setup.sh

# 1. Test, packaging and VM tools.
apt_install tcpdump ethtool dnsmasq-base debootstrap dpkg-dev \
    prometheus chromium chromium-driver wrk nftables qemu-system-x86 qemu-utils e2fsprogs

# 1b. The arm64 cross build. The foreign architecture first, so apt sees the
#     arm64 package lists; libstd-rust-web-dev:arm64 must be the same version as
#     the amd64 rustc-web (Multi-Arch: same), which apt resolves on its own.
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    log "adding the foreign architecture arm64 (for the arm64 cross build)"
    dpkg --add-architecture arm64
    apt_updated=0
fi
apt_install libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu binutils-aarch64-linux-gnu \
    libc6-dev-arm64-cross libc6:arm64 qemu-user-static qemu-system-arm

export PATH="$HOME/.cargo/bin:$PATH"

# 2. stamp-suite: an independent STAMP (RFC 8762) implementation the peer
#    measurement tests interoperate with (tests/tests/peer_lab.rs).
STAMP_SUITE_VERSION=1.0.0
if ! stamp-suite --version 2>/dev/null | grep -q "$STAMP_SUITE_VERSION"; then
    log "building stamp-suite $STAMP_SUITE_VERSION for the STAMP interop tests (about 2.5 min)"
    cargo install --quiet --locked "stamp-suite@${STAMP_SUITE_VERSION}"
fi

# 3. cargo-fuzz, pinned, for building the fuzz targets in service/fuzz (CI builds
#    them with the nightly toolchain rustup has on these machines; see
#    service/fuzz/README.md).
CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    log "building cargo-fuzz $CARGO_FUZZ_VERSION (about a minute)"
    cargo install --quiet --locked "cargo-fuzz@${CARGO_FUZZ_VERSION}"
fi

# 4. cargo-nextest, pinned: deploy/test.sh runs the tests with it, the test
#    binaries side by side (.config/nextest.toml). Built without its
#    self-update (the feature set its authors recommend for such builds),
#    which leaves out an HTTP and TLS stack this machine never uses.
NEXTEST_VERSION=0.9.151
if ! cargo nextest --version 2>/dev/null | grep -q "^cargo-nextest $NEXTEST_VERSION "; then
    log "building cargo-nextest $NEXTEST_VERSION (about 5 minutes)"
    cargo install --quiet --locked --no-default-features --features default-no-update \
        "cargo-nextest@${NEXTEST_VERSION}"
fi

# 5. Userspace toolchain components CI checks with.
if command -v rustup >/dev/null; then
    for component in rustfmt clippy; do
        rustup component list --installed 2>/dev/null | grep -q "^${component}" ||
            rustup component add "$component"
    done
fi

log "test tools ok (stamp-suite ${STAMP_SUITE_VERSION}, cargo-fuzz ${CARGO_FUZZ_VERSION}, cargo-nextest ${NEXTEST_VERSION})"
