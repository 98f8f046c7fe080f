# tether — see README.md. Every target works from a fresh Debian 12 checkout.
SHELL        := /bin/bash
GO           ?= go
VERSION      ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT       ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
BUILD_DATE   ?= $(shell date -u -d @$$(git log -1 --format=%ct 2>/dev/null || date +%s) +%Y-%m-%dT%H:%M:%SZ)
PKG          := github.com/tetherd/tether/agent/cmd/tether
LDFLAGS      := -s -w -buildid= -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.buildDate=$(BUILD_DATE)
TAGS         ?=
# The release builds leave out what no tether feature uses and keep hot code
# fast (docs/footprint.md says what each saves):
# - nethttpomithttp2: net/http without its bundled HTTP/2; every peer tether
#   talks to (the credentials provider, STS, SSO, the local socket) speaks
#   HTTP/1.1. -520 KB.
# - COLD: packages that run once per refresh or at start-up (configuration, the
#   SDK, certificate parsing, TLS handshakes, key access) are compiled without
#   inlining; the socket's and the MQTT session's hot paths keep it. -590 KB.
#   The second line from the end (issue 15, third pass, -57 KB): what wraps a
#   system call (os, syscall: a call more next to the kernel's), hashes, HMAC,
#   HKDF, the TLS KDFs and big-number arithmetic (handshakes and signatures;
#   TLS records use AES-GCM, which keeps inlining), autopaho's reconnect
#   loop, and tether's own command line, provisioning client and probes.
GOTAGS       := nethttpomithttp2 $(TAGS)
COLD         := github.com/aws/... github.com/pelletier/... github.com/gorilla/... github.com/coreos/... \
                github.com/google/go-tpm/... github.com/ThalesIgnite/... github.com/miekg/... \
                golang.org/x/... vendor/... regexp/... math/big encoding/asn1 encoding/xml encoding/pem \
                crypto/x509/... crypto/tls crypto/ecdsa crypto/rsa crypto/elliptic crypto/ecdh crypto/hpke \
                crypto/mlkem crypto/ed25519 crypto/des crypto/dsa crypto/internal/fips140/mlkem \
                crypto/internal/fips140/rsa crypto/internal/fips140/ecdsa crypto/internal/fips140/nistec \
                crypto/internal/fips140/edwards25519/... crypto/internal/fips140/ed25519 \
                os/user os/exec mime/... flag text/... compress/... container/list log/slog/... fmt \
                go.yaml.in/... github.com/tetherd/tether/hsm/... github.com/tetherd/tether/agent/greengrass \
                os syscall io/fs path/filepath log os/signal embed unique internal/godebug net/http/httputil encoding/hex math/rand \
                crypto/sha256 crypto/sha512 crypto/sha1 crypto/md5 crypto/hmac crypto/sha3 crypto/internal/fips140/sha256 \
                crypto/internal/fips140/sha512 crypto/internal/fips140/sha3 crypto/internal/fips140/hmac crypto/internal/fips140/hkdf \
                crypto/internal/fips140/tls12 crypto/internal/fips140/tls13 crypto/internal/fips140/ecdh crypto/internal/fips140/drbg \
                crypto/internal/fips140/bigmod github.com/eclipse/paho.golang/autopaho github.com/tetherd/tether/agent/cmd/tether \
                github.com/tetherd/tether/mqtt/fleetprov github.com/tetherd/tether/platform/endpoint
COLDFLAGS    := $(foreach p,$(COLD),-gcflags=$(p)=-l)
GOFLAGS_BUILD:= -trimpath -tags '$(GOTAGS)' $(COLDFLAGS) -ldflags '$(LDFLAGS)'
# The cgo builds go into glibc distributions' packages: position independent,
# full RELRO and immediate binding, as those distributions build their own.
# (The later -ldflags replaces GOFLAGS_BUILD's; everything else is inherited.)
PKCS11_BUILD  = $(GOFLAGS_BUILD) -buildmode=pie -ldflags '$(LDFLAGS) -extldflags "-Wl,-z,relro,-z,now"'
TEST_TIMEOUT ?= 25m

.PHONY: all build static cross-pkcs11 test test-unit test-arm64 test-armv7 test-tpm-static test-systemd test-packages bench demo deps lint fuzz clean packages release test-release check-layers yocto-update-modules buildroot-hash

all: build

## build: bin/tether for this host (PKCS#11 when cgo is on)
build:
	$(GO) build $(GOFLAGS_BUILD) -o bin/tether ./agent/cmd/tether

## static: fully static CGO_ENABLED=0 binaries: PEM and TPM 2.0 keys (TAGS=notpm leaves TPM support out), and PKCS#11 keys through p11-kit
static:
	@mkdir -p dist
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build $(GOFLAGS_BUILD) -o dist/tether-linux-amd64 ./agent/cmd/tether
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build $(GOFLAGS_BUILD) -o dist/tether-linux-arm64 ./agent/cmd/tether
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 $(GO) build $(GOFLAGS_BUILD) -o dist/tether-linux-armv7 ./agent/cmd/tether
	@ls -l dist/tether-linux-*

## cross-pkcs11: cgo builds against each target's glibc, with PKCS#11
cross-pkcs11:
	@./softhsm-test/deps.sh --cross
	@mkdir -p dist
	CGO_ENABLED=1 GOOS=linux GOARCH=amd64 CC=gcc $(GO) build $(PKCS11_BUILD) -o dist/tether-pkcs11-linux-amd64 ./agent/cmd/tether
	CGO_ENABLED=1 GOOS=linux GOARCH=arm64 CC=aarch64-linux-gnu-gcc $(GO) build $(PKCS11_BUILD) -o dist/tether-pkcs11-linux-arm64 ./agent/cmd/tether
	CGO_ENABLED=1 GOOS=linux GOARCH=arm GOARM=7 CC=arm-linux-gnueabihf-gcc $(GO) build $(PKCS11_BUILD) -o dist/tether-pkcs11-linux-armv7 ./agent/cmd/tether
	@ls -l dist/tether-pkcs11-linux-*

## deps: install the Debian packages the tests need (as root), or name what is missing
deps:
	@./softhsm-test/deps.sh --cross

## lint: gofmt, go vet, a tidy go.mod whose go line is the lowest the dependencies allow
lint:
	@$(GO) mod tidy -diff >/dev/null 2>&1 || { echo "go.mod/go.sum are not tidy: run 'go mod tidy'"; $(GO) mod tidy -diff; exit 1; }
	@(cd tools && $(GO) mod tidy -diff >/dev/null 2>&1) || { echo "tools/go.mod is not tidy: run 'cd tools && go mod tidy'"; exit 1; }
	@grep -qx 'go 1.25.0' go.mod || { echo "go.mod: the go line must be 'go 1.25.0' (the lowest the dependencies allow; distributions build with their own Go)"; exit 1; }
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	CGO_ENABLED=0 $(GO) vet ./...
	$(GO) vet -tags nopkcs11 ./...   # the Yocto/Buildroot build without PKCS#11 (cgo on, no crypto11)
	$(GO) vet -tags notpm ./...      # a build without TPM 2.0 support (no go-tpm)

## test: everything, race detector on, real SoftHSM, mosquitto, aws, boto3; the static
## (CGO_ENABLED=0) flavour; the PKCS#11 flavour for arm64 under qemu; the packages,
## the live systemd test and the reproducible release
test: deps lint
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...
	CGO_ENABLED=0 $(GO) test -count=1 ./agent/ ./hsm/... ./credprovider/
	CGO_ENABLED=0 $(GO) test -count=1 -run 'SoftHSM|P11Kit|TestHSM|TokenKey' ./mqtt/ ./agent/cmd/tether/
	$(MAKE) test-arm64
	$(MAKE) test-armv7
	$(MAKE) check-layers
	$(MAKE) test-packages
	$(MAKE) test-systemd
	$(MAKE) test-release
	$(MAKE) test-tpm-static

## test-systemd: the .deb in a Debian 12 root booted with systemd (nspawn): install,
## socket, reload, restart, watchdog, hardening, PIN, upgrade, purge, workloads; skips when not root
test-systemd: deps
	@./packaging/test-systemd.sh

## fuzz: run every fuzz target for FUZZTIME each (default 10m), one after the other at low
## priority; findings land in the package's testdata/fuzz and fail the run. `make test`
## (plain go test) replays the committed corpora.
FUZZTIME     ?= 10m
FUZZ_TARGETS := ./agent:FuzzParseConfig ./agent:FuzzSocketAPI ./agent/greengrass:FuzzParse \
                ./hsm:FuzzParseURI ./credprovider:FuzzIoTResponse ./credprovider/imds:FuzzHandler \
                ./mqtt:FuzzTopicAgainstMosquitto ./mqtt:FuzzFilterAgainstMosquitto
fuzz:
	@./softhsm-test/deps.sh
	@set -e; for t in $(FUZZ_TARGETS); do \
	  pkg=$${t%%:*}; name=$${t##*:}; \
	  echo "== $$name ($$pkg) for $(FUZZTIME)"; \
	  nice -n 10 $(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

## test-arm64: the PKCS#11 flavour for arm64 against Debian's arm64 SoftHSM under qemu,
## then the static arm64 binary through Debian's arm64 p11-kit remote
test-arm64:
	./softhsm-test/arm64-test.sh

## test-armv7: the static armv7 (32-bit) binary through Debian's armhf p11-kit remote and SoftHSM under qemu
test-armv7:
	./softhsm-test/armv7-test.sh

## check-layers: the Yocto layer and the Buildroot package against ../shared/upstream
## (bitbake -p/-e/fetch/unpack as an unprivileged user, check-package, printvars, show-info)
check-layers:
	./packaging/check-layers.sh yocto buildroot

## yocto-update-modules: regenerate yocto/meta-tether's tether-go-mods.inc and tether-licenses.inc
yocto-update-modules:
	./packaging/check-layers.sh update-modules

## buildroot-hash: recompute packaging/buildroot/package/tether/tether.hash for TETHER_VERSION
buildroot-hash:
	./packaging/check-layers.sh buildroot-hash

## test-tpm-static: the static binaries (amd64, arm64 and armv7 under qemu) fetch
## credentials with a TPM key held by swtpm
test-tpm-static:
	./softhsm-test/tpm-static-test.sh

## bench: figures as ratios against baselines measured in the same run
bench: deps build
	./softhsm-test/bench.sh

## demo: the main job against the local IoT Core simulator
demo: deps build
	./softhsm-test/demo.sh

# Build tools come from the tools/ module, never the product's go.mod.
bin/nfpm: tools/go.mod tools/go.sum
	cd tools && $(GO) build -trimpath -o ../bin/nfpm github.com/goreleaser/nfpm/v2/cmd/nfpm
bin/cyclonedx-gomod: tools/go.mod tools/go.sum
	cd tools && $(GO) build -trimpath -o ../bin/cyclonedx-gomod github.com/CycloneDX/cyclonedx-gomod/cmd/cyclonedx-gomod

# One PKCS#11 binary, for the host's own package (test-systemd).
dist/tether-pkcs11-linux-amd64 dist/tether-pkcs11-linux-arm64: dist/tether-pkcs11-linux-%: FORCE
	@mkdir -p dist
	CGO_ENABLED=1 GOOS=linux GOARCH=$* $(GO) build $(PKCS11_BUILD) -o $@ ./agent/cmd/tether
FORCE:

## packages: .deb .rpm .ipk .apk for amd64, arm64, armv7 in dist/packages (docs/packaging.md)
packages: static cross-pkcs11 bin/nfpm
	./packaging/packages.sh

## test-packages: what each package holds (dpkg-deb -c, rpm -qlp, tar) and lintian
test-packages: deps packages
	TETHER_PACKAGES=$(CURDIR)/dist/packages $(GO) test -count=1 -run 'TestPackage' ./packaging/

## release: dist/ with binaries, packages, SBOM and SHA256SUMS, version from git describe
release: packages bin/cyclonedx-gomod
	./packaging/release.sh

## test-release: two release builds from this commit give identical checksums
test-release: deps
	./packaging/test-release.sh

clean:
	rm -rf bin dist .demo

# print-VAR prints a variable (softhsm-test/bench.sh builds with COLDFLAGS).
print-%:
	@echo '$($*)'
