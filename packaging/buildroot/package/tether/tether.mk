################################################################################
#
# tether
#
################################################################################

# The commit the Yocto recipe (yocto/meta-tether) builds too; bump both, then
# `make buildroot-hash` and `make yocto-update-modules`.
TETHER_VERSION = d8152671a01f0a39945b1d8ff1e833dc078058a1
TETHER_SITE = https://github.com/tetherd/tether.git
TETHER_SITE_METHOD = git
TETHER_LICENSE = Apache-2.0, \
	Apache-2.0 (aws-sdk-go-v2, smithy-go, go-systemd, otp, pool, yaml), \
	BSD-2-Clause (websocket, errors), \
	BSD-3-Clause (pkcs11, x/net, x/sys, Go's singleflight and json copies), \
	MIT (crypto11, barcode, bbolt, go-toml), \
	EPL-2.0 or BSD-3-Clause (paho.golang)
# tether's and those of the vendored modules linked into it (not testify,
# which only its tests use); their hashes are in tether.hash (make buildroot-hash).
TETHER_LICENSE_FILES = LICENSE \
	vendor/github.com/ThalesIgnite/crypto11/LICENCE.txt \
	vendor/github.com/aws/aws-sdk-go-v2/LICENSE.txt \
	vendor/github.com/aws/aws-sdk-go-v2/internal/sync/singleflight/LICENSE \
	vendor/github.com/aws/smithy-go/LICENSE \
	vendor/github.com/aws/smithy-go/internal/sync/singleflight/LICENSE \
	vendor/github.com/aws/smithy-go/transport/http/protocol/internal/json/internal/stdlib/LICENSE \
	vendor/github.com/boombuler/barcode/LICENSE \
	vendor/github.com/coreos/go-systemd/v22/LICENSE \
	vendor/github.com/eclipse/paho.golang/LICENSE \
	vendor/github.com/gorilla/websocket/LICENSE \
	vendor/github.com/miekg/pkcs11/LICENSE \
	vendor/github.com/pelletier/go-toml/v2/LICENSE \
	vendor/github.com/pkg/errors/LICENSE \
	vendor/github.com/pquerna/otp/LICENSE \
	vendor/github.com/thales-e-security/pool/LICENSE \
	vendor/go.etcd.io/bbolt/LICENSE \
	vendor/go.yaml.in/yaml/v3/LICENSE \
	vendor/golang.org/x/net/LICENSE \
	vendor/golang.org/x/sys/LICENSE
TETHER_GOMOD = github.com/tetherd/tether
TETHER_BUILD_TARGETS = agent/cmd/tether

# Stamped as `make build` does; the build date is SOURCE_DATE_EPOCH when
# the build is reproducible (tether reports a clock before it as unsynchronised).
TETHER_BUILD_DATE = $(shell date -u $(if $(SOURCE_DATE_EPOCH),-d @$(SOURCE_DATE_EPOCH)) +%Y-%m-%dT%H:%M:%SZ)
TETHER_LDFLAGS = \
	-X main.version=$(TETHER_VERSION) \
	-X main.commit=$(shell echo $(TETHER_VERSION) | cut -c1-7) \
	-X main.buildDate=$(TETHER_BUILD_DATE)

# Without the PKCS#11 option, -tags nopkcs11 leaves crypto11 out even when
# cgo is on (Buildroot enables it wherever the toolchain can link it).
ifeq ($(BR2_PACKAGE_TETHER_PKCS11),y)
TETHER_GO_ENV = CGO_ENABLED=1
else
TETHER_TAGS = nopkcs11
endif

# The account of packaging/systemd/sysusers.d/tether.conf.
define TETHER_USERS
	tether -1 tether -1 * /var/lib/tether - - tether agent
endef

define TETHER_PERMISSIONS
	/etc/tether d 750 root tether - - - - -
	/etc/tether/tether.toml f 640 root tether - - - - -
	/var/lib/tether d 700 tether tether - - - - -
endef

define TETHER_INSTALL_CONFIG
	$(INSTALL) -D -m 0640 $(@D)/packaging/tether.toml \
		$(TARGET_DIR)/etc/tether/tether.toml
endef
TETHER_POST_INSTALL_TARGET_HOOKS += TETHER_INSTALL_CONFIG

define TETHER_INSTALL_INIT_SYSTEMD
	$(INSTALL) -D -m 0644 $(@D)/packaging/systemd/tether.service \
		$(TARGET_DIR)/usr/lib/systemd/system/tether.service
	$(INSTALL) -D -m 0644 $(@D)/packaging/systemd/tether.socket \
		$(TARGET_DIR)/usr/lib/systemd/system/tether.socket
	$(INSTALL) -D -m 0644 $(@D)/packaging/systemd/tmpfiles.d/tether.conf \
		$(TARGET_DIR)/usr/lib/tmpfiles.d/tether.conf
endef

define TETHER_INSTALL_INIT_SYSV
	$(INSTALL) -D -m 0755 $(BR2_EXTERNAL_TETHER_PATH)/package/tether/S95tether \
		$(TARGET_DIR)/etc/init.d/S95tether
endef

$(eval $(golang-package))
