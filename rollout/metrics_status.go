package rollout

import (
	"cmp"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/rollout/analysis"
)

// The series that say what a Canary's status says (coalmine's weight and phase, Flagger's
// status, weight and total) are computed when /metrics is scraped from what the loop last
// wrote, not kept as client_golang series: five stored series per Canary (label pairs,
// hashes, vectors) were ~2 KiB of heap each in make bench's profile, for three values.
var (
	descWeight = prometheus.NewDesc("coalmine_canary_weight",
		"Percentage of the apex traffic routed to the canary.", []string{"name", "namespace"}, nil)
	descPhase = prometheus.NewDesc("coalmine_canary_phase",
		"Phase of a Canary: one series, of the current phase, at 1.", []string{"name", "namespace", "phase"}, nil)
	// Flagger's (pkg/metrics/recorder.go of Flagger v1.36.1, subsystem "flagger"): the name
	// label is the target's name, not the Canary's.
	descFlaggerStatus = prometheus.NewDesc("flagger_canary_status",
		"Last canary analysis result (Flagger's encoding: 0 running, 1 successful, 2 failed).", []string{"name", "namespace"}, nil)
	descFlaggerWeight = prometheus.NewDesc("flagger_canary_weight",
		"Route weight of the primary (workload <target>-primary) and of the canary (workload <target>), in percent.",
		[]string{"workload", "namespace"}, nil)
	descFlaggerTotal = prometheus.NewDesc("flagger_canary_total",
		"Number of Canaries per namespace.", []string{"namespace"}, nil)
)

// statuses is what the loop last wrote and analysed of each Canary it runs, served on
// /metrics.
var statuses = &statusCollector{canaries: map[types.NamespacedName]*canarySeries{}}

type canarySeries struct {
	target string
	phase  v1beta1.CanaryPhase
	weight int
	// analysis is nil until the Canary's first check or analysis run.
	analysis *analysisState
}

type statusCollector struct {
	mu       sync.Mutex
	canaries map[types.NamespacedName]*canarySeries
}

// of is c's series, added if new; a changed target drops Flagger's series of the old
// one. Call with s.mu held.
func (s *statusCollector) of(c *v1beta1.Canary) *canarySeries {
	key := types.NamespacedName{Namespace: c.Namespace, Name: c.Name}
	e := s.canaries[key]
	if e == nil {
		e = &canarySeries{target: c.Spec.TargetRef.Name}
		s.canaries[key] = e
	}
	if e.target != c.Spec.TargetRef.Name {
		e.target = c.Spec.TargetRef.Name
		if e.analysis != nil {
			e.analysis.forgetFlagger()
		}
	}
	return e
}

// record keeps c's phase and weight.
func (s *statusCollector) record(c *v1beta1.Canary, st *v1beta1.CanaryStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.of(c)
	e.phase, e.weight = st.Phase, st.CanaryWeight
}

// analysed records what one pass analysed of c: its checks, and for a pass that ran the
// analysis (seconds >= 0) Flagger's duration.
func (s *statusCollector) analysed(c *v1beta1.Canary, results []analysis.Result, seconds float64) {
	if len(results) == 0 && seconds < 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.of(c)
	if e.analysis == nil {
		e.analysis = &analysisState{}
	}
	e.analysis.addChecks(c, results)
	if seconds >= 0 {
		e.analysis.observeDuration(seconds)
	}
}

// forget drops every series of a deleted Canary.
func (s *statusCollector) forget(key types.NamespacedName) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.canaries, key)
}

func (s *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descWeight, descPhase, descFlaggerStatus, descFlaggerWeight, descFlaggerTotal,
		descAnalysisValue, descChecks, descFlaggerDuration, descFlaggerAnalysis} {
		ch <- d
	}
}

// Collect sends the series, in Canary order. Flagger names a series after the target, so
// two Canaries of one target (the second is refused, DuplicateTarget) would make one
// series twice, which fails the whole scrape: the first Canary by name has it.
func (s *statusCollector) Collect(ch chan<- prometheus.Metric) {
	type entry struct {
		key types.NamespacedName
		canarySeries
	}
	// A copy of each Canary's series under the lock; the analysis state is copied too,
	// as a pass may add to it while the scrape sends.
	s.mu.Lock()
	all := make([]entry, 0, len(s.canaries))
	for k, v := range s.canaries {
		e := entry{k, *v}
		if v.analysis != nil {
			a := *v.analysis
			a.metrics, a.durationCounts = slices.Clone(a.metrics), slices.Clone(a.durationCounts)
			e.analysis = &a
		}
		all = append(all, e)
	}
	s.mu.Unlock()
	slices.SortFunc(all, func(a, b entry) int {
		return cmp.Or(cmp.Compare(a.key.Namespace, b.key.Namespace), cmp.Compare(a.key.Name, b.key.Name))
	})
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	perNamespace := map[string]int{}
	targets := map[types.NamespacedName]bool{}
	// workloads: a target named x-primary would give a second x-primary series.
	workloads := map[types.NamespacedName]bool{}
	weight := func(workload, ns string, v int) {
		if w := (types.NamespacedName{Namespace: ns, Name: workload}); !workloads[w] {
			workloads[w] = true
			gauge(descFlaggerWeight, float64(v), workload, ns)
		}
	}
	for _, e := range all {
		ns := e.key.Namespace
		perNamespace[ns]++
		gauge(descWeight, float64(e.weight), e.key.Name, ns)
		gauge(descPhase, 1, e.key.Name, ns, string(e.phase))
		t := types.NamespacedName{Namespace: ns, Name: e.target}
		first := !targets[t]
		if first {
			targets[t] = true
			gauge(descFlaggerStatus, flaggerStatusValue(e.phase), e.target, ns)
			weight(e.target+"-primary", ns, 100-e.weight)
			weight(e.target, ns, e.weight)
		}
		if e.analysis != nil {
			e.analysis.collect(ch, e.key.Name, ns, e.target, first)
		}
	}
	for ns, n := range perNamespace {
		gauge(descFlaggerTotal, float64(n), ns)
	}
}
