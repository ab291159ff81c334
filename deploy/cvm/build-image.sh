#!/usr/bin/env bash
# A minimal confidential-VM image for Origami, built from Debian's packages, for measured direct
# boot: three files that the VMM loads and the CVM's firmware measures (docs/CVM.md, "What is
# measured in a CVM"):
#
#   OUT/vmlinuz   Debian trixie's cloud kernel (6.12: configfs-tsm, sev-guest, tdx-guest)
#   OUT/initrd    the whole root filesystem as a cpio archive (zstd): systemd as /init, the
#                 `origami` and `origami-enclave` binaries, one service with fixed arguments;
#                 no disk, nothing read from outside the measured files, no shell login
#   OUT/cmdline   the kernel command line
#
# plus OUT/SHA256SUMS and, with OVMF=…, OUT/measurement.txt (`origami measure sev-snp`).
#
# The binaries are stripped of debug information as they are copied in.
#
# usage: deploy/cvm/build-image.sh [BIN_DIR] [OUT]      (defaults: target/release target/cvm)
#   PLATFORM=sev-snp|tdx   the platform the service starts its enclave on (default sev-snp);
#                          `simulated` for boot tests only (deploy/cvm/boot-test.sh): its
#                          evidence proves nothing and a client policy refuses it by default
#   SERVE_ARGS="…"         origami serve's arguments after --platform (default below)
#   MIRROR=URL             Debian mirror; a snapshot.debian.org URL pins every package
#   SOURCE_DATE_EPOCH=N    timestamps of every file (default: a fixed date)
#   OVMF=FILE VCPUS=N VCPU_TYPE=T   also compute the SEV-SNP launch digest and code id
#
# Reproducible: the same BIN_DIR, packages (MIRROR at a snapshot), SOURCE_DATE_EPOCH and
# arguments give the same three files bit for bit (mmdebstrap honours SOURCE_DATE_EPOCH; the
# cpio archive is sorted, with clamped times, fixed owners and no inode numbers). Needs root,
# mmdebstrap, cpio and zstd (installed from Debian when missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
bin_dir=$(cd "${1:-target/release}" && pwd)
out=$(mkdir -p "${2:-target/cvm}" && cd "${2:-target/cvm}" && pwd)
platform=${PLATFORM:-sev-snp}
serve_args=${SERVE_ARGS:---listen 0.0.0.0:8080 --model fashion --mode slalom}
mirror=${MIRROR:-http://deb.debian.org/debian}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1764979200}   # 2025-12-06 00:00 UTC
log() { echo "cvm-image: $*" >&2; }
fail() { log "error: $*"; exit 1; }

case "$serve_args" in *[!A-Za-z0-9\ ._:/=,@-]*) fail "SERVE_ARGS may hold letters, digits, spaces and . _ : / = , @ - only" ;; esac
case "$platform" in sev-snp|tdx|simulated) ;; *) fail "PLATFORM must be sev-snp or tdx (or simulated, for boot tests), not $platform" ;; esac
for b in origami origami-enclave; do
    [ -x "$bin_dir/$b" ] || fail "$bin_dir/$b not found (build: cargo build --release -p origami-cli -p origami-enclave-bin)"
done
[ "$(id -u)" = 0 ] || fail "needs root (mmdebstrap builds the root filesystem as root)"
if ! command -v mmdebstrap >/dev/null || ! command -v cpio >/dev/null || ! command -v zstd >/dev/null; then
    apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q mmdebstrap cpio zstd >&2 \
        || fail "could not install mmdebstrap, cpio and zstd from Debian"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/origami-cvm.XXXXXX")
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
files=$root/deploy/cvm/files

log "root filesystem: Debian trixie minbase + cloud kernel + systemd ($mirror)"
# Hooks run outside the chroot with the root filesystem as $1.
mmdebstrap --quiet --variant=minbase \
    --include=linux-image-cloud-amd64,systemd-sysv,udev,kmod,iproute2 \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --customize-hook="install -d -m 0755 \"\$1/opt/origami/bin\"" \
    --customize-hook="install -s -m 0755 '$bin_dir/origami' '$bin_dir/origami-enclave' \"\$1/opt/origami/bin/\"" \
    --customize-hook="cp -r '$files/.' \"\$1/\"" \
    --customize-hook="chroot \"\$1\" useradd --system --uid 10001 --user-group --home-dir /nonexistent --shell /usr/sbin/nologin origami" \
    --customize-hook="chroot \"\$1\" systemctl enable origami.service systemd-networkd.service" \
    --customize-hook="chroot \"\$1\" systemctl mask getty@tty1.service serial-getty@ttyS0.service console-getty.service systemd-firstboot.service" \
    trixie "$rootfs" "$mirror" \
    || fail "mmdebstrap could not build the root filesystem"

# The service's fixed arguments are part of the image, hence of its measurement.
sed -i "s|@PLATFORM@|$platform|; s|@SERVE_ARGS@|$serve_args|" "$rootfs/etc/systemd/system/origami.service"

# The kernel must offer what the platforms need: configfs-tsm reports and the guest drivers.
config=$(ls "$rootfs"/boot/config-*)
for opt in CONFIG_TSM_REPORTS CONFIG_SEV_GUEST CONFIG_TDX_GUEST_DRIVER CONFIG_RD_ZSTD; do
    grep -Eq "^$opt=(y|m)" "$config" || fail "the kernel lacks $opt ($config)"
done
cp "$(ls "$rootfs"/boot/vmlinuz-*)" "$out/vmlinuz"

# Out of the initrd: the kernel image itself (loaded separately), package caches and logs, and
# state that must be made fresh at each boot (machine id, random seed).
rm -rf "$rootfs"/boot/* "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/var/log/* "$rootfs"/var/lib/systemd/random-seed
: > "$rootfs/etc/machine-id"
# The kernel starts /init of an initramfs: systemd, running from RAM (no switch to a disk root).
ln -sf /lib/systemd/systemd "$rootfs/init"
# Modules not needed in a VM: sound, wireless, media, GPU (an NVIDIA driver is not included;
# docs/CVM.md), bluetooth, infiniband.
moddir=$(ls -d "$rootfs"/lib/modules/*/kernel 2>/dev/null || ls -d "$rootfs"/usr/lib/modules/*/kernel)
rm -rf "$moddir"/sound "$moddir"/drivers/{media,gpu,bluetooth,infiniband,net/wireless} "$moddir"/net/{wireless,bluetooth,mac80211}
kver=$(basename "$(dirname "$moddir")")
chroot "$rootfs" depmod "$kver"

log "initrd: cpio (newc, sorted, times clamped to $SOURCE_DATE_EPOCH, owners fixed) + zstd"
find "$rootfs" -newermt "@$SOURCE_DATE_EPOCH" -print0 | xargs -0r touch --no-dereference --date="@$SOURCE_DATE_EPOCH"
(cd "$rootfs" && find . -mindepth 1 -print0 | LC_ALL=C sort -z \
    | cpio --quiet --null --create --format=newc --reproducible) \
    | zstd -q -T0 -15 > "$out/initrd"
printf '%s' "console=ttyS0 panic=-1 quiet" > "$out/cmdline"

(cd "$out" && sha256sum vmlinuz initrd cmdline > SHA256SUMS)
log "image in $out ($(du -sh "$out/initrd" | cut -f1) initrd, $(du -sh "$out/vmlinuz" | cut -f1) kernel):"
cat "$out/SHA256SUMS" >&2
if [ -n "${OVMF:-}" ]; then
    "$bin_dir/origami" measure sev-snp --ovmf "$OVMF" --kernel "$out/vmlinuz" --initrd "$out/initrd" \
        --cmdline "$(cat "$out/cmdline")" --vcpus "${VCPUS:-2}" --vcpu-type "${VCPU_TYPE:-EPYC-v4}" \
        | tee "$out/measurement.txt"
fi
