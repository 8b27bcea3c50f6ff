package v1beta1

import (
	"fmt"
	"strings"
	"sync"
	"text/template"
)

// The builtin queries, as the seed (and Flagger's Kuma provider) writes them: the callers'
// outbound Envoy clusters towards any port of the canary Service. The cluster is named after
// the apex Service ({{ service }}), whose "-canary" Service the route sends traffic to; the
// seed wrote {{ target }}, which is the same name there and the wrong one when
// spec.service.name differs from the target.
const (
	// requestTotalQuery is the success rate's denominator, every response of the canary.
	// The analyzer runs it alone when the ratio has no series at all (see
	// BuiltinTrafficQuery); the ratio is built from it so the two never drift apart.
	requestTotalQuery = `sum(
	rate(
		envoy_cluster_upstream_rq{
			envoy_cluster_name=~"{{ service }}-canary_{{ namespace }}_svc_[0-9a-zA-Z-]+",{{ if zone }} zone="{{ zone }}",{{ end }}
		}[{{ interval }}]
	)
)`

	requestSuccessRateQuery = `sum(
	rate(
		envoy_cluster_upstream_rq{
			envoy_cluster_name=~"{{ service }}-canary_{{ namespace }}_svc_[0-9a-zA-Z-]+",{{ if zone }} zone="{{ zone }}",{{ end }}
			envoy_response_code!~"5.*"
		}[{{ interval }}]
	)
) 
/ 
` + requestTotalQuery + ` 
* 100`

	requestDurationQuery = `histogram_quantile(
	0.99,
	sum(
		rate(
			envoy_cluster_upstream_rq_time_bucket{
				envoy_cluster_name=~"{{ service }}-canary_{{ namespace }}_svc_[0-9a-zA-Z-]+",{{ if zone }} zone="{{ zone }}",{{ end }}
			}[{{ interval }}]
		)
	) by (le)
)`
)

// BuiltinQuery is the query template of a builtin metric (request-success-rate, in
// percent; request-duration, the p99 in milliseconds).
func BuiltinQuery(name string) (string, bool) {
	switch name {
	case MetricRequestSuccessRate:
		return requestSuccessRateQuery, true
	case MetricRequestDuration:
		return requestDurationQuery, true
	}
	return "", false
}

// BuiltinTrafficQuery is the denominator of a builtin ratio (request-success-rate): the
// canary's total request rate. A ratio whose numerator has no series at all (every
// response a 5xx) is an empty vector, which reads as "no data"; this query tells that
// apart from "no traffic".
func BuiltinTrafficQuery(name string) (string, bool) {
	if name == MetricRequestSuccessRate {
		return requestTotalQuery, true
	}
	return "", false
}

// QueryVars are the values a query template sees, through Flagger's function names:
// {{ name }}, {{ namespace }}, {{ target }}, {{ service }}, {{ interval }} and
// {{ variables.key }}. The loop renders real queries with them and admission renders
// sample ones, so both live here, where webhook and rollout agree. It is no API object.
//
// +kubebuilder:object:generate=false
type QueryVars struct {
	Name      string // the Canary's name
	Namespace string // the Canary's namespace
	Target    string // spec.targetRef.name
	Service   string // the apex Service name
	Interval  string // the metric's interval as a PromQL duration, e.g. 1m
	// Zone is the value of the zone label a zone Prometheus adds (--zone): with several
	// zones remote-writing to one main Prometheus, the builtins then count only this
	// zone's callers. Empty renders the seed's query as it is.
	Zone      string
	Variables map[string]string // the metric's templateVariables
}

// ParseQueryTemplate parses tmpl with the query functions bound to vars. Strict makes an
// undefined {{ variables.x }} an error at execution; otherwise it renders empty, so a
// template can be checked with sample values alone.
func ParseQueryTemplate(tmpl string, vars QueryVars, strict bool) (*template.Template, error) {
	return parseQuery(tmpl, strict, func() *QueryVars { return &vars })
}

// parseQuery parses tmpl with the query functions reading the values vars returns at
// execution.
func parseQuery(tmpl string, strict bool, vars func() *QueryVars) (*template.Template, error) {
	noVariables := map[string]string{}
	t := template.New("query").Funcs(template.FuncMap{
		"name":      func() string { return vars().Name },
		"namespace": func() string { return vars().Namespace },
		"target":    func() string { return vars().Target },
		"zone":      func() string { return vars().Zone },
		"service":   func() string { return vars().Service },
		"interval":  func() string { return vars().Interval },
		// Flagger's {{ ingress }} and {{ route }} name spec.ingressRef and spec.routeRef,
		// which coalmine refuses: they render empty, as in Flagger for a Canary without
		// them, so a MetricTemplate shared with Flagger still parses.
		"ingress": func() string { return "" },
		"route":   func() string { return "" },
		// {{ variables.key }} parses as a call of variables followed by a field of its
		// result, which text/template resolves as a map lookup.
		"variables": func() map[string]string {
			if v := vars().Variables; v != nil {
				return v
			}
			return noVariables
		},
	})
	if strict {
		t = t.Option("missingkey=error")
	} else {
		t = t.Option("missingkey=zero") // not text/template's "<no value>"
	}
	t, err := t.Parse(tmpl)
	if err != nil {
		return nil, fmt.Errorf("parse query template: %w", err)
	}
	return t, nil
}

// RenderQuery fills a query template (see ParseQueryTemplate for strict).
func RenderQuery(tmpl string, vars QueryVars, strict bool) (string, error) {
	q, err := parsedQuery(tmpl, strict)
	if err != nil {
		return "", err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.vars = vars
	defer func() { q.vars = QueryVars{} }()
	var b strings.Builder
	if err := q.t.Execute(&b, nil); err != nil {
		return "", fmt.Errorf("render query template: %w", err)
	}
	return b.String(), nil
}

// reusableQuery is a parsed query template whose functions read the values of the render
// in progress. Parsing is most of a render's cost (~140 µs of ~150 for a builtin), and
// every Canary renders the same few texts (the builtins, its MetricTemplates) at every
// interval, so each text is parsed once.
type reusableQuery struct {
	mu   sync.Mutex // one render at a time: vars belong to it
	vars QueryVars
	t    *template.Template
}

type queryKey struct {
	text   string
	strict bool
}

// maxParsedQueries bounds the parsed texts kept: admission parses every MetricTemplate a
// user writes, and an edit is a new text. Past the bound the set starts again.
const maxParsedQueries = 256

var parsedQueries = struct {
	sync.Mutex
	m map[queryKey]*reusableQuery
}{m: map[queryKey]*reusableQuery{}}

// parsedQuery is tmpl parsed, from the set or parsed now. A text that does not parse is
// not kept: its error is returned each time.
func parsedQuery(tmpl string, strict bool) (*reusableQuery, error) {
	key := queryKey{tmpl, strict}
	parsedQueries.Lock()
	q := parsedQueries.m[key]
	parsedQueries.Unlock()
	if q != nil {
		return q, nil
	}
	q = &reusableQuery{}
	t, err := parseQuery(tmpl, strict, func() *QueryVars { return &q.vars })
	if err != nil {
		return nil, err
	}
	q.t = t
	parsedQueries.Lock()
	defer parsedQueries.Unlock()
	if prev := parsedQueries.m[key]; prev != nil {
		return prev, nil
	}
	if len(parsedQueries.m) >= maxParsedQueries {
		parsedQueries.m = map[queryKey]*reusableQuery{}
	}
	parsedQueries.m[key] = q
	return q, nil
}
