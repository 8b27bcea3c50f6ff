package rollout

import (
	"context"
	"maps"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// TestAdoptionWaitsForReadyTarget: as Flagger leaves an app (the target at 0 replicas, the
// apex and primary Services selecting Flagger's <app>-primary pods), adopting the Services
// would point them at no ready pod. The Canary says so and adopts once the target is
// scaled up and ready.
func TestAdoptionWaitsForReadyTarget(t *testing.T) {
	flaggers := func(name string) *corev1.Service {
		return &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "alice-primary"}, Ports: []corev1.ServicePort{{Port: 8080}}},
		}
	}
	target := targetDeployment()
	target.Spec.Replicas = ptr.To[int32](0)
	e := newEnv(t, seedCanary(), target, flaggers("alice"), flaggers("alice-primary"))
	e.settle()
	ready := meta.FindStatusCondition(e.canary().Status.Conditions, ConditionReady)
	if ready == nil || ready.Status != metav1.ConditionFalse || ready.Reason != "AdoptionUnsafe" {
		t.Fatalf("Ready %+v, want False, AdoptionUnsafe", ready)
	}
	selectors := func() map[string]map[string]string {
		out := map[string]map[string]string{}
		for _, name := range []string{"alice", "alice-primary"} {
			s := &corev1.Service{}
			if err := e.base.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, s); err != nil {
				t.Fatal(err)
			}
			out[name] = s.Spec.Selector
		}
		return out
	}
	for name, sel := range selectors() {
		if !maps.Equal(sel, map[string]string{"app": "alice-primary"}) {
			t.Errorf("Service %s selects %v while the target has no ready pod, want it untouched", name, sel)
		}
	}

	d, _ := e.deployment("alice")
	d.Spec.Replicas = ptr.To[int32](2)
	if err := e.base.Update(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	e.settle()
	c := e.canary()
	if c.Status.Phase != v1beta1.PhaseInitialized || !meta.IsStatusConditionTrue(c.Status.Conditions, ConditionReady) {
		t.Errorf("phase %s conditions %+v after the target is ready, want Initialized and Ready", c.Status.Phase, c.Status.Conditions)
	}
	for name, sel := range selectors() {
		if !maps.Equal(sel, map[string]string{"app": "alice"}) {
			t.Errorf("Service %s selects %v after adoption, want the target's pods", name, sel)
		}
	}
}
