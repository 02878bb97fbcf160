#!/usr/bin/env bash
# The appliance VM: hopwatch's .deb in a booted Debian 12 with systemd.
#
#   sudo bash deploy/vm.sh test     build the image if needed, package this
#                                   build, run every check (see deploy/vm/check.sh);
#                                   prints one line per check, "N passed, M failed"
#   sudo bash deploy/vm.sh shell    boot the same VM with the package installed,
#                                   on this terminal (log in as root, no password;
#                                   power off to leave)
#   sudo bash deploy/vm.sh image    only build (or find) the cached image
#
#   sudo bash deploy/vm.sh --arch arm64 test|shell|image
#                                   the same for an arm64 guest (issue 22): a
#                                   Debian 12 arm64 image and the arm64 .deb of
#                                   HOPWATCH_BIN (an aarch64 binary), one boot
#                                   that runs check.sh's arm64 phase
#
# The guest runs under qemu's software emulation (TCG: KVM guests hang on this
# kind of machine) with no network device at all, so no packet can leave it;
# its lab targets live in network namespaces it makes itself. The image is a
# debootstrap of bookworm with systemd and Debian's kernel, booted directly
# (-kernel/-initrd, no boot loader), cached in target/vm/ under a name keyed by
# this script's image recipe. Each run boots a copy-on-write overlay of it, so
# the cache stays pristine. Disks use cache=none: a killed qemu loses exactly
# what a power cut would lose.
#
# arm64 (--arch arm64): qemu-system-aarch64 emulates a Cortex-A72 (the
# Raspberry Pi 4's core) on the `virt` machine, TCG only (no KVM for a foreign
# architecture). The image is an arm64 debootstrap whose second stage runs its
# arm64 programs under qemu-user-static (binfmt_misc, registered for the build
# if this machine has not); Debian's linux-image-arm64 boots directly with the
# console on the PL011 (ttyAMA0). `virt` has one UART, so the check lines come
# out through a virtio console (hvc0) instead of a second serial port. Still no
# network device. The arm64 run is one boot (check.sh's arm64 phase); upgrades,
# power cuts and the previous release are the amd64 VM's job, since they test
# hopwatch's packaging and store, not the architecture.
#
# Environment: HOPWATCH_BIN (default target/debug/hopwatch: the test suite's
# build; for arm64 target/aarch64-unknown-linux-gnu/debug/hopwatch),
# HOPWATCH_VM_POWER_CUTS (default 2; the benchmark in docs/benchmarks.md
# uses 20).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

log() { printf 'vm: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, image building); try: sudo $0 $*"

ARCH=amd64
if [ "${1:-}" = --arch ]; then
    [ $# -ge 2 ] || die "--arch needs an architecture (amd64, arm64)"
    ARCH=$2
    shift 2
fi
# What differs between the architectures; everything else is shared.
case "$ARCH" in
amd64)
    QEMU=qemu-system-x86_64
    QEMU_MACHINE=(-machine q35 -cpu max)
    CONSOLE=ttyS0
    # The check lines: the second serial port.
    RESULTS_TTY=ttyS1
    DEFAULT_BIN=target/debug/hopwatch
    ;;
arm64)
    QEMU=qemu-system-aarch64
    # Cortex-A72: the Raspberry Pi 4's core, and faster under TCG than `max`
    # (no pointer authentication to emulate).
    QEMU_MACHINE=(-machine virt -cpu cortex-a72)
    CONSOLE=ttyAMA0
    # `virt` has one UART: the check lines go through a virtio console.
    RESULTS_TTY=hvc0
    DEFAULT_BIN=target/aarch64-unknown-linux-gnu/debug/hopwatch
    ;;
*) die "--arch $ARCH: amd64 or arm64" ;;
esac
for tool in "$QEMU" qemu-img debootstrap mkfs.ext4; do
    command -v "$tool" >/dev/null || die "$tool is missing: run deploy/setup-test.sh (it installs qemu-system-x86, qemu-system-arm, qemu-user-static, qemu-utils, debootstrap, e2fsprogs)"
done

SUITE=bookworm
MIRROR=http://deb.debian.org/debian
# systemd as init, udev for device units, Debian's kernel (with initramfs-tools
# for the virtio modules), iproute2 for the lab, curl and jq for the API checks.
INCLUDE=systemd,systemd-sysv,udev,kmod,linux-image-$ARCH,initramfs-tools,iproute2,procps,curl,jq,iputils-ping
IMAGE_SIZE=3G

# amd64 keeps its directory (and cached image) where it always was.
work=$repo/target/vm
[ "$ARCH" = amd64 ] || work=$repo/target/vm-$ARCH
mkdir -p "$work"
# The image's name carries a hash of its recipe: change the recipe, get a new image.
recipe=$(printf '%s\n' "$SUITE" "$MIRROR" "$INCLUDE" "$IMAGE_SIZE" "$RESULTS_TTY" \
    "$(sed -n '/^build_image()/,/^}/p;/^foreign_arch()/,/^}/p' "$0")" | sha256sum | cut -c1-12)
image=$work/$SUITE-$recipe.img
kernel=$work/$SUITE-$recipe.vmlinuz
initrd=$work/$SUITE-$recipe.initrd

# A foreign architecture's debootstrap runs its second stage (the packages'
# maintainer scripts, update-initramfs) in the chroot through qemu-user-static:
# binfmt_misc must know the architecture. Registered from the qemu-user-static
# package's own rule when this machine has not (a machine without systemd-binfmt),
# and unregistered again by the caller (foreign_arch_done).
binfmt_registered_here=""
foreign_arch() {
    [ "$ARCH" != "$(dpkg --print-architecture)" ] || return 0
    local name=qemu-aarch64 rule=/usr/lib/binfmt.d/qemu-aarch64.conf
    [ -f "$rule" ] || die "$rule is missing: run deploy/setup-test.sh (it installs qemu-user-static)"
    [ -e /proc/sys/fs/binfmt_misc/register ] ||
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || die "cannot mount binfmt_misc"
    if [ ! -e "/proc/sys/fs/binfmt_misc/$name" ]; then
        cat "$rule" >/proc/sys/fs/binfmt_misc/register || die "cannot register $rule with binfmt_misc"
        binfmt_registered_here=$name
        trap foreign_arch_done EXIT
    fi
}
foreign_arch_done() {
    [ -z "$binfmt_registered_here" ] || echo -1 >"/proc/sys/fs/binfmt_misc/$binfmt_registered_here"
    binfmt_registered_here=""
}

build_image() {
    local root=$work/rootfs.$$
    rm -rf "$root"
    foreign_arch
    log "debootstrap $SUITE ($ARCH) into $root (first run only; about 150 MB from $MIRROR)"
    # INITRD=No: the kernel's install hook makes no initramfs (one is made
    # below, once, small); under qemu-user each one takes minutes.
    INITRD=No debootstrap --arch="$ARCH" --variant=minbase --include="$INCLUDE" "$SUITE" "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 ||
        die "debootstrap failed; see $work/debootstrap.log"
    # Boot straight to a root on the first virtio disk; no password for root
    # on the serial console (the VM has no network to log in from).
    printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' >"$root/etc/fstab"
    printf 'hopwatch-vm\n' >"$root/etc/hostname"
    printf '127.0.0.1 localhost\n127.0.1.1 hopwatch-vm\n::1 localhost\n' >"$root/etc/hosts"
    chroot "$root" passwd -d root >/dev/null
    : >"$root/etc/machine-id"
    # The checks run from the payload disk (/dev/vdb) at every boot.
    cat >"$root/etc/systemd/system/vm-payload.service" <<UNIT
[Unit]
Description=hopwatch VM test payload (deploy/vm/check.sh)
ConditionKernelCommandLine=hopwatch_vm.phase
After=multi-user.target vm-lab.service hopwatch.service
Requires=vm-lab.service
[Service]
Type=oneshot
ExecStart=/bin/bash /payload/check.sh
StandardOutput=tty
StandardError=tty
TTYPath=/dev/$RESULTS_TTY
[Install]
WantedBy=multi-user.target
UNIT
    chroot "$root" systemctl enable vm-payload.service >/dev/null 2>&1
    # No login prompt on the results console (systemd starts one on hvc0).
    ln -sf /dev/null "$root/etc/systemd/system/serial-getty@$RESULTS_TTY.service"
    # The lab's namespaces are made before hopwatch starts, at every boot.
    cat >"$root/etc/systemd/system/vm-lab.service" <<'UNIT'
[Unit]
Description=hopwatch VM lab namespaces (deploy/vm/lab.sh)
ConditionKernelCommandLine=hopwatch_vm.phase
Before=hopwatch.service
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'mkdir -p /payload && mount -o ro /dev/vdb /payload && exec /bin/bash /payload/lab.sh'
[Install]
WantedBy=multi-user.target
UNIT
    chroot "$root" systemctl enable vm-lab.service >/dev/null 2>&1
    # The initramfs holds just the modules the VM boots with (MODULES=list):
    # virtio (PCI on both machines; MMIO is `virt`'s other transport), the
    # disk, the console and ext4.
    printf 'virtio_pci\nvirtio_mmio\nvirtio_blk\nvirtio_console\next4\n' >>"$root/etc/initramfs-tools/modules"
    printf 'MODULES=list\n' >"$root/etc/initramfs-tools/conf.d/hopwatch-vm"
    rm -f "$root"/boot/initrd.img-*
    chroot "$root" update-initramfs -c -k "$(ls "$root/lib/modules" | tail -1)" >"$work/initramfs.log" 2>&1 ||
        die "update-initramfs failed in the image; see $work/initramfs.log"
    foreign_arch_done
    cp "$(ls "$root"/boot/vmlinuz-* | tail -1)" "$kernel.tmp"
    cp "$(ls "$root"/boot/initrd.img-* | tail -1)" "$initrd.tmp"
    rm -rf "$root/var/cache/apt/archives"/*.deb
    mkfs.ext4 -q -F -L root -d "$root" "$image.tmp" "$IMAGE_SIZE" || die "mkfs.ext4 -d failed"
    rm -rf "$root"
    mv "$kernel.tmp" "$kernel"
    mv "$initrd.tmp" "$initrd"
    mv "$image.tmp" "$image"
}

ensure_image() {
    if [ -f "$image" ] && [ -f "$kernel" ] && [ -f "$initrd" ]; then
        return 0
    fi
    local started=$SECONDS
    build_image
    log "image $image built in $((SECONDS - started)) s"
}

# The release before this one, as its users have it: the last commit that
# landed on main, built from its own sources and packaged with its own unit
# and maintainer scripts. Built once (about 5 minutes) and cached by commit;
# a clone without that commit (a shallow one) cannot run this test.
PREVIOUS_RELEASE=d788640037cab0b328c35b3a005655b70950c34b

previous_deb() {
    local deb=$work/previous-${PREVIOUS_RELEASE:0:12}.deb
    if [ ! -f "$deb" ]; then
        git -C "$repo" cat-file -e "$PREVIOUS_RELEASE^{commit}" 2>/dev/null ||
            die "the previous release $PREVIOUS_RELEASE is not in this clone's history (a shallow clone?): clone without --depth"
        local src=$work/previous-src
        rm -rf "$src" "$work/previous-out"
        mkdir -p "$src"
        git -C "$repo" archive "$PREVIOUS_RELEASE" | tar -x -C "$src"
        log "building the previous release ${PREVIOUS_RELEASE:0:12} (first run only)"
        (cd "$src" && CARGO_TARGET_DIR=$work/previous-target cargo build --locked -p hopwatch-service) \
            >"$work/previous-build.log" 2>&1 ||
            die "building the previous release failed; see $work/previous-build.log"
        (cd "$src" && bash deploy/package.sh --binary "$work/previous-target/debug/hopwatch" --fast \
            --deb-version 0.0.1-1 --output "$work/previous-out") >>"$work/previous-build.log" 2>&1 ||
            die "packaging the previous release failed; see $work/previous-build.log"
        cp "$work"/previous-out/*.deb "$deb.tmp"
        mv "$deb.tmp" "$deb"
        rm -rf "$src" "$work/previous-out"
    fi
    echo "$deb"
}

# The payload disk: check.sh, lab.sh, two .debs of this build's binary, an
# "older" (0.0.1) and a "newer" version, for the upgrade path, and the
# previous release's .deb (previous_deb), for the upgrade users will make.
# For arm64: only the arm64 .deb of this build (hopwatch-new.deb).
build_payload() {
    local bin=${HOPWATCH_BIN:-$repo/$DEFAULT_BIN}
    [ -x "$bin" ] || die "no hopwatch binary at $bin: build it first (cargo build -p hopwatch-service; for arm64 see deploy/arm64.sh), or set HOPWATCH_BIN"
    # The ELF header's machine field: 0x3e x86-64, 0xb7 aarch64.
    local machine want
    machine=$(od -An -tx1 -j18 -N1 "$bin" | tr -d ' ')
    case "$ARCH" in amd64) want=3e ;; arm64) want=b7 ;; esac
    [ "$machine" = "$want" ] || die "$bin is not an $ARCH executable (ELF machine 0x$machine)"
    local dir=$run/payload
    rm -rf "$dir"
    mkdir -p "$dir"
    cp deploy/vm/check.sh deploy/vm/lab.sh "$dir/"
    local version
    version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
    if [ "$ARCH" = arm64 ]; then
        log "packaging $bin as the arm64 .deb $version-1"
        bash deploy/package.sh --arch arm64 --binary "$bin" --fast --deb-version "$version-1" --output "$run/new" >/dev/null
        cp "$run"/new/*_arm64.deb "$dir/hopwatch-new.deb"
    else
        log "packaging $bin as 0.0.1-1 (older) and $version-1 (newer)"
        bash deploy/package.sh --binary "$bin" --fast --deb-version 0.0.1-1 --output "$run/old" >/dev/null
        bash deploy/package.sh --binary "$bin" --fast --deb-version "$version-1" --output "$run/new" >/dev/null
        cp "$run"/old/*.deb "$dir/hopwatch-old.deb"
        cp "$run"/new/*.deb "$dir/hopwatch-new.deb"
        cp "$(previous_deb)" "$dir/hopwatch-previous.deb"
        # The previous release needs a CA bundle to start; the image has none
        # (this build must run without one), so the host's goes along.
        [ -f /etc/ssl/certs/ca-certificates.crt ] ||
            die "no /etc/ssl/certs/ca-certificates.crt on this machine: run deploy/setup.sh (it installs ca-certificates)"
        cp /etc/ssl/certs/ca-certificates.crt "$dir/"
    fi
    local size_mib=$(( $(du -sm "$dir" | cut -f1) + 64 ))
    mkfs.ext4 -q -F -L payload -d "$dir" "$run/payload.img" "${size_mib}M"
}

# Boots the overlay once with kernel arguments "$@"; the guest's check lines
# go to $run/results-<phase>.log, its console to $run/console-<phase>.log.
# Returns when qemu exits (the guest powers off) or when killed by the caller.
# qemu's arguments for the overlay in $run, kernel arguments "$@" appended.
qemu_base_args() {
    printf '%s\n' -accel tcg "${QEMU_MACHINE[@]}" -smp 2 -m 1024 -nographic -no-reboot \
        -nic none -kernel "$kernel" -initrd "$initrd" \
        -append "root=/dev/vda rw console=$CONSOLE $*" \
        -drive "file=$run/disk.qcow2,if=virtio,format=qcow2,cache=none" \
        -drive "file=$run/payload.img,if=virtio,format=raw,readonly=on"
}

# The test's boots: no terminal, the console and the check lines to files.
qemu_args() {
    local tag=$1
    shift
    qemu_base_args panic=-1 systemd.show_status=false "$@"
    printf '%s\n' -display none -monitor none -serial "file:$run/console-$tag.log"
    if [ "$RESULTS_TTY" = hvc0 ]; then
        printf '%s\n' -device virtio-serial-pci -chardev "file,id=results,path=$run/results-$tag.log" \
            -device virtconsole,chardev=results
    else
        printf '%s\n' -serial "file:$run/results-$tag.log"
    fi
}

boot() { # boot TAG TIMEOUT_S KERNEL_ARGS...: boots and waits for the guest to power off
    local tag=$1 timeout_s=$2
    shift 2
    local -a args
    mapfile -t args < <(qemu_args "$tag" "$@")
    timeout "$timeout_s" "$QEMU" "${args[@]}" </dev/null || {
        log "boot $tag did not power off within $timeout_s s; console: $run/console-$tag.log"
        echo "FAIL boot $tag: no power-off within $timeout_s s" >>"$run/results-$tag.log"
    }
}

# Boots TAG, waits for READY-FOR-CUT, lets it run for a random 2–12 s, then
# kills qemu with SIGKILL: the guest gets no shutdown, the disk (cache=none)
# keeps only what reached it. Prints the guest time of the last tick seen.
boot_and_cut() {
    local tag=$1 timeout_s=$2
    shift 2
    local -a args
    mapfile -t args < <(qemu_args "$tag" "$@")
    "$QEMU" "${args[@]}" </dev/null &
    local pid=$! deadline=$((SECONDS + timeout_s))
    until grep -q READY-FOR-CUT "$run/results-$tag.log" 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
            kill -9 "$pid" 2>/dev/null
            wait "$pid" 2>/dev/null
            echo "FAIL boot $tag: never ready for the power cut" >>"$run/results-$tag.log"
            echo 0
            return
        fi
        sleep 1
    done
    sleep "$((2 + RANDOM % 11))"
    kill -9 "$pid"
    wait "$pid" 2>/dev/null
    sed -n 's/^TICK \([0-9]*\).*/\1/p' "$run/results-$tag.log" | tail -1
}

# A fresh run directory $run: the payload and an overlay of the cached image.
prepare_run() {
    ensure_image
    run=$work/$1
    rm -rf "$run"
    mkdir -p "$run"
    build_payload
    qemu-img create -q -f qcow2 -b "$image" -F raw "$run/disk.qcow2"
}

run_test() {
    prepare_run run
    local started=$SECONDS cuts=${HOPWATCH_VM_POWER_CUTS:-2}
    log "boot 1: install and configure"
    boot install 900 hopwatch_vm.phase=install
    log "boot 2: reboot, upgrade, then a power cut"
    local cut_ms
    cut_ms=$(boot_and_cut reboot 900 hopwatch_vm.phase=reboot)
    local i
    for i in $(seq 1 "$cuts"); do
        log "boot $((2 + i)): after power cut $i"
        if [ "$i" -lt "$cuts" ]; then
            cut_ms=$(boot_and_cut "cut$i" 900 hopwatch_vm.phase=cut "hopwatch_vm.cut_ms=$cut_ms")
        else
            boot "cut$i" 900 hopwatch_vm.phase=cut "hopwatch_vm.cut_ms=$cut_ms" hopwatch_vm.last=1
        fi
    done
    log "boot $((3 + cuts)): purge"
    boot purge 600 hopwatch_vm.phase=purge
    log "boot $((4 + cuts)): a fresh guest, the previous release, then the upgrade to this build"
    rm -f "$run/disk.qcow2"
    qemu-img create -q -f qcow2 -b "$image" -F raw "$run/disk.qcow2"
    boot previous 900 hopwatch_vm.phase=previous
    cat "$run"/results-install.log "$run"/results-reboot.log \
        $(for i in $(seq 1 "$cuts"); do echo "$run/results-cut$i.log"; done) "$run"/results-purge.log \
        "$run"/results-previous.log 2>/dev/null | tr -d '\r' >"$run/results.log"
    local losses
    losses=$(sed -n 's/^LOSS //p' "$run/results.log" | tr '\n' ' ')
    echo "power cuts: $cuts, history lost per cut (ms): ${losses:-none}"
    tally "$started"
}

# The arm64 guest: one boot (check.sh's arm64 phase), since every boot of an
# emulated arm64 costs a few minutes.
run_test_arm64() {
    prepare_run run
    local started=$SECONDS
    log "boot 1 (arm64, emulated): install, lab, eBPF, trace, daemon, web UI, purge"
    boot arm64 1500 hopwatch_vm.phase=arm64
    tr -d '\r' <"$run/results-arm64.log" >"$run/results.log" 2>/dev/null || true
    tally "$started"
}

# Prints every check line of $run/results.log and "N passed, M failed";
# succeeds when nothing failed.
tally() {
    local started=$1 results=$run/results.log passed failed
    grep -E '^(PASS|FAIL)' "$results"
    # grep -c exits 1 when it counts nothing.
    passed=$(grep -c '^PASS' "$results" || true)
    failed=$(grep -c '^FAIL' "$results" || true)
    echo "$passed passed, $failed failed ($((SECONDS - started)) s; logs in $run)"
    [ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
}

run_shell() {
    prepare_run shell
    log "booting; log in as root (no password), 'systemctl poweroff' to leave"
    local -a args
    mapfile -t args < <(qemu_base_args hopwatch_vm.phase=shell)
    # arm64's results console must exist (the payload unit writes to it),
    # even with nobody reading it.
    [ "$RESULTS_TTY" != hvc0 ] ||
        args+=(-device virtio-serial-pci -chardev null,id=results -device virtconsole,chardev=results)
    exec "$QEMU" "${args[@]}"
}

case "${1:-}" in
image)
    ensure_image
    echo "$image"
    ;;
test)
    if [ "$ARCH" = arm64 ]; then run_test_arm64; else run_test; fi
    ;;
shell)
    run_shell
    ;;
*)
    die "usage: $0 [--arch amd64|arm64] test|shell|image"
    ;;
esac
