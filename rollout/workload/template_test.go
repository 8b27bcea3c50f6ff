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

// TestSameTemplateIgnoresOnlyTheHash: a ReplicaSet runs a Deployment's template when the
// two agree on every field but pod-template-hash; its revision is the template's.
func TestSameTemplateIgnoresOnlyTheHash(t *testing.T) {
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
			rs := replicaSetRunning(running)
			if got := SameTemplate(rs, &tt.deployment); got != tt.same {
				t.Errorf("SameTemplate = %v, want %v", got, tt.same)
			}
			want := v1beta1.TemplateRevision(TemplateWithoutHash(&rs.Spec.Template))
			if got := ReplicaSetRevision(rs); got != want {
				t.Errorf("revision %s, want %s", got, want)
			}
			if want := v1beta1.TemplateRevision(&running); ReplicaSetRevision(rs) != want {
				t.Errorf("revision %s, want the Deployment's %s", ReplicaSetRevision(rs), want)
			}
			if rs.Spec.Template.Labels[LabelPodTemplateHash] == "" {
				t.Error("TemplateDigest modified the template it read")
			}
			if DeploymentRevision(rs) != "3" {
				t.Errorf("DeploymentRevision %q, want 3", DeploymentRevision(rs))
			}
		})
	}
}
