package rollout

import (
	"context"
	"maps"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/rollout/router"
	"github.com/coalmine-dev/coalmine/rollout/workload"
)

// Which watch events start a pass, and of which Canary. A pass costs CPU and apiserver
// round trips, and between events the loop requeues itself at the analysis interval, so
// the watches pass on only what a pass must react to.

// IndexServiceController indexes Services by the Canary that controls them, or
// NoCanary: the bare-Service check of every pass lists only the Services no Canary owns,
// not every Service of the namespace.
const IndexServiceController = "coalmine.dev/service-controller"

// NoCanary is the IndexServiceController value of a Service no Canary controls.
const NoCanary = "-"

// ServiceControllerIndex is the extractor of IndexServiceController; tests register it on
// a fake client.
func ServiceControllerIndex(obj client.Object) []string {
	if name := controllingCanary(obj); name != "" {
		return []string{name}
	}
	return []string{NoCanary}
}

// controllingCanary is the name of the Canary controlling obj, or "".
func controllingCanary(obj client.Object) string {
	if ref := metav1.GetControllerOf(obj); ref != nil && ref.Kind == "Canary" && ref.APIVersion == v1beta1.GroupVersion.String() {
		return ref.Name
	}
	return ""
}

// canaryChanged passes what a pass must see: spec (generation; set deletion bumps it too),
// labels, annotations, finalizers and deletion. Status-only updates, the loop's own
// writes nearly always, do not start a pass.
var canaryChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		o, n := e.ObjectOld, e.ObjectNew
		return o.GetGeneration() != n.GetGeneration() ||
			!maps.Equal(o.GetLabels(), n.GetLabels()) ||
			!maps.Equal(o.GetAnnotations(), n.GetAnnotations()) ||
			!slices.Equal(o.GetFinalizers(), n.GetFinalizers()) ||
			o.GetDeletionTimestamp().IsZero() != n.GetDeletionTimestamp().IsZero()
	},
}

// ownWriteArrived passes the update that carries the loop's own Canary write a pass is
// waiting for (Reconcile found the cache behind it): status-only, so canaryChanged drops it.
func (r *Reconciler) ownWriteArrived() predicate.Funcs {
	return predicate.Funcs{
		CreateFunc:  func(event.CreateEvent) bool { return false },
		DeleteFunc:  func(event.DeleteEvent) bool { return false },
		GenericFunc: func(event.GenericEvent) bool { return false },
		UpdateFunc: func(e event.UpdateEvent) bool {
			n := e.ObjectNew
			return r.memo.arrived(types.NamespacedName{Namespace: n.GetNamespace(), Name: n.GetName()}, n.GetResourceVersion())
		},
	}
}

// routeDeleted passes only deletions of a route.
var routeDeleted = predicate.Funcs{
	CreateFunc:  func(event.CreateEvent) bool { return false },
	UpdateFunc:  func(event.UpdateEvent) bool { return false },
	GenericFunc: func(event.GenericEvent) bool { return false },
}

// deploymentHandler maps Deployment events to Canaries (the target's, or the owner of a
// canary Deployment). Status writes that move nothing a readiness check reads are
// dropped: controller-manager writes several per rollout and Deployment. Those that do
// are what a pass waiting for a Deployment to become ready wakes up on, so such a pass
// need not poll. They only happen while a canary Deployment starts and while the target
// rolls a promoted revision: coalmine's webhook keeps the target paused otherwise.
func (r *Reconciler) deploymentHandler() handler.EventHandler {
	return mapEvents(r.canariesOfDeployment, func(old, new client.Object) []client.Object {
		if deploymentMoved(old, new) {
			return []client.Object{new}
		}
		return nil
	})
}

// deploymentMoved reports whether an update changed what a pass reads of a Deployment:
// spec, labels, annotations, owners, deletion or readiness. A resync changes nothing.
func deploymentMoved(old, new client.Object) bool {
	o, ok1 := old.(*appsv1.Deployment)
	n, ok2 := new.(*appsv1.Deployment)
	switch {
	case !ok1 || !ok2:
		return true
	case o.ResourceVersion == n.ResourceVersion:
		return false
	}
	return o.Generation != n.Generation || !maps.Equal(o.Labels, n.Labels) ||
		!maps.Equal(o.Annotations, n.Annotations) || !slices.Equal(o.OwnerReferences, n.OwnerReferences) ||
		o.DeletionTimestamp.IsZero() != n.DeletionTimestamp.IsZero() ||
		!workload.SameReadiness(o, n)
}

// serviceHandler maps a Service to its Canary when one controls it, and otherwise to the
// Canaries whose pods it selects before or after the change (adoption and the
// BareServices condition): not to every Canary of the namespace.
func (r *Reconciler) serviceHandler() handler.EventHandler {
	return mapEvents(r.canariesOfService, func(old, new client.Object) []client.Object {
		return []client.Object{old, new}
	})
}

// mapEvents is an event handler that queues toCanaries(obj) for the object of a create,
// delete or generic event, and for each object that update picks of an update's old and
// new (none: the update starts no pass).
func mapEvents(toCanaries func(context.Context, client.Object) []reconcile.Request,
	update func(old, new client.Object) []client.Object) handler.EventHandler {
	type queue = workqueue.TypedRateLimitingInterface[reconcile.Request]
	enqueue := func(ctx context.Context, q queue, objs ...client.Object) {
		for _, obj := range objs {
			for _, req := range toCanaries(ctx, obj) {
				q.Add(req)
			}
		}
	}
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q queue) { enqueue(ctx, q, e.Object) },
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q queue) {
			enqueue(ctx, q, update(e.ObjectOld, e.ObjectNew)...)
		},
		DeleteFunc:  func(ctx context.Context, e event.DeleteEvent, q queue) { enqueue(ctx, q, e.Object) },
		GenericFunc: func(ctx context.Context, e event.GenericEvent, q queue) { enqueue(ctx, q, e.Object) },
	}
}

func (r *Reconciler) canariesOfService(ctx context.Context, obj client.Object) []reconcile.Request {
	if name := controllingCanary(obj); name != "" {
		return []reconcile.Request{request(obj.GetNamespace(), name)}
	}
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return r.listRequests(ctx, obj.GetNamespace())
	}
	var list v1beta1.CanaryList
	if err := r.Client.List(ctx, &list, client.InNamespace(svc.Namespace), client.UnsafeDisableDeepCopy); err != nil {
		log.FromContext(ctx).Error(err, "list canaries", "namespace", svc.Namespace)
		return nil
	}
	var out []reconcile.Request
	for i := range list.Items {
		c := &list.Items[i]
		if c.ApexName() == svc.Name {
			// A Service named like the apex is adopted, whatever it selects.
			out = append(out, request(c.Namespace, c.Name))
			continue
		}
		target := &appsv1.Deployment{}
		if err := r.Client.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: c.Spec.TargetRef.Name}, target); err != nil {
			continue
		}
		if workload.SelectsAll(svc.Spec.Selector, target.Spec.Template.Labels) {
			out = append(out, request(c.Namespace, c.Name))
		}
	}
	return out
}

// canariesOfDeployment maps a canary Deployment to its owning Canary and a target
// Deployment to the Canaries that name it.
func (r *Reconciler) canariesOfDeployment(ctx context.Context, obj client.Object) []reconcile.Request {
	if name := controllingCanary(obj); name != "" {
		return []reconcile.Request{request(obj.GetNamespace(), name)}
	}
	var list v1beta1.CanaryList
	// Event handlers never wait for the loop's writes to reach the cache (they feed it).
	if err := r.Client.List(ctx, &list, client.InNamespace(obj.GetNamespace()), client.MatchingFields{IndexTargetName: obj.GetName()},
		client.UnsafeDisableDeepCopy); err != nil {
		log.FromContext(ctx).Error(err, "list canaries of deployment", "deployment", obj.GetName())
		return nil
	}
	out := make([]reconcile.Request, 0, len(list.Items))
	for i := range list.Items {
		out = append(out, request(list.Items[i].Namespace, list.Items[i].Name))
	}
	return out
}

func (r *Reconciler) canariesOfNamespace(ctx context.Context, obj client.Object) []reconcile.Request {
	return r.listRequests(ctx, obj.GetName())
}

func (r *Reconciler) listRequests(ctx context.Context, namespace string) []reconcile.Request {
	var list v1beta1.CanaryList
	if err := r.Client.List(ctx, &list, client.InNamespace(namespace), client.UnsafeDisableDeepCopy); err != nil {
		log.FromContext(ctx).Error(err, "list canaries", "namespace", namespace)
		return nil
	}
	out := make([]reconcile.Request, 0, len(list.Items))
	for _, c := range list.Items {
		out = append(out, request(c.Namespace, c.Name))
	}
	return out
}

// canaryOfRoute maps a route to its Canary through the labels every router writes.
func canaryOfRoute(_ context.Context, obj client.Object) []reconcile.Request {
	l := obj.GetLabels()
	name, ns := l[router.LabelCanaryName], l[router.LabelCanaryNamespace]
	if name == "" || ns == "" {
		return nil
	}
	return []reconcile.Request{request(ns, name)}
}

func request(namespace, name string) reconcile.Request {
	return reconcile.Request{NamespacedName: types.NamespacedName{Namespace: namespace, Name: name}}
}

// canaryGoing passes a Canary's deletion (or the start of it): its siblings may take over.
var canaryGoing = predicate.Funcs{
	CreateFunc: func(event.CreateEvent) bool { return false },
	UpdateFunc: func(e event.UpdateEvent) bool {
		return e.ObjectOld.GetDeletionTimestamp().IsZero() && !e.ObjectNew.GetDeletionTimestamp().IsZero()
	},
	GenericFunc: func(event.GenericEvent) bool { return false },
}

// siblingsOf maps a Canary to the other Canaries of its Deployment.
func (r *Reconciler) siblingsOf(ctx context.Context, obj client.Object) []reconcile.Request {
	c, ok := obj.(*v1beta1.Canary)
	if !ok {
		return nil
	}
	var list v1beta1.CanaryList
	if err := r.Client.List(ctx, &list, client.InNamespace(c.Namespace), client.MatchingFields{IndexTargetName: c.Spec.TargetRef.Name},
		client.UnsafeDisableDeepCopy); err != nil {
		log.FromContext(ctx).Error(err, "list canaries of deployment", "deployment", c.Spec.TargetRef.Name)
		return nil
	}
	var out []reconcile.Request
	for _, o := range list.Items {
		if o.UID != c.UID {
			out = append(out, request(o.Namespace, o.Name))
		}
	}
	return out
}
