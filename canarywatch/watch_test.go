package canarywatch

import (
	"context"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/cache/informertest"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *fakeClock                   { return &fakeClock{t: time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)} }
func f(v float64) *float64                   { return &v }
func mt(t time.Time) *metav1.Time            { return &metav1.Time{Time: t} }

func seedCanary(name string) *v1beta1.Canary {
	return &v1beta1.Canary{
		ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: name},
		Spec: v1beta1.CanarySpec{
			TargetRef: v1beta1.LocalObjectReference{Name: name},
			Service:   v1beta1.CanaryService{Port: 8080},
			Analysis: &v1beta1.CanaryAnalysis{
				Threshold: 5,
				Metrics: []v1beta1.CanaryMetric{
					{Name: v1beta1.MetricRequestSuccessRate, Threshold: 99},
					{Name: v1beta1.MetricRequestDuration, Threshold: 500},
					{Name: "errors", ThresholdRange: &v1beta1.CanaryThresholdRange{Min: f(1), Max: f(2)}, TemplateRef: &v1beta1.CrossNamespaceObjectReference{Name: "t"}},
				},
			},
		},
		Status: v1beta1.CanaryStatus{Phase: v1beta1.PhaseInitialized},
	}
}

// startedWatcher runs a watcher (exporting at once) until the test ends.
func startedWatcher(t *testing.T, clk *fakeClock) *Watcher {
	t.Helper()
	w := New(&informertest.FakeInformers{}, Options{Now: clk.now})
	w.startExporting()
	t.Cleanup(w.stopExporting)
	return w
}

func TestHistoryTakesASampleWhenTheStatusChanges(t *testing.T) {
	clk := newClock()
	w := New(&informertest.FakeInformers{}, Options{Now: clk.now, MaxSamples: 3})
	c := seedCanary("history")
	w.Observe(c)
	clk.advance(time.Second)
	w.Observe(c.DeepCopy()) // nothing visible changed
	c.Status.Phase, c.Status.CanaryWeight = v1beta1.PhaseProgressing, 5
	c.Status.Metrics = []v1beta1.MetricStatus{
		{Name: v1beta1.MetricRequestSuccessRate, Value: "97.125", Outcome: v1beta1.MetricFailed, LastCheckTime: mt(clk.t)},
		{Name: v1beta1.MetricRequestDuration, Outcome: v1beta1.MetricNoData},
	}
	w.Observe(c)
	h, ok := w.History("apps", "history")
	if !ok || len(h.Samples) != 2 {
		t.Fatalf("history %+v, want 2 samples (Initialized, Progressing at 5%%)", h)
	}
	s := h.Samples[1]
	if s.Weight != 5 || s.Phase != "Progressing" || s.Metrics[0].Value == nil || *s.Metrics[0].Value != 97.125 || s.Metrics[1].Value != nil {
		t.Errorf("sample %+v: want weight 5, success 97.125 (the status's value), no duration value", s)
	}
	if h.Threshold != 5 || len(h.Thresholds) != 3 || *h.Thresholds[0].Min != 99 || *h.Thresholds[1].Max != 500 ||
		*h.Thresholds[2].Min != 1 || *h.Thresholds[2].Max != 2 {
		t.Errorf("thresholds %+v / %d, want success >= 99, duration <= 500, errors in [1, 2], threshold 5", h.Thresholds, h.Threshold)
	}
	for w2 := 10; w2 <= 30; w2 += 5 {
		c.Status.CanaryWeight = w2
		w.Observe(c)
	}
	h, _ = w.History("apps", "history")
	if len(h.Samples) != 3 || h.Samples[2].Weight != 30 || h.Samples[0].Weight != 20 {
		t.Errorf("history keeps %d samples from weight %d, want the last 3 (20..30)", len(h.Samples), h.Samples[0].Weight)
	}
	w.Forget("apps", "history")
	if _, ok := w.History("apps", "history"); ok {
		t.Error("a forgotten Canary still has a history")
	}
}

// TestSamplesShareRepeatedStrings: a sample keeps no copy of a string the sample before it
// already holds, and phases and outcomes are the API's constants, so a history does not
// keep every cached Canary's strings alive.
func TestSamplesShareRepeatedStrings(t *testing.T) {
	clk := newClock()
	w := New(&informertest.FakeInformers{}, Options{Now: clk.now})
	// Each Canary with strings of its own, as decoding them from the API gives.
	canary := func(weight int) *v1beta1.Canary {
		c := seedCanary("sharing")
		c.Status.Phase = v1beta1.CanaryPhase(strings.Clone("Progressing"))
		c.Status.CanaryWeight = weight
		c.Status.CanaryRevision = strings.Clone("8548ea2de7")
		c.Status.Message = strings.Clone("analysing revision 8548ea2de7")
		c.Status.Metrics = []v1beta1.MetricStatus{{Name: strings.Clone(v1beta1.MetricRequestSuccessRate), Value: "100",
			Outcome: v1beta1.MetricOutcome(strings.Clone("Passed")), Message: strings.Clone("within range")}}
		return c
	}
	w.Observe(canary(10))
	w.Observe(canary(20))
	h, _ := w.History("apps", "sharing")
	if len(h.Samples) != 2 {
		t.Fatalf("%d samples, want 2", len(h.Samples))
	}
	same := func(a, b string) bool { return unsafe.StringData(a) == unsafe.StringData(b) }
	a, b := h.Samples[0], h.Samples[1]
	for _, p := range []struct{ name, first, second string }{
		{"revision", a.Revision, b.Revision},
		{"message", a.Message, b.Message},
		{"metric name", a.Metrics[0].Name, b.Metrics[0].Name},
		{"metric message", a.Metrics[0].Message, b.Metrics[0].Message},
	} {
		if !same(p.first, p.second) {
			t.Errorf("the second sample holds its own copy of the %s %q", p.name, p.second)
		}
	}
	for _, s := range h.Samples {
		if !same(s.Phase, string(v1beta1.PhaseProgressing)) || !same(s.Metrics[0].Outcome, string(v1beta1.MetricPassed)) {
			t.Errorf("sample at weight %d: phase %q or outcome %q is not the API's constant", s.Weight, s.Phase, s.Metrics[0].Outcome)
		}
	}
}

// TestSamplesShareUnchangedMetrics: a sample whose metrics are those of the sample before
// it (a step without a check) shares their slice, and a history keeps values and check
// times exactly (none stays none) without a pointer per metric.
func TestSamplesShareUnchangedMetrics(t *testing.T) {
	clk := newClock()
	w := New(&informertest.FakeInformers{}, Options{Now: clk.now})
	checked := clk.t.Add(-time.Minute).Truncate(time.Second)
	c := seedCanary("unchanged")
	c.Status.Phase, c.Status.CanaryWeight = v1beta1.PhaseProgressing, 10
	c.Status.Metrics = []v1beta1.MetricStatus{
		{Name: v1beta1.MetricRequestSuccessRate, Value: "99.5", Outcome: v1beta1.MetricPassed, LastCheckTime: mt(checked)},
		{Name: v1beta1.MetricRequestDuration, Outcome: v1beta1.MetricNoData},
	}
	w.Observe(c)
	next := c.DeepCopy()
	next.Status.CanaryWeight = 20
	clk.t = clk.t.Add(time.Second)
	w.Observe(next)

	r := w.canaries[types.NamespacedName{Namespace: "apps", Name: "unchanged"}]
	if len(r.samples) != 2 || &r.samples[0].metrics[0] != &r.samples[1].metrics[0] {
		t.Errorf("the second sample does not share the unchanged metrics of the first")
	}
	h, _ := w.History("apps", "unchanged")
	for _, s := range h.Samples {
		rate, duration := s.Metrics[0], s.Metrics[1]
		if rate.Value == nil || *rate.Value != 99.5 || rate.CheckTime == nil || !rate.CheckTime.Equal(checked) {
			t.Errorf("weight %d: request-success-rate %v at %v, want 99.5 at %v", s.Weight, rate.Value, rate.CheckTime, checked)
		}
		if duration.Value != nil || duration.CheckTime != nil || duration.Outcome != string(v1beta1.MetricNoData) {
			t.Errorf("weight %d: request-duration %+v, want no value, no check time, NoData", s.Weight, duration)
		}
	}
	if !h.Samples[1].Time.Equal(clk.t) {
		t.Errorf("second sample at %v, want %v", h.Samples[1].Time, clk.t)
	}
}

func TestCountersCountPromotionsAndRollbacks(t *testing.T) {
	clk := newClock()
	w := startedWatcher(t, clk)
	c := seedCanary("outcomes")
	w.Observe(c)
	if got := value(t, "coalmine_canary_promotions_total", "outcomes"); got != 0 {
		t.Fatalf("promotions %v before any, want the series at 0", got)
	}
	for _, step := range []struct {
		phase    v1beta1.CanaryPhase
		promoted string
	}{
		{v1beta1.PhaseProgressing, ""}, {v1beta1.PhasePromoting, ""}, {v1beta1.PhaseFinalising, ""},
		{v1beta1.PhaseSucceeded, "r1"},                                // promoted
		{v1beta1.PhaseProgressing, "r1"}, {v1beta1.PhaseFailed, "r1"}, // rolled back
		{v1beta1.PhaseSucceeded, "r1"}, // a revert: nothing promoted
		{v1beta1.PhaseProgressing, "r1"}, {v1beta1.PhaseWaitingPromotion, "r1"}, {v1beta1.PhasePromoting, "r1"},
		{v1beta1.PhaseSucceeded, "r3"}, // promoted
	} {
		c = c.DeepCopy()
		c.Status.Phase, c.Status.LastPromotedRevision = step.phase, step.promoted
		w.Observe(c)
	}
	if p, r := value(t, "coalmine_canary_promotions_total", "outcomes"), value(t, "coalmine_canary_rollbacks_total", "outcomes"); p != 2 || r != 1 {
		t.Errorf("promotions %v rollbacks %v, want 2 and 1 (a revert is neither)", p, r)
	}
}

func TestProgressClockMovesWithPhaseAndWeightOnly(t *testing.T) {
	clk := newClock()
	w := startedWatcher(t, clk)
	c := seedCanary("progress")
	c.Status.Phase, c.Status.CanaryWeight = v1beta1.PhaseProgressing, 10
	c.Status.LastTransitionTime = mt(clk.t.Add(-time.Hour))
	c.Status.LastStepTime = mt(clk.t.Add(-time.Minute))
	w.Observe(c) // first sight: its last step, not now and not the old transition
	want := float64(clk.t.Add(-time.Minute).Unix())
	if got := value(t, "coalmine_canary_last_progress_timestamp_seconds", "progress"); got != want {
		t.Errorf("first progress %v, want the last step %v", got, want)
	}
	clk.advance(30 * time.Second)
	c = c.DeepCopy()
	c.Status.FailedChecks = 1 // an analysis ran, nothing moved
	w.Observe(c)
	if got := value(t, "coalmine_canary_last_progress_timestamp_seconds", "progress"); got != want {
		t.Errorf("progress moved to %v on a failed check, want %v", got, want)
	}
	c = c.DeepCopy()
	c.Status.CanaryWeight = 15
	w.Observe(c)
	if got := value(t, "coalmine_canary_last_progress_timestamp_seconds", "progress"); got != float64(clk.t.Unix()) {
		t.Errorf("progress %v after a step, want now %v", got, clk.t.Unix())
	}
	if got := value(t, "coalmine_canary_progress_deadline_seconds", "progress"); got != 600 {
		t.Errorf("deadline %v, want the default 600", got)
	}
	if got := value(t, "coalmine_canary_failed_checks", "progress"); got != 1 {
		t.Errorf("failed checks %v, want 1", got)
	}
}

func TestThresholdSeriesFollowTheSpec(t *testing.T) {
	w := startedWatcher(t, newClock())
	c := seedCanary("thresholds")
	w.Observe(c)
	if got := value(t, "coalmine_canary_analysis_threshold", "thresholds", "metric", "request-success-rate", "bound", "min"); got != 99 {
		t.Errorf("success-rate min %v, want 99", got)
	}
	c = c.DeepCopy()
	c.Spec.Analysis.Metrics = c.Spec.Analysis.Metrics[:1]
	c.Spec.Service.Name = "apex"
	w.Observe(c)
	out := gather(t)
	if strings.Contains(out, `coalmine_canary_analysis_threshold{bound="max",metric="request-duration",name="thresholds"`) {
		t.Error("the threshold of a metric removed from the spec is still exported")
	}
	if !strings.Contains(out, `coalmine_canary_info{name="thresholds",namespace="apps",service="apex",target="thresholds"} 1`) ||
		strings.Contains(out, `name="thresholds",namespace="apps",service="thresholds"`) {
		t.Errorf("info series wrong after a service rename:\n%s", grep(out, "coalmine_canary_info"))
	}
	w.Forget("apps", "thresholds")
	if out := gather(t); strings.Contains(out, `name="thresholds"`) {
		t.Errorf("series of a deleted Canary remain:\n%s", grep(out, `name="thresholds"`))
	}
}

// TestStartExportsOnlyOnceElected runs the watcher on a fake informer: it keeps a
// history from the start, but has no series until the replica leads, and none after it
// stops.
func TestStartExportsOnlyOnceElected(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := v1beta1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	informers := &informertest.FakeInformers{Scheme: scheme}
	elected := make(chan struct{})
	w := New(informers, Options{Elected: elected})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Start(ctx) }()
	fi, err := informers.FakeInformerFor(ctx, &v1beta1.Canary{})
	if err != nil {
		t.Fatal(err)
	}
	c := seedCanary("elected")
	waitFor(t, func() bool { // until Start has registered its handler
		fi.Add(c)
		_, ok := w.History("apps", "elected")
		return ok
	})
	if strings.Contains(gather(t), `name="elected"`) {
		t.Fatal("series exported before the replica leads")
	}
	close(elected)
	waitFor(t, func() bool {
		return strings.Contains(gather(t), `coalmine_canary_failed_checks{name="elected",namespace="apps"} 0`)
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if strings.Contains(gather(t), `name="elected"`) {
		t.Error("series left after the watcher stopped")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met within 5s")
}

// value is the value of the series of Canary apps/name in family, with these further
// label pairs; -1 when /metrics has no such series.
func value(t *testing.T, family, name string, labels ...string) float64 {
	t.Helper()
	want := map[string]string{"name": name, "namespace": "apps"}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, mf := range gatherFamilies(t) {
		if mf.GetName() != family {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := true
			for _, l := range m.GetLabel() {
				if v, ok := want[l.GetName()]; ok && v != l.GetValue() {
					match = false
				}
			}
			if !match {
				continue
			}
			if m.Counter != nil {
				return m.Counter.GetValue()
			}
			return m.Gauge.GetValue()
		}
	}
	return -1
}

func gatherFamilies(t *testing.T) []*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(exporters)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return families
}

// gather is the text exposition of the watcher's series.
func gather(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, mf := range gatherFamilies(t) {
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
