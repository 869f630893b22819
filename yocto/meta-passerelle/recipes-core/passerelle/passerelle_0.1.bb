SUMMARY = "Passerelle: MSSante mail, SESAM-Vitale and CPS cards gateway"
DESCRIPTION = "The passerelle daemon and its command line (one binary), built from the \
               workspace with the cargo class; crate checksums come from Cargo.lock through \
               yocto/scripts/gen-crates-inc.py."
HOMEPAGE = "https://example.invalid/passerelle"
BUGTRACKER = "https://example.invalid/passerelle/issues"
SECTION = "net"
CVE_PRODUCT = "passerelle"
LICENSE = "EUPL-1.2"
# The workspace has no LICENSE file yet: the checksum covers the license line of Cargo.toml.
LIC_FILES_CHKSUM = "file://Cargo.toml;beginline=38;endline=38;md5=03d092a31a706577fee56bf091860676"

DEPENDS += "pcsc-lite sqlite3"

# The systemd units, sysusers/udev files and the factory-reset verb are the ones the Debian
# image uses (firmware/units, firmware/rootfs), installed from the source tree.
SRC_URI = "git://example.invalid/passerelle.git;protocol=https;branch=main"
SRCREV = "fc7e7968ca13d10f59e675645b5c0dff8477c318"

require passerelle-crates.inc

inherit cargo systemd useradd

S = "${UNPACKDIR}/git"

CARGO_BUILD_FLAGS += "-p passerelle"

USERADD_PACKAGES = "${PN}"
# Fixed id: the ESP is mounted with uid=990 (firmware/rootfs/etc/fstab).
USERADD_PARAM:${PN} = "--system --uid 990 --home-dir ${localstatedir}/lib/passerelle --no-create-home --shell /sbin/nologin --user-group passerelle"

FILES:${PN} += "${nonarch_base_libdir}/udev/rules.d"

RDEPENDS:${PN} += "dovecot pcsc-lite softhsm"

# The daemon commits a boot on trial itself, after its own /healthz (issue 9).
SYSTEMD_SERVICE:${PN} = "passerelle.service passerelle-reboot.path passerelle-factory-reset.service"

do_install:append() {
    install -d ${D}${systemd_system_unitdir} ${D}${nonarch_base_libdir}/udev/rules.d ${D}${sbindir}
    install -m 0644 ${S}/firmware/units/passerelle.service ${S}/firmware/units/passerelle-reboot.path \
        ${S}/firmware/units/passerelle-reboot.service ${S}/firmware/units/passerelle-factory-reset.service \
        ${D}${systemd_system_unitdir}/
    install -m 0644 ${S}/firmware/rootfs/usr/lib/udev/rules.d/70-passerelle-slots.rules ${D}${nonarch_base_libdir}/udev/rules.d/
    install -m 0755 ${S}/firmware/rootfs/usr/sbin/passerelle-factory-reset ${D}${sbindir}/
    install -d ${D}${datadir}/passerelle
}
