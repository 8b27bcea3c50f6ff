package rollout

import (
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// The loop's metrics on the manager's /metrics: coalmine's own, and Flagger's (Flagger
// v1.36.1's pkg/metrics/recorder.go, subsystem "flagger") with its names, labels and
// values, so the alerts and dashboards of a Flagger installation keep working. Every
// series is computed at scrape time from what statuses keeps (metrics_status.go,
// metrics_analysis.go).
func init() {
	metrics.Registry.MustRegister(statuses)
}

// flaggerStatusValue is Flagger's encoding of a phase (Recorder.SetStatus).
func flaggerStatusValue(p v1beta1.CanaryPhase) float64 {
	switch p {
	case v1beta1.PhaseProgressing:
		return 0
	case v1beta1.PhaseFailed:
		return 2
	}
	return 1
}

// recordAnalysis observes flagger_canary_duration_seconds for a pass that ran the
// analysis (Flagger observes each analysis run of its scheduler) and counts the pass's
// checks.
func (x *pass) recordAnalysis() {
	seconds := -1.0
	if x.action == actAnalyse {
		var clk clock.PassiveClock = clock.RealClock{}
		if x.r.Clock != nil {
			clk = x.r.Clock
		}
		seconds = max(clk.Since(x.now).Seconds(), 0)
	}
	statuses.analysed(x.canary, x.results, seconds)
}

// recordStatus records the weight and the phase a pass wrote, for statuses to serve.
func recordStatus(c *v1beta1.Canary, st *v1beta1.CanaryStatus) {
	statuses.record(c, st)
}

// isBuiltinDuration reports whether metric is c's builtin request-duration (milliseconds).
func isBuiltinDuration(c *v1beta1.Canary, metric string) bool {
	if metric != v1beta1.MetricRequestDuration || c.Spec.Analysis == nil {
		return false
	}
	for _, m := range c.Spec.Analysis.Metrics {
		if m.Name == metric {
			return m.TemplateRef == nil
		}
	}
	return false
}

// forgetMetrics drops every series of a deleted Canary.
func forgetMetrics(namespace, name string) {
	statuses.forget(types.NamespacedName{Namespace: namespace, Name: name})
}
