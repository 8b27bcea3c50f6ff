package workload

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

func podTemplate(image string, labels map[string]string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{"prometheus.io/scrape": "true"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: image, Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}}},
	}
}

func replicaSetRunning(t corev1.PodTemplateSpec) *appsv1.ReplicaSet {
	t = *t.DeepCopy()
	if t.Labels == nil {
		t.Labels = map[string]string{}
	}
	t.Labels[LabelPodTemplateHash] = "5d8f9c7b6"
	return &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "alice-5d8f9c7b6", Labels: t.Labels,
			Annotations:     map[string]string{annotationDeploymentRevision: "3", "deployment.kubernetes.io/desired-replicas": "2"},
			OwnerReferences: []metav1.OwnerReference{{Kind: "Deployment", Name: "alice", UID: "u1", Controller: new(true)}},
			ManagedFields:   []metav1.ManagedFieldsEntry{{Manager: "kube-controller-manager"}}},
		Spec:   appsv1.ReplicaSetSpec{Replicas: new(int32(2)), Template: t, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "alice"}}},
		Status: appsv1.ReplicaSetStatus{Replicas: 2, ReadyReplicas: 2},
	}
}

// TestSlimReplicaSetAnswersAsTheFullOne: a cached (slim) ReplicaSet gives SameTemplate
// and ReplicaSetRevision the answers of the full one, and keeps what the loop reads.
func TestSlimReplicaSetAnswersAsTheFullOne(t *testing.T) {
	running := podTemplate("alice:1", map[string]string{"app": "alice"})
	tests := []struct {
		name       string
		deployment corev1.PodTemplateSpec
		same       bool
	}{
		{"the template it runs", podTemplate("alice:1", map[string]string{"app": "alice"}), true},
		{"another image", podTemplate("alice:2", map[string]string{"app": "alice"}), false},
		{"another label", podTemplate("alice:1", map[string]string{"app": "alice", "team": "a"}), false},
		{"no labels", podTemplate("alice:1", nil), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			full := replicaSetRunning(running)
			obj, err := SlimReplicaSet(full.DeepCopy())
			if err != nil {
				t.Fatal(err)
			}
			slim := obj.(*appsv1.ReplicaSet)
			if got := SameTemplate(full, &tt.deployment); got != tt.same {
				t.Errorf("SameTemplate(full) = %v, want %v", got, tt.same)
			}
			if got := SameTemplate(slim, &tt.deployment); got != tt.same {
				t.Errorf("SameTemplate(slim) = %v, want %v", got, tt.same)
			}
			want := v1beta1.TemplateRevision(TemplateWithoutHash(&full.Spec.Template))
			if ReplicaSetRevision(full) != want || ReplicaSetRevision(slim) != want {
				t.Errorf("revision full %s slim %s, want %s", ReplicaSetRevision(full), ReplicaSetRevision(slim), want)
			}
			if len(slim.Spec.Template.Spec.Containers) != 0 || slim.ManagedFields != nil || len(slim.Annotations) != 2 {
				t.Errorf("slim keeps template %v, managedFields %v, annotations %v", slim.Spec.Template, slim.ManagedFields, slim.Annotations)
			}
			if slim.Name != full.Name || slim.Labels["app"] != "alice" || !metav1.IsControlledBy(slim, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{UID: "u1"}}) ||
				*slim.Spec.Replicas != 2 || slim.Annotations[annotationDeploymentRevision] != "3" || slim.Status.ReadyReplicas != 2 {
				t.Errorf("slim lost what the loop reads: %+v", slim)
			}
			again, _ := SlimReplicaSet(slim)
			if ReplicaSetDigest(again.(*appsv1.ReplicaSet)) != ReplicaSetDigest(slim) {
				t.Error("a second transform changed the digest")
			}
			if full.Spec.Template.Labels[LabelPodTemplateHash] == "" {
				t.Error("TemplateDigest modified the template it read")
			}
		})
	}
	if obj, _ := SlimReplicaSet(&corev1.Service{}); obj == nil {
		t.Error("another kind did not pass through")
	}
}
