package rollout

import (
	"context"
	"fmt"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// finalize undoes the Canary before it goes: all traffic to primary, route and canary
// Deployment deleted, the target unpaused and unmanaged, the Services kept (without owner
// references, or the garbage collector would take them) unless coalmine.dev/delete-services
// is "true". gone reports that the finalizer is off and no status is left to write.
//
// The target keeps a coalmine.dev/stable-revision equal to its current template: should a
// webhook still see it (an informer lagging behind the removed label), template and stable
// revision agree and nothing is paused. A canary that was being analysed rolls out with the
// unpause: deleting the Canary removes the guard.
func (x *pass) finalize(ctx context.Context) (gone bool, err error) {
	c := x.canary
	if !controllerutil.ContainsFinalizer(c, v1beta1.Finalizer) {
		return true, nil
	}
	logger := log.FromContext(ctx)
	if x.status.Phase != v1beta1.PhaseTerminating {
		x.setPhase(v1beta1.PhaseTerminating, "restoring the Deployment and removing the route")
		x.event(corev1.EventTypeNormal, ReasonTerminating, "Finalize", "Canary deleted: restoring Deployment %s and removing the route", c.Spec.TargetRef.Name)
		if err := x.writeStatus(ctx); err != nil {
			return false, err
		}
	}

	if rt := x.r.Routers[x.r.routeKind(c)]; rt != nil {
		mesh, err := x.r.meshName(ctx, c)
		if err != nil {
			return false, err
		}
		x.rt = routeTarget(c, mesh)
		w, found, err := rt.Weights(ctx, x.rt)
		if err != nil {
			return false, fmt.Errorf("read route: %w", err)
		}
		if found && w != 0 {
			if err := rt.SetWeights(ctx, x.rt, 0); err != nil {
				return false, fmt.Errorf("route all traffic to primary: %w", err)
			}
		}
		if err := rt.Delete(ctx, x.rt); err != nil {
			return false, fmt.Errorf("delete route: %w", err)
		}
	} else {
		logger.Info("no router for the route kind, leaving any route in place", "kind", x.r.routeKind(c))
	}

	if err := x.deleteCanaryDeployment(ctx); err != nil {
		return false, err
	}

	target := &appsv1.Deployment{}
	err = x.r.Client.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: c.Spec.TargetRef.Name}, target)
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return false, fmt.Errorf("get target deployment: %w", err)
	default:
		x.target = target
		cur := x.revision()
		if err := x.updateTarget(ctx, func(d *appsv1.Deployment) {
			d.Spec.Paused = false
			delete(d.Labels, v1beta1.LabelManaged)
			delete(d.Annotations, v1beta1.AnnotationRevision)
			setAnnotation(d, v1beta1.AnnotationStableRevision, cur)
		}); err != nil {
			return false, err
		}
	}

	deleteServices := c.Annotations[v1beta1.AnnotationDeleteServices] == "true"
	for _, name := range []string{c.ApexName(), c.PrimaryName(), c.CanaryName()} {
		svc := &corev1.Service{}
		err := x.r.Client.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: name}, svc)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("get service %s: %w", name, err)
		}
		if !metav1.IsControlledBy(svc, c) {
			continue
		}
		if deleteServices {
			if err := x.r.Client.Delete(ctx, svc); client.IgnoreNotFound(err) != nil {
				return false, fmt.Errorf("delete service %s: %w", name, err)
			}
			continue
		}
		svc.OwnerReferences = slices.DeleteFunc(svc.OwnerReferences, func(o metav1.OwnerReference) bool { return o.UID == c.UID })
		if err := x.r.Client.Update(ctx, svc); err != nil {
			return false, fmt.Errorf("release service %s: %w", name, err)
		}
	}

	controllerutil.RemoveFinalizer(c, v1beta1.Finalizer)
	if err := x.r.Client.Update(ctx, c); err != nil {
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, fmt.Errorf("remove finalizer: %w", err)
	}
	x.event(corev1.EventTypeNormal, ReasonFinalized, "Finalize", "Deployment %s restored and unpaused; route removed; Services %s",
		c.Spec.TargetRef.Name, map[bool]string{true: "deleted", false: "kept"}[deleteServices])
	logger.Info("canary finalized")
	return true, nil
}
