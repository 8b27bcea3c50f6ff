package rollout

import (
	"context"
	"fmt"
	"maps"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// Event reasons of a deletion.
const (
	ReasonTerminating    = "Terminating"
	ReasonFinalized      = "Finalized"
	ReasonRouteLeftOver  = "RouteLeftBehind"
	ReasonHandedOver     = "HandedOver"
	routeCleanupDeadline = 2 * time.Minute
)

// finalize undoes the Canary before it goes, acting on exactly what its status says it
// owns:
//  1. the target first (it matters most): unpaused unless the user had paused it,
//     unmanaged, its stable revision set to its template so a lagging webhook holds
//     nothing. When another Canary is waiting for the same Deployment (the opt-in ->
//     explicit Canary hand-over), the target stays paused and managed for it.
//  2. the route: all traffic to primary, then deleted, if it carries coalmine's labels.
//     Best effort and bounded: a missing CRD is gone; an unreachable control plane is
//     retried for routeCleanupDeadline after the deletion, then a Warning names what is
//     left and the finalizer goes. coalmine.dev/skip-route-cleanup: "true" skips it.
//  3. the canary Deployment (controlled by this Canary), once no route it can reach gives
//     it weight: traffic first, as converge does. While the route cannot be set to
//     primary, the canary keeps serving the share the mesh still sends it (found by the
//     chaos run: deleted first, its share of the traffic went to no pod for the outage).
//  4. the Services it created or adopted: released, or deleted with
//     coalmine.dev/delete-services: "true".
//
// A Canary that never acquired its target owns nothing and goes at once. gone reports
// that the finalizer is off and no status is left to write.
func (x *pass) finalize(ctx context.Context) (gone bool, err error) {
	c := x.canary
	if !controllerutil.ContainsFinalizer(c, v1beta1.Finalizer) {
		return true, nil
	}
	own := x.status.Ownership
	if own == nil {
		return x.removeFinalizer(ctx, "this Canary never acquired a Deployment: nothing to restore")
	}
	if x.status.Phase != v1beta1.PhaseTerminating {
		x.transition(v1beta1.PhaseTerminating, "restoring the Deployment and removing the route")
		x.event(corev1.EventTypeNormal, ReasonTerminating, "Finalize", "Canary deleted: restoring Deployment %s and removing the route", own.Target.Name)
		if err := x.writeStatus(ctx); err != nil {
			return false, err
		}
	}
	successor, err := x.successor(ctx)
	if err != nil {
		return false, err
	}
	if err := x.releaseTarget(ctx, successor); err != nil {
		return false, err
	}
	zeroed, left := x.cleanUpRoute(ctx)
	pending := left != "" && x.now.Before(c.DeletionTimestamp.Add(routeCleanupDeadline))
	if zeroed || !pending {
		if err := x.deleteCanaryDeployment(ctx); err != nil {
			return false, err
		}
	}
	if pending {
		x.requeueAfter(10 * time.Second)
		x.stop("RouteCleanupPending", "removing the route failed, retrying until %s after the deletion, then leaving it (annotation %s: \"true\" skips it): %s",
			routeCleanupDeadline, v1beta1.AnnotationSkipCleanup, left)
		return false, nil
	}
	if left != "" {
		x.event(corev1.EventTypeWarning, ReasonRouteLeftOver, "Finalize",
			"Route not removed within %s: %s. Delete it on the mesh control plane by hand; coalmine no longer manages it", routeCleanupDeadline, left)
	}
	deleteServices := c.Annotations[v1beta1.AnnotationDeleteServices] == "true" && successor == ""
	for _, s := range own.Services {
		if err := x.giveBackService(ctx, s.Name, deleteServices && !s.Adopted); err != nil {
			return false, err
		}
	}
	how := map[bool]string{true: "deleted", false: "kept"}[deleteServices]
	if successor != "" {
		x.event(corev1.EventTypeNormal, ReasonHandedOver, "Finalize", "Deployment %s stays paused and managed for Canary %s", own.Target.Name, successor)
	}
	return x.removeFinalizer(ctx, fmt.Sprintf("Deployment %s restored; route removed; Services %s", own.Target.Name, how))
}

// successor names another live Canary of the same target, which takes over once this one
// is gone.
func (x *pass) successor(ctx context.Context) (string, error) {
	var list v1beta1.CanaryList
	if err := x.r.Client.List(ctx, &list, client.InNamespace(x.canary.Namespace),
		client.MatchingFields{IndexTargetName: x.status.Ownership.Target.Name}); err != nil {
		return "", fmt.Errorf("list canaries of deployment %s: %w", x.status.Ownership.Target.Name, err)
	}
	for _, o := range list.Items {
		if o.UID != x.canary.UID && o.DeletionTimestamp.IsZero() {
			return o.Name, nil
		}
	}
	return "", nil
}

// releaseTarget gives the target back (or keeps it held for a successor).
func (x *pass) releaseTarget(ctx context.Context, successor string) error {
	own := x.status.Ownership
	target := &appsv1.Deployment{}
	err := x.r.Client.Get(ctx, client.ObjectKey{Namespace: x.canary.Namespace, Name: own.Target.Name}, target)
	if apierrors.IsNotFound(err) || (err == nil && string(target.UID) != own.Target.UID && own.Target.UID != "") {
		return nil // gone, or a Deployment this Canary never acquired
	}
	if err != nil {
		return fmt.Errorf("get target deployment: %w", err)
	}
	if successor != "" {
		return nil
	}
	x.target = target
	labels, annotations := maps.Clone(target.Labels), maps.Clone(target.Annotations)
	delete(labels, v1beta1.LabelManaged)
	delete(annotations, v1beta1.AnnotationRevision)
	if annotations == nil {
		annotations = map[string]string{}
	}
	annotations[v1beta1.AnnotationStableRevision] = x.revision()
	return x.writeTarget(ctx, labels, annotations, own.UserPaused)
}

// cleanUpRoute removes the recorded route; it says what is left, "" when nothing is, and
// whether the route gives the canary nothing any more (on primary, gone, or skipped on
// request).
func (x *pass) cleanUpRoute(ctx context.Context) (zeroed bool, left string) {
	route := x.status.Ownership.Route
	if route == nil || x.canary.Annotations[v1beta1.AnnotationSkipCleanup] == "true" {
		return true, ""
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	zeroed = true
	if err := x.zeroOwnedRoute(ctx, *route); err != nil {
		zeroed = false
		log.FromContext(ctx).Info("route not set to primary before deletion", "kind", route.Kind, "name", route.Name, "error", err.Error())
	}
	if err := x.deleteOwnedRoute(ctx, *route); err != nil {
		log.FromContext(ctx).Info("route clean-up failed", "kind", route.Kind, "name", route.Name, "error", err.Error())
		return zeroed, fmt.Sprintf("%s %s (mesh %s, %s cluster): %v", route.Kind, route.Name, route.Mesh, route.Cluster, err)
	}
	return true, ""
}

func (x *pass) removeFinalizer(ctx context.Context, note string) (bool, error) {
	orig := x.canary.DeepCopy()
	controllerutil.RemoveFinalizer(x.canary, v1beta1.Finalizer)
	if err := x.r.Client.Patch(ctx, x.canary, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, fmt.Errorf("remove finalizer: %w", err)
	}
	x.r.memo.forget(canaryKey(x.canary))
	x.event(corev1.EventTypeNormal, ReasonFinalized, "Finalize", "%s", note)
	return true, nil
}
