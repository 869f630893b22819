#!/usr/bin/env bash
# Builds a firmware image: `make image BOARD=qemu-x86_64 VERSION=x.y.z`.
#
#   firmware/build-image.sh BOARD VERSION OUTDIR
#
# Output in OUTDIR:
#   passerelle-BOARD-VERSION.disk   raw GPT disk: esp (vfat, systemd-boot, kernel+initrd per
#                                   slot), root-a (this version), root-b (empty), data (ext4)
#   passerelle-BOARD-VERSION.img    the root slot image alone (erofs): what the vendor
#                                   publishes (`passerelle vendor publish --image`)
#
# No loop devices and no mounts: mmdebstrap (cached base, firmware/build-base.sh), mkfs.erofs
# from a directory, mkfs.vfat -C + mcopy, mkfs.ext4 on a file, sfdisk + dd into the disk.
#
# Environment:
#   PASSERELLE_BIN   the binary to install (default target/release/passerelle)
#   FIRMWARE_CONFIG  /etc/passerelle/passerelle.toml to ship (default firmware/passerelle.toml)
#   VENDOR_URL       replaces @VENDOR_URL@ in it
#   TUF_ROOT         the vendor's root.json to ship as the trust anchor (default: a
#                    development repository under target/firmware/vendor, created if missing)
#   SLOT_MB, DATA_MB, ESP_MB  partition sizes (defaults 768, 512, 128)
#   ROOT_ONLY=1      only the root slot image (an update), no disk
set -euo pipefail
cd "$(dirname "$0")/.."

board=${1:?usage: build-image.sh BOARD VERSION OUTDIR}
version=${2:?usage: build-image.sh BOARD VERSION OUTDIR}
out=${3:-target/firmware/out}
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "VERSION must be x.y.z, got $version" >&2; exit 2; }
[ -d "board/$board" ] || { echo "no board/$board" >&2; exit 2; }
[ "$board" = qemu-x86_64 ] || [ "$board" = x86-64-ipc ] || {
  echo "build-image.sh builds x86-64 UEFI boards only (board/$board: see its README)" >&2; exit 2; }

bin=${PASSERELLE_BIN:-target/release/passerelle}
config=${FIRMWARE_CONFIG:-firmware/passerelle.toml}
vendor_url=${VENDOR_URL:-https://updates.example.invalid/passerelle/}
slot_mb=${SLOT_MB:-768}
data_mb=${DATA_MB:-512}
esp_mb=${ESP_MB:-128}
[ -x "$bin" ] || { echo "$bin missing: cargo build --release -p passerelle" >&2; exit 2; }

if [ -z "${TUF_ROOT:-}" ]; then
  dev=target/firmware/vendor
  if [ ! -f "$dev/repo/metadata/1.root.json" ]; then
    mkdir -p "$dev"
    "$bin" vendor keygen "$dev/root.dev-only.pk8" >&2
    "$bin" vendor keygen "$dev/online.dev-only.pk8" >&2
    "$bin" vendor init-root --repo "$dev/repo" --root-key "$dev/root.dev-only.pk8" \
      --online-key "$dev/online.dev-only.pk8" >&2
  fi
  TUF_ROOT=$dev/repo/metadata/1.root.json
fi

t0=$(date +%s)
base=$(firmware/build-base.sh)
mkdir -p "$out"
work=$(mktemp -d "$out/.build-$version.XXXXXX")
trap 'rm -rf "$work"' EXIT
tree=$work/rootfs
cp -a "$base" "$tree"

# The passerelle layer: binary, units, configuration, trust anchor, version.
install -m 0755 "$bin" "$tree/usr/bin/passerelle"
cp -a firmware/rootfs/. "$tree/"
cp -a "board/$board/rootfs/." "$tree/" 2>/dev/null || true
install -m 0644 firmware/units/*.service firmware/units/*.path "$tree/usr/lib/systemd/system/"
install -d "$tree/etc/passerelle" "$tree/usr/share/passerelle" "$tree/boot/efi" "$tree/var/lib/passerelle"
sed -e "s|@BOARD@|$board|g" -e "s|@VENDOR_URL@|$vendor_url|g" "$config" > "$tree/etc/passerelle/passerelle.toml"
chmod 0644 "$tree/etc/passerelle/passerelle.toml"
install -m 0644 "$TUF_ROOT" "$tree/usr/share/passerelle/root.json"
rm -f "$tree/etc/os-release"
{ grep -v '^IMAGE_' "$tree/usr/lib/os-release"; echo "IMAGE_ID=passerelle-$board"; echo "IMAGE_VERSION=$version"; } > "$work/os-release"
rm -f "$tree/usr/lib/os-release"
install -m 0644 "$work/os-release" "$tree/usr/lib/os-release"
ln -s ../usr/lib/os-release "$tree/etc/os-release"
echo passerelle > "$tree/etc/hostname"
# Empty machine-id: systemd keeps a transient one on the read-only root.
: > "$tree/etc/machine-id"
# /etc is read-only at run time: the passerelle user exists in the image.
systemd-sysusers --root="$tree" >/dev/null
systemctl --root="$tree" --quiet enable passerelle.service passerelle-reboot.path \
  passerelle-factory-reset.service systemd-networkd.service systemd-timesyncd.service
# The daemon commits a boot on trial after its own health check; systemd-bless-boot would
# commit as soon as boot-complete.target is reached, healthy or not.
systemctl --root="$tree" --quiet mask systemd-bless-boot.service
# A network online means an address (networkd), not every link.
mkdir -p "$tree/etc/systemd/system/systemd-networkd-wait-online.service.d"
printf '[Service]\nExecStart=\nExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=30\n' \
  > "$tree/etc/systemd/system/systemd-networkd-wait-online.service.d/any.conf"

kernel=$(ls "$tree"/boot/vmlinuz-* | head -1)
initrd=$(ls "$tree"/boot/initrd.img-* | head -1)

# Root slot image.
slot_img=$out/passerelle-$board-$version.img
mkfs.erofs -zlz4hc -T "$(date -d '2026-01-01' +%s)" "$work/root.erofs" "$tree" >/dev/null
size=$(stat -c %s "$work/root.erofs")
[ "$size" -le $((slot_mb << 20)) ] || { echo "root image $size bytes > slot $slot_mb MiB" >&2; exit 1; }
if [ "${ROOT_ONLY:-0}" = 1 ]; then
  mv "$work/root.erofs" "$slot_img"
  echo "image $board $version: $slot_img ($size bytes), $(( $(date +%s) - t0 )) s" >&2
  exit 0
fi

# ESP: systemd-boot on the removable-media path (no NVRAM entry needed), one kernel and
# initrd per slot (updates change the root slot; both slots start with this kernel), and the
# entries written by the updater's own code so names and options always match it.
esp=$work/esp
mkdir -p "$esp/EFI/BOOT" "$esp/EFI/systemd" "$esp/passerelle/a" "$esp/passerelle/b"
cp /usr/lib/systemd/boot/efi/systemd-bootx64.efi "$esp/EFI/BOOT/BOOTX64.EFI"
cp /usr/lib/systemd/boot/efi/systemd-bootx64.efi "$esp/EFI/systemd/systemd-bootx64.efi"
for s in a b; do
  cp "$kernel" "$esp/passerelle/$s/vmlinuz"
  cp "$initrd" "$esp/passerelle/$s/initrd.img"
done
"$bin" update install-esp --esp "$esp" --slot a --version "$version" >/dev/null
rm -f "$work/esp.vfat"
mkfs.vfat -C -F 32 -n ESP "$work/esp.vfat" $((esp_mb * 1024)) >/dev/null
mcopy -s -i "$work/esp.vfat" "$esp"/* ::/

# Data partition: empty; the units create what they need (StateDirectory=).
mkfs.ext4 -q -F -L data -m 1 -E root_owner=990:990 "$work/data.ext4" "${data_mb}M"

# GPT disk: 1 MiB alignment, partitions in MiB.
disk=$out/passerelle-$board-$version.disk
rm -f "$disk"
total=$((1 + esp_mb + 2 * slot_mb + data_mb + 1))
truncate -s "${total}M" "$disk"
esp_at=1; a_at=$((esp_at + esp_mb)); b_at=$((a_at + slot_mb)); data_at=$((b_at + slot_mb))
sfdisk --quiet "$disk" <<PARTS
label: gpt
start=$((esp_at * 2048)), size=$((esp_mb * 2048)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp
start=$((a_at * 2048)), size=$((slot_mb * 2048)), type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name=root-a
start=$((b_at * 2048)), size=$((slot_mb * 2048)), type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name=root-b
start=$((data_at * 2048)), size=$((data_mb * 2048)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=data
PARTS
put() { dd if="$1" of="$disk" bs=1M seek="$2" conv=notrunc,sparse status=none; }
put "$work/esp.vfat" "$esp_at"
put "$work/root.erofs" "$a_at"
put "$work/data.ext4" "$data_at"
mv "$work/root.erofs" "$slot_img"
echo "image $board $version: $disk ($(du -h --apparent-size "$disk" | cut -f1) sparse, $(du -h "$disk" | cut -f1) used), root $size bytes, $(( $(date +%s) - t0 )) s" >&2
