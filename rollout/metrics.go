package rollout

import (
	"math"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/rollout/analysis"
)

// Metrics of the progression loop, served on the manager's /metrics.
var (
	canaryAnalysisValue = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "coalmine_canary_analysis_value",
		Help: "Last value of an analysis metric (absent while a query returns no data).",
	}, []string{"name", "namespace", "metric"})

	canaryChecks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "coalmine_canary_checks_total",
		Help: "Analysis checks by outcome (Passed, Failed, NoData, Error, Skipped).",
	}, []string{"name", "namespace", "metric", "outcome"})
)

// Flagger's metrics (pkg/metrics/recorder.go of Flagger v1.36.1, subsystem "flagger"),
// with its names, labels and values, beside coalmine's own: the alerts and dashboards of a
// Flagger installation keep working. Like Flagger's, the name label is the target's name,
// not the Canary's.
var (
	flaggerDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "flagger_canary_duration_seconds",
		Help:    "Seconds spent performing one canary analysis.",
		Buckets: prometheus.DefBuckets,
	}, []string{"name", "namespace"})

	flaggerAnalysis = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "flagger_canary_metric_analysis",
		Help: "Last canary analysis result per metric (request-duration in seconds, as Flagger).",
	}, []string{"name", "namespace", "metric"})
)

func init() {
	metrics.Registry.MustRegister(statuses, canaryAnalysisValue, canaryChecks, flaggerDuration, flaggerAnalysis)
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

// forgetFlagger drops Flagger's stored series of a target.
func forgetFlagger(namespace, target string) {
	flaggerDuration.DeleteLabelValues(target, namespace)
	flaggerAnalysis.DeletePartialMatch(prometheus.Labels{"name": target, "namespace": namespace})
}

// recordDuration observes flagger_canary_duration_seconds for a pass that ran the
// analysis: Flagger observes each analysis run of its scheduler.
func (x *pass) recordDuration() {
	if x.action != actAnalyse {
		return
	}
	var clk clock.PassiveClock = clock.RealClock{}
	if x.r.Clock != nil {
		clk = x.r.Clock
	}
	flaggerDuration.WithLabelValues(x.canary.Spec.TargetRef.Name, x.canary.Namespace).Observe(max(clk.Since(x.now).Seconds(), 0))
}

// recordStatus records the weight and the phase a pass wrote, for statuses to serve.
func recordStatus(c *v1beta1.Canary, st *v1beta1.CanaryStatus) {
	statuses.record(c, st)
}

func recordChecks(c *v1beta1.Canary, results []analysis.Result) {
	for _, res := range results {
		canaryChecks.WithLabelValues(c.Name, c.Namespace, res.Metric, string(res.Outcome)).Inc()
		if math.IsNaN(res.Value) {
			canaryAnalysisValue.DeleteLabelValues(c.Name, c.Namespace, res.Metric)
			// Flagger sets the series only when a value was found.
		} else {
			canaryAnalysisValue.WithLabelValues(c.Name, c.Namespace, res.Metric).Set(res.Value)
			v := res.Value
			if isBuiltinDuration(c, res.Metric) {
				v /= 1000 // Flagger records the builtin p99 in seconds
			}
			flaggerAnalysis.WithLabelValues(c.Spec.TargetRef.Name, c.Namespace, res.Metric).Set(v)
		}
	}
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
	l := prometheus.Labels{"name": name, "namespace": namespace}
	canaryAnalysisValue.DeletePartialMatch(l)
	canaryChecks.DeletePartialMatch(l)
}
