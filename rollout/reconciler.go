package rollout

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/rollout/analysis"
	"github.com/coalmine-dev/coalmine/rollout/router"
	"github.com/coalmine-dev/coalmine/rollout/workload"
)

// IndexTargetName indexes Canaries by spec.targetRef.name, so a Deployment event finds the
// Canary that guards it.
const IndexTargetName = "spec.targetRef.name"

// TargetNameIndex is the extractor of IndexTargetName; tests register it on a fake client.
func TargetNameIndex(obj client.Object) []string {
	c, ok := obj.(*v1beta1.Canary)
	if !ok || c.Spec.TargetRef.Name == "" {
		return nil
	}
	return []string{c.Spec.TargetRef.Name}
}

// Reconciler runs the canary rollouts of all Canaries.
type Reconciler struct {
	// Client reads from the manager's cache and writes as coalmine's ServiceAccount. It
	// must read its own writes (client.CacheOptions.EnableReadYourWritesConsistency): a
	// pass queued while the previous one was writing the status would otherwise see the
	// Canary as it was before that write. Right after a rollback such a pass still saw
	// Progressing and created the canary Deployment again, left behind for good (found on
	// a real API server).
	Client client.Client
	// Recorder emits events.k8s.io Events on the Canary (mgr.GetEventRecorder).
	Recorder events.EventRecorder
	// Clock is the time source of every interval and deadline; nil is the real clock.
	Clock clock.PassiveClock
	// Analyzer runs a Canary's metric checks.
	Analyzer analysis.Analyzer
	// Routers by route kind (v1beta1.RouteKindTrafficRoute, v1beta1.RouteKindMeshHTTPRoute).
	Routers map[string]router.Router
	// DefaultRouteKind is used when a Canary has no coalmine.dev/route-kind annotation.
	DefaultRouteKind string
	// RemoteRouteKinds are the route kinds written to another cluster (--mesh-kubeconfig,
	// the Global control plane): they are not watched here, and a pass checking that the
	// route still exists asks their router instead of the cache.
	RemoteRouteKinds map[string]bool
	// MaxConcurrentReconciles bounds the Canaries reconciled at once; default 16. A pass
	// spends ~10 ms of CPU but waits ~250 ms on Prometheus and the apiserver, so with 4
	// workers 200 canaries queued for seconds (make bench).
	MaxConcurrentReconciles int

	// cachedRoutes are the route kinds whose metadata this cluster's cache watches.
	cachedRoutes map[string]bool
}

// SetupWithManager registers the reconciler and its watches: Canaries; Deployments (a
// target maps to its Canary through IndexTargetName, a canary Deployment through its owner
// reference); Services and Namespaces (to any Canary of their namespace: Services for
// adoption and bare-Service reports, Namespaces for the kuma.io/mesh annotation); and the
// routes of the configured kinds whose CRDs this cluster serves, so a route edited or
// deleted by hand is seen.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Client == nil || r.Analyzer == nil || len(r.Routers) == 0 {
		return errors.New("rollout reconciler needs a Client, an Analyzer and at least one Router")
	}
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &v1beta1.Canary{}, IndexTargetName, TargetNameIndex); err != nil {
		return fmt.Errorf("index canaries by %s: %w", IndexTargetName, err)
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &corev1.Service{}, IndexServiceController, ServiceControllerIndex); err != nil {
		return fmt.Errorf("index services by %s: %w", IndexServiceController, err)
	}
	workers := r.MaxConcurrentReconciles
	if workers <= 0 {
		workers = 16
	}
	b := ctrl.NewControllerManagedBy(mgr).
		Named("canary").
		WithOptions(controller.Options{
			MaxConcurrentReconciles: workers,
			// controller-runtime refuses a controller name already used in this process.
			// app.Run runs again in one process when coalmine restarts in e2e tests and the
			// demo; there is never more than one manager at a time, so the name's metrics
			// carry on rather than collide.
			SkipNameValidation: ptr.To(true),
		}).
		// The loop's own status writes need no pass: it requeues itself at the interval.
		For(&v1beta1.Canary{}, builder.WithPredicates(canaryChanged)).
		Watches(&appsv1.Deployment{}, r.deploymentHandler()).
		Watches(&corev1.Service{}, r.serviceHandler()).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.canariesOfNamespace))
	r.cachedRoutes = map[string]bool{}
	for kind := range r.Routers {
		if r.RemoteRouteKinds[kind] {
			continue
		}
		gvk := router.GroupVersion.WithKind(kind)
		if _, err := mgr.GetRESTMapper().RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
			// The routes live in another cluster (--mesh-kubeconfig) or Kuma is not
			// installed here: nothing to watch, the loop still writes through its router.
			mgr.GetLogger().Info("not watching routes: kind not served by this cluster", "kind", kind, "reason", err.Error())
			continue
		}
		route := &metav1.PartialObjectMetadata{}
		route.SetGroupVersionKind(gvk)
		// Only a deleted route needs a pass (it is recreated); the loop's own weight
		// changes would otherwise start one each.
		b = b.WatchesMetadata(route, handler.EnqueueRequestsFromMapFunc(canaryOfRoute), builder.WithPredicates(routeDeleted))
		r.cachedRoutes[kind] = true
	}
	return b.Complete(r)
}

// IndexServiceController indexes Services by the Canary that controls them, or
// NoCanary: the bare-Service check of every pass lists only the Services no Canary owns,
// not every Service of the namespace.
const IndexServiceController = "coalmine.dev/service-controller"

// NoCanary is the IndexServiceController value of a Service no Canary controls.
const NoCanary = "-"

// ServiceControllerIndex is the extractor of IndexServiceController; tests register it on
// a fake client.
func ServiceControllerIndex(obj client.Object) []string {
	if ref := metav1.GetControllerOf(obj); ref != nil && ref.Kind == "Canary" && ref.APIVersion == v1beta1.GroupVersion.String() {
		return []string{ref.Name}
	}
	return []string{NoCanary}
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

// routeDeleted passes only deletions of a route.
var routeDeleted = predicate.Funcs{
	CreateFunc:  func(event.CreateEvent) bool { return false },
	UpdateFunc:  func(event.UpdateEvent) bool { return false },
	GenericFunc: func(event.GenericEvent) bool { return false },
}

// deploymentHandler maps Deployment events to Canaries. A change of spec or metadata goes
// to every Canary of the Deployment (its target's or its canary's). A status-only change
// goes only to a Canary waiting for that Deployment to become ready: the canary
// Deployment before the first step, the target while it rolls a promoted revision. Every
// other status write of controller-manager (several per rollout and Deployment) would
// start a pass that finds nothing to do: at any other time the loop requeues itself.
func (r *Reconciler) deploymentHandler() handler.EventHandler {
	enqueue := func(q workqueue.TypedRateLimitingInterface[reconcile.Request], reqs []reconcile.Request) {
		for _, req := range reqs {
			q.Add(req)
		}
	}
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(q, r.canariesOfDeployment(ctx, e.Object, nil))
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			o, ok1 := e.ObjectOld.(*appsv1.Deployment)
			n, ok2 := e.ObjectNew.(*appsv1.Deployment)
			switch {
			case !ok1 || !ok2:
				enqueue(q, r.canariesOfDeployment(ctx, e.ObjectNew, nil))
			case o.ResourceVersion == n.ResourceVersion:
				// A resync: nothing changed.
			case o.Generation != n.Generation || !maps.Equal(o.Labels, n.Labels) ||
				!maps.Equal(o.Annotations, n.Annotations) || !slices.Equal(o.OwnerReferences, n.OwnerReferences) ||
				o.DeletionTimestamp.IsZero() != n.DeletionTimestamp.IsZero():
				enqueue(q, r.canariesOfDeployment(ctx, n, nil))
			case !workload.SameReadiness(o, n):
				enqueue(q, r.canariesOfDeployment(ctx, n, waitsForReadiness))
			}
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(q, r.canariesOfDeployment(ctx, e.Object, nil))
		},
		GenericFunc: func(ctx context.Context, e event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(q, r.canariesOfDeployment(ctx, e.Object, nil))
		},
	}
}

// waitsForReadiness says whether Canary c waits for Deployment d to become ready.
func waitsForReadiness(c *v1beta1.Canary, d client.Object) bool {
	switch c.Status.Phase {
	case v1beta1.PhaseProgressing:
		return d.GetName() == c.CanaryDeploymentName() && c.Status.LastStepTime == nil
	case v1beta1.PhasePromoting:
		return d.GetName() == c.Spec.TargetRef.Name
	}
	return false
}

// serviceHandler maps a Service to its Canary when one controls it, and otherwise to the
// Canaries whose pods it selects before or after the change (adoption and the
// BareServices condition): not to every Canary of the namespace.
func (r *Reconciler) serviceHandler() handler.EventHandler {
	enqueue := func(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request], objs ...client.Object) {
		for _, obj := range objs {
			for _, req := range r.canariesOfService(ctx, obj) {
				q.Add(req)
			}
		}
	}
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(ctx, q, e.Object)
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(ctx, q, e.ObjectOld, e.ObjectNew)
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(ctx, q, e.Object)
		},
		GenericFunc: func(ctx context.Context, e event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(ctx, q, e.Object)
		},
	}
}

func (r *Reconciler) canariesOfService(ctx context.Context, obj client.Object) []reconcile.Request {
	if ref := metav1.GetControllerOf(obj); ref != nil && ref.Kind == "Canary" && ref.APIVersion == v1beta1.GroupVersion.String() {
		return []reconcile.Request{request(obj.GetNamespace(), ref.Name)}
	}
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return r.listRequests(ctx, obj.GetNamespace())
	}
	var list v1beta1.CanaryList
	if err := r.Client.List(ctx, &list, client.InNamespace(svc.Namespace), client.DisableReadYourWritesConsistency, client.UnsafeDisableDeepCopy); err != nil {
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
		if err := r.Client.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: c.Spec.TargetRef.Name}, target, client.DisableReadYourWritesConsistency); err != nil {
			continue
		}
		if workload.SelectsAll(svc.Spec.Selector, target.Spec.Template.Labels) {
			out = append(out, request(c.Namespace, c.Name))
		}
	}
	return out
}

// canariesOfDeployment maps a canary Deployment to its owning Canary and a target
// Deployment to the Canaries that name it; keep, when set, picks among them.
func (r *Reconciler) canariesOfDeployment(ctx context.Context, obj client.Object, keep func(c *v1beta1.Canary, d client.Object) bool) []reconcile.Request {
	var out []reconcile.Request
	if ref := metav1.GetControllerOf(obj); ref != nil && ref.Kind == "Canary" && ref.APIVersion == v1beta1.GroupVersion.String() {
		if keep == nil {
			return []reconcile.Request{request(obj.GetNamespace(), ref.Name)}
		}
		c := &v1beta1.Canary{}
		// Event handlers never wait for the loop's writes to reach the cache (they feed it).
		err := r.Client.Get(ctx, client.ObjectKey{Namespace: obj.GetNamespace(), Name: ref.Name}, c,
			client.DisableReadYourWritesConsistency)
		if err != nil || keep(c, obj) {
			out = append(out, request(obj.GetNamespace(), ref.Name))
		}
		return out
	}
	var list v1beta1.CanaryList
	if err := r.Client.List(ctx, &list, client.InNamespace(obj.GetNamespace()), client.MatchingFields{IndexTargetName: obj.GetName()},
		client.DisableReadYourWritesConsistency, client.UnsafeDisableDeepCopy); err != nil {
		log.FromContext(ctx).Error(err, "list canaries of deployment", "deployment", obj.GetName())
		return out
	}
	for i := range list.Items {
		if keep == nil || keep(&list.Items[i], obj) {
			out = append(out, request(list.Items[i].Namespace, list.Items[i].Name))
		}
	}
	return out
}

func (r *Reconciler) canariesOfNamespace(ctx context.Context, obj client.Object) []reconcile.Request {
	return r.listRequests(ctx, obj.GetName())
}

func (r *Reconciler) listRequests(ctx context.Context, namespace string) []reconcile.Request {
	var list v1beta1.CanaryList
	if err := r.Client.List(ctx, &list, client.InNamespace(namespace), client.DisableReadYourWritesConsistency, client.UnsafeDisableDeepCopy); err != nil {
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

// Reconcile moves one Canary one step further. Each pass reads from the cache (never
// behind the loop's own writes, see Client), does at most the writes its step needs, and
// writes the status once if it changed. Events and metrics follow a successful status
// write, so a pass that lost a conflict against a fresher one leaves no trace.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (ctrl.Result, error) {
	logger := log.FromContext(ctx)
	c := &v1beta1.Canary{}
	if err := r.Client.Get(ctx, req.NamespacedName, c); err != nil {
		if apierrors.IsNotFound(err) {
			forgetMetrics(req.Namespace, req.Name)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("get canary: %w", err)
	}
	x := r.newPass(c)
	ctx = log.IntoContext(ctx, logger.WithValues("phase", c.Status.Phase))

	var err error
	switch {
	case !c.DeletionTimestamp.IsZero():
		var gone bool
		gone, err = x.finalize(ctx)
		if gone {
			x.emit()
			forgetMetrics(c.Namespace, c.Name)
			return ctrl.Result{}, nil
		}
	case c.Spec.Suspend:
		// Suspended: nothing moves, nothing is rolled back. The status says so and the
		// routes, Deployments and Services stay as they are.
		x.setCondition(conditionReady, metav1.ConditionTrue, "Suspended", "spec.suspend is set; progression is halted")
	default:
		err = x.reconcile(ctx)
	}

	if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) || errors.Is(err, errCacheLag) {
		// The cache lagged behind a write (ours or someone's): try again from the new
		// state without counting it as a failure.
		logger.V(1).Info("conflict, retrying", "error", err.Error())
		return ctrl.Result{RequeueAfter: time.Second}, nil
	}
	if err != nil {
		x.setCondition(conditionReady, metav1.ConditionFalse, "ReconcileError", err.Error())
	} else if x.notReady == nil && c.DeletionTimestamp.IsZero() && !c.Spec.Suspend {
		x.setCondition(conditionReady, metav1.ConditionTrue, "Reconciled", "the Services, the route and the target are in place")
	} else if x.notReady != nil {
		x.setCondition(conditionReady, metav1.ConditionFalse, x.notReady.reason, x.notReady.message)
	}
	if werr := x.writeStatus(ctx); werr != nil {
		if apierrors.IsConflict(werr) {
			logger.V(1).Info("status conflict, retrying", "error", werr.Error())
			return ctrl.Result{RequeueAfter: time.Second}, nil
		}
		return ctrl.Result{}, errors.Join(err, werr)
	}
	x.emit()
	if err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: x.requeue}, nil
}

// writeStatus writes the working status when it differs from the one read.
func (x *pass) writeStatus(ctx context.Context) error {
	x.status.ObservedGeneration = x.canary.Generation
	if equality.Semantic.DeepEqual(*x.status, x.canary.Status) {
		return nil
	}
	c := x.canary.DeepCopy()
	c.Status = *x.status
	if err := x.r.Client.Status().Update(ctx, c); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("update canary status: %w", err)
	}
	x.canary.Status = *x.status.DeepCopy()
	x.canary.ResourceVersion = c.ResourceVersion
	return nil
}

// routeKind is the Canary's coalmine.dev/route-kind annotation, else the default.
func (r *Reconciler) routeKind(c *v1beta1.Canary) string {
	if k := c.Annotations[v1beta1.AnnotationRouteKind]; k != "" {
		return k
	}
	if r.DefaultRouteKind != "" {
		return r.DefaultRouteKind
	}
	return v1beta1.RouteKindTrafficRoute
}

// meshName is the Canary's kuma.io/mesh annotation, else its namespace's, else default.
func (r *Reconciler) meshName(ctx context.Context, c *v1beta1.Canary) (string, error) {
	if m := c.Annotations[v1beta1.AnnotationMesh]; m != "" {
		return m, nil
	}
	ns := &corev1.Namespace{}
	if err := r.Client.Get(ctx, client.ObjectKey{Name: c.Namespace}, ns); err != nil {
		if apierrors.IsNotFound(err) {
			return router.DefaultMesh, nil
		}
		return "", fmt.Errorf("get namespace %s: %w", c.Namespace, err)
	}
	if m := ns.Annotations[v1beta1.AnnotationMesh]; m != "" {
		return m, nil
	}
	return router.DefaultMesh, nil
}

// olderCanaryOf names another Canary guarding the same Deployment that came first (by
// creation time, then name), or "".
func (r *Reconciler) olderCanaryOf(ctx context.Context, c *v1beta1.Canary) (string, error) {
	var list v1beta1.CanaryList
	// Another Canary's writes are no reason to wait: its creation time and name never change.
	if err := r.Client.List(ctx, &list, client.InNamespace(c.Namespace), client.MatchingFields{IndexTargetName: c.Spec.TargetRef.Name},
		client.DisableReadYourWritesConsistency, client.UnsafeDisableDeepCopy); err != nil {
		return "", fmt.Errorf("list canaries of deployment %s: %w", c.Spec.TargetRef.Name, err)
	}
	for _, o := range list.Items {
		if o.UID == c.UID && o.Name == c.Name {
			continue
		}
		older := o.CreationTimestamp.Before(&c.CreationTimestamp) ||
			(o.CreationTimestamp.Equal(&c.CreationTimestamp) && o.Name < c.Name)
		if older {
			return o.Name, nil
		}
	}
	return "", nil
}
