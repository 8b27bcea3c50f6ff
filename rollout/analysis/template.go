package analysis

import (
	"fmt"
	"strings"
	"text/template"

	"github.com/prometheus/common/model"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// The builtin queries, exactly as the seed (and Flagger's Kuma provider) writes them: the
// callers' outbound Envoy clusters towards any port of the canary Service.
const (
	requestSuccessRateQuery = `sum(
	rate(
		envoy_cluster_upstream_rq{
			envoy_cluster_name=~"{{ target }}-canary_{{ namespace }}_svc_[0-9a-zA-Z-]+",
			envoy_response_code!~"5.*"
		}[{{ interval }}]
	)
) 
/ 
sum(
	rate(
		envoy_cluster_upstream_rq{
			envoy_cluster_name=~"{{ target }}-canary_{{ namespace }}_svc_[0-9a-zA-Z-]+",
		}[{{ interval }}]
	)
) 
* 100`

	requestDurationQuery = `histogram_quantile(
	0.99,
	sum(
		rate(
			envoy_cluster_upstream_rq_time_bucket{
				envoy_cluster_name=~"{{ target }}-canary_{{ namespace }}_svc_[0-9a-zA-Z-]+",
			}[{{ interval }}]
		)
	) by (le)
)`
)

// BuiltinQuery is the query template of a builtin metric (request-success-rate, in
// percent; request-duration, the p99 in milliseconds).
func BuiltinQuery(name string) (string, bool) {
	switch name {
	case v1beta1.MetricRequestSuccessRate:
		return requestSuccessRateQuery, true
	case v1beta1.MetricRequestDuration:
		return requestDurationQuery, true
	}
	return "", false
}

// TemplateVars are the values a query template sees, through Flagger's function names:
// {{ name }}, {{ namespace }}, {{ target }}, {{ service }}, {{ interval }} and
// {{ variables.key }}.
type TemplateVars struct {
	Name      string            // the Canary's name
	Namespace string            // the Canary's namespace
	Target    string            // spec.targetRef.name
	Service   string            // the apex Service name
	Interval  string            // the metric's interval as a PromQL duration, e.g. 1m
	Variables map[string]string // the metric's templateVariables
}

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
	return render(tmpl, vars, false)
}

// renderStrict is RenderQuery for real queries: an undefined {{ variables.x }} is an
// error, not an empty label value that would quietly match nothing.
func renderStrict(tmpl string, vars TemplateVars) (string, error) {
	return render(tmpl, vars, true)
}

func render(tmpl string, vars TemplateVars, strict bool) (string, error) {
	variables := vars.Variables
	if variables == nil {
		variables = map[string]string{}
	}
	t := template.New("query").Funcs(template.FuncMap{
		"name":      func() string { return vars.Name },
		"namespace": func() string { return vars.Namespace },
		"target":    func() string { return vars.Target },
		"service":   func() string { return vars.Service },
		"interval":  func() string { return vars.Interval },
		// {{ variables.key }} parses as a call of variables followed by a field of its
		// result, which text/template resolves as a map lookup.
		"variables": func() map[string]string { return variables },
	})
	if strict {
		t = t.Option("missingkey=error")
	} else {
		t = t.Option("missingkey=zero") // not text/template's "<no value>"
	}
	t, err := t.Parse(tmpl)
	if err != nil {
		return "", fmt.Errorf("parse query template: %w", err)
	}
	var b strings.Builder
	if err := t.Execute(&b, nil); err != nil {
		return "", fmt.Errorf("render query template: %w", err)
	}
	return b.String(), nil
}
