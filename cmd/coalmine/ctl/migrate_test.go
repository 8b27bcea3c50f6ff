package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// flaggerState is an app as Flagger leaves it once initialised: the Canary, the target
// at 0 replicas, the primary serving.
func flaggerState(phase string, mutate func(fc *unstructured.Unstructured, target, primary *appsv1.Deployment)) []client.Object {
	fc := &unstructured.Unstructured{Object: map[string]any{
		"spec": map[string]any{
			"targetRef": map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "name": "alice"},
			"service":   map[string]any{"port": int64(8080)},
			"analysis":  map[string]any{"interval": "30s", "threshold": int64(5), "maxWeight": int64(50), "stepWeight": int64(5)},
		},
		"status": map[string]any{"phase": phase, "lastAppliedSpec": "abc", "lastPromotedSpec": "abc"},
	}}
	fc.SetGroupVersionKind(flaggerCanaryGVK)
	fc.SetNamespace("apps")
	fc.SetName("alice")
	deploy := func(name string, replicas int32) *appsv1.Deployment {
		return &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: name, Generation: 1},
			Spec: appsv1.DeploymentSpec{
				Replicas: &replicas,
				Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "demo:v1"}}}},
			},
			Status: appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: replicas, UpdatedReplicas: replicas, ReadyReplicas: replicas, AvailableReplicas: replicas},
		}
	}
	target, primary := deploy("alice", 0), deploy("alice-primary", 2)
	if mutate != nil {
		mutate(fc, target, primary)
	}
	return []client.Object{fc, target, primary}
}

// TestMigratePreflightRefuses: what migrate refuses before it changes anything, and the
// message that says what to do.
func TestMigratePreflightRefuses(t *testing.T) {
	coalmineCanary := &v1beta1.Canary{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "alice"}}
	tests := []struct {
		name string
		objs []client.Object
		want string // "" means the preflight passes
	}{
		{"initialized", flaggerState("Initialized", nil), ""},
		{"succeeded", flaggerState("Succeeded", nil), ""},
		{"analysing", flaggerState("Progressing", nil), `phase "Progressing": migrate only an Initialized or Succeeded one`},
		{"failed release", flaggerState("Failed", nil), `phase "Failed"`},
		{"unpromoted template", flaggerState("Succeeded", func(fc *unstructured.Unstructured, _, _ *appsv1.Deployment) {
			_ = unstructured.SetNestedField(fc.Object, "def", "status", "lastAppliedSpec")
		}), "has not promoted the target's latest template"},
		{"revert on deletion", flaggerState("Initialized", func(fc *unstructured.Unstructured, _, _ *appsv1.Deployment) {
			fc.SetFinalizers([]string{flaggerFinalizer})
		}), "Set spec.revertOnDeletion: false"},
		{"other image", flaggerState("Initialized", func(_ *unstructured.Unstructured, target, _ *appsv1.Deployment) {
			target.Spec.Template.Spec.Containers[0].Image = "demo:v2"
		}), "would ship an unanalysed release"},
		{"primary not ready", flaggerState("Initialized", func(_ *unstructured.Unstructured, _, primary *appsv1.Deployment) {
			primary.Status.ReadyReplicas = 0
		}), "is not ready"},
		{"no primary", flaggerState("Initialized", nil)[:2], "Flagger has not initialised"},
		{"coalmine Canary beside Flagger's", append(flaggerState("Initialized", nil), coalmineCanary.DeepCopy()), "exists beside Flagger's"},
		{"neither Canary", flaggerState("Initialized", nil)[1:], "neither a Flagger Canary"},
		{"resume after Flagger let go", append(flaggerState("Initialized", nil)[1:], &v1beta1.Canary{
			ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "alice"},
			Spec:       v1beta1.CanarySpec{TargetRef: v1beta1.LocalObjectReference{Kind: "Deployment", Name: "alice"}},
		}), ""},
		{"resume between steps 1 and 3", func() []client.Object {
			objs := flaggerState("Initialized", nil)
			c, _ := coalmineCanaryFrom(objs[0].(*unstructured.Unstructured))
			data, _ := json.Marshal(c)
			objs[2].SetAnnotations(map[string]string{annotationMigrateCanary: string(data)})
			return objs[1:]
		}(), ""},
		{"daemonset", flaggerState("Initialized", func(fc *unstructured.Unstructured, _, _ *appsv1.Deployment) {
			_ = unstructured.SetNestedField(fc.Object, "DaemonSet", "spec", "targetRef", "kind")
		}), "migrate moves Deployments only"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cl := fakeCluster(t, tc.objs...)
			var out bytes.Buffer
			m := &migration{cl: cl, routes: cl, io: IO{Out: &out, Err: &out}, key: types.NamespacedName{Namespace: "apps", Name: "alice"}}
			err := m.preflight(context.Background())
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("preflight: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("preflight = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestCoalmineCanaryFromFlagger: only apiVersion changes; kubectl's copy of the old
// object is not carried over.
func TestCoalmineCanaryFromFlagger(t *testing.T) {
	fc := flaggerState("Initialized", nil)[0].(*unstructured.Unstructured)
	fc.SetAnnotations(map[string]string{"kuma.io/mesh": "mesh-a", "kubectl.kubernetes.io/last-applied-configuration": "{}"})
	fc.SetLabels(map[string]string{"team": "a"})
	c, err := coalmineCanaryFrom(fc)
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "alice" || c.Namespace != "apps" || c.Spec.TargetRef.Name != "alice" || c.Spec.Service.Port != 8080 || c.Spec.Analysis.StepWeight != 5 {
		t.Errorf("coalmine Canary %s/%s spec %+v: not Flagger's", c.Namespace, c.Name, c.Spec)
	}
	if c.Annotations["kuma.io/mesh"] != "mesh-a" || c.Labels["team"] != "a" {
		t.Errorf("labels %v annotations %v: want Flagger's", c.Labels, c.Annotations)
	}
	if _, ok := c.Annotations["kubectl.kubernetes.io/last-applied-configuration"]; ok {
		t.Error("kubectl's last-applied-configuration carried over")
	}
	_ = unstructured.SetNestedField(fc.Object, "x", "spec", "notAFlaggerField")
	if _, err := coalmineCanaryFrom(fc); err == nil || !strings.Contains(err.Error(), "notAFlaggerField") {
		t.Errorf("unknown field: err %v, want it named", err)
	}
}
