package rollout

import (
	"cmp"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
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

// statuses is what the loop last wrote of each Canary it runs, served on /metrics.
var statuses = &statusCollector{canaries: map[types.NamespacedName]statusSeries{}}

type statusSeries struct {
	target string
	phase  v1beta1.CanaryPhase
	weight int
}

type statusCollector struct {
	mu       sync.Mutex
	canaries map[types.NamespacedName]statusSeries
}

// record keeps c's phase and weight; a changed target drops Flagger's stored series of
// the old one.
func (s *statusCollector) record(c *v1beta1.Canary, st *v1beta1.CanaryStatus) {
	key := types.NamespacedName{Namespace: c.Namespace, Name: c.Name}
	target := c.Spec.TargetRef.Name
	s.mu.Lock()
	old, seen := s.canaries[key]
	s.canaries[key] = statusSeries{target: target, phase: st.Phase, weight: st.CanaryWeight}
	s.mu.Unlock()
	if seen && old.target != target {
		forgetFlagger(c.Namespace, old.target)
	}
}

// forget drops a deleted Canary, and Flagger's stored series of its target.
func (s *statusCollector) forget(key types.NamespacedName) {
	s.mu.Lock()
	old, seen := s.canaries[key]
	delete(s.canaries, key)
	s.mu.Unlock()
	if seen {
		forgetFlagger(key.Namespace, old.target)
	}
}

func (s *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descWeight, descPhase, descFlaggerStatus, descFlaggerWeight, descFlaggerTotal} {
		ch <- d
	}
}

// Collect sends the series, in Canary order. Flagger names a series after the target, so
// two Canaries of one target (the second is refused, DuplicateTarget) would make one
// series twice, which fails the whole scrape: the first Canary by name has it.
func (s *statusCollector) Collect(ch chan<- prometheus.Metric) {
	type entry struct {
		key types.NamespacedName
		statusSeries
	}
	s.mu.Lock()
	all := make([]entry, 0, len(s.canaries))
	for k, v := range s.canaries {
		all = append(all, entry{k, v})
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
		if t := (types.NamespacedName{Namespace: ns, Name: e.target}); !targets[t] {
			targets[t] = true
			gauge(descFlaggerStatus, flaggerStatusValue(e.phase), e.target, ns)
			weight(e.target+"-primary", ns, 100-e.weight)
			weight(e.target, ns, e.weight)
		}
	}
	for ns, n := range perNamespace {
		gauge(descFlaggerTotal, float64(n), ns)
	}
}
