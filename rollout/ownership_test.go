package rollout

import (
	"slices"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// TestFinalizerPatchKeepsOtherFinalizers: the finalizer is added by a merge patch of the
// list alone, so it must keep the finalizers already there and carry the resourceVersion
// it read: a finalizer someone adds after the read makes the patch conflict instead of
// being dropped.
func TestFinalizerPatchKeepsOtherFinalizers(t *testing.T) {
	const theirs = "example.com/keep"
	c := seedCanary()
	c.Finalizers = []string{theirs}
	e := newEnv(t, c, targetDeployment())
	e.settle()
	if got := e.canary().Finalizers; !slices.Equal(got, []string{theirs, v1beta1.Finalizer}) {
		t.Fatalf("finalizers %v, want %q kept and coalmine's added", got, theirs)
	}

	t.Run("a finalizer added after the read conflicts", func(t *testing.T) {
		read := e.canary()
		read.Finalizers = []string{theirs}
		stored := e.canary()
		stored.Finalizers = append(stored.Finalizers, "example.com/late")
		if err := e.base.Update(t.Context(), stored); err != nil {
			t.Fatal(err)
		}
		x := &pass{r: e.r, canary: read}
		if err := x.addFinalizer(t.Context()); !apierrors.IsConflict(err) {
			t.Fatalf("addFinalizer on a Canary read before another finalizer came: %v, want a conflict", err)
		}
		var now v1beta1.Canary
		if err := e.base.Get(t.Context(), client.ObjectKeyFromObject(stored), &now); err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(now.Finalizers, "example.com/late") {
			t.Errorf("finalizers %v: the late finalizer was dropped", now.Finalizers)
		}
	})
}
