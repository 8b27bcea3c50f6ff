//go:build tools

// Package tools pins the helm binary used to lint and render the chart in
// manifests/helm/coalmine.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
