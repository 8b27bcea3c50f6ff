package analysis

import (
	"context"
	"testing"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// TestInlineQuery: Flagger's deprecated metrics[].query runs on the Canary's metrics
// server as a template metric (fails above threshold); a builtin's name wins over it.
func TestInlineQuery(t *testing.T) {
	main := newFakeProm(t, nil)
	main.set(`my_errors{`, vector("3"))
	main.set(successRateSub, vector("100"))
	p := New(newReader(t), ProviderConfig{Address: main.URL})

	c := seedCanary()
	c.Spec.Analysis.Metrics = []v1beta1.CanaryMetric{
		{Name: "errors", Query: `sum(my_errors{app="{{ target }}",ns="{{ namespace }}"})`, Threshold: 5},
		{Name: "strict errors", Query: `sum(my_errors{app="{{ target }}"})`, Threshold: 1},
	}
	got := byMetric(p.Run(context.Background(), c))
	if r := got["errors"]; r.Outcome != v1beta1.MetricPassed || r.Value != 3 {
		t.Errorf("errors: %+v", r)
	}
	if r := got["strict errors"]; r.Outcome != v1beta1.MetricFailed || r.Message != "strict errors 3 > 1" {
		t.Errorf("strict errors: %+v", r)
	}

	c.Spec.Analysis.Metrics = []v1beta1.CanaryMetric{{Name: v1beta1.MetricRequestSuccessRate, Query: `my_errors{}`, Threshold: 99}}
	if r := p.Run(context.Background(), c)[0]; r.Outcome != v1beta1.MetricPassed || r.Value != 100 {
		t.Errorf("a builtin with a query: %+v, want the builtin", r)
	}
}
