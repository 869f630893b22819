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

SRC_URI = "git://example.invalid/passerelle.git;protocol=https;branch=main \
           file://passerelle.service \
           file://passerelle-update-commit.service \
           "
SRCREV = "fc7e7968ca13d10f59e675645b5c0dff8477c318"

require passerelle-crates.inc

inherit cargo systemd useradd

S = "${UNPACKDIR}/git"

CARGO_BUILD_FLAGS += "-p passerelle"

USERADD_PACKAGES = "${PN}"
USERADD_PARAM:${PN} = "--system --home-dir ${localstatedir}/lib/passerelle --no-create-home --shell /sbin/nologin --user-group passerelle"

RDEPENDS:${PN} += "dovecot pcsc-lite softhsm"

SYSTEMD_SERVICE:${PN} = "passerelle.service passerelle-update-commit.service"

do_install:append() {
    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${UNPACKDIR}/passerelle.service ${D}${systemd_system_unitdir}/
    install -m 0644 ${UNPACKDIR}/passerelle-update-commit.service ${D}${systemd_system_unitdir}/
    install -d ${D}${datadir}/passerelle
}
