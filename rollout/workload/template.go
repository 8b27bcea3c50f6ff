package workload

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// LabelPodTemplateHash is the label the Deployment controller adds to each ReplicaSet's
// template; it is bookkeeping, not part of what the user wrote.
const LabelPodTemplateHash = "pod-template-hash"

// annotationDeploymentRevision is the Deployment controller's revision of a ReplicaSet.
const annotationDeploymentRevision = "deployment.kubernetes.io/revision"

// TemplateDigest is the SHA-256 (hex) of t as JSON without pod-template-hash: two
// templates with one digest have the same field values. Its first ten characters are
// v1beta1.TemplateRevision of the template without the label, the revision coalmine gives
// what a ReplicaSet runs.
func TemplateDigest(t *corev1.PodTemplateSpec) string {
	if _, ok := t.Labels[LabelPodTemplateHash]; ok {
		// A shallow copy with its own labels: t may be the cache's, read concurrently.
		c := *t
		c.Labels = labelsWithoutHash(t.Labels)
		t = &c
	}
	b, err := json.Marshal(t)
	if err != nil {
		// A PodTemplateSpec always marshals; a panic here is a programming error.
		panic("marshal pod template: " + err.Error())
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// ReplicaSetRevision is coalmine's revision (v1beta1.TemplateRevision) of what rs runs.
func ReplicaSetRevision(rs *appsv1.ReplicaSet) string {
	return TemplateDigest(&rs.Spec.Template)[:10]
}

// SameTemplate reports whether ReplicaSet rs runs what a Deployment's template d asks
// for: the same field values, pod-template-hash aside. A template hash recorded earlier
// can differ while the template does not: a k8s.io/api bump marshals new fields, a new
// server default appears, GitOps re-applies a field the apiserver drops. Comparing the two
// templates as this build of coalmine reads them now, not a hash from then, keeps those
// from starting a canary. It is stricter than equality.Semantic where one lists null and
// the other an empty list or a quantity is spelt two ways (1Gi, 1073741824): the two come
// from one apiserver and rarely differ so, and when they do a canary is analysed, which
// is the safe side.
func SameTemplate(rs *appsv1.ReplicaSet, d *corev1.PodTemplateSpec) bool {
	return TemplateDigest(&rs.Spec.Template) == TemplateDigest(d)
}

// TemplateWithoutHash is rs's template as the Deployment wrote it: without
// pod-template-hash, so its revision compares with the Deployment's own.
func TemplateWithoutHash(t *corev1.PodTemplateSpec) *corev1.PodTemplateSpec {
	out := t.DeepCopy()
	out.Labels = labelsWithoutHash(t.Labels)
	return out
}

// labelsWithoutHash is a copy of labels without pod-template-hash; nil when nothing is left.
func labelsWithoutHash(labels map[string]string) map[string]string {
	var out map[string]string
	for k, v := range labels {
		if k == LabelPodTemplateHash {
			continue
		}
		if out == nil {
			out = make(map[string]string, len(labels))
		}
		out[k] = v
	}
	return out
}

// DeploymentRevision is the Deployment controller's revision of a Deployment or one of
// its ReplicaSets (deployment.kubernetes.io/revision): on a ReplicaSet its number, on the
// Deployment the number of the ReplicaSet of its template, as of the generation the
// controller observed.
func DeploymentRevision(o metav1.Object) string {
	return o.GetAnnotations()[annotationDeploymentRevision]
}
