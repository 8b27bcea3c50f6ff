// Package analysis runs a Canary's metric checks against Prometheus and decides, metric by
// metric, whether the canary passed.
//
// Builtin metrics use the seed's PromQL over the callers' Envoy stats; MetricTemplates
// carry their own query and provider. A result is one of five outcomes: Passed, Failed
// (outside the threshold), NoData (empty or NaN: no traffic yet, a failed check unless
// onNoData is skip), Skipped, and Error (the query could not be run) — so "Prometheus is
// down" is never confused with "the canary is bad".
//
// +kubebuilder:rbac:groups=coalmine.dev,resources=metrictemplates,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get
package analysis
