package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// converge brings the world to what the recorded status says: the route weight, the
// canary Deployment and the target's pause and marks. It decides nothing and is
// idempotent, so a pass killed after the status write is completed by the next one. The
// order is the safe one: traffic first (away from a canary being removed), then the
// canary Deployment, then the target; a failed route write still marks and holds the
// target (holdTarget), so a release cannot slip past the webhook meanwhile.
func (x *pass) converge(ctx context.Context) error {
	if x.target == nil || x.notReady != nil {
		return nil
	}
	if err := x.convergeRoute(ctx, x.desiredWeight()); err != nil {
		// A route that takes no write (a mesh control plane down, or its webhook refusing)
		// must not leave the target unguarded: without the managed label the Deployment
		// webhook does not see the next release, which would roll unanalysed (chaos seed
		// 990722065). The target is marked and held anyway, never released.
		if terr := x.holdTarget(ctx); terr != nil {
			return errors.Join(err, terr)
		}
		return err
	}
	if err := x.convergeCanary(ctx); err != nil {
		return err
	}
	return x.convergeTarget(ctx)
}

// desiredWeight is the canary's share of the route in the recorded phase.
func (x *pass) desiredWeight() int {
	switch x.status.Phase {
	case v1beta1.PhaseProgressing, v1beta1.PhaseWaitingPromotion, v1beta1.PhasePromoting, v1beta1.PhaseFinalising:
		if x.canary.Strategy() == v1beta1.StrategyBlueGreen && x.status.Phase.Analysing() && x.status.CanaryWeight != 100 {
			// Blue/green: no user request reaches the canary until the switch, whatever
			// weight a status from before a spec change holds.
			return 0
		}
		return x.status.CanaryWeight
	}
	return 0
}

// convergeRoute writes the route when the weight this process last applied differs from
// the desired one, when it applied none yet (a new process: once, a no-op on the server
// when it is already so), or when the route is gone (deleted by hand or by a control
// plane): a missing route is restored in the same pass, not at the next step.
func (x *pass) convergeRoute(ctx context.Context, w int) error {
	key := canaryKey(x.canary)
	if applied, ok := x.r.memo.applied(key); ok && applied == w {
		found, err := x.routeExists(ctx)
		if err != nil {
			return fmt.Errorf("read route: %w", err)
		}
		if found {
			return nil
		}
		log.FromContext(ctx).Info("route missing, recreating", "weight", w)
	}
	if err := x.router.SetWeights(ctx, x.rt, w); err != nil {
		return fmt.Errorf("set canary weight %d: %w", w, err)
	}
	x.r.memo.setApplied(key, appliedWeight{weight: w, stamp: x.stamp().Time, lag: x.r.Clock.Since(x.now)})
	return nil
}

// routeExists reads the route's metadata from the cache where this cluster holds the
// routes, else asks the router (the Global control plane's cluster).
func (x *pass) routeExists(ctx context.Context) (bool, error) {
	if !x.r.cachedRoutes[x.kind] {
		o, err := x.router.Observe(ctx, x.rt)
		return o.Found, err
	}
	obj := x.router.Object(x.rt)
	if err := x.r.Client.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// convergeCanary keeps the canary Deployment at the analysed revision while Progressing,
// leaves it serving its weight while the target rolls (Promoting, Finalising), and
// removes it in every other phase.
func (x *pass) convergeCanary(ctx context.Context) error {
	switch x.status.Phase {
	case v1beta1.PhaseProgressing, v1beta1.PhaseWaitingPromotion:
		return x.ensureCanaryDeployment(ctx, x.status.CanaryRevision)
	case v1beta1.PhasePromoting, v1beta1.PhaseFinalising:
		return nil
	}
	return x.deleteCanaryDeployment(ctx)
}

// convergeTarget keeps coalmine's marks on the target (managed label, stable revision)
// and its pause as the phase needs:
//   - a revision held (Waiting, Progressing, Failed, live != stable): paused, the held
//     revision annotated;
//   - promoting: unpaused, the promoted revision stable;
//   - steady: a pause coalmine made for a revision that is no longer live is released;
//     the user's own pause is left alone.
func (x *pass) convergeTarget(ctx context.Context) error {
	labels, annotations, paused := x.targetMarks()
	return x.writeTarget(ctx, labels, annotations, paused)
}

// holdTarget is convergeTarget that never unpauses: while the route lags behind the
// status, the target only gets its marks and holds.
func (x *pass) holdTarget(ctx context.Context) error {
	labels, annotations, paused := x.targetMarks()
	return x.writeTarget(ctx, labels, annotations, paused || x.target.Spec.Paused)
}

// targetMarks are the target's labels, annotations and pause as the phase needs them
// (convergeTarget).
func (x *pass) targetMarks() (labels, annotations map[string]string, paused bool) {
	// The marks are worked out on copies of the maps only: most passes change nothing,
	// and a deep copy of the Deployment on every pass was garbage for nothing.
	d := &appsv1.Deployment{ObjectMeta: x.target.ObjectMeta, Spec: appsv1.DeploymentSpec{Paused: x.target.Spec.Paused}}
	d.Labels, d.Annotations = maps.Clone(x.target.Labels), maps.Clone(x.target.Annotations)
	live := x.revision()
	stable := x.stableRevision()
	setManaged(d)
	switch x.status.Phase {
	case v1beta1.PhasePromoting, v1beta1.PhaseFinalising:
		if live == x.status.CanaryRevision {
			stable = x.status.CanaryRevision
			d.Spec.Paused = false
			setAnnotation(d, v1beta1.AnnotationRevision, live)
		}
	case v1beta1.PhaseWaiting, v1beta1.PhaseProgressing, v1beta1.PhaseWaitingPromotion, v1beta1.PhaseFailed:
		if live != stable {
			if !d.Spec.Paused && x.status.Phase == v1beta1.PhaseProgressing {
				// The webhook pauses every template change of a managed Deployment; one
				// that got through (webhook missing or bypassed, a re-created target) is
				// held now. Pods already rolled stay.
				x.event(corev1.EventTypeWarning, ReasonUnguarded, "Analyse",
					"Deployment %s runs revision %s without being paused (is coalmine's webhook installed, the namespace labelled?); paused it now", d.Name, live)
			}
			d.Spec.Paused = true
			setAnnotation(d, v1beta1.AnnotationRevision, live)
		}
	default:
		if x.heldByCoalmine() && live == stable {
			d.Spec.Paused = x.status.Ownership != nil && x.status.Ownership.UserPaused
			setAnnotation(d, v1beta1.AnnotationRevision, live)
		}
	}
	setAnnotation(d, v1beta1.AnnotationStableRevision, stable)
	return d.Labels, d.Annotations, d.Spec.Paused
}

// writeTarget patches the target when its labels, annotations or pause differ from these,
// and remembers the write. The merge patch carries only those and the resourceVersion
// read (a conflict, as an update would have), and asks for metadata back: an update sent
// and decoded the whole Deployment, managedFields included, ~10 KiB of garbage a write.
// The target is then the one read with these marks, the written resourceVersion and
// generation: the write changes nothing else, and its status is the controller's.
func (x *pass) writeTarget(ctx context.Context, labels, annotations map[string]string, paused bool) error {
	if paused == x.target.Spec.Paused && equality.Semantic.DeepEqual(labels, x.target.Labels) &&
		equality.Semantic.DeepEqual(annotations, x.target.Annotations) {
		return nil
	}
	patch, err := targetPatch(x.target, labels, annotations, paused)
	if err != nil {
		return fmt.Errorf("update deployment %s: %w", x.target.Name, err)
	}
	written := &metav1.PartialObjectMetadata{}
	written.SetGroupVersionKind(appsv1.SchemeGroupVersion.WithKind("Deployment"))
	written.Namespace, written.Name = x.target.Namespace, x.target.Name
	if err := x.r.Client.Patch(ctx, written, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return fmt.Errorf("update deployment %s: %w", x.target.Name, err)
	}
	d := x.target.DeepCopy()
	d.Labels, d.Annotations, d.Spec.Paused = labels, annotations, paused
	d.ResourceVersion, d.Generation = written.ResourceVersion, written.Generation
	x.r.memo.wrote(memoTarget, client.ObjectKeyFromObject(d), d.ResourceVersion)
	x.target = d
	return nil
}

// targetPatch is the merge patch from d to these labels, annotations and pause, on
// condition of d's resourceVersion; a key d has and these lack is null (removed).
func targetPatch(d *appsv1.Deployment, labels, annotations map[string]string, paused bool) ([]byte, error) {
	meta := map[string]any{"resourceVersion": d.ResourceVersion}
	if p := mapPatch(d.Labels, labels); p != nil {
		meta["labels"] = p
	}
	if p := mapPatch(d.Annotations, annotations); p != nil {
		meta["annotations"] = p
	}
	return json.Marshal(map[string]any{"metadata": meta, "spec": map[string]any{"paused": paused}})
}

// mapPatch is the merge patch of a string map from a to b (nil values are nulls), nil
// when they are equal.
func mapPatch(a, b map[string]string) map[string]*string {
	var p map[string]*string
	set := func(k string, v *string) {
		if p == nil {
			p = map[string]*string{}
		}
		p[k] = v
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			set(k, nil)
		}
	}
	for k, v := range b {
		if old, ok := a[k]; !ok || old != v {
			set(k, &v)
		}
	}
	return p
}

func setAnnotation(d *appsv1.Deployment, k, v string) {
	if d.Annotations == nil {
		d.Annotations = map[string]string{}
	}
	d.Annotations[k] = v
}

func setManaged(d *appsv1.Deployment) {
	if d.Labels == nil {
		d.Labels = map[string]string{}
	}
	d.Labels[v1beta1.LabelManaged] = "true"
}
