package rollout

import (
	"math"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
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
		Help: "Phase of a Canary: one series, of the current phase, at 1.",
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

func init() {
	metrics.Registry.MustRegister(canaryWeight, canaryPhase, canaryAnalysisValue, canaryChecks)
}

// recordStatus sets the weight and the phase. Only the current phase has a series: a
// zero series for each of the nine phases made the phase most of the memory a Canary's
// metrics take, and `coalmine_canary_phase{phase="Failed"}` selects the same Canaries.
func recordStatus(c *v1beta1.Canary, st *v1beta1.CanaryStatus) {
	canaryWeight.WithLabelValues(c.Name, c.Namespace).Set(float64(st.CanaryWeight))
	key := types.NamespacedName{Namespace: c.Namespace, Name: c.Name}
	if old, ok := phaseRecorded.Swap(key, st.Phase); ok && old.(v1beta1.CanaryPhase) != st.Phase {
		canaryPhase.DeleteLabelValues(c.Name, c.Namespace, string(old.(v1beta1.CanaryPhase)))
	}
	canaryPhase.WithLabelValues(c.Name, c.Namespace, string(st.Phase)).Set(1)
}

// phaseRecorded is the phase each Canary's series says (types.NamespacedName to
// v1beta1.CanaryPhase), so a change deletes the old series without scanning them all.
var phaseRecorded sync.Map

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
	phaseRecorded.Delete(types.NamespacedName{Namespace: namespace, Name: name})
	l := prometheus.Labels{"name": name, "namespace": namespace}
	canaryWeight.DeletePartialMatch(l)
	canaryPhase.DeletePartialMatch(l)
	canaryAnalysisValue.DeletePartialMatch(l)
	canaryChecks.DeletePartialMatch(l)
}
