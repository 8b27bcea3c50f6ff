//go:build tools

// Package tools pins the kuma-cp binary the sandbox builds: Kuma's control plane, run in
// Kubernetes mode as the Global CP (on a second apiserver) and as the zone CP.
package tools

import _ "github.com/kumahq/kuma/app/kuma-cp"
