package rollout

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/rollout/analysis"
)

// formatValue prints a metric value with at most three decimals; NaN (no value) is empty.
func formatValue(v float64) string {
	if math.IsNaN(v) {
		return ""
	}
	return strconv.FormatFloat(math.Round(v*1000)/1000, 'f', -1, 64)
}

// describe says what a failed check was: metric, value, threshold and the analyzer's word.
// The analyzer's message of a failed value already says all three ("request-success-rate
// 87.5 < 99").
func describe(c *v1beta1.Canary, res analysis.Result) string {
	if res.Outcome == v1beta1.MetricFailed && res.Message != "" {
		return res.Message
	}
	var b strings.Builder
	b.WriteString(res.Metric)
	switch res.Outcome {
	case v1beta1.MetricNoData:
		b.WriteString(": no data")
	case v1beta1.MetricError:
		b.WriteString(": query error")
	default:
		fmt.Fprintf(&b, " = %s", formatValue(res.Value))
	}
	if t := thresholdOf(c, res.Metric); t != "" {
		fmt.Fprintf(&b, " (threshold %s)", t)
	}
	if res.Message != "" {
		b.WriteString(": " + res.Message)
	}
	return b.String()
}

// thresholdOf describes the accepted values of a metric of the spec.
func thresholdOf(c *v1beta1.Canary, name string) string {
	if c.Spec.Analysis == nil {
		return ""
	}
	for _, m := range c.Spec.Analysis.Metrics {
		if m.Name != name {
			continue
		}
		if r := m.ThresholdRange; r != nil {
			lo, hi := "-inf", "+inf"
			if r.Min != nil {
				lo = formatValue(*r.Min)
			}
			if r.Max != nil {
				hi = formatValue(*r.Max)
			}
			return fmt.Sprintf("[%s, %s]", lo, hi)
		}
		if m.Name == v1beta1.MetricRequestSuccessRate && m.TemplateRef == nil {
			return ">= " + formatValue(m.Threshold)
		}
		return "<= " + formatValue(m.Threshold)
	}
	return ""
}
