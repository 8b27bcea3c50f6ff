//go:build tools

// Package tools pins the source-controller binary the sandbox builds: Flux's, run out of
// cluster to serve Git artifacts to the kustomize-controller.
package tools

import _ "github.com/fluxcd/source-controller"
