//go:build tools

// Package tools pins the kustomize-controller binary the sandbox builds: Flux's, run out
// of cluster to apply the e2e and demo Git repositories.
package tools

import _ "github.com/fluxcd/kustomize-controller"
