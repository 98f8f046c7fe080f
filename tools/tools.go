//go:build tools

// Package tools pins the build tools tether's Makefile runs (nfpm for the
// packages, cyclonedx-gomod for the release SBOM). It is a module of its own
// so that the product's go.mod, which packagers vendor, never lists them.
package tools

import (
	_ "github.com/CycloneDX/cyclonedx-gomod/cmd/cyclonedx-gomod"
	_ "github.com/goreleaser/nfpm/v2/cmd/nfpm"
)
