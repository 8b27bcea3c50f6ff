package canarywatch

import (
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// sample is a Sample as a history keeps it: no pointer but its strings and its metrics,
// and those shared with the sample before it where they repeat. A Sample (time.Time,
// *float64 and *time.Time per metric, its own metrics slice) was ~0.25 KiB a sample in
// make bench's heap profile, and a history grows ~15 samples a rollout.
type sample struct {
	at       int64 // Unix nanoseconds
	phase    string
	revision string
	message  string
	metrics  []metricSample
	weight   int32
	failed   int32
}

type metricSample struct {
	name    string
	outcome string
	message string
	value   float64 // NaN when the check had none
	checked int64   // Unix nanoseconds; 0 when never checked
}

func sampleOf(c *v1beta1.Canary, now time.Time) sample {
	st := c.Status
	s := sample{at: now.UnixNano(), phase: string(st.Phase), weight: int32(st.CanaryWeight),
		failed: int32(st.FailedChecks), revision: st.CanaryRevision, message: st.Message}
	if len(st.Metrics) > 0 {
		s.metrics = make([]metricSample, 0, len(st.Metrics))
	}
	for _, m := range st.Metrics {
		ms := metricSample{name: m.Name, outcome: string(m.Outcome), message: m.Message, value: math.NaN()}
		if t := timeOf(m.LastCheckTime); t != nil {
			ms.checked = t.UnixNano()
		}
		if v, err := strconv.ParseFloat(m.Value, 64); err == nil && !math.IsNaN(v) {
			ms.value = v
		}
		s.metrics = append(s.metrics, ms)
	}
	return s
}

// share makes s use what it repeats from prev, the sample before it: its strings, and
// its metrics when all are equal; phases and outcomes are the API's constants. The
// strings sampleOf takes are the cached Canary's, one allocation each, and the cache
// drops that Canary at its next update: a history of samples each holding its own
// copies of the same phase, revision, metric names and messages took ~15% more heap.
func (s *sample) share(prev *sample) {
	s.phase = shared(s.phase, prev.phase)
	s.revision = shared(s.revision, prev.revision)
	s.message = shared(s.message, prev.message)
	if slices.EqualFunc(s.metrics, prev.metrics, sameMetric) {
		s.metrics = prev.metrics
		return
	}
	for i := range s.metrics {
		m := &s.metrics[i]
		if i < len(prev.metrics) {
			p := &prev.metrics[i]
			m.name, m.message = shared(m.name, p.name), shared(m.message, p.message)
		}
		m.outcome = shared(m.outcome, "")
	}
}

func sameMetric(a, b metricSample) bool {
	return a.name == b.name && a.outcome == b.outcome && a.message == b.message && a.checked == b.checked &&
		math.Float64bits(a.value) == math.Float64bits(b.value)
}

// constants are the phases and outcomes as the API package spells them.
var constants = func() map[string]string {
	m := map[string]string{}
	for _, p := range []v1beta1.CanaryPhase{v1beta1.PhaseInitializing, v1beta1.PhaseInitialized, v1beta1.PhaseWaiting,
		v1beta1.PhaseProgressing, v1beta1.PhaseWaitingPromotion, v1beta1.PhasePromoting, v1beta1.PhaseFinalising,
		v1beta1.PhaseSucceeded, v1beta1.PhaseFailed, v1beta1.PhaseTerminating} {
		m[string(p)] = string(p)
	}
	for _, o := range []v1beta1.MetricOutcome{v1beta1.MetricPassed, v1beta1.MetricFailed, v1beta1.MetricNoData,
		v1beta1.MetricError, v1beta1.MetricSkipped} {
		m[string(o)] = string(o)
	}
	return m
}()

// shared is v as a constant, or as prev when they are equal, or v.
func shared(v, prev string) string {
	if c, ok := constants[v]; ok {
		return c
	}
	if v == prev {
		return prev
	}
	return v
}

// key is a hash of everything a sample shows but its time.
func (s *sample) key() uint64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s|%d|%d|%s|%s", s.phase, s.weight, s.failed, s.revision, s.message)
	for _, m := range s.metrics {
		v := "-"
		if !math.IsNaN(m.value) {
			v = strconv.FormatFloat(m.value, 'g', -1, 64)
		}
		fmt.Fprintf(h, "|%s=%s,%s,%d", m.name, v, m.outcome, m.checked)
	}
	return h.Sum64()
}

// public is samples as the API shows them.
func public(samples []sample) []Sample {
	out := make([]Sample, len(samples))
	for i, s := range samples {
		out[i] = Sample{Time: time.Unix(0, s.at), Phase: s.phase, Weight: int(s.weight), FailedChecks: int(s.failed),
			Revision: s.revision, Message: s.message}
		for _, m := range s.metrics {
			mv := MetricValue{Name: m.name, Outcome: m.outcome, Message: m.message}
			if !math.IsNaN(m.value) {
				mv.Value = ptr(m.value)
			}
			if m.checked != 0 {
				t := time.Unix(0, m.checked)
				mv.CheckTime = &t
			}
			out[i].Metrics = append(out[i].Metrics, mv)
		}
	}
	return out
}
