#!/bin/sh
# mmdebstrap customize hook of firmware/build-base.sh; $1 is the new root file system.
set -eu
root=$1

# Kernel modules the appliance never loads (graphics, sound, radio, cameras, InfiniBand,
# network file systems…): most of /lib/modules. USB, HID, storage and NICs stay.
for d in drivers/gpu drivers/media drivers/net/wireless drivers/infiniband drivers/staging \
  drivers/iio drivers/bluetooth drivers/isdn drivers/input/touchscreen \
  drivers/net/ethernet/mellanox drivers/net/ethernet/intel/ice drivers/scsi/qla2xxx \
  drivers/scsi/lpfc drivers/thunderbolt sound net/bluetooth net/mac80211 net/wireless \
  fs/nfs fs/ocfs2 fs/btrfs fs/xfs fs/gfs2 fs/ceph fs/smb; do
  rm -rf "$root"/usr/lib/modules/*/kernel/$d
done

# The initramfs only has to find the root slot (virtio for qemu, AHCI/NVMe for an IPC) and
# mount erofs; `MODULES=list` keeps it small and independent of the build host.
printf 'MODULES=list\nCOMPRESS=zstd\n' > "$root/etc/initramfs-tools/conf.d/passerelle.conf"
printf 'virtio_pci\nvirtio_blk\nvirtio_scsi\nahci\nsd_mod\nnvme\nerofs\n' > "$root/etc/initramfs-tools/modules"
kver=$(ls "$root/usr/lib/modules")
chroot "$root" depmod -a "$kver"
chroot "$root" update-initramfs -u -k "$kver"

rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/var/log/*
