package canarywatch

import (
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// The metrics derived from the Canaries' status, served on the manager's /metrics beside
// the loop's coalmine_canary_weight, coalmine_canary_phase, coalmine_canary_analysis_value
// and coalmine_canary_checks_total. manifests/dashboards and manifests/alerts use them.
//
// They are computed when /metrics is scraped, from the Canaries the watcher already
// follows (the cache's objects), not kept as client_golang series: ten stored series per
// Canary were ~5 KiB of heap each (make bench's heap profile), for values the Canary
// holds anyway. Only the two counters are state of their own (record.promotions,
// record.rollbacks).
var (
	descInfo = prometheus.NewDesc("coalmine_canary_info",
		"A Canary's target Deployment and apex Service (the Envoy clusters are named after the Service), at 1.",
		[]string{"name", "namespace", "target", "service"}, nil)
	descFailedChecks = perCanary("coalmine_canary_failed_checks",
		"Failed checks of the revision under analysis (status.failedChecks).")
	descFailedChecksThreshold = perCanary("coalmine_canary_failed_checks_threshold",
		"Failed checks that roll a revision back (spec.analysis.threshold).")
	descAnalysisThreshold = prometheus.NewDesc("coalmine_canary_analysis_threshold",
		"Bound of a metric's accepted range (bound min or max), as the analysis judges coalmine_canary_analysis_value.",
		[]string{"name", "namespace", "metric", "bound"}, nil)
	descPromotions = perCanary("coalmine_canary_promotions_total",
		"Revisions promoted (the Canary reached Succeeded after promoting), seen by this replica while it led.")
	descRollbacks = perCanary("coalmine_canary_rollbacks_total",
		"Revisions rolled back (the Canary reached Failed), seen by this replica while it led.")
	descLastProgress = perCanary("coalmine_canary_last_progress_timestamp_seconds",
		"When the Canary's phase or weight last changed (Unix time).")
	descProgressDeadline = perCanary("coalmine_canary_progress_deadline_seconds",
		"The Canary's progressDeadlineSeconds (default 600): the stall alert's bound.")
)

// perCanary describes a series per Canary (labels name and namespace).
func perCanary(name, help string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, []string{"name", "namespace"}, nil)
}

// exporters are the watchers whose replica leads (one per process outside tests): the
// collector registered on the manager's registry serves their Canaries' series.
var exporters = &collector{watchers: map[*Watcher]bool{}}

func init() {
	metrics.Registry.MustRegister(exporters)
}

type collector struct {
	mu       sync.Mutex
	watchers map[*Watcher]bool
}

func (e *collector) add(w *Watcher) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.watchers[w] = true
}

func (e *collector) remove(w *Watcher) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.watchers, w)
}

// Describe sends every family's descriptor.
func (e *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descInfo, descFailedChecks, descFailedChecksThreshold, descAnalysisThreshold,
		descPromotions, descRollbacks, descLastProgress, descProgressDeadline} {
		ch <- d
	}
}

// Collect sends the series of every exporting watcher's Canaries.
func (e *collector) Collect(ch chan<- prometheus.Metric) {
	e.mu.Lock()
	ws := make([]*Watcher, 0, len(e.watchers))
	for w := range e.watchers {
		ws = append(ws, w)
	}
	e.mu.Unlock()
	for _, w := range ws {
		w.collect(ch)
	}
}

// collect sends the series of w's Canaries, if w exports.
func (w *Watcher) collect(ch chan<- prometheus.Metric) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.exporting {
		return
	}
	for _, r := range w.canaries {
		collectCanary(ch, r)
	}
}

func collectCanary(ch chan<- prometheus.Metric, r *record) {
	c := r.canary
	n, ns := c.Name, c.Namespace
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{n, ns}, labels...)...)
	}
	gauge(descInfo, 1, c.Spec.TargetRef.Name, c.ApexName())
	gauge(descFailedChecks, float64(c.Status.FailedChecks))
	gauge(descFailedChecksThreshold, float64(c.Threshold()))
	// Two metrics of one name would be one series twice, which a scrape refuses; the
	// first is the one the analysis reports under that name.
	var seen []string
	for _, t := range Thresholds(c) {
		if slices.Contains(seen, t.Metric) {
			continue
		}
		seen = append(seen, t.Metric)
		if t.Min != nil {
			gauge(descAnalysisThreshold, *t.Min, t.Metric, "min")
		}
		if t.Max != nil {
			gauge(descAnalysisThreshold, *t.Max, t.Metric, "max")
		}
	}
	gauge(descLastProgress, float64(r.progress.UnixMilli())/1000)
	gauge(descProgressDeadline, c.ProgressDeadline().Seconds())
	ch <- prometheus.MustNewConstMetric(descPromotions, prometheus.CounterValue, r.promotions, n, ns)
	ch <- prometheus.MustNewConstMetric(descRollbacks, prometheus.CounterValue, r.rollbacks, n, ns)
}

// countTransition counts a promotion (Succeeded reached from Promoting or Finalising, or
// a new lastPromotedRevision; a revert, which rolls nothing, is not one) or a rollback
// (Failed reached from any other phase).
func countTransition(old, c *v1beta1.Canary, r *record) {
	from, to := old.Status.Phase, c.Status.Phase
	switch {
	case to == v1beta1.PhaseSucceeded && from != to &&
		(from == v1beta1.PhasePromoting || from == v1beta1.PhaseFinalising ||
			c.Status.LastPromotedRevision != old.Status.LastPromotedRevision):
		r.promotions++
	case to == v1beta1.PhaseFailed && from != to:
		r.rollbacks++
	}
}
