//go:build tools

// Package tools pins the Flagger binary the sandbox builds on demand (sandbox.BuildFlagger):
// the yardstick of the side-by-side benchmark (make bench-peer).
package tools

import _ "github.com/fluxcd/flagger/cmd/flagger"
