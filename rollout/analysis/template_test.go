package analysis

import (
	"strings"
	"testing"

	"github.com/prometheus/prometheus/promql/parser"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// seedCanary is the seed's Canary for alice.
func seedCanary() *v1beta1.Canary {
	c := &v1beta1.Canary{}
	c.Name, c.Namespace = "alice", "apps-a-mesh-a"
	c.Spec.TargetRef = v1beta1.LocalObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "alice"}
	c.Spec.Service = v1beta1.CanaryService{Name: "alice", Port: 8080}
	c.Spec.Analysis = &v1beta1.CanaryAnalysis{
		Interval: "30s", Threshold: 5, MaxWeight: 50, StepWeight: 5,
		Metrics: []v1beta1.CanaryMetric{
			{Name: "request-success-rate", Threshold: 99, Interval: "1m"},
			{Name: "request-duration", Threshold: 500, Interval: "30s"},
		},
	}
	return c
}

func TestBuiltinQueriesAreTheSeeds(t *testing.T) {
	c := seedCanary()
	tests := []struct {
		metric int
		want   string
	}{
		{0, `sum(
	rate(
		envoy_cluster_upstream_rq{
			envoy_cluster_name=~"alice-canary_apps-a-mesh-a_svc_[0-9a-zA-Z-]+",
			envoy_response_code!~"5.*"
		}[1m]
	)
) 
/ 
sum(
	rate(
		envoy_cluster_upstream_rq{
			envoy_cluster_name=~"alice-canary_apps-a-mesh-a_svc_[0-9a-zA-Z-]+",
		}[1m]
	)
) 
* 100`},
		{1, `histogram_quantile(
	0.99,
	sum(
		rate(
			envoy_cluster_upstream_rq_time_bucket{
				envoy_cluster_name=~"alice-canary_apps-a-mesh-a_svc_[0-9a-zA-Z-]+",
			}[30s]
		)
	) by (le)
)`},
	}
	for _, tt := range tests {
		m := &c.Spec.Analysis.Metrics[tt.metric]
		t.Run(m.Name, func(t *testing.T) {
			tmpl, ok := BuiltinQuery(m.Name)
			if !ok {
				t.Fatal("not a builtin")
			}
			got, err := RenderQuery(tmpl, VarsFor(c, m))
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tt.want)
			}
			// The seed's trailing comma inside the matchers must still be valid PromQL.
			if _, err := parser.NewParser(parser.Options{}).ParseExpr(got); err != nil {
				t.Errorf("rendered query does not parse: %v", err)
			}
		})
	}
	if _, ok := BuiltinQuery("my-metric"); ok {
		t.Error("my-metric is not a builtin")
	}
}

func TestRenderQuery(t *testing.T) {
	vars := TemplateVars{
		Name: "alice-canary-object", Namespace: "apps-a-mesh-a", Target: "alice", Service: "alice-svc",
		Interval: "2m", Variables: map[string]string{"direction": "inbound", "code": "5.."},
	}
	tests := []struct {
		name, tmpl, want string
		wantErr          string // rendering with RenderQuery
		strictErr        string // rendering for a real query
	}{
		{name: "flagger functions", tmpl: `{{ name }} {{ namespace }} {{ target }} {{ service }} {{ interval }}`,
			want: "alice-canary-object apps-a-mesh-a alice alice-svc 2m"},
		{name: "without spaces", tmpl: `x{ns="{{namespace}}"}[{{interval}}]`, want: `x{ns="apps-a-mesh-a"}[2m]`},
		{name: "variables by field", tmpl: `direction="{{ variables.direction }}",code=~"{{ variables.code }}"`,
			want: `direction="inbound",code=~"5.."`},
		{name: "variables by index", tmpl: `{{ index variables "direction" }}`, want: "inbound"},
		{name: "undefined variable", tmpl: `direction="{{ variables.nope }}"`, want: `direction=""`,
			strictErr: `map has no entry for key "nope"`},
		{name: "flagger's ingress and route render empty (their refs are refused on Kuma)", tmpl: `a{{ ingress }}{{ route }}b`, want: "ab"},
		{name: "unknown function", tmpl: `{{ pod }}`, wantErr: `function "pod" not defined`},
		{name: "unclosed action", tmpl: `{{ target `, wantErr: "parse query template"},
		{name: "no template at all", tmpl: `up`, want: "up"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := RenderQuery(tt.tmpl, vars)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("RenderQuery = %q, %v; want %q", got, err, tt.want)
			}
			_, err = renderStrict(tt.tmpl, vars)
			if tt.strictErr == "" && err != nil || tt.strictErr != "" && (err == nil || !strings.Contains(err.Error(), tt.strictErr)) {
				t.Errorf("strict render err = %v, want %q", err, tt.strictErr)
			}
		})
	}
}

func TestVarsFor(t *testing.T) {
	c := seedCanary()
	c.Spec.Service.Name = ""
	tests := []struct {
		interval, want string
	}{
		{"", "1m"},        // default
		{"30s", "30s"},    // as written
		{"90s", "1m30s"},  // PromQL prints it so; both parse
		{"1.5m", "1m30s"}, // Go-only syntax, normalised
		{"1h", "1h"},
	}
	for _, tt := range tests {
		got := VarsFor(c, &v1beta1.CanaryMetric{Name: "m", Interval: tt.interval, TemplateVariables: map[string]string{"a": "b"}})
		if got.Interval != tt.want {
			t.Errorf("interval %q: got %q, want %q", tt.interval, got.Interval, tt.want)
		}
		if got.Service != "alice" || got.Target != "alice" || got.Name != "alice" || got.Namespace != "apps-a-mesh-a" || got.Variables["a"] != "b" {
			t.Errorf("vars: %+v", got)
		}
	}
}
