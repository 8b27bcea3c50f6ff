package rollout

import (
	"encoding/json"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestTargetPatchCarriesOnlyTheMarks: the target's merge patch names the labels and
// annotations that change (a removed one as null), the pause, and the resourceVersion
// read; nothing of the spec beyond the pause.
func TestTargetPatchCarriesOnlyTheMarks(t *testing.T) {
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{ResourceVersion: "42",
		Labels:      map[string]string{"app": "alice", "gone": "x"},
		Annotations: map[string]string{"keep": "1", "change": "old"}}}
	patch, err := targetPatch(d, map[string]string{"app": "alice", "new": "y"},
		map[string]string{"keep": "1", "change": "new"}, true)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(patch, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"metadata": map[string]any{
			"resourceVersion": "42",
			"labels":          map[string]any{"gone": nil, "new": "y"},
			"annotations":     map[string]any{"change": "new"},
		},
		"spec": map[string]any{"paused": true},
	}
	if a, b := mustJSON(t, got), mustJSON(t, want); a != b {
		t.Errorf("patch %s\nwant  %s", a, b)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestTargetWriteConflictsOnAStaleRead: a pass that read the target before someone
// else's write fails its own, as an update did, instead of writing over it; the pass's
// target is left as read.
func TestTargetWriteConflictsOnAStaleRead(t *testing.T) {
	e := newEnv(t, seedCanary(), targetDeployment())
	e.settle()
	read := e.target()
	stored := e.target()
	stored.Labels["team"] = "theirs"
	if err := e.base.Update(t.Context(), stored); err != nil {
		t.Fatal(err)
	}
	x := &pass{r: e.r, target: read}
	err := x.writeTarget(t.Context(), read.Labels, read.Annotations, !read.Spec.Paused)
	if !apierrors.IsConflict(err) {
		t.Fatalf("writeTarget on a stale read: %v, want a conflict", err)
	}
	if x.target != read || e.target().Labels["team"] != "theirs" || e.target().Spec.Paused != read.Spec.Paused {
		t.Errorf("a conflicting write changed the target: paused=%v labels=%v", e.target().Spec.Paused, e.target().Labels)
	}
}
