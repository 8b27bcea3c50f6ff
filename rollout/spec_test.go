package rollout

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// TestLoopReportsInvalidSpec: a Canary with a refused Flagger field that got past the
// fail-open webhook is reported (Ready=False, reason InvalidSpec, the webhook's message)
// and nothing is done for it: no Services, no route, the target untouched. Removing the
// field lets it initialise.
func TestLoopReportsInvalidSpec(t *testing.T) {
	c := seedCanary()
	c.Spec.Analysis.Mirror = true
	c.Spec.Service.OtherProviderRouting = &v1beta1.OtherProviderRouting{Retries: &v1beta1.HTTPRetry{Attempts: 3}}
	e := newEnv(t, c, targetDeployment())
	e.settle()

	got := e.canary()
	ready := meta.FindStatusCondition(got.Status.Conditions, ConditionReady)
	if ready == nil || ready.Status != "False" || ready.Reason != ReasonInvalidSpec {
		t.Fatalf("Ready %+v, want False %s", ready, ReasonInvalidSpec)
	}
	for _, want := range v1beta1.UnsupportedFields(c) {
		if !strings.Contains(ready.Message, want.Error()) {
			t.Errorf("Ready message %q lacks the webhook's %q", ready.Message, want.Error())
		}
	}
	for _, field := range []string{"spec.analysis.mirror", "spec.service.retries"} {
		if !strings.Contains(ready.Message, field) {
			t.Errorf("Ready message %q does not name %s", ready.Message, field)
		}
	}
	if _, ok := e.router.weight("alice"); ok {
		t.Error("a route was written for an invalid Canary")
	}
	if d := e.target(); d.Labels[v1beta1.LabelManaged] != "" {
		t.Errorf("target labelled %v for an invalid Canary", d.Labels)
	}
	if got.Status.Ownership != nil || len(got.Finalizers) > 0 {
		t.Errorf("invalid Canary acquired: ownership %+v finalizers %v", got.Status.Ownership, got.Finalizers)
	}

	got.Spec.Analysis.Mirror = false
	got.Spec.Service.OtherProviderRouting = nil
	if err := e.base.Update(t.Context(), got); err != nil {
		t.Fatal(err)
	}
	e.settle()
	if p := e.phase(); p != v1beta1.PhaseInitialized {
		t.Fatalf("phase %s after the fields were removed, want Initialized", p)
	}
	if !meta.IsStatusConditionTrue(e.canary().Status.Conditions, ConditionReady) {
		t.Errorf("Ready not true after the fields were removed: %+v", e.canary().Status.Conditions)
	}
}
