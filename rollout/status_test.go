package rollout

import (
	"encoding/json"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// The status patch carries the status alone, and applied to the stored Canary it gives
// exactly the new status: fields the pass cleared are removed (a merge patch that only
// added would keep a stale failedRevision or condition), the spec is untouched.
func TestStatusPatchClearsWhatThePassClearedAndLeavesTheSpec(t *testing.T) {
	stored := &v1beta1.Canary{
		ObjectMeta: metav1.ObjectMeta{Name: "alice", Namespace: "apps"},
		Spec:       v1beta1.CanarySpec{TargetRef: v1beta1.LocalObjectReference{Name: "alice"}},
		Status: v1beta1.CanaryStatus{
			Phase: v1beta1.PhaseProgressing, CanaryWeight: 30, FailedRevision: "old", CanaryRevision: "r2",
			Ownership: &v1beta1.CanaryOwnership{
				Target: v1beta1.OwnedObject{Name: "alice", UID: "u1"}, UserPaused: true,
				Route: &v1beta1.OwnedRoute{Kind: "TrafficRoute", Name: "alice", Service: "alice"},
			},
			Conditions: []metav1.Condition{
				{Type: ConditionPromoted, Status: metav1.ConditionUnknown, Reason: "Progressing"},
				{Type: ConditionRouteSynced, Status: metav1.ConditionTrue, Reason: "Synced"},
			},
		},
	}
	next := v1beta1.CanaryStatus{
		Phase: v1beta1.PhaseSucceeded, CanaryRevision: "r2",
		Ownership: &v1beta1.CanaryOwnership{
			Target: v1beta1.OwnedObject{Name: "alice", UID: "u1"},
			Route:  &v1beta1.OwnedRoute{Kind: "TrafficRoute", Name: "alice"},
		},
		Conditions: []metav1.Condition{{Type: ConditionPromoted, Status: metav1.ConditionTrue, Reason: "Succeeded"}},
	}
	patch, err := statusPatch(&stored.Status, &next)
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(patch, &top); err != nil || len(top) != 1 || top["status"] == nil {
		t.Fatalf("patch %s: want only a status key (%v)", patch, err)
	}
	doc, err := json.Marshal(stored)
	if err != nil {
		t.Fatal(err)
	}
	merged, err := jsonpatch.MergePatch(doc, patch)
	if err != nil {
		t.Fatal(err)
	}
	var got v1beta1.Canary
	if err := json.Unmarshal(merged, &got); err != nil {
		t.Fatal(err)
	}
	if got.Status.FailedRevision != "" || got.Status.CanaryWeight != 0 || got.Status.Phase != v1beta1.PhaseSucceeded {
		t.Errorf("status after patch = %+v; want failedRevision and weight cleared, phase Succeeded", got.Status)
	}
	if len(got.Status.Conditions) != 1 || got.Status.Conditions[0].Type != ConditionPromoted {
		t.Errorf("conditions after patch = %+v; want only Promoted", got.Status.Conditions)
	}
	if own := got.Status.Ownership; own == nil || own.UserPaused || own.Route == nil || own.Route.Service != "" || own.Target.UID != "u1" {
		t.Errorf("ownership after patch = %+v; want userPaused and route.service cleared inside it, the rest kept", own)
	}
	if got.Spec.TargetRef.Name != "alice" {
		t.Errorf("spec after patch = %+v; want it untouched", got.Spec)
	}
}
