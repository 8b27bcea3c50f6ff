package rollout

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/rollout/analysis"
	"github.com/coalmine-dev/coalmine/rollout/router"
	"github.com/coalmine-dev/coalmine/rollout/workload"
)

const ns = "apps-a-mesh-a"

var start = time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)

// fakeRouter keeps the weights in memory, records every change, and counts writes as a
// real router would (none when the weight is already in place).
type fakeRouter struct {
	mu      sync.Mutex
	weights map[string]int
	targets map[string]router.Target
	history []int
	writes  int
	err     error
	// deleteErr fails every Delete (an unreachable control plane); foreign marks routes
	// that exist but are not coalmine's.
	deleteErr error
	// setErr fails every weight write only (a control plane whose admission refuses
	// writes while reads work).
	setErr  error
	foreign map[string]bool
	// onSet runs after each weight change (a slow control plane moves the clock).
	onSet func()
}

func newFakeRouter() *fakeRouter {
	return &fakeRouter{weights: map[string]int{}, targets: map[string]router.Target{}, foreign: map[string]bool{}}
}

func routeKey(t router.Target) string { return t.Namespace + "/" + t.Apex }

func (f *fakeRouter) SetWeights(_ context.Context, t router.Target, w int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	if f.setErr != nil {
		return f.setErr
	}
	if cur, ok := f.weights[routeKey(t)]; ok && cur == w {
		return nil
	}
	f.weights[routeKey(t)] = w
	f.targets[routeKey(t)] = t
	f.history = append(f.history, w)
	f.writes++
	if f.onSet != nil {
		f.onSet()
	}
	return nil
}

func (f *fakeRouter) Observe(_ context.Context, t router.Target) (router.Observed, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	w, ok := f.weights[routeKey(t)]
	if f.foreign[routeKey(t)] {
		return router.Observed{Found: true}, f.err
	}
	return router.Observed{Found: ok, Ours: ok, Weight: w}, f.err
}

func (f *fakeRouter) Acquire(_ context.Context, t router.Target) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.foreign[routeKey(t)] {
		return fmt.Errorf("route %s exists and is not coalmine's: %w", routeKey(t), router.ErrNotOurs)
	}
	return f.err
}

func (f *fakeRouter) Delete(_ context.Context, t router.Target) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.deleteErr != nil {
		return f.deleteErr
	}
	if _, ok := f.weights[routeKey(t)]; ok {
		delete(f.weights, routeKey(t))
		f.writes++
	}
	return nil
}

func (f *fakeRouter) Object(t router.Target) *metav1.PartialObjectMetadata {
	return &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: routeKey(t)}}
}

func (f *fakeRouter) Ref(t router.Target) router.RouteRef {
	return router.RouteRef{Kind: v1beta1.RouteKindTrafficRoute, Name: t.Apex + "." + t.Namespace, Mesh: t.Mesh}
}

func (f *fakeRouter) weight(apex string) (int, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	w, ok := f.weights[ns+"/"+apex]
	return w, ok
}

// scriptedAnalyzer answers each Run from a script, then passes every metric.
type scriptedAnalyzer struct {
	mu     sync.Mutex
	script [][]analysis.Result
	calls  int
	// fail, when set, decides per call instead of the script.
	fail func(call int) []analysis.Result
}

func (a *scriptedAnalyzer) Run(_ context.Context, c *v1beta1.Canary) []analysis.Result {
	a.mu.Lock()
	defer a.mu.Unlock()
	call := a.calls
	a.calls++
	if a.fail != nil {
		if r := a.fail(call); r != nil {
			return r
		}
	}
	if call < len(a.script) {
		return a.script[call]
	}
	var out []analysis.Result
	for _, m := range c.Spec.Analysis.Metrics {
		v := 99.9
		if m.Name == v1beta1.MetricRequestDuration {
			v = 120
		}
		out = append(out, analysis.Result{Metric: m.Name, Value: v, Outcome: v1beta1.MetricPassed})
	}
	return out
}

func passing() []analysis.Result {
	return []analysis.Result{
		{Metric: v1beta1.MetricRequestSuccessRate, Value: 99.9, Outcome: v1beta1.MetricPassed},
		{Metric: v1beta1.MetricRequestDuration, Value: 120, Outcome: v1beta1.MetricPassed},
	}
}

func failingSuccessRate() []analysis.Result {
	return []analysis.Result{
		{Metric: v1beta1.MetricRequestSuccessRate, Value: 42.5, Outcome: v1beta1.MetricFailed, Message: "request-success-rate 42.5 < 99"},
		{Metric: v1beta1.MetricRequestDuration, Value: 120, Outcome: v1beta1.MetricPassed},
	}
}

// env is a Reconciler on a fake API server that behaves like the real one where the loop
// depends on it: generation bumps on spec changes, status subresources, finalizers, and a
// deployment "controller" (kube) that makes unpaused Deployments ready at once.
type env struct {
	t        *testing.T
	base     client.WithWatch // the fake API server, for the test's own reads and writes
	clock    *clocktesting.FakeClock
	router   *fakeRouter
	analyzer *scriptedAnalyzer
	recorder *events.FakeRecorder
	r        *Reconciler
	key      types.NamespacedName

	writes      int // writes of the reconciler, router included
	uids        int // UIDs given to created objects
	inReconcile bool
	// stuck Deployments never become ready.
	stuck map[string]bool
	// unobserved Deployments are not acted on by the deployment controller (kube): no
	// generation observed, no ReplicaSet rolled, as while it is down or behind.
	unobserved map[string]bool
	// rsReads counts the loop's reads of ReplicaSets (through APIReader; the cache holds
	// none, so a read through Client fails the test).
	rsReads int
	// staleCanary, when set, is what the next staleReads (at least one) reads of the
	// Canary return: a cache that lags behind the API server.
	staleCanary *v1beta1.Canary
	staleReads  int
	// afterStaleReads, when set, runs once the last of the staleReads was served.
	afterStaleReads func()
	// staleDeployments, by name, are what every read of those Deployments returns while
	// set: a cache that still shows objects the API server no longer has.
	staleDeployments map[string]*appsv1.Deployment
	// notes collects every event note emitted.
	notes []string
}

func testScheme(t *testing.T) *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := v1beta1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

func seedCanary() *v1beta1.Canary {
	proto := &v1beta1.CustomMetadata{Annotations: map[string]string{"8080.service.kuma.io/protocol": "http"}}
	return &v1beta1.Canary{
		ObjectMeta: metav1.ObjectMeta{Name: "alice", Namespace: ns, Generation: 1,
			Annotations: map[string]string{v1beta1.AnnotationMesh: "mesh-a"}},
		Spec: v1beta1.CanarySpec{
			TargetRef: v1beta1.LocalObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "alice"},
			Service: v1beta1.CanaryService{
				Name: "alice", Port: 8080, TargetPort: intstr.FromString("http"), PortName: "http",
				Apex: proto, Canary: proto, Primary: proto,
			},
			Analysis: &v1beta1.CanaryAnalysis{
				Interval: "30s", Threshold: 5, MaxWeight: 50, StepWeight: 5,
				Metrics: []v1beta1.CanaryMetric{
					{Name: v1beta1.MetricRequestSuccessRate, Threshold: 99, Interval: "1m"},
					{Name: v1beta1.MetricRequestDuration, Threshold: 500, Interval: "30s"},
				},
			},
		},
	}
}

func targetDeployment() *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "alice", Namespace: ns, Generation: 1, UID: "alice-uid"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](3),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "alice"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "alice"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "app", Image: "alice:1",
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				}}},
			},
		},
		Status: appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 3, UpdatedReplicas: 3, ReadyReplicas: 3, AvailableReplicas: 3},
	}
}

func newEnv(t *testing.T, objs ...client.Object) *env {
	t.Helper()
	e := &env{
		t:        t,
		clock:    clocktesting.NewFakeClock(start),
		router:   newFakeRouter(),
		analyzer: &scriptedAnalyzer{},
		recorder: events.NewFakeRecorder(10000),
		stuck:    map[string]bool{},

		unobserved: map[string]bool{},
	}
	namespace := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{v1beta1.LabelSidecarInjection: "enabled"}}}
	e.base = fake.NewClientBuilder().
		WithScheme(testScheme(t)).
		WithStatusSubresource(&v1beta1.Canary{}, &appsv1.Deployment{}).
		WithIndex(&v1beta1.Canary{}, IndexTargetName, TargetNameIndex).
		WithIndex(&corev1.Service{}, IndexServiceController, ServiceControllerIndex).
		WithObjects(append([]client.Object{namespace}, objs...)...).
		Build()
	count := func() {
		if e.inReconcile {
			e.writes++
		}
	}
	wrapped := interceptor.NewClient(e.base, interceptor.Funcs{
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			if _, ok := list.(*appsv1.ReplicaSetList); ok {
				// In the product a cached List of ReplicaSets would start an informer of
				// every ReplicaSet of the cluster: identity.go reads them past the cache.
				e.t.Error("ReplicaSets listed through the cached client; use APIReader")
			}
			return c.List(ctx, list, opts...)
		},
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if stale, ok := obj.(*v1beta1.Canary); ok && e.staleCanary != nil {
				e.staleCanary.DeepCopyInto(stale)
				if e.staleReads--; e.staleReads <= 0 {
					e.staleCanary, e.staleReads = nil, 0
					if f := e.afterStaleReads; f != nil {
						e.afterStaleReads = nil
						f()
					}
				}
				return nil
			}
			if d, ok := obj.(*appsv1.Deployment); ok && e.staleDeployments[key.Name] != nil {
				e.staleDeployments[key.Name].DeepCopyInto(d)
				return nil
			}
			return c.Get(ctx, key, obj, opts...)
		},
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			count()
			if d, ok := obj.(*appsv1.Deployment); ok {
				d.Generation = 1
			}
			if obj.GetUID() == "" {
				// The API server gives every object a UID; the fake does not.
				e.uids++
				obj.SetUID(types.UID(fmt.Sprintf("%s-uid-%d", obj.GetName(), e.uids)))
			}
			return c.Create(ctx, obj, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			count()
			bumpGeneration(ctx, c, obj)
			return c.Update(ctx, obj, opts...)
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, p client.Patch, opts ...client.PatchOption) error {
			count()
			return patchBumpingGeneration(ctx, c, obj, p, opts...)
		},
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			count()
			return c.Delete(ctx, obj, opts...)
		},
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			count()
			return c.SubResource(sub).Update(ctx, obj, opts...)
		},
	})
	apiReader := interceptor.NewClient(e.base, interceptor.Funcs{
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			if _, ok := list.(*appsv1.ReplicaSetList); ok {
				e.rsReads++
			}
			return c.List(ctx, list, opts...)
		},
	})
	e.r = &Reconciler{
		Client:    wrapped,
		APIReader: apiReader,
		Recorder:  e.recorder,
		Clock:     e.clock,
		Analyzer:  e.analyzer,
		Routers:   map[string]router.Router{v1beta1.RouteKindTrafficRoute: e.router},
		// No watch event brings a write here: a pass waiting for one gives up at once,
		// unless a test delivers it (afterStaleReads).
		ownWriteWait: time.Millisecond,
	}
	e.key = types.NamespacedName{Namespace: ns, Name: "alice"}
	return e
}

// patchBumpingGeneration patches obj, and for a Deployment does what the API server does
// and the fake does not: a spec change increments generation.
func patchBumpingGeneration(ctx context.Context, c client.WithWatch, obj client.Object, p client.Patch, opts ...client.PatchOption) error {
	if gvk, err := apiutil.GVKForObject(obj, c.Scheme()); err != nil || gvk.Kind != "Deployment" {
		return c.Patch(ctx, obj, p, opts...)
	}
	before := &appsv1.Deployment{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(obj), before); err != nil {
		return c.Patch(ctx, obj, p, opts...)
	}
	if err := c.Patch(ctx, obj, p, opts...); err != nil {
		return err
	}
	after := &appsv1.Deployment{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(obj), after); err != nil {
		return err
	}
	if equality.Semantic.DeepEqual(before.Spec, after.Spec) {
		return nil
	}
	after.Generation = before.Generation + 1
	if err := c.Update(ctx, after); err != nil {
		return err
	}
	obj.SetGeneration(after.Generation)
	obj.SetResourceVersion(after.ResourceVersion)
	return nil
}

// bumpGeneration does what the API server does: a spec change increments generation.
func bumpGeneration(ctx context.Context, c client.Client, obj client.Object) {
	d, ok := obj.(*appsv1.Deployment)
	if !ok {
		return
	}
	cur := &appsv1.Deployment{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(d), cur); err != nil {
		return
	}
	d.Generation = cur.Generation
	if !equality.Semantic.DeepEqual(cur.Spec, d.Spec) {
		d.Generation++
	}
}

// kube plays the deployment controller and kubelet: every generation is observed; the
// template's ReplicaSet (rollReplicaSets) runs updatedReplicas; a Deployment that is not
// stuck has all its replicas available.
func (e *env) kube() {
	e.t.Helper()
	ctx := context.Background()
	var list appsv1.DeploymentList
	if err := e.base.List(ctx, &list); err != nil {
		e.t.Fatal(err)
	}
	e.collectGarbage(list.Items)
	for i := range list.Items {
		d := &list.Items[i]
		if e.unobserved[d.Name] {
			continue
		}
		updated, total := e.rollReplicaSets(d)
		st := d.Status.DeepCopy()
		st.ObservedGeneration = d.Generation
		if e.stuck[d.Name] {
			// A stuck rollout: counts stay where the test put them, but no more replicas
			// run the template than its ReplicaSet has (none while paused at a new one).
			st.UpdatedReplicas = min(st.UpdatedReplicas, updated)
		} else {
			st.Replicas, st.UpdatedReplicas, st.ReadyReplicas, st.AvailableReplicas = total, updated, total, total
		}
		if !equality.Semantic.DeepEqual(*st, d.Status) {
			d.Status = *st
			if err := e.base.Status().Update(ctx, d); err != nil {
				e.t.Fatal(err)
			}
		}
	}
}

// collectGarbage plays the garbage collector: ReplicaSets whose controlling Deployment is
// gone (by UID: a Deployment re-created under the same name is another owner) go too.
func (e *env) collectGarbage(deployments []appsv1.Deployment) {
	e.t.Helper()
	ctx := context.Background()
	live := map[types.UID]bool{}
	for i := range deployments {
		live[deployments[i].UID] = true
	}
	var rss appsv1.ReplicaSetList
	if err := e.base.List(ctx, &rss); err != nil {
		e.t.Fatal(err)
	}
	for i := range rss.Items {
		if ref := metav1.GetControllerOf(&rss.Items[i]); ref != nil && ref.Kind == "Deployment" && !live[ref.UID] {
			if err := e.base.Delete(ctx, &rss.Items[i]); err != nil {
				e.t.Fatal(err)
			}
		}
	}
}

// rollReplicaSets plays the ReplicaSet side of the deployment controller. The template's
// ReplicaSet is the one whose template equals it, pod-template-hash aside; an unpaused
// Deployment gets one if it has none (pod-template-hash label added), and it gets all the
// replicas, every other ReplicaSet none. Paused or not, the template's ReplicaSet is
// numbered the newest deployment revision and the Deployment carries that number. It
// returns the replicas of the template's ReplicaSet and of all of them.
func (e *env) rollReplicaSets(d *appsv1.Deployment) (updated, total int32) {
	e.t.Helper()
	ctx := context.Background()
	var list appsv1.ReplicaSetList
	if err := e.base.List(ctx, &list, client.InNamespace(d.Namespace)); err != nil {
		e.t.Fatal(err)
	}
	var cur *appsv1.ReplicaSet
	var owned []*appsv1.ReplicaSet
	maxRev := 0
	for i := range list.Items {
		rs := &list.Items[i]
		if !metav1.IsControlledBy(rs, d) {
			continue
		}
		owned = append(owned, rs)
		rev, _ := strconv.Atoi(workload.DeploymentRevision(rs))
		maxRev = max(maxRev, rev)
		if cur == nil && workload.SameTemplate(rs, &d.Spec.Template) {
			cur = rs
		}
	}
	switch {
	case cur == nil && !d.Spec.Paused:
		hash := v1beta1.TemplateRevision(&d.Spec.Template)
		tmpl := d.Spec.Template.DeepCopy()
		if tmpl.Labels == nil {
			tmpl.Labels = map[string]string{}
		}
		tmpl.Labels["pod-template-hash"] = hash
		cur = &appsv1.ReplicaSet{
			ObjectMeta: metav1.ObjectMeta{Name: d.Name + "-" + hash, Namespace: d.Namespace, Labels: tmpl.Labels,
				Annotations:     map[string]string{"deployment.kubernetes.io/revision": strconv.Itoa(maxRev + 1)},
				OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(d, appsv1.SchemeGroupVersion.WithKind("Deployment"))}},
			Spec: appsv1.ReplicaSetSpec{Replicas: ptr.To(*d.Spec.Replicas), Selector: d.Spec.Selector.DeepCopy(), Template: *tmpl},
		}
		if err := e.base.Create(ctx, cur); err != nil {
			e.t.Fatal(err)
		}
		owned = append(owned, cur)
	case cur != nil && workload.DeploymentRevision(cur) != strconv.Itoa(maxRev):
		cur.Annotations["deployment.kubernetes.io/revision"] = strconv.Itoa(maxRev + 1)
		if err := e.base.Update(ctx, cur); err != nil {
			e.t.Fatal(err)
		}
	}
	if cur != nil && workload.DeploymentRevision(d) != workload.DeploymentRevision(cur) {
		if d.Annotations == nil {
			d.Annotations = map[string]string{}
		}
		d.Annotations["deployment.kubernetes.io/revision"] = workload.DeploymentRevision(cur)
		if err := e.base.Update(ctx, d); err != nil {
			e.t.Fatal(err)
		}
	}
	for _, rs := range owned {
		if !d.Spec.Paused {
			want := int32(0)
			if rs == cur {
				want = *d.Spec.Replicas
			}
			if *rs.Spec.Replicas != want {
				rs.Spec.Replicas = ptr.To(want)
				if err := e.base.Update(ctx, rs); err != nil {
					e.t.Fatal(err)
				}
			}
		}
		total += *rs.Spec.Replicas
		if rs == cur {
			updated = *rs.Spec.Replicas
		}
	}
	return updated, total
}

// servingReplicaSet is the ReplicaSet the deployment controller made for d's template as it
// is now (revision 1, all replicas), for a test that changes d's template afterwards.
func servingReplicaSet(d *appsv1.Deployment) *appsv1.ReplicaSet {
	hash := v1beta1.TemplateRevision(&d.Spec.Template)
	tmpl := d.Spec.Template.DeepCopy()
	tmpl.Labels["pod-template-hash"] = hash
	return &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: d.Name + "-" + hash, Namespace: d.Namespace, Labels: tmpl.Labels,
			Annotations:     map[string]string{"deployment.kubernetes.io/revision": "1"},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(d, appsv1.SchemeGroupVersion.WithKind("Deployment"))}},
		Spec: appsv1.ReplicaSetSpec{Replicas: ptr.To(*d.Spec.Replicas), Selector: d.Spec.Selector.DeepCopy(), Template: *tmpl},
	}
}

func (e *env) reconcileOnce() ctrl.Result {
	e.t.Helper()
	return e.reconcileWithin(context.Background())
}

// reconcileWithin is reconcileOnce with the pass's context: a test bounds a pass that
// waits.
func (e *env) reconcileWithin(ctx context.Context) ctrl.Result {
	e.t.Helper()
	e.kube()
	e.inReconcile = true
	routerBefore := e.router.writes
	res, err := e.r.Reconcile(ctx, reconcile.Request{NamespacedName: e.key})
	e.writes += e.router.writes - routerBefore
	e.inReconcile = false
	e.drainEvents()
	if err != nil {
		e.t.Fatalf("reconcile at %s: %v", e.clock.Since(start), err)
	}
	return res
}

func (e *env) drainEvents() {
	for {
		select {
		case n := <-e.recorder.Events:
			e.notes = append(e.notes, n)
		default:
			return
		}
	}
}

// settle reconciles until a pass writes nothing, as the watches would keep triggering
// passes while the loop's own writes come back; it returns the last requeue delay.
func (e *env) settle() time.Duration {
	e.t.Helper()
	for range 30 {
		before := e.writes
		res := e.reconcileOnce()
		if e.writes == before {
			return res.RequeueAfter
		}
	}
	e.t.Fatal("reconciler did not settle in 30 passes")
	return 0
}

// runUntil settles, then lets the requeue delay pass, until cond holds.
func (e *env) runUntil(what string, cond func(c *v1beta1.Canary) bool) {
	e.t.Helper()
	for range 200 {
		d := e.settle()
		if cond(e.canary()) {
			return
		}
		if d == 0 {
			e.t.Fatalf("waiting for %s: no requeue asked; status %+v", what, e.canary().Status)
		}
		e.clock.Step(d)
	}
	e.t.Fatalf("waiting for %s: not reached; status %+v", what, e.canary().Status)
}

func (e *env) canary() *v1beta1.Canary {
	e.t.Helper()
	c := &v1beta1.Canary{}
	if err := e.base.Get(context.Background(), e.key, c); err != nil {
		e.t.Fatalf("get canary: %v", err)
	}
	return c
}

func (e *env) deployment(name string) (*appsv1.Deployment, bool) {
	e.t.Helper()
	d := &appsv1.Deployment{}
	err := e.base.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, d)
	if client.IgnoreNotFound(err) != nil {
		e.t.Fatal(err)
	}
	return d, err == nil
}

func (e *env) target() *appsv1.Deployment {
	e.t.Helper()
	d, ok := e.deployment("alice")
	if !ok {
		e.t.Fatal("target deployment missing")
	}
	return d
}

// ship applies a new image to the target as the webhook would see it: the template
// changes, and when its revision differs from the stable one the Deployment is paused and
// annotated with the new revision. It returns the new revision.
func (e *env) ship(image string) string {
	e.t.Helper()
	d := e.target()
	d.Spec.Template.Spec.Containers[0].Image = image
	rev := v1beta1.TemplateRevision(&d.Spec.Template)
	if rev != d.Annotations[v1beta1.AnnotationStableRevision] {
		if d.Annotations == nil {
			d.Annotations = map[string]string{}
		}
		d.Spec.Paused = true
		d.Annotations[v1beta1.AnnotationRevision] = rev
	}
	bumpGeneration(context.Background(), e.base, d)
	if err := e.base.Update(context.Background(), d); err != nil {
		e.t.Fatal(err)
	}
	return rev
}

func (e *env) phase() v1beta1.CanaryPhase { return e.canary().Status.Phase }

func (e *env) eventsWith(reason string) []string {
	var out []string
	for _, n := range e.notes {
		if strings.Contains(n, " "+reason+" ") {
			out = append(out, n)
		}
	}
	return out
}

func phaseIs(p v1beta1.CanaryPhase) func(*v1beta1.Canary) bool {
	return func(c *v1beta1.Canary) bool { return c.Status.Phase == p }
}

func weightIs(w int) func(*v1beta1.Canary) bool {
	return func(c *v1beta1.Canary) bool {
		return c.Status.Phase == v1beta1.PhaseProgressing && c.Status.CanaryWeight == w
	}
}

// distinct drops consecutive repeats, for reading weight histories.
func distinct(in []int) []int { return slices.Compact(slices.Clone(in)) }

func (e *env) logStatus() {
	c := e.canary()
	e.t.Logf("t=%s phase=%s weight=%d failed=%d msg=%q", e.clock.Since(start), c.Status.Phase, c.Status.CanaryWeight, c.Status.FailedChecks, c.Status.Message)
}
