package analysis

import (
	"github.com/prometheus/common/model"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// BuiltinQuery is the query template of a builtin metric (request-success-rate, in
// percent; request-duration, the p99 in milliseconds): the seed's PromQL, over the apex
// Service's canary clusters ({{ service }}), which renders as the seed's text for the seed.
func BuiltinQuery(name string) (string, bool) { return v1beta1.BuiltinQuery(name) }

// TemplateVars are the values a query template sees (v1beta1.QueryVars).
type TemplateVars = v1beta1.QueryVars

// VarsFor are the template values of metric m of Canary c. The interval is the metric's
// (default 1m), written as PromQL wants it (a Go duration such as 1m30s or 90s parses
// either way; 1.5m does not, so it is normalised).
func VarsFor(c *v1beta1.Canary, m *v1beta1.CanaryMetric) TemplateVars {
	return TemplateVars{
		Name:      c.Name,
		Namespace: c.Namespace,
		Target:    c.Spec.TargetRef.Name,
		Service:   c.ApexName(),
		Interval:  model.Duration(m.IntervalOrDefault()).String(),
		Variables: m.TemplateVariables,
	}
}

// RenderQuery fills a query template. A variable the metric does not define renders
// empty, so a template can be checked with sample values alone (admission does).
func RenderQuery(tmpl string, vars TemplateVars) (string, error) {
	return v1beta1.RenderQuery(tmpl, vars, false)
}

// renderStrict is RenderQuery for real queries: an undefined {{ variables.x }} is an
// error, not an empty label value that would quietly match nothing.
func renderStrict(tmpl string, vars TemplateVars) (string, error) {
	return v1beta1.RenderQuery(tmpl, vars, true)
}
