package rollout

import (
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/rollout/analysis"
)

// kstatusOf computes the Canary's status as Flux's health checks and `wait: true` do.
func kstatusOf(t *testing.T, c *v1beta1.Canary) *status.Result {
	t.Helper()
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(c)
	if err != nil {
		t.Fatal(err)
	}
	res, err := status.Compute(&unstructured.Unstructured{Object: obj})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// A Canary reads InProgress to kstatus while a revision is analysed, Current once it is
// promoted, and Failed with the rollback's reason after a rollback (DESIGN §4a).
func TestKstatusFollowsTheRollout(t *testing.T) {
	e := newEnv(t, seedCanary(), targetDeployment())
	e.settle()
	if res := kstatusOf(t, e.canary()); res.Status != status.CurrentStatus {
		t.Errorf("Initialized: kstatus %s (%s), want Current", res.Status, res.Message)
	}
	e.ship("alice:2")
	e.runUntil("weight 10", weightIs(10))
	if res := kstatusOf(t, e.canary()); res.Status != status.InProgressStatus {
		t.Errorf("Progressing: kstatus %s (%s), want InProgress", res.Status, res.Message)
	}
	e.runUntil("Succeeded", phaseIs(v1beta1.PhaseSucceeded))
	if res := kstatusOf(t, e.canary()); res.Status != status.CurrentStatus {
		t.Errorf("Succeeded: kstatus %s (%s), want Current", res.Status, res.Message)
	}
	// Abnormal-true conditions are present only while true (Flux's convention).
	for _, typ := range []string{ConditionReconciling, ConditionStalled} {
		if cond := meta.FindStatusCondition(e.canary().Status.Conditions, typ); cond != nil {
			t.Errorf("Succeeded: condition %s kept as %s", typ, cond.Status)
		}
	}
	e.analyzer.fail = func(int) []analysis.Result { return failingSuccessRate() }
	e.ship("alice:3")
	e.runUntil("Failed", phaseIs(v1beta1.PhaseFailed))
	res := kstatusOf(t, e.canary())
	if res.Status != status.FailedStatus || res.Message == "" {
		t.Errorf("Failed: kstatus %s (%s), want Failed with the reason", res.Status, res.Message)
	}
	if meta.FindStatusCondition(e.canary().Status.Conditions, ConditionReconciling) != nil ||
		!meta.IsStatusConditionTrue(e.canary().Status.Conditions, ConditionStalled) {
		t.Errorf("Failed: conditions %v, want Stalled True and no Reconciling", e.canary().Status.Conditions)
	}
}
