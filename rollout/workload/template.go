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

// annotationTemplateDigest holds, on a ReplicaSet in coalmine's cache only (SlimReplicaSet
// puts it there; nothing writes it to the API), the TemplateDigest of the template the
// cache dropped.
const annotationTemplateDigest = "coalmine.dev/cached-template-digest"

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

// ReplicaSetDigest is the TemplateDigest of what rs runs: recorded by SlimReplicaSet on a
// cached ReplicaSet, computed from its template otherwise.
func ReplicaSetDigest(rs *appsv1.ReplicaSet) string {
	if d, ok := rs.Annotations[annotationTemplateDigest]; ok {
		return d
	}
	return TemplateDigest(&rs.Spec.Template)
}

// ReplicaSetRevision is coalmine's revision (v1beta1.TemplateRevision) of what rs runs.
func ReplicaSetRevision(rs *appsv1.ReplicaSet) string {
	return ReplicaSetDigest(rs)[:10]
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
	return ReplicaSetDigest(rs) == TemplateDigest(d)
}

// SlimReplicaSet is the cache's transform of ReplicaSets. The loop reads of one only its
// name, labels, owner, revision, replicas and selector, and what its template is
// (SameTemplate, ReplicaSetRevision); the template is most of a ReplicaSet, and the cache
// holds every ReplicaSet of the cluster (ten old ones per Deployment by default). So the
// cached copy keeps the template's digest in its place (~4 KiB less per ReplicaSet in
// make bench's heap profile), and of the annotations the revision only. Other objects
// pass as they are; managedFields go as for every cached object.
func SlimReplicaSet(obj any) (any, error) {
	rs, ok := obj.(*appsv1.ReplicaSet)
	if !ok {
		return obj, nil
	}
	if _, done := rs.Annotations[annotationTemplateDigest]; done {
		return rs, nil
	}
	annotations := map[string]string{annotationTemplateDigest: TemplateDigest(&rs.Spec.Template)}
	if rev, ok := rs.Annotations[annotationDeploymentRevision]; ok {
		annotations[annotationDeploymentRevision] = rev
	}
	return &appsv1.ReplicaSet{
		TypeMeta: rs.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: rs.Name, Namespace: rs.Namespace, UID: rs.UID, ResourceVersion: rs.ResourceVersion,
			Generation: rs.Generation, CreationTimestamp: rs.CreationTimestamp, DeletionTimestamp: rs.DeletionTimestamp,
			Labels: rs.Labels, Annotations: annotations, OwnerReferences: rs.OwnerReferences,
		},
		Spec: appsv1.ReplicaSetSpec{
			Replicas: rs.Spec.Replicas, MinReadySeconds: rs.Spec.MinReadySeconds, Selector: rs.Spec.Selector,
		},
		Status: rs.Status,
	}, nil
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
