SUMMARY = "Passerelle appliance image: read-only A/B root, data partition, systemd-boot"
DESCRIPTION = "Disk image for the passerelle appliance with the A/B layout of \
               wic/passerelle-ab.wks (ESP, root-a, root-b, data) and systemd-boot boot counting."
HOMEPAGE = "https://example.invalid/passerelle"
BUGTRACKER = "https://example.invalid/passerelle/issues"
SECTION = "images"
CVE_PRODUCT = "passerelle"
LICENSE = "MIT"

inherit core-image

IMAGE_FEATURES += "read-only-rootfs"
IMAGE_INSTALL += "passerelle pcsc-lite softhsm dovecot chrony"

IMAGE_FSTYPES = "wic"
WKS_FILE = "passerelle-ab.wks"
EFI_PROVIDER = "systemd-boot"
