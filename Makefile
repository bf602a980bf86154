# Build, test and release mailpush. `make` builds ./mailpush.
#
#   make build     the binary for this machine, version from git
#   make test      the README's test command (real components: see .ci/run)
#   make release   static, trimmed binaries for linux/amd64 and linux/arm64 in dist/
#   make check     gofmt, vet and `go mod tidy -diff`, as CI does
#   make image     the container image mailpush:VERSION (deploy/Containerfile)

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/mailpush/mailpush.Version=$(VERSION)
GO ?= go
BUILDER ?= podman
BUILD_FLAGS ?=
IMAGE_DIR ?= dist/image
CA_BUNDLE ?= /etc/ssl/certs/ca-certificates.crt

.PHONY: build test release check clean image

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o mailpush ./cmd/mailpush

test:
	$(GO) test -race -count=1 -timeout 30m ./...

release:
	mkdir -p dist
	for arch in amd64 arm64; do \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o dist/mailpush-$(VERSION)-linux-$$arch ./cmd/mailpush || exit 1; \
	done
	cd dist && sha256sum mailpush-$(VERSION)-* > SHA256SUMS

# The image's build context: the static binary, the CA bundle and an empty
# state directory; deploy/Containerfile copies them onto scratch.
image:
	rm -rf $(IMAGE_DIR) && mkdir -p $(IMAGE_DIR)/state
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(IMAGE_DIR)/mailpush ./cmd/mailpush
	cp $(CA_BUNDLE) $(IMAGE_DIR)/ca-certificates.crt
	$(BUILDER) build $(BUILD_FLAGS) -f deploy/Containerfile -t mailpush:$(VERSION) $(IMAGE_DIR)

check:
	test -z "$$(gofmt -l $$(git ls-files '*.go'))"
	$(GO) vet ./...
	$(GO) mod tidy -diff

clean:
	rm -rf mailpush dist
