#!/usr/bin/env bash
# Builds the Debian package `hopwatch` with cargo-deb, from the metadata in
# service/Cargo.toml ([package.metadata.deb]) and the maintainer scripts in
# deploy/debian/. Prints the path of the .deb on stdout (logs go to stderr).
#
#   deploy/package.sh                      release build, then package it
#   deploy/package.sh --deb-version 0.1.0-2 --output DIR
#   deploy/package.sh --binary PATH        package a hopwatch binary built
#                                          elsewhere (the package test passes
#                                          its own build); nothing is compiled
#   deploy/package.sh --fast               lighter compression (bigger .deb)
#   deploy/package.sh --arch arm64         cross-build for arm64 on an amd64
#                                          machine (deploy/arm64.sh says how),
#                                          then hopwatch_<version>_arm64.deb
#
# cargo-deb is installed from crates.io (pinned, --locked) when missing.
set -euo pipefail

CARGO_DEB_VERSION=3.8.0

log() { printf 'package: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

cd "$(dirname "$0")/.."
repo=$(pwd)
export PATH="$HOME/.cargo/bin:$PATH"

binary=""
host_arch=$(dpkg --print-architecture)
arch=$host_arch
deb_args=()
while [ $# -gt 0 ]; do
    case "$1" in
    --binary) [ $# -ge 2 ] || die "--binary needs a path"; binary=$2; shift 2 ;;
    --deb-version) [ $# -ge 2 ] || die "--deb-version needs a version"; deb_args+=(--deb-version "$2"); shift 2 ;;
    --output) [ $# -ge 2 ] || die "--output needs a directory"; deb_args+=(--output "$2"); shift 2 ;;
    --fast) deb_args+=(--fast); shift ;;
    --arch) [ $# -ge 2 ] || die "--arch needs an architecture (amd64, arm64)"; arch=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
    *) die "unknown argument '$1' (try --help)" ;;
    esac
done

# The native build is the default; the one cross build is arm64 on amd64.
# cargo-deb finds a cross-built binary under <target dir>/<triple>/release/
# and names the package's architecture after the triple.
triple=""
if [ "$arch" != "$host_arch" ]; then
    [ "$arch" = arm64 ] && [ "$host_arch" = amd64 ] ||
        die "--arch $arch: only the native build ($host_arch) and arm64 on amd64 are supported"
    # shellcheck source=deploy/arm64.sh
    source deploy/arm64.sh
    triple=$ARM64_TARGET
    deb_args+=(--target "$triple")
fi

# 1. cargo-deb, once.
if ! cargo deb --version 2>/dev/null | grep -qx "cargo-deb $CARGO_DEB_VERSION"; then
    log "installing cargo-deb $CARGO_DEB_VERSION from crates.io (about a minute)"
    cargo install --quiet --locked "cargo-deb@$CARGO_DEB_VERSION"
fi
command -v dpkg-shlibdeps >/dev/null ||
    die "dpkg-shlibdeps is missing (it computes the package's Depends): apt-get install dpkg-dev (deploy/setup-test.sh does)"

# 2. The binary. cargo-deb takes it from <target dir>/release/hopwatch, so a
#    binary built elsewhere is staged in a target directory of its own.
if [ -n "$binary" ]; then
    [ -x "$binary" ] || die "--binary $binary is not an executable file"
    stage="$repo/target/package-stage"
    rm -rf "$stage"
    mkdir -p "$stage/$triple/release"
    trap 'rm -rf "$stage"' EXIT
    # A copy, not a link: cargo-deb strips what it packages, never the original.
    cp --preserve=mode "$binary" "$stage/$triple/release/hopwatch"
    export CARGO_TARGET_DIR="$stage"
elif [ -n "$triple" ]; then
    arm64_check || exit 1
    log "cross-building the release binary for $triple (Debian's rustc-web)"
    arm64_cargo build --release --locked --target "$triple" -p hopwatch-service --bin hopwatch
else
    log "building the release binary"
    cargo build --release --locked -p hopwatch-service --bin hopwatch
fi

# 3. The package. Its version is the workspace's unless --deb-version says otherwise.
log "running cargo-deb"
deb=$(cargo deb --no-build --locked -p hopwatch-service "${deb_args[@]}")
[ -f "$deb" ] || die "cargo-deb reported '$deb', which is not a file"
deb=$(realpath "$deb")
log "built $deb"
printf '%s\n' "$deb"
