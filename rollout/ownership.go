package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/rollout/router"
)

// Event reasons of ownership.
const (
	ReasonAcquired       = "Acquired"
	ReasonTargetReplaced = "TargetReplaced"
	ReasonRouteMoved     = "RouteMoved"
)

// acquire makes sure the Canary owns what it is about to touch, and records it in status
// before touching anything: a Canary that never acquired its target (a duplicate, one
// whose Services or route belong to someone else) has no finalizer and changes nothing,
// so deleting it cannot un-guard the real one. done reports that the pass wrote the
// acquisition and ends here; the next pass carries on.
func (x *pass) acquire(ctx context.Context) (done bool, err error) {
	own := x.status.Ownership
	if x.target == nil {
		if own == nil {
			x.stop("TargetNotFound", "Deployment %s not found", x.canary.Spec.TargetRef.Name)
		}
		return false, nil
	}
	if own == nil {
		return x.acquireTarget(ctx)
	}
	if x.canary.Spec.TargetRef.Name != own.Target.Name {
		x.degrade("TargetChanged", "spec.targetRef.name is immutable: this Canary guards Deployment %s; to guard %s, delete this Canary (which releases %s) and create one for it",
			own.Target.Name, x.canary.Spec.TargetRef.Name, own.Target.Name)
	}
	if own.Target.UID != string(x.target.UID) {
		// Deleted and re-created (a Flux recreate, a kubectl replace --force): the new
		// object carries none of coalmine's marks and the webhook did not see it. Record
		// it; converge pauses it again at once if a revision is held.
		x.event(corev1.EventTypeWarning, ReasonTargetReplaced, "Acquire",
			"Deployment %s was re-created (uid %s, was %s): guarding the new object; pods it started before this pass run revision %s",
			x.target.Name, x.target.UID, own.Target.UID, x.revision())
		own.Target.UID = string(x.target.UID)
		own.UserPaused = false
		// The new object numbers its ReplicaSets from 1 again: the recorded number is the
		// old object's and says nothing about the new one.
		x.status.StableDeploymentRevision = ""
	}
	if !controllerutil.ContainsFinalizer(x.canary, v1beta1.Finalizer) {
		if err := x.addFinalizer(ctx); err != nil {
			return false, err
		}
	}
	return false, x.moveRoute(ctx)
}

// acquireTarget checks that nothing else guards the target or owns the names this Canary
// needs, then records the target and route in status, then adds the finalizer.
func (x *pass) acquireTarget(ctx context.Context) (bool, error) {
	c := x.canary
	if other, err := x.r.olderCanaryOf(ctx, c); err != nil {
		return false, err
	} else if other != "" {
		// Two Canaries moving one Deployment would fight; the first one keeps it. This one
		// is woken when the other goes (siblingHandler).
		x.stop("DuplicateTarget", "Deployment %s is already guarded by Canary %s; this Canary touches nothing until that one is deleted", x.target.Name, other)
		x.requeueAfter(30 * time.Second) // a safety net for a missed deletion event
		return false, nil
	}
	for _, name := range []string{c.ApexName(), c.PrimaryName(), c.CanaryName()} {
		svc := &corev1.Service{}
		err := x.r.Client.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: name}, svc)
		if client.IgnoreNotFound(err) != nil {
			return false, fmt.Errorf("get service %s: %w", name, err)
		}
		if err == nil {
			if ref := metav1.GetControllerOf(svc); ref != nil && ref.UID != c.UID {
				x.stop("ServiceConflict", "Service %s is controlled by %s %s: this Canary touches nothing; choose another spec.service.name or delete that Service", name, ref.Kind, ref.Name)
				return false, nil
			}
		}
	}
	if err := x.router.Acquire(ctx, x.rt); err != nil {
		if errors.Is(err, router.ErrNotOurs) {
			x.stop("RouteConflict", "%v", err)
			return false, nil
		}
		return false, fmt.Errorf("check route: %w", err)
	}
	route := x.ownedRoute()
	x.status.Ownership = &v1beta1.CanaryOwnership{
		Target: v1beta1.OwnedObject{Name: x.target.Name, UID: string(x.target.UID)},
		// A pause coalmine did not make is the user's: finalize gives it back. A target
		// already managed is being handed over from another Canary, which held it.
		UserPaused: x.target.Spec.Paused && x.target.Labels[v1beta1.LabelManaged] != "true",
		Route:      &route,
	}
	if x.status.Phase != v1beta1.PhaseInitializing {
		// A Canary past initialization (a status from before ownership was recorded):
		// say so. A new one says it in its Initialized event; client-go keeps every event
		// for minutes, and one more per Canary was ~1.5 KiB of heap each (make bench).
		x.event(corev1.EventTypeNormal, ReasonAcquired, "Acquire", "Guarding Deployment %s through %s %s", x.target.Name, route.Kind, route.Name)
	}
	x.setReady()
	if err := x.writeStatus(ctx); err != nil {
		return false, err
	}
	if err := x.addFinalizer(ctx); err != nil {
		return false, err
	}
	x.requeueAfter(time.Second)
	return true, nil
}

// addFinalizer adds coalmine's finalizer by a merge patch of the finalizer list alone,
// on condition of the resourceVersion read (a merge patch replaces the whole list, so
// without it a finalizer someone added meanwhile would be dropped). A patch computed by
// diffing the whole Canary (client.MergeFrom) and decoding the answer was ~60 KiB of
// garbage per Canary (make bench's allocation profile).
func (x *pass) addFinalizer(ctx context.Context) error {
	if controllerutil.ContainsFinalizer(x.canary, v1beta1.Finalizer) {
		return nil
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"finalizers":      append(slices.Clone(x.canary.Finalizers), v1beta1.Finalizer),
		"resourceVersion": x.canary.ResourceVersion,
	}})
	if err != nil {
		return fmt.Errorf("add finalizer: %w", err)
	}
	// Metadata back, not the whole Canary (managedFields included), as writeStatus.
	written := &metav1.PartialObjectMetadata{}
	written.SetGroupVersionKind(v1beta1.GroupVersion.WithKind("Canary"))
	written.Namespace, written.Name = x.canary.Namespace, x.canary.Name
	if err := x.r.Client.Patch(ctx, written, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return fmt.Errorf("add finalizer: %w", err)
	}
	x.canary.Finalizers, x.canary.ResourceVersion = written.Finalizers, written.ResourceVersion
	x.r.memo.wrote(memoCanary, client.ObjectKeyFromObject(x.canary), x.canary.ResourceVersion)
	return nil
}

// ownedRoute describes the route of this pass's route kind and target.
func (x *pass) ownedRoute() v1beta1.OwnedRoute {
	ref := x.router.Ref(x.rt)
	cluster := "local"
	if x.r.RemoteRouteKinds[x.kind] {
		cluster = "mesh"
	}
	return v1beta1.OwnedRoute{Kind: ref.Kind, Name: ref.Name, Namespace: ref.Namespace, Mesh: ref.Mesh, Service: x.rt.Apex, Cluster: cluster}
}

// moveRoute follows a change of route kind, mesh or apex name: the new route is acquired
// and recorded, the old one (ours only) deleted, best effort: a failure to delete it is
// a Warning, not a stuck Canary.
func (x *pass) moveRoute(ctx context.Context) error {
	own := x.status.Ownership
	want := x.ownedRoute()
	if own.Route != nil && *own.Route == want {
		return nil
	}
	if err := x.router.Acquire(ctx, x.rt); err != nil {
		if errors.Is(err, router.ErrNotOurs) {
			x.stop("RouteConflict", "%v", err)
			return nil
		}
		return fmt.Errorf("check route: %w", err)
	}
	if old := own.Route; old != nil {
		if err := x.deleteOwnedRoute(ctx, *old); err != nil {
			x.event(corev1.EventTypeWarning, ReasonRouteMoved, "Acquire", "Could not delete the old %s %s: %v; delete it by hand", old.Kind, old.Name, err)
		} else {
			x.event(corev1.EventTypeNormal, ReasonRouteMoved, "Acquire", "Route moved from %s %s to %s %s", old.Kind, old.Name, want.Kind, want.Name)
		}
	}
	own.Route = &want
	x.r.memo.forget(client.ObjectKeyFromObject(x.canary))
	return nil
}

// ownedRouteTarget is the router and Target of a route the status records.
func (x *pass) ownedRouteTarget(route v1beta1.OwnedRoute) (router.Router, router.Target, error) {
	rt := x.r.Routers[route.Kind]
	if rt == nil {
		return nil, router.Target{}, fmt.Errorf("no router for route kind %q", route.Kind)
	}
	apex := route.Service
	if apex == "" {
		apex = x.canary.ApexName()
	}
	return rt, router.Target{
		Namespace: x.canary.Namespace, Apex: apex, Primary: apex + v1beta1.PrimarySuffix, Canary: apex + v1beta1.CanarySuffix,
		Port: x.canary.Spec.Service.Port, Mesh: route.Mesh, CanaryName: x.canary.Name,
	}, nil
}

// deleteOwnedRoute deletes the route the status records (the router deletes only a
// route carrying coalmine's labels for this Canary).
func (x *pass) deleteOwnedRoute(ctx context.Context, route v1beta1.OwnedRoute) error {
	rt, t, err := x.ownedRouteTarget(route)
	if err != nil {
		return err
	}
	if err := rt.Delete(ctx, t); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}

// zeroOwnedRoute sends all traffic of a recorded route to primary, if it is ours and not
// there yet.
func (x *pass) zeroOwnedRoute(ctx context.Context, route v1beta1.OwnedRoute) error {
	rt, t, err := x.ownedRouteTarget(route)
	if err != nil {
		return err
	}
	o, err := rt.Observe(ctx, t)
	if err != nil || !o.Found || !o.Ours || o.Weight == 0 {
		return err
	}
	return rt.SetWeights(ctx, t, 0)
}

func canaryKey(c *v1beta1.Canary) types.NamespacedName {
	return types.NamespacedName{Namespace: c.Namespace, Name: c.Name}
}
