package rollout

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/rollout/workload"
)

// Event reasons of the Services.
const (
	ReasonAdopted      = "AdoptedService"
	ReasonBareServices = "BareServices"
	ReasonReleased     = "ReleasedService"
)

// ensureServices creates or corrects the apex, primary and canary Services, adopting a
// Service of the same name that no other controller owns, and records each in status.
// Services the status records under names the Canary no longer uses (spec.service.name
// changed past the webhook) are released or deleted.
func (x *pass) ensureServices(ctx context.Context) error {
	if x.target == nil {
		return nil
	}
	c := x.canary
	own := x.status.Ownership
	set := workload.ServicesFor(c, x.app, &x.target.Spec.Template.Spec)
	if x.target.Status.ReadyReplicas == 0 {
		if unsafe, err := x.unsafeAdoption(ctx, set.Apex, set.Primary); err != nil || unsafe {
			return err
		}
	}
	desired := set.All()
	for _, want := range desired {
		if err := controllerutil.SetControllerReference(c, want, x.r.Client.Scheme()); err != nil {
			return fmt.Errorf("own service %s: %w", want.Name, err)
		}
		existing := &corev1.Service{}
		err := x.r.Client.Get(ctx, client.ObjectKeyFromObject(want), existing)
		if apierrors.IsNotFound(err) {
			recordService(own, want.Name, false)
			if err := x.r.Client.Create(ctx, want); err != nil {
				return fmt.Errorf("create service %s: %w", want.Name, err)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("get service %s: %w", want.Name, err)
		}
		changed := workload.UpdateService(existing, want)
		if !metav1.IsControlledBy(existing, c) {
			if err := controllerutil.SetControllerReference(c, existing, x.r.Client.Scheme()); err != nil {
				x.stop("ServiceConflict", "Service %s is controlled by another object (%v); delete it or remove its controller reference", existing.Name, err)
				return nil
			}
			changed = true
			recordService(own, existing.Name, true)
			x.event(corev1.EventTypeNormal, ReasonAdopted, "Initialize", "Adopted Service %s: its selector now follows the canary rollout", existing.Name)
		} else {
			recordService(own, existing.Name, false)
		}
		if changed {
			if err := x.r.Client.Update(ctx, existing); err != nil {
				return fmt.Errorf("update service %s: %w", existing.Name, err)
			}
		}
	}
	return x.releaseRenamedServices(ctx, desired)
}

// unsafeAdoption stops the pass when adopting an apex or primary Service would point it
// at no ready pod: it selects other pods now (Flagger's apex and primary select
// <app>-primary's, while Flagger keeps the target at 0 replicas) and the target has none
// ready. It adopts once the target is ready (its status change wakes the Canary).
func (x *pass) unsafeAdoption(ctx context.Context, wants ...*corev1.Service) (bool, error) {
	for _, want := range wants {
		existing := &corev1.Service{}
		err := x.r.Client.Get(ctx, client.ObjectKeyFromObject(want), existing)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("get service %s: %w", want.Name, err)
		}
		if metav1.IsControlledBy(existing, x.canary) || len(existing.Spec.Selector) == 0 || maps.Equal(existing.Spec.Selector, want.Spec.Selector) {
			continue
		}
		x.stop("AdoptionUnsafe", "Service %s selects %v and Deployment %s has no ready pod: adopting it now would leave its callers without an endpoint; scale %s up first (for an app Flagger manages, coalmine migrate does)",
			existing.Name, existing.Spec.Selector, x.target.Name, x.target.Name)
		return true, nil
	}
	return false, nil
}

// recordService adds a Service to the ownership record, once; adopted sticks.
func recordService(own *v1beta1.CanaryOwnership, name string, adopted bool) {
	if own == nil {
		return
	}
	for i := range own.Services {
		if own.Services[i].Name == name {
			own.Services[i].Adopted = own.Services[i].Adopted || adopted
			return
		}
	}
	own.Services = append(own.Services, v1beta1.OwnedService{Name: name, Adopted: adopted})
}

// releaseRenamedServices gives up the recorded Services the Canary no longer names. The
// primary and canary Services it created are its own artefacts and go; the old apex (what
// clients called) is released, or deleted with coalmine.dev/delete-services.
func (x *pass) releaseRenamedServices(ctx context.Context, desired []*corev1.Service) error {
	own := x.status.Ownership
	if own == nil {
		return nil
	}
	// An old apex is a recorded Service whose primary or canary Service is recorded too.
	// Not own.Route.Service: moveRoute already points it at the new apex in this pass.
	apex := map[string]bool{}
	for _, s := range own.Services {
		for _, suffix := range []string{v1beta1.PrimarySuffix, v1beta1.CanarySuffix} {
			if base, ok := strings.CutSuffix(s.Name, suffix); ok {
				apex[base] = true
			}
		}
	}
	keep := own.Services[:0]
	for _, s := range own.Services {
		if slices.ContainsFunc(desired, func(d *corev1.Service) bool { return d.Name == s.Name }) {
			keep = append(keep, s)
			continue
		}
		del := !s.Adopted && (!apex[s.Name] || x.canary.Annotations[v1beta1.AnnotationDeleteServices] == "true")
		if err := x.giveBackService(ctx, s.Name, del); err != nil {
			return err
		}
		x.event(corev1.EventTypeNormal, ReasonReleased, "Rename", "Service %s is no longer this Canary's (spec.service.name changed): %s",
			s.Name, map[bool]string{true: "deleted", false: "released"}[del])
	}
	own.Services = keep
	return nil
}

// giveBackService deletes a Service this Canary controls, or removes its owner reference
// so the garbage collector leaves it. A Service that is not this Canary's is left alone.
func (x *pass) giveBackService(ctx context.Context, name string, del bool) error {
	svc := &corev1.Service{}
	err := x.r.Client.Get(ctx, client.ObjectKey{Namespace: x.canary.Namespace, Name: name}, svc)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get service %s: %w", name, err)
	}
	if !metav1.IsControlledBy(svc, x.canary) {
		return nil
	}
	if del {
		if err := x.r.Client.Delete(ctx, svc, client.Preconditions{UID: &svc.UID}); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("delete service %s: %w", name, err)
		}
		return nil
	}
	svc.OwnerReferences = slices.DeleteFunc(svc.OwnerReferences, func(o metav1.OwnerReference) bool { return o.UID == x.canary.UID })
	if err := x.r.Client.Update(ctx, svc); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("release service %s: %w", name, err)
	}
	return nil
}

// reportBareServices sets BareServices: Services coalmine does not own that select the
// target's pods. Traffic through them bypasses the route, so the analysis never sees it
// and a rollback does not protect it. The webhook refuses new ones; this also catches
// those created while it was down.
func (x *pass) reportBareServices(ctx context.Context) error {
	if x.target == nil {
		return nil
	}
	var list corev1.ServiceList
	// Run on every pass: only the Services no Canary controls, uncopied (read-only).
	// Listing and copying every Service of the namespace was a third of the loop's CPU
	// with 200 canaries in one namespace (make bench). Services of another Canary are
	// that Canary's business, not a bypass of this one.
	if err := x.r.Client.List(ctx, &list, client.InNamespace(x.canary.Namespace),
		client.MatchingFields{IndexServiceController: NoCanary}, client.UnsafeDisableDeepCopy); err != nil {
		return fmt.Errorf("list services: %w", err)
	}
	var bare []string
	for _, svc := range list.Items {
		if workload.SelectsAll(svc.Spec.Selector, x.target.Spec.Template.Labels) {
			bare = append(bare, svc.Name)
		}
	}
	if len(bare) == 0 {
		x.removeCondition(conditionBareServices)
		return nil
	}
	msg := fmt.Sprintf("Services %s select the pods of Deployment %s: their traffic bypasses the canary split; call Service %s instead and delete them",
		strings.Join(bare, ", "), x.target.Name, x.canary.ApexName())
	if old := meta.FindStatusCondition(x.status.Conditions, conditionBareServices); old == nil || old.Message != msg {
		x.event(corev1.EventTypeWarning, ReasonBareServices, "Check", "%s", msg)
	}
	x.setCondition(conditionBareServices, metav1.ConditionTrue, "BareServicesFound", msg)
	return nil
}
