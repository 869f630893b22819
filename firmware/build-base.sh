#!/usr/bin/env bash
# Builds (once) the Debian bookworm base root file system every image version starts from,
# cached under target/firmware/base/<hash of this script>/rootfs so v1/v2/v3 of a system test
# and repeated `make image` runs pay for mmdebstrap only once.
#   firmware/build-base.sh            prints the cached rootfs directory (building it if needed)
set -euo pipefail
cd "$(dirname "$0")/.."

key=$(cat firmware/build-base.sh firmware/base-hook.sh | sha256sum | cut -c1-12)
cache=target/firmware/base/$key
if [ -f "$cache/done" ]; then
  echo "$cache/rootfs"
  exit 0
fi
# Older bases are of no use once this script changed: keep the disk for the new one.
rm -rf target/firmware/base
mkdir -p "$cache"

mmdebstrap --variant=minbase --mode=root \
  --include=linux-image-amd64,initramfs-tools,zstd,systemd-sysv,udev,systemd-timesyncd,dovecot-imapd,dovecot-lmtpd,pcscd,libpcsclite1,softhsm2,e2fsprogs,ca-certificates \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --customize-hook='firmware/base-hook.sh "$1"' \
  bookworm "$cache/rootfs" http://deb.debian.org/debian >&2
touch "$cache/done"
echo "$cache/rootfs"
