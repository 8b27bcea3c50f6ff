package v1beta1

import (
	"strings"
	"testing"
)

// The loop reports what the (fail-open) webhook would refuse in analysis.match: both read
// UnsupportedFields.
func TestMatchErrorsAreUnsupportedFields(t *testing.T) {
	c := &Canary{Spec: CanarySpec{Analysis: &CanaryAnalysis{Iterations: 2, Match: []HTTPMatchRequest{
		{Headers: map[string]StringMatch{"x-canary": {Exact: "insider"}}},
		{QueryParams: map[string]StringMatch{"beta": {Exact: "1"}}},
	}}}}
	errs := UnsupportedFields(c)
	if len(errs) != 2 || !strings.Contains(errs.ToAggregate().Error(), "spec.analysis.match[1].queryParams: Forbidden") {
		t.Errorf("UnsupportedFields = %v, want the queryParams refusal and the empty-match error", errs)
	}
	c.Spec.Analysis.Match = c.Spec.Analysis.Match[:1]
	if errs := UnsupportedFields(c); len(errs) != 0 {
		t.Errorf("a header match: %v, want none", errs)
	}
	if c.Strategy() != StrategyABTesting || c.Iterations() != 2 {
		t.Errorf("strategy %s iterations %d", c.Strategy(), c.Iterations())
	}
	c.Spec.Analysis.Match = nil
	if c.Strategy() != StrategyBlueGreen {
		t.Errorf("iterations without match: %s", c.Strategy())
	}
	c.Spec.Analysis.Iterations = 0
	if c.Strategy() != StrategyCanary {
		t.Errorf("no iterations: %s", c.Strategy())
	}
}
