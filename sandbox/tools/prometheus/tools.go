//go:build tools

// Package tools pins the prometheus binary the sandbox builds.
package tools

import _ "github.com/prometheus/prometheus/cmd/prometheus"
