package analysis

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// trafficQuery is the rendered denominator the analyzer asks for when metric m's success
// rate is empty.
func trafficQuery(t *testing.T, c *v1beta1.Canary, m *v1beta1.CanaryMetric) string {
	t.Helper()
	tmpl, ok := v1beta1.BuiltinTrafficQuery(m.Name)
	if !ok {
		t.Fatalf("%s has no traffic query", m.Name)
	}
	q, err := renderStrict(tmpl, VarsFor(c, m))
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func onlyMetric(c *v1beta1.Canary, m v1beta1.CanaryMetric) *v1beta1.Canary {
	c.Spec.Analysis.Metrics = []v1beta1.CanaryMetric{m}
	return c
}

// TestSafety06BuiltinsUseServiceName: the builtins select the Envoy clusters of the apex
// Service's canary ("web-canary_..."), the Service the route splits traffic to, and not of
// the target's name ("alice") when spec.service.name differs from it.
func TestSafety06BuiltinsUseServiceName(t *testing.T) {
	const want = `envoy_cluster_name=~"web-canary_apps-a-mesh-a_svc_[0-9a-zA-Z-]+"`
	prom := newFakeProm(t, nil)
	prom.set(successRateSub, vector("100"))
	prom.set(durationSub, vector("100"))
	c := seedCanary()
	c.Spec.Service.Name = "web"

	for _, r := range New(newReader(t), ProviderConfig{Address: prom.URL}).Run(context.Background(), c) {
		if r.Outcome != v1beta1.MetricPassed {
			t.Errorf("%s: %+v", r.Metric, r)
		}
	}
	for _, sub := range []string{successRateSub, durationSub} {
		q, ok := prom.sent(sub)
		if !ok {
			t.Fatalf("no query containing %q sent", sub)
		}
		if !strings.Contains(q, want) || strings.Contains(q, "alice") {
			t.Errorf("query selects the target, not the apex Service web:\n%s", q)
		}
	}
}

// TestSafety08AllErrorsIsZeroPercent: a canary answering only 5xx has no non-5xx series,
// so the seed's ratio is empty; with traffic in the denominator that is a success rate of
// 0 (compared as usual, never skipped), and only without traffic is it "no data".
func TestSafety08AllErrorsIsZeroPercent(t *testing.T) {
	const trafficError = `{"status":"error","errorType":"timeout","error":"query timed out"}`
	tests := []struct {
		name     string
		ratio    string // the success-rate query's answer
		traffic  string // the denominator's answer
		onNoData v1beta1.NoDataPolicy
		minimum  *float64 // thresholdRange.min instead of threshold 99
		value    float64  // of a Passed or Failed result; the others carry NaN
		want     v1beta1.MetricOutcome
		message  string
	}{
		{name: "only 5xx is 0%", ratio: emptyVector, traffic: vector("2.5"),
			want: v1beta1.MetricFailed, message: "request-success-rate 0 < 99 (no non-5xx responses: 100% errors)"},
		{name: "only 5xx is not skipped", ratio: emptyVector, traffic: vector("2.5"), onNoData: v1beta1.NoDataSkip,
			want: v1beta1.MetricFailed, message: "request-success-rate 0 < 99 (no non-5xx responses: 100% errors)"},
		{name: "thresholdRange compares 0 as usual", ratio: emptyVector, traffic: vector("0.1"), minimum: ptr(0),
			want: v1beta1.MetricPassed, message: "request-success-rate 0 within [0, +inf] (no non-5xx responses: 100% errors)"},
		{name: "NaN ratio with traffic is 0% too", ratio: vector("NaN"), traffic: vector("1"),
			want: v1beta1.MetricFailed, message: "request-success-rate 0 < 99 (no non-5xx responses"},
		{name: "no traffic is no data", ratio: emptyVector, traffic: emptyVector,
			want: v1beta1.MetricNoData, message: "no values found for request-success-rate (no traffic to the canary yet?)"},
		{name: "zero traffic is no data", ratio: emptyVector, traffic: vector("0"),
			want: v1beta1.MetricNoData, message: "no values found"},
		{name: "NaN traffic is no data", ratio: emptyVector, traffic: vector("NaN"),
			want: v1beta1.MetricNoData, message: "no values found"},
		{name: "no traffic with skip is skipped", ratio: emptyVector, traffic: emptyVector, onNoData: v1beta1.NoDataSkip,
			want: v1beta1.MetricSkipped, message: "skipped (onNoData: skip)"},
		{name: "a failed denominator is an error, not no data", ratio: emptyVector, traffic: trafficError,
			want: v1beta1.MetricError, message: "query request-success-rate traffic at"},
		{name: "a non-empty ratio needs no denominator", ratio: vector("97"), traffic: trafficError, value: 97,
			want: v1beta1.MetricFailed, message: "request-success-rate 97 < 99"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prom := newFakeProm(t, nil)
			c := onlyMetric(seedCanary(), v1beta1.CanaryMetric{Name: v1beta1.MetricRequestSuccessRate, Threshold: 99, OnNoData: tt.onNoData})
			if tt.minimum != nil {
				c.Spec.Analysis.Metrics[0].ThresholdRange = &v1beta1.CanaryThresholdRange{Min: tt.minimum}
			}
			prom.set(successRateSub, tt.ratio)
			prom.setExact(trafficQuery(t, c, &c.Spec.Analysis.Metrics[0]), tt.traffic)

			r := New(newReader(t), ProviderConfig{Address: prom.URL}).Run(context.Background(), c)[0]
			if r.Outcome != tt.want || !strings.Contains(r.Message, tt.message) {
				t.Errorf("got %s %q, want %s containing %q", r.Outcome, r.Message, tt.want, tt.message)
			}
			if hasValue := r.Outcome == v1beta1.MetricPassed || r.Outcome == v1beta1.MetricFailed; hasValue && r.Value != tt.value || !hasValue && !math.IsNaN(r.Value) {
				t.Errorf("value %v with outcome %s", r.Value, r.Outcome)
			}
		})
	}

	t.Run("request-duration has no denominator", func(t *testing.T) {
		prom := newFakeProm(t, nil)
		prom.set(durationSub, emptyVector)
		c := onlyMetric(seedCanary(), v1beta1.CanaryMetric{Name: v1beta1.MetricRequestDuration, Threshold: 500})
		r := New(newReader(t), ProviderConfig{Address: prom.URL}).Run(context.Background(), c)[0]
		if r.Outcome != v1beta1.MetricNoData || prom.count() != 1 {
			t.Errorf("got %+v after %d queries, want NoData after 1", r, prom.count())
		}
	})
}

// TestSafety17SeveralSeriesIsAnError: a result of several series is an Error naming the
// count, for builtins and templates alike, instead of the first series deciding; one
// sample and a scalar still decide.
func TestSafety17SeveralSeriesIsAnError(t *testing.T) {
	series := func(values ...string) string {
		var samples []string
		for i, v := range values {
			samples = append(samples, `{"metric":{"pod":"p`+string(rune('0'+i))+`"},"value":[1700000000,"`+v+`"]}`)
		}
		return `{"status":"success","data":{"resultType":"vector","result":[` + strings.Join(samples, ",") + `]}}`
	}
	const message = "aggregate it (sum/avg/max) to one value"
	tests := []struct {
		name    string
		answer  string
		want    v1beta1.MetricOutcome
		message string
	}{
		{"three series", series("100", "0", "50"), v1beta1.MetricError, "query returned 3 series; " + message},
		{"two series, the first passing", series("99.9", "12"), v1beta1.MetricError, "query returned 2 series; " + message},
		{"one sample", series("99.9"), v1beta1.MetricPassed, "request-success-rate 99.9 >= 99"},
		{"scalar", `{"status":"success","data":{"resultType":"scalar","result":[1700000000,"98"]}}`, v1beta1.MetricFailed, "request-success-rate 98 < 99"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prom := newFakeProm(t, nil)
			prom.set(successRateSub, tt.answer)
			c := onlyMetric(seedCanary(), v1beta1.CanaryMetric{Name: v1beta1.MetricRequestSuccessRate, Threshold: 99})
			r := New(newReader(t), ProviderConfig{Address: prom.URL}).Run(context.Background(), c)[0]
			if r.Outcome != tt.want || !strings.Contains(r.Message, tt.message) {
				t.Errorf("got %s %q, want %s containing %q", r.Outcome, r.Message, tt.want, tt.message)
			}
			if r.Outcome == v1beta1.MetricError && !math.IsNaN(r.Value) {
				t.Errorf("an Error carries value %v", r.Value)
			}
		})
	}

	t.Run("a template metric", func(t *testing.T) {
		prom := newFakeProm(t, nil)
		prom.set(`errors{`, series("0.1", "0.2"))
		mt := &v1beta1.MetricTemplate{Spec: v1beta1.MetricTemplateSpec{Query: `errors{app="{{ target }}"}`}}
		mt.Name, mt.Namespace = "per-pod-errors", "apps-a-mesh-a"
		c := onlyMetric(seedCanary(), v1beta1.CanaryMetric{Name: "errors", Threshold: 1,
			TemplateRef: &v1beta1.CrossNamespaceObjectReference{Name: mt.Name}})
		r := New(newReader(t, mt), ProviderConfig{Address: prom.URL}).Run(context.Background(), c)[0]
		if r.Outcome != v1beta1.MetricError || !strings.Contains(r.Message, "query returned 2 series; "+message) {
			t.Errorf("got %+v", r)
		}
	})
}
