# tether — see README.md. Every target works from a fresh Debian 12 checkout.
SHELL        := /bin/bash
GO           ?= go
VERSION      ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT       ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
BUILD_DATE   ?= $(shell date -u -d @$$(git log -1 --format=%ct 2>/dev/null || date +%s) +%Y-%m-%dT%H:%M:%SZ)
PKG          := github.com/tetherd/tether/agent/cmd/tether
LDFLAGS      := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.buildDate=$(BUILD_DATE)
GOFLAGS_BUILD:= -trimpath -ldflags '$(LDFLAGS)'
TEST_TIMEOUT ?= 25m

.PHONY: all build static cross-pkcs11 test test-unit test-arm64 bench demo deps lint clean

all: build

## build: bin/tether for this host (PKCS#11 when cgo is on)
build:
	$(GO) build $(GOFLAGS_BUILD) -o bin/tether ./agent/cmd/tether

## static: fully static CGO_ENABLED=0 binaries, PEM keys only
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
	CGO_ENABLED=1 GOOS=linux GOARCH=amd64 CC=gcc $(GO) build $(GOFLAGS_BUILD) -o dist/tether-pkcs11-linux-amd64 ./agent/cmd/tether
	CGO_ENABLED=1 GOOS=linux GOARCH=arm64 CC=aarch64-linux-gnu-gcc $(GO) build $(GOFLAGS_BUILD) -o dist/tether-pkcs11-linux-arm64 ./agent/cmd/tether
	CGO_ENABLED=1 GOOS=linux GOARCH=arm GOARM=7 CC=arm-linux-gnueabihf-gcc $(GO) build $(GOFLAGS_BUILD) -o dist/tether-pkcs11-linux-armv7 ./agent/cmd/tether
	@ls -l dist/tether-pkcs11-linux-*

## deps: install the Debian packages the tests need (as root), or name what is missing
deps:
	@./softhsm-test/deps.sh --cross

## lint: gofmt, go vet, a tidy go.mod whose go line is the lowest the dependencies allow
lint:
	@$(GO) mod tidy -diff >/dev/null 2>&1 || { echo "go.mod/go.sum are not tidy: run 'go mod tidy'"; $(GO) mod tidy -diff; exit 1; }
	@grep -qx 'go 1.25.0' go.mod || { echo "go.mod: the go line must be 'go 1.25.0' (the lowest the dependencies allow; distributions build with their own Go)"; exit 1; }
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	CGO_ENABLED=0 $(GO) vet ./...

## test: everything, race detector on, real SoftHSM, mosquitto, aws, boto3; the static
## (CGO_ENABLED=0) flavour; then the PKCS#11 flavour for arm64 under qemu
test: deps lint
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...
	CGO_ENABLED=0 $(GO) test -count=1 ./agent/ ./hsm/ ./credprovider/
	$(MAKE) test-arm64

## test-arm64: the PKCS#11 flavour for arm64 against Debian's arm64 SoftHSM under qemu
test-arm64:
	./softhsm-test/arm64-test.sh

## bench: figures as ratios against baselines measured in the same run
bench: deps build
	./softhsm-test/bench.sh

## demo: the main job against the local IoT Core simulator
demo: deps build
	./softhsm-test/demo.sh

clean:
	rm -rf bin dist .demo
