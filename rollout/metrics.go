package rollout

import (
	"math"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/rollout/analysis"
)

// Metrics of the progression loop, served on the manager's /metrics.
var (
	canaryWeight = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "coalmine_canary_weight",
		Help: "Percentage of the apex traffic routed to the canary.",
	}, []string{"name", "namespace"})

	canaryPhase = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "coalmine_canary_phase",
		Help: "Phase of a Canary: 1 for the current phase, 0 for the others.",
	}, []string{"name", "namespace", "phase"})

	canaryAnalysisValue = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "coalmine_canary_analysis_value",
		Help: "Last value of an analysis metric (absent while a query returns no data).",
	}, []string{"name", "namespace", "metric"})

	canaryChecks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "coalmine_canary_checks_total",
		Help: "Analysis checks by outcome (Passed, Failed, NoData, Error, Skipped).",
	}, []string{"name", "namespace", "metric", "outcome"})
)

var phases = []v1beta1.CanaryPhase{
	v1beta1.PhaseInitializing, v1beta1.PhaseInitialized, v1beta1.PhaseWaiting, v1beta1.PhaseProgressing,
	v1beta1.PhasePromoting, v1beta1.PhaseFinalising, v1beta1.PhaseSucceeded, v1beta1.PhaseFailed,
	v1beta1.PhaseTerminating,
}

func init() {
	metrics.Registry.MustRegister(canaryWeight, canaryPhase, canaryAnalysisValue, canaryChecks)
}

func recordStatus(c *v1beta1.Canary, st *v1beta1.CanaryStatus) {
	canaryWeight.WithLabelValues(c.Name, c.Namespace).Set(float64(st.CanaryWeight))
	for _, p := range phases {
		v := 0.0
		if p == st.Phase {
			v = 1
		}
		canaryPhase.WithLabelValues(c.Name, c.Namespace, string(p)).Set(v)
	}
}

func recordChecks(c *v1beta1.Canary, results []analysis.Result) {
	for _, res := range results {
		canaryChecks.WithLabelValues(c.Name, c.Namespace, res.Metric, string(res.Outcome)).Inc()
		if math.IsNaN(res.Value) {
			canaryAnalysisValue.DeleteLabelValues(c.Name, c.Namespace, res.Metric)
		} else {
			canaryAnalysisValue.WithLabelValues(c.Name, c.Namespace, res.Metric).Set(res.Value)
		}
	}
}

// forgetMetrics drops every series of a deleted Canary.
func forgetMetrics(namespace, name string) {
	l := prometheus.Labels{"name": name, "namespace": namespace}
	canaryWeight.DeletePartialMatch(l)
	canaryPhase.DeletePartialMatch(l)
	canaryAnalysisValue.DeletePartialMatch(l)
	canaryChecks.DeletePartialMatch(l)
}
