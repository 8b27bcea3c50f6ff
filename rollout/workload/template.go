package workload

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
)

// LabelPodTemplateHash is the label the Deployment controller adds to each ReplicaSet's
// template; it is bookkeeping, not part of what the user wrote.
const LabelPodTemplateHash = "pod-template-hash"

// SameTemplate reports whether a ReplicaSet's pod template (rs) runs what a Deployment's
// template (d) asks for, ignoring pod-template-hash and the difference between empty and
// missing fields (equality.Semantic). A template hash can change while the template does
// not: a k8s.io/api bump marshals new fields, a new server default appears, GitOps
// re-applies a field the apiserver drops. Comparing meaning, not bytes, keeps those from
// starting a canary.
func SameTemplate(rs, d *corev1.PodTemplateSpec) bool {
	a, b := rs.DeepCopy(), d.DeepCopy()
	delete(a.Labels, LabelPodTemplateHash)
	delete(b.Labels, LabelPodTemplateHash)
	if len(a.Labels) == 0 {
		a.Labels = nil
	}
	if len(b.Labels) == 0 {
		b.Labels = nil
	}
	return equality.Semantic.DeepEqual(a, b)
}

// TemplateWithoutHash is rs's template as the Deployment wrote it: without
// pod-template-hash, so its revision compares with the Deployment's own.
func TemplateWithoutHash(t *corev1.PodTemplateSpec) *corev1.PodTemplateSpec {
	out := t.DeepCopy()
	delete(out.Labels, LabelPodTemplateHash)
	if len(out.Labels) == 0 {
		out.Labels = nil
	}
	return out
}
