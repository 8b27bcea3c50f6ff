package analysis

import (
	"testing"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

func ptr(f float64) *float64 { return &f }

func TestEvaluate(t *testing.T) {
	tests := []struct {
		name    string
		metric  v1beta1.CanaryMetric
		kind    metricKind
		value   float64
		want    v1beta1.MetricOutcome
		message string
	}{
		{"success rate above threshold", v1beta1.CanaryMetric{Name: "request-success-rate", Threshold: 99}, kindSuccessRate, 99.5,
			v1beta1.MetricPassed, "request-success-rate 99.5 >= 99"},
		{"success rate at threshold", v1beta1.CanaryMetric{Name: "request-success-rate", Threshold: 99}, kindSuccessRate, 99,
			v1beta1.MetricPassed, "request-success-rate 99 >= 99"},
		{"success rate below threshold", v1beta1.CanaryMetric{Name: "request-success-rate", Threshold: 99}, kindSuccessRate, 87.5,
			v1beta1.MetricFailed, "request-success-rate 87.5 < 99"},
		{"duration below threshold", v1beta1.CanaryMetric{Name: "request-duration", Threshold: 500}, kindDuration, 123.456,
			v1beta1.MetricPassed, "request-duration 123.46 <= 500"},
		{"duration above threshold", v1beta1.CanaryMetric{Name: "request-duration", Threshold: 500}, kindDuration, 742,
			v1beta1.MetricFailed, "request-duration 742 > 500"},
		{"template metric fails above threshold", v1beta1.CanaryMetric{Name: "errors", Threshold: 5}, kindTemplate, 6,
			v1beta1.MetricFailed, "errors 6 > 5"},
		{"template metric passes at threshold", v1beta1.CanaryMetric{Name: "errors", Threshold: 5}, kindTemplate, 5,
			v1beta1.MetricPassed, "errors 5 <= 5"},
		{"range overrides a success-rate threshold", v1beta1.CanaryMetric{Name: "request-success-rate", Threshold: 99,
			ThresholdRange: &v1beta1.CanaryThresholdRange{Min: ptr(90)}}, kindSuccessRate, 95,
			v1beta1.MetricPassed, "request-success-rate 95 within [90, +inf]"},
		{"range min", v1beta1.CanaryMetric{Name: "m", ThresholdRange: &v1beta1.CanaryThresholdRange{Min: ptr(10), Max: ptr(1000)}}, kindTemplate, 9.999,
			v1beta1.MetricFailed, "m 9.999 < 10"},
		{"range max", v1beta1.CanaryMetric{Name: "m", ThresholdRange: &v1beta1.CanaryThresholdRange{Min: ptr(10), Max: ptr(1000)}}, kindTemplate, 1000.5,
			v1beta1.MetricFailed, "m 1000.5 > 1000"},
		{"range inside", v1beta1.CanaryMetric{Name: "m", ThresholdRange: &v1beta1.CanaryThresholdRange{Min: ptr(10), Max: ptr(1000)}}, kindTemplate, 10,
			v1beta1.MetricPassed, "m 10 within [10, 1000]"},
		{"range max only on a duration", v1beta1.CanaryMetric{Name: "request-duration", ThresholdRange: &v1beta1.CanaryThresholdRange{Max: ptr(500)}}, kindDuration, 501,
			v1beta1.MetricFailed, "request-duration 501 > 500"},
		{"duration without threshold fails on any latency (Flagger)", v1beta1.CanaryMetric{Name: "request-duration"}, kindDuration, 1,
			v1beta1.MetricFailed, "request-duration 1 > 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, msg := evaluate(&tt.metric, tt.kind, tt.value)
			if got != tt.want || msg != tt.message {
				t.Errorf("evaluate = %s %q; want %s %q", got, msg, tt.want, tt.message)
			}
		})
	}
}
