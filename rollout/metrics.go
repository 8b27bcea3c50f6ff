package rollout

import (
	"math"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
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

// Flagger's metrics (pkg/metrics/recorder.go of Flagger v1.36.1, subsystem "flagger"),
// with its names, labels and values, beside coalmine's own: the alerts and dashboards of a
// Flagger installation keep working. Like Flagger's, the name label is the target's name,
// not the Canary's.
var (
	flaggerStatus = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "flagger_canary_status",
		Help: "Last canary analysis result (Flagger's encoding: 0 running, 1 successful, 2 failed).",
	}, []string{"name", "namespace"})

	flaggerWeight = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "flagger_canary_weight",
		Help: "Route weight of the primary (workload <target>-primary) and of the canary (workload <target>), in percent.",
	}, []string{"workload", "namespace"})

	flaggerTotal = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "flagger_canary_total",
		Help: "Number of Canaries per namespace.",
	}, []string{"namespace"})

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
	metrics.Registry.MustRegister(canaryWeight, canaryPhase, canaryAnalysisValue, canaryChecks,
		flaggerStatus, flaggerWeight, flaggerTotal, flaggerDuration, flaggerAnalysis)
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

// known are the Canaries seen, by key, with their target's name (Flagger's name label),
// for flagger_canary_total and for forgetting a deleted Canary's series.
var known = struct {
	sync.Mutex
	targets map[types.NamespacedName]string
}{targets: map[types.NamespacedName]string{}}

// recordFlagger sets Flagger's status and weight series of c and counts it.
func recordFlagger(c *v1beta1.Canary, st *v1beta1.CanaryStatus) {
	target := c.Spec.TargetRef.Name
	key := types.NamespacedName{Namespace: c.Namespace, Name: c.Name}
	known.Lock()
	old, seen := known.targets[key]
	known.targets[key] = target
	if seen && old != target {
		forgetFlagger(c.Namespace, old)
	}
	if !seen {
		flaggerTotal.WithLabelValues(c.Namespace).Set(float64(countIn(c.Namespace)))
	}
	known.Unlock()
	flaggerStatus.WithLabelValues(target, c.Namespace).Set(flaggerStatusValue(st.Phase))
	flaggerWeight.WithLabelValues(target+"-primary", c.Namespace).Set(float64(100 - st.CanaryWeight))
	flaggerWeight.WithLabelValues(target, c.Namespace).Set(float64(st.CanaryWeight))
}

// countIn counts the known Canaries of a namespace; known is locked.
func countIn(namespace string) int {
	n := 0
	for k := range known.targets {
		if k.Namespace == namespace {
			n++
		}
	}
	return n
}

// forgetFlagger drops Flagger's series of a target.
func forgetFlagger(namespace, target string) {
	flaggerStatus.DeleteLabelValues(target, namespace)
	flaggerWeight.DeleteLabelValues(target+"-primary", namespace)
	flaggerWeight.DeleteLabelValues(target, namespace)
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
	recordFlagger(c, st)
}

// phaseRecorded is the phase each Canary's series says (types.NamespacedName to
// v1beta1.CanaryPhase), so a change deletes the old series without scanning them all.
var phaseRecorded sync.Map

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
	key := types.NamespacedName{Namespace: namespace, Name: name}
	known.Lock()
	if target, ok := known.targets[key]; ok {
		delete(known.targets, key)
		forgetFlagger(namespace, target)
		if n := countIn(namespace); n > 0 {
			flaggerTotal.WithLabelValues(namespace).Set(float64(n))
		} else {
			flaggerTotal.DeleteLabelValues(namespace)
		}
	}
	known.Unlock()
	phaseRecorded.Delete(key)
	l := prometheus.Labels{"name": name, "namespace": namespace}
	canaryWeight.DeletePartialMatch(l)
	canaryPhase.DeletePartialMatch(l)
	canaryAnalysisValue.DeletePartialMatch(l)
	canaryChecks.DeletePartialMatch(l)
}
