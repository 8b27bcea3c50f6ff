package rollout

import (
	"context"
	"errors"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/rollout/alerts"
	"github.com/coalmine-dev/coalmine/rollout/analysis"
	"github.com/coalmine-dev/coalmine/rollout/hooks"
	"github.com/coalmine-dev/coalmine/rollout/router"
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
	// Client reads from the manager's cache and writes as coalmine's ServiceAccount. The
	// cache may lag behind the loop's own writes; each pass checks the resourceVersions it
	// wrote (memo) and waits rather than act on an older Canary or target.
	Client client.Client
	// APIReader reads past the cache (mgr.GetAPIReader): ReplicaSets, which the cache does
	// not hold, in the rare passes that need them (identity.go). nil is Client.
	APIReader client.Reader
	// Recorder emits events.k8s.io Events on the Canary (mgr.GetEventRecorder).
	Recorder events.EventRecorder
	// Clock is the time source of every interval and deadline; nil is the real clock.
	Clock clock.PassiveClock
	// Analyzer runs a Canary's metric checks.
	Analyzer analysis.Analyzer
	// Hooks calls the Canaries' webhooks (spec.analysis.webhooks); nil is hooks.HTTP.
	Hooks hooks.Caller
	// Alerts sends spec.analysis.alerts to AlertProviders (and the global provider and
	// event webhook of the command line); nil reads AlertProviders through Client.
	Alerts *alerts.Notifier
	// Routers by route kind (v1beta1.RouteKindTrafficRoute, v1beta1.RouteKindMeshHTTPRoute).
	Routers map[string]router.Router
	// DefaultRouteKind is used when a Canary has no coalmine.dev/route-kind annotation.
	DefaultRouteKind string
	// RemoteRouteKinds are the route kinds written to another cluster (--mesh-kubeconfig,
	// the Global control plane): they are not watched here, and a pass checking that the
	// route still exists asks their router instead of the cache.
	RemoteRouteKinds map[string]bool
	// MaxConcurrentReconciles bounds the Canaries reconciled at once; default 64. A pass
	// spends ~1 ms of CPU but waits ~100-250 ms on Prometheus and the apiserver under
	// load, and 200 canaries at a 2 s interval need ~100 passes a second: with 16
	// workers their steps queued for seconds (make bench).
	MaxConcurrentReconciles int

	// cachedRoutes are the route kinds whose metadata this cluster's cache watches.
	cachedRoutes map[string]bool
	// memo remembers the loop's own writes, so no pass acts on a cache behind them.
	memo writeMemo
	// ownWriteWait overrides the constant of that name (tests: the wait is in real time).
	ownWriteWait time.Duration
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
		workers = 64
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
		For(&v1beta1.Canary{}, builder.WithPredicates(predicate.Or(canaryChanged, r.ownWriteArrived()))).
		Watches(&appsv1.Deployment{}, r.deploymentHandler()).
		Watches(&corev1.Service{}, r.serviceHandler()).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.canariesOfNamespace)).
		// A Canary that goes wakes the others of its Deployment: a duplicate waiting for
		// it, or the explicit Canary an opt-in one hands over to.
		Watches(&v1beta1.Canary{}, handler.EnqueueRequestsFromMapFunc(r.siblingsOf), builder.WithPredicates(canaryGoing))
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
			r.memo.forget(req.NamespacedName)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("get canary: %w", err)
	}
	if r.memo.behind(memoCanary, req.NamespacedName, c.ResourceVersion) {
		// The cache has not caught up with this loop's last write of the Canary: acting on
		// the older status could undo a decision (a rollback resurrected as a canary).
		caught, err := r.awaitOwnWrite(ctx, req.NamespacedName, c)
		if err != nil {
			return ctrl.Result{}, err
		}
		if !caught {
			logger.V(1).Info("cache behind our last write, waiting for its event", "resourceVersion", c.ResourceVersion)
			return ctrl.Result{RequeueAfter: cacheLagSafetyNet}, nil
		}
	}
	x := r.newPass(c)
	ctx = log.IntoContext(ctx, logger.WithValues("phase", c.Status.Phase))

	var err error
	switch {
	case !c.DeletionTimestamp.IsZero():
		var gone bool
		gone, err = x.finalize(ctx)
		if gone {
			x.emit(ctx)
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
		return ctrl.Result{RequeueAfter: cacheLagRetry}, nil
	}
	if err != nil {
		x.setCondition(conditionReady, metav1.ConditionFalse, "ReconcileError", err.Error())
	} else if !c.Spec.Suspend {
		x.setReady()
	}
	if werr := x.writeStatus(ctx); werr != nil {
		return ctrl.Result{}, errors.Join(err, werr)
	}
	x.emit(ctx)
	if err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: x.requeue}, nil
}

// cacheLagRetry is how soon a pass that read behind a write of a target or canary
// Deployment (or lost a conflict) runs again: the cache catches up within milliseconds.
const cacheLagRetry = 250 * time.Millisecond

// awaitOwnWrite reads Canary key into c again until the cache holds the loop's last write
// of it, waiting at most ownWriteWait for the write's watch event. The pass that found the
// cache behind goes on once it is there: returning and waiting for the event to start
// another pass was a quarter of all passes at N=200 in make bench, and retrying on a timer
// before that a fifth. The informer stores an object before it hands out its event, so the
// read after asking for the event misses nothing: either it sees the write, or the event
// is to come. False: still behind; the event starts the next pass.
func (r *Reconciler) awaitOwnWrite(ctx context.Context, key types.NamespacedName, c *v1beta1.Canary) (bool, error) {
	fresh := func() bool { return !r.memo.behind(memoCanary, key, c.ResourceVersion) }
	arrived := r.memo.await(key)
	if err := r.Client.Get(ctx, key, c); err != nil {
		r.memo.release(key, false)
		return false, fmt.Errorf("get canary: %w", err)
	}
	if fresh() {
		r.memo.release(key, false)
		return true, nil
	}
	wait := r.ownWriteWait
	if wait <= 0 {
		wait = ownWriteWait
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-arrived:
	case <-t.C:
		if !r.memo.release(key, true) {
			return false, nil
		}
	case <-ctx.Done():
		r.memo.release(key, true)
		return false, ctx.Err()
	}
	if err := r.Client.Get(ctx, key, c); err != nil {
		return false, fmt.Errorf("get canary: %w", err)
	}
	return fresh(), nil
}

// ownWriteWait bounds how long a pass holds its worker waiting for the cache to receive
// the loop's own Canary write; the write's event normally follows within milliseconds.
const ownWriteWait = time.Second

// cacheLagSafetyNet bounds the wait for the watch event of the loop's own Canary write
// (ownWriteArrived) once a pass has stopped waiting for it: a relist that folds it into a
// later version still passes, so this only guards against the unforeseen.
const cacheLagSafetyNet = 5 * time.Second

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

// olderCanaryOf names another Canary guarding the same Deployment that came first (by
// creation time, then name), or "".
func (r *Reconciler) olderCanaryOf(ctx context.Context, c *v1beta1.Canary) (string, error) {
	var list v1beta1.CanaryList
	// Another Canary's writes are no reason to wait: its creation time and name never change.
	if err := r.Client.List(ctx, &list, client.InNamespace(c.Namespace), client.MatchingFields{IndexTargetName: c.Spec.TargetRef.Name},
		client.UnsafeDisableDeepCopy); err != nil {
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

func (r *Reconciler) apiReader() client.Reader {
	if r.APIReader != nil {
		return r.APIReader
	}
	return r.Client
}
