SUMMARY = "AWS credentials and one MQTT session for a gateway, from its X.509 identity"
DESCRIPTION = "tether exchanges the device's X.509 identity (key in a PKCS#11 \
token, a TPM or a PEM file) at the AWS IoT Core credentials provider for \
temporary AWS credentials, keeps them fresh, serves them to local programs \
(credential_process, the container credentials endpoint, a Unix socket) and \
keeps one MQTT v5 session to AWS IoT Core for the whole device."
HOMEPAGE = "https://github.com/tetherd/tether"
BUGTRACKER = "https://github.com/tetherd/tether/issues"
SECTION = "net"

LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://src/${GO_IMPORT}/LICENSE;md5=3b83ef96387f14655fc854ddc3c6bd57"

# Where tether's source comes from. A build that tests a local checkout sets
# TETHER_GIT_URI = "git:///path/to/tether.git;protocol=file;branch=BRANCH"
# and SRCREV:pn-tether in local.conf (yocto/check-layers.sh does).
TETHER_GIT_URI ?= "git://github.com/tetherd/tether.git;protocol=https;branch=main"
SRC_URI = "${TETHER_GIT_URI};destsuffix=${GO_SRCURI_DESTSUFFIX}"
SRCREV ?= "d8152671a01f0a39945b1d8ff1e833dc078058a1"
PV = "0.1.0+git"

# Every Go module tether needs, fetched with the gomod:// fetcher, and their
# licenses. Generated (never edit them): `make yocto-update-modules`.
require ${BPN}-licenses.inc
require ${BPN}-go-mods.inc

GO_IMPORT = "github.com/tetherd/tether"
GO_INSTALL = "${GO_IMPORT}/agent/cmd/tether"
GO_WORKDIR = "${GO_IMPORT}"

inherit go-mod go-mod-update-modules systemd useradd

# pkcs11: keys in a PKCS#11 token (crypto11, the module loaded into the
# process). cgo stays on either way: the go class builds PIE, which needs the
# external linker on some architectures; without pkcs11 the nopkcs11 tag
# leaves crypto11 out. A PKCS#11 module is recommended, not required: the
# token's own module (opensc, softhsm, tpm2-pkcs11) comes from its layer.
PACKAGECONFIG ??= "pkcs11"
PACKAGECONFIG[pkcs11] = ",,,,p11-kit"
TETHER_TAGS = "${@bb.utils.contains('PACKAGECONFIG', 'pkcs11', '', 'nopkcs11', d)}"
GOBUILDFLAGS:append = " -tags=${TETHER_TAGS}"

# The version, commit and build date, stamped as `make build` does. The build
# date is the source date (SOURCE_DATE_EPOCH), so the binary is reproducible;
# tether reports a clock before it as unsynchronised.
TETHER_COMMIT = "${@d.getVar('SRCREV')[:7]}"
TETHER_BUILD_DATE = "${@time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(int(d.getVar('SOURCE_DATE_EPOCH'))))}"
TETHER_BUILD_DATE[vardepvalue] = ""
GO_EXTRA_LDFLAGS = "-X main.version=${PV} -X main.commit=${TETHER_COMMIT} -X main.buildDate=${TETHER_BUILD_DATE}"

# The account of packaging/systemd/sysusers.d/tether.conf.
USERADD_PACKAGES = "${PN}"
GROUPADD_PARAM:${PN} = "--system tether"
USERADD_PARAM:${PN} = "--system --gid tether --home-dir ${localstatedir}/lib/tether \
    --no-create-home --shell ${base_sbindir}/nologin --comment 'tether agent' tether"

SYSTEMD_SERVICE:${PN} = "tether.service tether.socket"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

TETHER_SRC = "${S}/src/${GO_IMPORT}"

# Only the binary: go_do_install would also ship tether's source tree.
do_install() {
    install -d ${D}${bindir}
    install -m 0755 ${B}/${GO_BUILD_BINDIR}/tether ${D}${bindir}/tether

    install -d -m 0750 ${D}${sysconfdir}/tether
    install -m 0640 ${TETHER_SRC}/packaging/tether.toml ${D}${sysconfdir}/tether/tether.toml
    chgrp tether ${D}${sysconfdir}/tether ${D}${sysconfdir}/tether/tether.toml

    if ${@bb.utils.contains('DISTRO_FEATURES', 'systemd', 'true', 'false', d)}; then
        install -d ${D}${systemd_system_unitdir}
        install -m 0644 ${TETHER_SRC}/packaging/systemd/tether.service \
            ${TETHER_SRC}/packaging/systemd/tether.socket ${D}${systemd_system_unitdir}/
        install -d ${D}${nonarch_libdir}/sysusers.d ${D}${nonarch_libdir}/tmpfiles.d
        install -m 0644 ${TETHER_SRC}/packaging/systemd/sysusers.d/tether.conf ${D}${nonarch_libdir}/sysusers.d/tether.conf
        install -m 0644 ${TETHER_SRC}/packaging/systemd/tmpfiles.d/tether.conf ${D}${nonarch_libdir}/tmpfiles.d/tether.conf
        # Drop-ins an image enables by copying them to /etc/systemd/system/tether.service.d/.
        install -d ${D}${datadir}/tether/tether.service.d
        install -m 0644 ${TETHER_SRC}/packaging/systemd/tether.service.d/*.conf ${D}${datadir}/tether/tether.service.d/
    fi
}

CONFFILES:${PN} = "${sysconfdir}/tether/tether.toml"
FILES:${PN} += "${nonarch_libdir}/sysusers.d ${nonarch_libdir}/tmpfiles.d ${datadir}/tether"
