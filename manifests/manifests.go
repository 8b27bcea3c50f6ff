// Package manifests embeds the shipped manifests that code needs at run time or in tests,
// so the binary, the sandbox and the e2e tests use the reviewed YAML rather than a copy.
package manifests

import _ "embed"

// WebhookConfigurations is webhook/base/webhooks.yaml: the MutatingWebhookConfiguration and
// the ValidatingWebhookConfiguration named coalmine.
//
//go:embed webhook/base/webhooks.yaml
var WebhookConfigurations []byte

// WebhookSandboxKustomization is webhook/sandbox/kustomization.yaml, the overlay that
// points the webhooks at a loopback URL.
//
//go:embed webhook/sandbox/kustomization.yaml
var WebhookSandboxKustomization []byte

// RBAC is rbac/role.yaml: the ClusterRole and Role coalmine generated from the code's
// +kubebuilder:rbac markers.
//
//go:embed rbac/role.yaml
var RBAC []byte

// OperatorRole is rbac/operator.yaml: the ClusterRole coalmine-operator people are bound
// to for the operator commands (coalmine status, promote, abort, retry, pause, resume).
//
//go:embed rbac/operator.yaml
var OperatorRole []byte

// RBACBindings is kustomize/base/rbac.yaml: the ServiceAccount coalmine runs as, the
// bindings of the generated roles and the leader-election Role.
//
//go:embed kustomize/base/rbac.yaml
var RBACBindings []byte

// GrafanaDashboard is dashboards/coalmine.json: the Grafana dashboard of one Canary.
//
//go:embed dashboards/coalmine.json
var GrafanaDashboard []byte

// AlertRules is alerts/coalmine.rules.yaml: the Prometheus alerting rules, in the
// rule-file format.
//
//go:embed alerts/coalmine.rules.yaml
var AlertRules []byte
