package rollout

import (
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"testing"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/rollout/analysis"
)

// flaggerFamilies are Flagger's metric names, types and label names (Flagger v1.36.1,
// pkg/metrics/recorder.go with the subsystem "flagger").
var flaggerFamilies = map[string]struct {
	typ    dto.MetricType
	labels []string
}{
	"flagger_canary_status":           {dto.MetricType_GAUGE, []string{"name", "namespace"}},
	"flagger_canary_weight":           {dto.MetricType_GAUGE, []string{"namespace", "workload"}},
	"flagger_canary_total":            {dto.MetricType_GAUGE, []string{"namespace"}},
	"flagger_canary_duration_seconds": {dto.MetricType_HISTOGRAM, []string{"name", "namespace"}},
	"flagger_canary_metric_analysis":  {dto.MetricType_GAUGE, []string{"metric", "name", "namespace"}},
}

// scrape reads the manager's /metrics as Prometheus would.
func scrape(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(promhttp.HandlerFor(metrics.Registry, promhttp.HandlerOpts{}))
	defer srv.Close()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL, nil)
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// series finds the series of family with exactly these label values.
func series(fams map[string]*dto.MetricFamily, family string, labels map[string]string) *dto.Metric {
	f := fams[family]
	if f == nil {
		return nil
	}
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		match := len(got) == len(labels)
		for k, v := range labels {
			match = match && got[k] == v
		}
		if match {
			return m
		}
	}
	return nil
}

// TestFlaggerMetricNames: a rollout exports Flagger's metrics beside coalmine's, with
// Flagger's names, types, labels and values, so Flagger's alerts and dashboards work.
func TestFlaggerMetricNames(t *testing.T) {
	e := newEnv(t, seedCanary(), targetDeployment())
	e.settle()
	e.ship("alice:2")
	e.runUntil("weight 10", weightIs(10))

	fams := scrape(t)
	for name, want := range flaggerFamilies {
		f := fams[name]
		if f == nil {
			t.Errorf("/metrics has no %s", name)
			continue
		}
		if f.GetType() != want.typ {
			t.Errorf("%s is a %s, Flagger's is a %s", name, f.GetType(), want.typ)
		}
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName())
			}
			sort.Strings(labels)
			if !slices.Equal(labels, want.labels) {
				t.Errorf("%s has labels %v, Flagger's %v", name, labels, want.labels)
			}
		}
	}

	target := map[string]string{"name": "alice", "namespace": ns}
	if m := series(fams, "flagger_canary_status", target); m == nil || m.GetGauge().GetValue() != 0 {
		t.Errorf("flagger_canary_status %v, want 0 (running)", m)
	}
	if m := series(fams, "flagger_canary_weight", map[string]string{"workload": "alice", "namespace": ns}); m == nil || m.GetGauge().GetValue() != 10 {
		t.Errorf("canary flagger_canary_weight %v, want 10", m)
	}
	if m := series(fams, "flagger_canary_weight", map[string]string{"workload": "alice-primary", "namespace": ns}); m == nil || m.GetGauge().GetValue() != 90 {
		t.Errorf("primary flagger_canary_weight %v, want 90", m)
	}
	if m := series(fams, "flagger_canary_total", map[string]string{"namespace": ns}); m == nil || m.GetGauge().GetValue() < 1 {
		t.Errorf("flagger_canary_total %v, want at least 1", m)
	}
	if m := series(fams, "flagger_canary_duration_seconds", target); m == nil || m.GetHistogram().GetSampleCount() < 1 {
		t.Errorf("flagger_canary_duration_seconds %v, want an observation per analysis", m)
	}
	for metric, want := range map[string]float64{v1beta1.MetricRequestSuccessRate: 99.9, v1beta1.MetricRequestDuration: 0.12} {
		l := map[string]string{"name": "alice", "namespace": ns, "metric": metric}
		if m := series(fams, "flagger_canary_metric_analysis", l); m == nil || m.GetGauge().GetValue() != want {
			t.Errorf("flagger_canary_metric_analysis{metric=%q} %v, want %v (Flagger's unit)", metric, m, want)
		}
	}

	t.Run("name is the target's, status Flagger's encoding, gone with the Canary", func(t *testing.T) {
		c := &v1beta1.Canary{ObjectMeta: metav1.ObjectMeta{Name: "web-canary-obj", Namespace: "metrics-ns"},
			Spec: v1beta1.CanarySpec{TargetRef: v1beta1.LocalObjectReference{Name: "web"}}}
		for phase, want := range map[v1beta1.CanaryPhase]float64{
			v1beta1.PhaseProgressing: 0, v1beta1.PhaseFailed: 2, v1beta1.PhaseSucceeded: 1,
			v1beta1.PhaseInitialized: 1, v1beta1.PhaseWaitingPromotion: 1,
		} {
			recordStatus(c, &v1beta1.CanaryStatus{Phase: phase, CanaryWeight: 30})
			m := series(scrape(t), "flagger_canary_status", map[string]string{"name": "web", "namespace": "metrics-ns"})
			if m == nil || m.GetGauge().GetValue() != want {
				t.Errorf("phase %s: flagger_canary_status %v, want %v", phase, m, want)
			}
		}
		if m := series(scrape(t), "flagger_canary_total", map[string]string{"namespace": "metrics-ns"}); m == nil || m.GetGauge().GetValue() != 1 {
			t.Errorf("flagger_canary_total %v, want 1", m)
		}
		forgetMetrics("metrics-ns", "web-canary-obj")
		fams := scrape(t)
		for _, f := range []string{"flagger_canary_status", "flagger_canary_total"} {
			for _, m := range fams[f].GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "namespace" && l.GetValue() == "metrics-ns" {
						t.Errorf("%s kept a series of a deleted Canary: %v", f, m)
					}
				}
			}
		}
	})
}

// TestStatusSeriesOnePerTarget: the status series are computed at scrape time; two
// Canaries of one target (the second is refused) must not make a Flagger series twice,
// which would fail the whole scrape, and a forgotten Canary leaves no series.
func TestStatusSeriesOnePerTarget(t *testing.T) {
	first := seedCanary()
	first.Namespace, first.Name = "metrics-dup", "a-first"
	second := first.DeepCopy()
	second.Name = "b-second"
	statuses.record(first, &v1beta1.CanaryStatus{Phase: v1beta1.PhaseProgressing, CanaryWeight: 20})
	statuses.record(second, &v1beta1.CanaryStatus{Phase: v1beta1.PhaseFailed})
	defer forgetMetrics(first.Namespace, first.Name)
	defer forgetMetrics(second.Namespace, second.Name)

	fams := scrape(t) // fails on a duplicate series
	target := first.Spec.TargetRef.Name
	if m := series(fams, "flagger_canary_weight", map[string]string{"workload": target, "namespace": "metrics-dup"}); m.GetGauge().GetValue() != 20 {
		t.Errorf("flagger_canary_weight of the target %v, want the first Canary's 20", m)
	}
	if m := series(fams, "flagger_canary_total", map[string]string{"namespace": "metrics-dup"}); m.GetGauge().GetValue() != 2 {
		t.Errorf("flagger_canary_total %v, want 2", m)
	}
	if m := series(fams, "coalmine_canary_phase", map[string]string{"name": "b-second", "namespace": "metrics-dup", "phase": "Failed"}); m == nil {
		t.Error("no phase series for the second Canary")
	}
	forgetMetrics(first.Namespace, first.Name)
	forgetMetrics(second.Namespace, second.Name)
	fams = scrape(t)
	for _, f := range []string{"coalmine_canary_weight", "flagger_canary_status", "flagger_canary_total"} {
		for _, m := range fams[f].GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "namespace" && l.GetValue() == "metrics-dup" {
					t.Errorf("%s kept a series of a forgotten Canary: %v", f, m)
				}
			}
		}
	}
}

// TestAnalysisSeriesAtScrape: the analysis series are computed at scrape time from what
// the loop recorded: coalmine's last value (gone while a check has none) and its counts by
// outcome, Flagger's last value found (request-duration in seconds) and its duration
// histogram in Flagger's buckets; a new target starts Flagger's series afresh, and a
// forgotten Canary leaves none.
func TestAnalysisSeriesAtScrape(t *testing.T) {
	c := seedCanary()
	c.Namespace, c.Name = "metrics-analysis", "checked"
	defer forgetMetrics(c.Namespace, c.Name)
	rate, duration := v1beta1.MetricRequestSuccessRate, v1beta1.MetricRequestDuration
	statuses.analysed(c, []analysis.Result{
		{Metric: rate, Value: 99.5, Outcome: v1beta1.MetricPassed},
		{Metric: duration, Value: 250, Outcome: v1beta1.MetricPassed},
	}, 0.3)
	statuses.analysed(c, []analysis.Result{
		{Metric: rate, Value: math.NaN(), Outcome: v1beta1.MetricNoData},
		{Metric: duration, Value: 750, Outcome: v1beta1.MetricFailed},
	}, 12)
	statuses.analysed(c, nil, 1) // a pass that analysed nothing new still ran the analysis

	fams := scrape(t)
	own := func(metric string) map[string]string {
		return map[string]string{"name": "checked", "namespace": c.Namespace, "metric": metric}
	}
	flagger := func(metric string) map[string]string {
		return map[string]string{"name": c.Spec.TargetRef.Name, "namespace": c.Namespace, "metric": metric}
	}
	if m := series(fams, "coalmine_canary_analysis_value", own(rate)); m != nil {
		t.Errorf("coalmine_canary_analysis_value of %s %v, want none after a check without data", rate, m)
	}
	if m := series(fams, "coalmine_canary_analysis_value", own(duration)); m.GetGauge().GetValue() != 750 {
		t.Errorf("coalmine_canary_analysis_value of %s %v, want 750", duration, m)
	}
	for _, want := range []struct {
		metric, outcome string
		n               float64
	}{{rate, "Passed", 1}, {rate, "NoData", 1}, {duration, "Passed", 1}, {duration, "Failed", 1}} {
		l := own(want.metric)
		l["outcome"] = want.outcome
		if m := series(fams, "coalmine_canary_checks_total", l); m.GetCounter().GetValue() != want.n {
			t.Errorf("coalmine_canary_checks_total%v %v, want %v", l, m, want.n)
		}
	}
	if m := series(fams, "coalmine_canary_checks_total", map[string]string{"name": "checked", "namespace": c.Namespace,
		"metric": rate, "outcome": "Failed"}); m != nil {
		t.Errorf("a series for an outcome never seen: %v", m)
	}
	if m := series(fams, "flagger_canary_metric_analysis", flagger(rate)); m.GetGauge().GetValue() != 99.5 {
		t.Errorf("flagger_canary_metric_analysis of %s %v, want the last value found, 99.5", rate, m)
	}
	if m := series(fams, "flagger_canary_metric_analysis", flagger(duration)); m.GetGauge().GetValue() != 0.75 {
		t.Errorf("flagger_canary_metric_analysis of %s %v, want 0.75 (seconds)", duration, m)
	}
	h := series(fams, "flagger_canary_duration_seconds", map[string]string{"name": c.Spec.TargetRef.Name, "namespace": c.Namespace}).GetHistogram()
	if h.GetSampleCount() != 3 || h.GetSampleSum() != 13.3 {
		t.Errorf("flagger_canary_duration_seconds count %d sum %v, want 3 and 13.3", h.GetSampleCount(), h.GetSampleSum())
	}
	buckets := map[float64]uint64{}
	for _, b := range h.GetBucket() {
		buckets[b.GetUpperBound()] = b.GetCumulativeCount()
	}
	for le, want := range map[float64]uint64{0.25: 0, 0.5: 1, 1: 2, 10: 2} {
		if buckets[le] != want {
			t.Errorf("flagger_canary_duration_seconds bucket le=%v %d, want %d (buckets %v)", le, buckets[le], want, buckets)
		}
	}

	moved := c.DeepCopy()
	moved.Spec.TargetRef.Name = "other-target"
	recordStatus(moved, &v1beta1.CanaryStatus{Phase: v1beta1.PhaseProgressing})
	fams = scrape(t)
	for _, f := range []string{"flagger_canary_metric_analysis", "flagger_canary_duration_seconds"} {
		for _, m := range fams[f].GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "namespace" && l.GetValue() == c.Namespace {
					t.Errorf("%s kept a series once the target changed: %v", f, m)
				}
			}
		}
	}
	if m := series(fams, "coalmine_canary_analysis_value", own(duration)); m.GetGauge().GetValue() != 750 {
		t.Errorf("coalmine's series follow the Canary, not the target: %v", m)
	}

	forgetMetrics(c.Namespace, c.Name)
	for name, f := range scrape(t) {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "namespace" && l.GetValue() == c.Namespace {
					t.Errorf("%s kept a series of a forgotten Canary: %v", name, m)
				}
			}
		}
	}
}
