package canarywatch

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// The metrics derived from the Canaries' status, served on the manager's /metrics beside
// the loop's coalmine_canary_weight, coalmine_canary_phase, coalmine_canary_analysis_value
// and coalmine_canary_checks_total. manifests/dashboards and manifests/alerts use them.
var (
	canaryInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "coalmine_canary_info",
		Help: "A Canary's target Deployment and apex Service (the Envoy clusters are named after the Service), at 1.",
	}, []string{"name", "namespace", "target", "service"})

	failedChecks = perCanary("coalmine_canary_failed_checks",
		"Failed checks of the revision under analysis (status.failedChecks).")

	failedChecksThreshold = perCanary("coalmine_canary_failed_checks_threshold",
		"Failed checks that roll a revision back (spec.analysis.threshold).")

	analysisThreshold = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "coalmine_canary_analysis_threshold",
		Help: "Bound of a metric's accepted range (bound min or max), as the analysis judges coalmine_canary_analysis_value.",
	}, []string{"name", "namespace", "metric", "bound"})

	promotions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "coalmine_canary_promotions_total",
		Help: "Revisions promoted (the Canary reached Succeeded after promoting), seen by this replica while it led.",
	}, []string{"name", "namespace"})

	rollbacks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "coalmine_canary_rollbacks_total",
		Help: "Revisions rolled back (the Canary reached Failed), seen by this replica while it led.",
	}, []string{"name", "namespace"})

	lastProgress = perCanary("coalmine_canary_last_progress_timestamp_seconds",
		"When the Canary's phase or weight last changed (Unix time).")

	progressDeadline = perCanary("coalmine_canary_progress_deadline_seconds",
		"The Canary's progressDeadlineSeconds (default 600): the stall alert's bound.")
)

// perCanary is a gauge with one series per Canary (labels name and namespace).
func perCanary(name, help string) *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, []string{"name", "namespace"})
}

var allVecs = []interface {
	prometheus.Collector
	DeletePartialMatch(prometheus.Labels) int
}{canaryInfo, failedChecks, failedChecksThreshold, analysisThreshold, promotions, rollbacks, lastProgress, progressDeadline}

func init() {
	for _, v := range allVecs {
		metrics.Registry.MustRegister(v)
	}
}

// initCounters creates a Canary's counters at 0, so the first promotion or rollback is an
// increase Prometheus sees (a counter born at 1 shows no increase).
func initCounters(c *v1beta1.Canary) {
	promotions.WithLabelValues(c.Name, c.Namespace)
	rollbacks.WithLabelValues(c.Name, c.Namespace)
}

// countTransition counts a promotion (Succeeded reached from Promoting or Finalising, or
// a new lastPromotedRevision; a revert, which rolls nothing, is not one) or a rollback
// (Failed reached from any other phase).
func countTransition(old, c *v1beta1.Canary) {
	from, to := old.Status.Phase, c.Status.Phase
	switch {
	case to == v1beta1.PhaseSucceeded && from != to &&
		(from == v1beta1.PhasePromoting || from == v1beta1.PhaseFinalising ||
			c.Status.LastPromotedRevision != old.Status.LastPromotedRevision):
		promotions.WithLabelValues(c.Name, c.Namespace).Inc()
	case to == v1beta1.PhaseFailed && from != to:
		rollbacks.WithLabelValues(c.Name, c.Namespace).Inc()
	}
}

// exported are the label values of a Canary's series that change with its spec, so a
// change deletes exactly the stale ones (deleting and re-creating all would leave a gap a
// scrape could fall into, which Prometheus reads as the series ending).
type exported struct {
	info       [2]string          // target, service
	thresholds map[[2]string]bool // metric, bound
}

// export sets the gauges of c.
func export(c *v1beta1.Canary, progress time.Time, e *exported) {
	n, ns := c.Name, c.Namespace
	info := [2]string{c.Spec.TargetRef.Name, c.ApexName()}
	if e.info != info && e.info != [2]string{} {
		canaryInfo.DeleteLabelValues(n, ns, e.info[0], e.info[1])
	}
	e.info = info
	canaryInfo.WithLabelValues(n, ns, info[0], info[1]).Set(1)
	failedChecks.WithLabelValues(n, ns).Set(float64(c.Status.FailedChecks))
	failedChecksThreshold.WithLabelValues(n, ns).Set(float64(c.Threshold()))
	want := map[[2]string]float64{}
	for _, t := range Thresholds(c) {
		if t.Min != nil {
			want[[2]string{t.Metric, "min"}] = *t.Min
		}
		if t.Max != nil {
			want[[2]string{t.Metric, "max"}] = *t.Max
		}
	}
	for k := range e.thresholds {
		if _, ok := want[k]; !ok {
			analysisThreshold.DeleteLabelValues(n, ns, k[0], k[1])
		}
	}
	e.thresholds = map[[2]string]bool{}
	for k, v := range want {
		analysisThreshold.WithLabelValues(n, ns, k[0], k[1]).Set(v)
		e.thresholds[k] = true
	}
	lastProgress.WithLabelValues(n, ns).Set(float64(progress.UnixMilli()) / 1000)
	progressDeadline.WithLabelValues(n, ns).Set(c.ProgressDeadline().Seconds())
}

// forget drops every series of one Canary.
func forget(namespace, name string) {
	l := prometheus.Labels{"name": name, "namespace": namespace}
	for _, v := range allVecs {
		v.DeletePartialMatch(l)
	}
}
