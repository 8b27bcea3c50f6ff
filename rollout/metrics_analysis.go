package rollout

import (
	"math"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/rollout/analysis"
)

// The analysis series (coalmine's last value and check counts, Flagger's metric analysis
// and duration histogram) are kept per Canary with its status series and computed at
// scrape time, like them. As client_golang vectors they were ~2.5 KiB of heap per canary
// after one rollout (make bench's heap profile; the histogram alone ~1.4 KiB) for a few
// numbers each.
var (
	descAnalysisValue = prometheus.NewDesc("coalmine_canary_analysis_value",
		"Last value of an analysis metric (absent while a query returns no data).", []string{"name", "namespace", "metric"}, nil)
	descChecks = prometheus.NewDesc("coalmine_canary_checks_total",
		"Analysis checks by outcome (Passed, Failed, NoData, Error, Skipped).", []string{"name", "namespace", "metric", "outcome"}, nil)
	// Flagger's (pkg/metrics/recorder.go of Flagger v1.36.1): name is the target's.
	descFlaggerDuration = prometheus.NewDesc("flagger_canary_duration_seconds",
		"Seconds spent performing one canary analysis.", []string{"name", "namespace"}, nil)
	descFlaggerAnalysis = prometheus.NewDesc("flagger_canary_metric_analysis",
		"Last canary analysis result per metric (request-duration in seconds, as Flagger).", []string{"name", "namespace", "metric"}, nil)
)

// outcomes are the check outcomes counted, in the order of analysisSeries.checks.
var outcomes = []v1beta1.MetricOutcome{v1beta1.MetricPassed, v1beta1.MetricFailed, v1beta1.MetricNoData,
	v1beta1.MetricError, v1beta1.MetricSkipped}

// durationBuckets are Flagger's (prometheus.DefBuckets).
var durationBuckets = prometheus.DefBuckets

// analysisState is what the analysis series of one Canary say.
type analysisState struct {
	metrics []analysisSeries
	// duration is Flagger's histogram of the target: counts per bucket (not cumulative).
	durationCounts []uint64
	durationSum    float64
	durationCount  uint64
}

// analysisSeries is one metric of the analysis.
type analysisSeries struct {
	metric string
	// value is coalmine's last value, NaN when the last check had none (no series).
	value float64
	// flagger is Flagger's value of the metric, NaN until one was found; Flagger keeps
	// the last value found.
	flagger float64
	checks  [5]uint64 // by outcomes
}

// addChecks counts results and keeps their values.
func (a *analysisState) addChecks(c *v1beta1.Canary, results []analysis.Result) {
	for _, res := range results {
		m := a.metric(res.Metric)
		if i := slices.Index(outcomes, res.Outcome); i >= 0 {
			m.checks[i]++
		}
		m.value = res.Value
		if !math.IsNaN(res.Value) {
			m.flagger = res.Value
			if isBuiltinDuration(c, res.Metric) {
				m.flagger /= 1000 // Flagger records the builtin p99 in seconds
			}
		}
	}
}

// metric is the series of name, added if new.
func (a *analysisState) metric(name string) *analysisSeries {
	for i := range a.metrics {
		if a.metrics[i].metric == name {
			return &a.metrics[i]
		}
	}
	a.metrics = append(a.metrics, analysisSeries{metric: name, value: math.NaN(), flagger: math.NaN()})
	return &a.metrics[len(a.metrics)-1]
}

// observeDuration adds one analysis run of seconds to Flagger's histogram.
func (a *analysisState) observeDuration(seconds float64) {
	if a.durationCounts == nil {
		a.durationCounts = make([]uint64, len(durationBuckets))
	}
	if i, _ := slices.BinarySearch(durationBuckets, seconds); i < len(durationBuckets) {
		a.durationCounts[i]++ // upper bounds are inclusive: BinarySearch finds an equal one
	}
	a.durationSum += seconds
	a.durationCount++
}

// forgetFlagger drops Flagger's series, which are the target's: the target changed.
func (a *analysisState) forgetFlagger() {
	a.durationCounts, a.durationSum, a.durationCount = nil, 0, 0
	for i := range a.metrics {
		a.metrics[i].flagger = math.NaN()
	}
}

// collect sends a's series of the Canary name; flagger is false when another Canary of
// the same target has Flagger's series.
func (a *analysisState) collect(ch chan<- prometheus.Metric, name, namespace, target string, flagger bool) {
	for _, m := range a.metrics {
		if !math.IsNaN(m.value) {
			ch <- prometheus.MustNewConstMetric(descAnalysisValue, prometheus.GaugeValue, m.value, name, namespace, m.metric)
		}
		for i, n := range m.checks {
			if n > 0 {
				ch <- prometheus.MustNewConstMetric(descChecks, prometheus.CounterValue, float64(n), name, namespace, m.metric, string(outcomes[i]))
			}
		}
		if flagger && !math.IsNaN(m.flagger) {
			ch <- prometheus.MustNewConstMetric(descFlaggerAnalysis, prometheus.GaugeValue, m.flagger, target, namespace, m.metric)
		}
	}
	if flagger && a.durationCount > 0 {
		cumulative := make(map[float64]uint64, len(durationBuckets))
		var sum uint64
		for i, b := range durationBuckets {
			sum += a.durationCounts[i]
			cumulative[b] = sum
		}
		ch <- prometheus.MustNewConstHistogram(descFlaggerDuration, a.durationCount, a.durationSum, cumulative, target, namespace)
	}
}
