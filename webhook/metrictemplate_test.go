package webhook

import (
	"context"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// The seed's success-rate query, as a MetricTemplate would carry it.
var seedSuccessRateQuery, _ = v1beta1.BuiltinQuery(v1beta1.MetricRequestSuccessRate)

func metricTemplate(query string) *v1beta1.MetricTemplate {
	return &v1beta1.MetricTemplate{
		ObjectMeta: metav1.ObjectMeta{Name: "error-rate", Namespace: testNamespace},
		Spec: v1beta1.MetricTemplateSpec{
			Provider: v1beta1.MetricTemplateProvider{Type: "prometheus", Address: "http://prometheus.monitoring:9090"},
			Query:    query,
		},
	}
}

func TestValidateMetricTemplate(t *testing.T) {
	cases := []struct {
		name   string
		tmpl   *v1beta1.MetricTemplate
		errors []string
	}{{
		name: "the seed's success rate query is valid",
		tmpl: metricTemplate(seedSuccessRateQuery),
	}, {
		name: "every template function renders",
		tmpl: metricTemplate(`sum(rate(http_requests_total{app="{{ name }}",namespace="{{ namespace }}",svc="{{ service }}",target="{{ target }}"}[{{ interval }}]))`),
	}, {
		name: "variables used as a label value, a range and a number",
		tmpl: metricTemplate(`sum(rate(x{route="{{ variables.route }}"}[{{ variables.window }}])) > {{ variables.limit }}`),
	}, {
		name: "variables used as a range only",
		tmpl: metricTemplate(`sum(rate(x[{{ variables.window }}]))`),
	}, {
		name: "empty provider type means prometheus",
		tmpl: func() *v1beta1.MetricTemplate { m := metricTemplate("up"); m.Spec.Provider.Type = ""; return m }(),
	}, {
		name:   "PromQL that does not parse",
		tmpl:   metricTemplate(`sum(rate(http_requests_total{app="{{ target }}"}[{{ interval }}])`),
		errors: []string{`spec.query: Invalid value: PromQL does not parse after templating with sample values (target "sample", namespace "sample-ns", interval "1m", variables "sample"): `},
	}, {
		name:   "a template that does not parse",
		tmpl:   metricTemplate(`sum(x{app="{{ target "}})`),
		errors: []string{"spec.query: Invalid value: parse query template: "},
	}, {
		name:   "an unknown template function",
		tmpl:   metricTemplate(`sum(x{app="{{ app }}"})`),
		errors: []string{`spec.query: Invalid value: parse query template: template: query:1: function "app" not defined`},
	}, {
		name:   "empty query",
		tmpl:   metricTemplate(""),
		errors: []string{"spec.query: Required value: a PromQL query"},
	}, {
		name: "provider settings",
		tmpl: func() *v1beta1.MetricTemplate {
			m := metricTemplate("up")
			m.Spec.Provider.Type = "datadog"
			m.Spec.Provider.Address = "prometheus:9090"
			m.Spec.Provider.Timeout = "ten seconds"
			m.Spec.Provider.SecretRef = &corev1.LocalObjectReference{}
			m.Spec.Provider.Headers = v1beta1.ProviderHeaders{"X-Scope-OrgID": {"tenant-a"}, "bad header": {"x"}}
			return m
		}(),
		errors: []string{
			`spec.provider.type: Unsupported value: "datadog": supported values: "prometheus"`,
			`spec.provider.address: Invalid value: "prometheus:9090": must be an absolute http or https URL`,
			`spec.provider.timeout: Invalid value: "ten seconds": must be a duration such as 30s, 1m or 1m30s`,
			"spec.provider.secretRef.name: Required value",
			`spec.provider.headers[bad header]: Invalid value: "bad header": must be an HTTP header name`,
		},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			errs := ValidateMetricTemplate(tc.tmpl)
			got := errs.ToAggregate()
			if len(tc.errors) == 0 {
				if got != nil {
					t.Fatalf("want valid, got %v", got)
				}
				return
			}
			if len(errs) != len(tc.errors) {
				t.Errorf("got %d errors, want %d: %v", len(errs), len(tc.errors), got)
			}
			for _, want := range tc.errors {
				if got == nil || !strings.Contains(got.Error(), want) {
					t.Errorf("errors %v\ndo not include %q", got, want)
				}
			}
		})
	}
}

func TestRenderQuery(t *testing.T) {
	got, err := renderQuery(`x{a="{{ target }}",b="{{ namespace }}",c="{{ name }}",d="{{ service }}",e="{{ variables.k }}",f="{{ variables.missing }}"}[{{ interval }}]`,
		queryVars{Name: "alice", Namespace: "apps", Target: "alice-t", Service: "alice-s", Interval: "30s", Variables: map[string]string{"k": "v"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := `x{a="alice-t",b="apps",c="alice",d="alice-s",e="v",f=""}[30s]`; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func TestMetricTemplateValidator(t *testing.T) {
	v := &MetricTemplateValidator{}
	bad := metricTemplate(`sum(`)
	resp := v.Handle(context.Background(), review(t, admissionv1.Create, adminUser, metricTemplatesResource, bad, nil))
	if resp.Allowed || resp.Result.Details == nil || resp.Result.Details.Causes[0].Field != "spec.query" {
		t.Fatalf("want a denial naming spec.query, got %+v", resp.Result)
	}
	if !strings.HasPrefix(resp.Result.Message, `MetricTemplate.coalmine.dev "error-rate" is invalid: spec.query: Invalid value: PromQL does not parse`) {
		t.Errorf("message %q", resp.Result.Message)
	}
	labelled := bad.DeepCopy()
	labelled.Labels = map[string]string{"team": "a"}
	if resp := v.Handle(context.Background(), review(t, admissionv1.Update, adminUser, metricTemplatesResource, labelled, bad)); !resp.Allowed {
		t.Fatalf("metadata-only update denied: %s", resp.Result.Message)
	}
}
