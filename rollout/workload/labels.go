package workload

import (
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// labelRewriter suffixes the values of an application's selector labels wherever they
// appear: pod labels, label selectors, affinity and topology spread terms. Only a label
// whose key is in the selector and whose value is the selector's value is touched, so an
// affinity term about some other app, or a label like version=v2, keeps its meaning.
type labelRewriter struct {
	app    map[string]string
	suffix string
}

func (r labelRewriter) value(key, v string) (string, bool) {
	if want, ok := r.app[key]; ok && v == want {
		return v + r.suffix, true
	}
	return v, false
}

// labels returns a copy of m with the application's labels suffixed.
func (r labelRewriter) labels(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k], _ = r.value(k, v)
	}
	return out
}

// selector rewrites a label selector in place.
func (r labelRewriter) selector(s *metav1.LabelSelector) {
	if s == nil {
		return
	}
	s.MatchLabels = r.labels(s.MatchLabels)
	for i := range s.MatchExpressions {
		e := &s.MatchExpressions[i]
		if _, ok := r.app[e.Key]; !ok {
			continue
		}
		values := slices.Clone(e.Values)
		for j, v := range values {
			values[j], _ = r.value(e.Key, v)
		}
		e.Values = values
	}
}

func (r labelRewriter) affinityTerms(terms []corev1.PodAffinityTerm) {
	for i := range terms {
		r.selector(terms[i].LabelSelector)
	}
}

func (r labelRewriter) weightedAffinityTerms(terms []corev1.WeightedPodAffinityTerm) {
	for i := range terms {
		r.selector(terms[i].PodAffinityTerm.LabelSelector)
	}
}

// podSpec rewrites the selectors of a pod spec in place: pod (anti-)affinity and topology
// spread constraints. Node affinity selects nodes, not pods, and is left alone.
func (r labelRewriter) podSpec(spec *corev1.PodSpec) {
	if a := spec.Affinity; a != nil {
		if pa := a.PodAffinity; pa != nil {
			r.affinityTerms(pa.RequiredDuringSchedulingIgnoredDuringExecution)
			r.weightedAffinityTerms(pa.PreferredDuringSchedulingIgnoredDuringExecution)
		}
		if paa := a.PodAntiAffinity; paa != nil {
			r.affinityTerms(paa.RequiredDuringSchedulingIgnoredDuringExecution)
			r.weightedAffinityTerms(paa.PreferredDuringSchedulingIgnoredDuringExecution)
		}
	}
	for i := range spec.TopologySpreadConstraints {
		r.selector(spec.TopologySpreadConstraints[i].LabelSelector)
	}
}

// SuffixLabels returns a copy of labels in which every label of app (a Deployment's
// spec.selector.matchLabels) has its value suffixed; other labels are copied unchanged.
func SuffixLabels(labels, app map[string]string, suffix string) map[string]string {
	return labelRewriter{app: app, suffix: suffix}.labels(labels)
}

// SelectsAll reports whether a Service selector selects pods with the given labels.
// An empty selector selects nothing (a Service without selector has manual endpoints).
func SelectsAll(selector, podLabels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if got, ok := podLabels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
