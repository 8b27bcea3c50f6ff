//go:build tools

// Package tools pins the kwok binary the sandbox builds.
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
