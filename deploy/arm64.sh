# Sourced (not run) by deploy/package.sh and deploy/test.sh: how hopwatch is
# cross-built for arm64 (aarch64-unknown-linux-gnu) on an amd64 Debian 12 machine.
#
# rustup cannot download the aarch64 standard library here, but Debian's
# libstd-rust-web-dev:arm64 is the arm64 std of the very rustc-web 1.96 the
# kernel programs already build with (/usr/bin/rustc), and it installs beside
# the amd64 one (Multi-Arch: same). So the arm64 build runs Debian's cargo and
# rustc, links with gcc-aarch64-linux-gnu, and compiles the C in dependencies
# (ring, zstd-sys) with the same cross gcc against the cross libc in
# $ARM64_SYSROOT. The eBPF object needs nothing of
# this: it is bpfel bytecode, built once by service/build.rs for either target.
# deploy/setup-test.sh installs all of it; `arm64_check` says so when something is
# missing.

ARM64_TARGET=aarch64-unknown-linux-gnu
ARM64_SYSROOT=/usr/aarch64-linux-gnu

# Runs Debian's cargo with the cross settings: `arm64_cargo build --target
# "$ARM64_TARGET" ...`. The runner makes `cargo test` execute the arm64 test
# binaries under qemu-user. They find their loader and libc where an arm64
# Debian has them, /lib/ld-linux-aarch64.so.1 and /lib/aarch64-linux-gnu
# (libc6:arm64, multiarch). Not QEMU_LD_PREFIX=$ARM64_SYSROOT: with the cross
# libc there (2.36-8cross1), the first thread spawn spins forever under
# bookworm's qemu 7.2, so every test binary hangs.
arm64_cargo() {
    env -u QEMU_LD_PREFIX RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc \
        CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
        CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=qemu-aarch64-static \
        CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
        AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar \
        /usr/bin/cargo "$@"
}

# Fails with the set-up command when a piece of the cross toolchain is missing.
arm64_check() {
    local what="" libdir
    for tool in /usr/bin/cargo /usr/bin/rustc aarch64-linux-gnu-gcc aarch64-linux-gnu-ar qemu-aarch64-static; do
        command -v "$tool" >/dev/null || what="$what $tool"
    done
    if [ -x /usr/bin/rustc ]; then
        libdir=$(/usr/bin/rustc --print target-libdir --target "$ARM64_TARGET" 2>/dev/null || true)
        compgen -G "$libdir/libstd-*.rlib" >/dev/null || what="$what libstd-rust-web-dev:arm64"
    fi
    [ -d "$ARM64_SYSROOT/lib" ] || what="$what libc6-dev-arm64-cross"
    [ -e /lib/ld-linux-aarch64.so.1 ] || what="$what libc6:arm64"
    if [ -n "$what" ]; then
        printf 'arm64: the cross toolchain is incomplete (missing:%s); run: sudo bash deploy/setup-test.sh\n' "$what" >&2
        return 1
    fi
}
