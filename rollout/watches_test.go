package rollout

import (
	"context"
	"slices"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// watchReconciler is a Reconciler over a fake cache holding the seed's Canary "alice",
// its target and a second Canary "bob" of another app.
func watchReconciler(t *testing.T, objs ...client.Object) *Reconciler {
	t.Helper()
	bob := seedCanary()
	bob.Name, bob.Spec.TargetRef.Name, bob.Spec.Service.Name = "bob", "bob", "bob"
	bobTarget := targetDeployment()
	bobTarget.Name = "bob"
	bobTarget.Spec.Template.Labels = map[string]string{"app": "bob"}
	c := fake.NewClientBuilder().
		WithScheme(testScheme(t)).
		WithIndex(&v1beta1.Canary{}, IndexTargetName, TargetNameIndex).
		WithIndex(&corev1.Service{}, IndexServiceController, ServiceControllerIndex).
		WithObjects(append([]client.Object{seedCanary(), targetDeployment(), bob, bobTarget}, objs...)...).
		Build()
	return &Reconciler{Client: c}
}

// queued runs one event through h and returns the names of the Canaries it queued.
func queued(t *testing.T, h handler.EventHandler, send func(context.Context, handler.EventHandler, workqueue.TypedRateLimitingInterface[reconcile.Request])) []string {
	t.Helper()
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer q.ShutDown()
	send(context.Background(), h, q)
	var names []string
	for q.Len() > 0 {
		req, _ := q.Get()
		names = append(names, req.Name)
		q.Done(req)
	}
	slices.Sort(names)
	return names
}

func update(old, new client.Object) func(context.Context, handler.EventHandler, workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	return func(ctx context.Context, h handler.EventHandler, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		h.Update(ctx, event.UpdateEvent{ObjectOld: old, ObjectNew: new}, q)
	}
}

func create(obj client.Object) func(context.Context, handler.EventHandler, workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	return func(ctx context.Context, h handler.EventHandler, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		h.Create(ctx, event.CreateEvent{Object: obj}, q)
	}
}

func ownedBy(obj client.Object, canary string) {
	obj.SetOwnerReferences([]metav1.OwnerReference{{
		APIVersion: v1beta1.GroupVersion.String(), Kind: "Canary", Name: canary, UID: "uid-" + types.UID(canary), Controller: ptr.To(true),
	}})
}

func TestDeploymentEventsStartPassesOnlyWhenSomethingMoved(t *testing.T) {
	base := targetDeployment()
	base.ResourceVersion = "10"
	changed := func(mutate func(d *appsv1.Deployment)) *appsv1.Deployment {
		d := base.DeepCopy()
		d.ResourceVersion = "11"
		mutate(d)
		return d
	}
	canaryDep := targetDeployment()
	canaryDep.Name, canaryDep.ResourceVersion = "alice-canary", "20"
	ownedBy(canaryDep, "alice")
	canaryReady := canaryDep.DeepCopy()
	canaryReady.ResourceVersion, canaryReady.Status.AvailableReplicas = "21", 2

	tests := []struct {
		name     string
		old, new *appsv1.Deployment
		want     []string
	}{
		{"resync", base, base.DeepCopy(), nil},
		{"status write that moves no readiness", base, changed(func(d *appsv1.Deployment) {
			d.Status.Conditions = []appsv1.DeploymentCondition{{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue, LastUpdateTime: metav1.Now()}}
		}), nil},
		{"new template (generation)", base, changed(func(d *appsv1.Deployment) { d.Generation++ }), []string{"alice"}},
		{"annotation", base, changed(func(d *appsv1.Deployment) { d.Annotations = map[string]string{"x": "y"} }), []string{"alice"}},
		{"target rolling: readiness moved", base, changed(func(d *appsv1.Deployment) { d.Status.UpdatedReplicas = 1 }), []string{"alice"}},
		{"target gave up", base, changed(func(d *appsv1.Deployment) {
			d.Status.Conditions = []appsv1.DeploymentCondition{{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionFalse, Reason: "ProgressDeadlineExceeded"}}
		}), []string{"alice"}},
		{"canary Deployment readiness: its owner", canaryDep, canaryReady, []string{"alice"}},
	}
	r := watchReconciler(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := queued(t, r.deploymentHandler(), update(tt.old, tt.new)); !slices.Equal(got, tt.want) {
				t.Errorf("queued %v, want %v", got, tt.want)
			}
		})
	}
}

func TestServiceEventsGoToTheCanariesConcerned(t *testing.T) {
	svc := func(name string, selector map[string]string) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: corev1.ServiceSpec{Selector: selector}}
	}
	owned := svc("alice-primary", map[string]string{"app": "alice-primary"})
	ownedBy(owned, "alice")
	tests := []struct {
		name string
		svc  *corev1.Service
		want []string
	}{
		{"owned by a Canary: that one", owned, []string{"alice"}},
		{"bare Service selecting alice's pods", svc("alice-debug", map[string]string{"app": "alice"}), []string{"alice"}},
		{"named like an apex, selecting nothing of it", svc("bob", map[string]string{"run": "bob"}), []string{"bob"}},
		{"unrelated", svc("carol", map[string]string{"app": "carol"}), nil},
	}
	r := watchReconciler(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := queued(t, r.serviceHandler(), create(tt.svc)); !slices.Equal(got, tt.want) {
				t.Errorf("queued %v, want %v", got, tt.want)
			}
		})
	}

	// A selector moving from alice's pods to bob's concerns both.
	before, after := svc("shared", map[string]string{"app": "alice"}), svc("shared", map[string]string{"app": "bob"})
	if got := queued(t, r.serviceHandler(), update(before, after)); !slices.Equal(got, []string{"alice", "bob"}) {
		t.Errorf("selector change queued %v, want alice and bob", got)
	}
}

func TestCanaryEventsSkipStatusWrites(t *testing.T) {
	base := seedCanary()
	base.ResourceVersion = "5"
	base.Finalizers = []string{v1beta1.Finalizer}
	changed := func(mutate func(c *v1beta1.Canary)) *v1beta1.Canary {
		c := base.DeepCopy()
		c.ResourceVersion = "6"
		mutate(c)
		return c
	}
	tests := []struct {
		name string
		new  *v1beta1.Canary
		want bool
	}{
		{"status write (the loop's own)", changed(func(c *v1beta1.Canary) { c.Status.CanaryWeight = 10 }), false},
		{"spec (generation)", changed(func(c *v1beta1.Canary) { c.Generation++ }), true},
		{"route-kind annotation", changed(func(c *v1beta1.Canary) { c.Annotations[v1beta1.AnnotationRouteKind] = v1beta1.RouteKindMeshHTTPRoute }), true},
		{"finalizer removed", changed(func(c *v1beta1.Canary) { c.Finalizers = nil }), true},
		{"deleted", changed(func(c *v1beta1.Canary) { c.DeletionTimestamp = &metav1.Time{Time: time.Now()} }), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := canaryChanged.Update(event.UpdateEvent{ObjectOld: base, ObjectNew: tt.new}); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRouteEventsOnlyDeletion(t *testing.T) {
	route := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "alice.apps-a-mesh-a"}}
	if canaryChanged.Create(event.CreateEvent{Object: seedCanary()}) != true {
		t.Error("a new Canary must start a pass")
	}
	if routeDeleted.Update(event.UpdateEvent{ObjectOld: route, ObjectNew: route}) || routeDeleted.Create(event.CreateEvent{Object: route}) {
		t.Error("a route written (by the loop itself, mostly) started a pass")
	}
	if !routeDeleted.Delete(event.DeleteEvent{Object: route}) {
		t.Error("a deleted route must start a pass to recreate it")
	}
}

// TestOwnWriteArrivedPassesOnlyTheAwaitedWrite: the update that brings the loop's own
// Canary write wakes the pass blocked on it, or starts a pass once that pass has given up;
// only once, and only for that write or a later version.
func TestOwnWriteArrivedPassesOnlyTheAwaitedWrite(t *testing.T) {
	key := types.NamespacedName{Namespace: ns, Name: "alice"}
	update := func(rv string) event.UpdateEvent {
		c := &v1beta1.Canary{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "alice", ResourceVersion: rv}}
		return event.UpdateEvent{ObjectOld: c.DeepCopy(), ObjectNew: c}
	}
	woken := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
	r := &Reconciler{}
	p := r.ownWriteArrived()
	r.memo.wrote(memoCanary, key, "20")
	if p.Update(update("20")) {
		t.Error("passed an update no pass waits for")
	}

	// A pass blocks on the write: the write wakes it and starts no other pass.
	ch := r.memo.await(key)
	if p.Update(update("19")) || woken(ch) {
		t.Error("an older version passed or woke the waiting pass")
	}
	if p.Update(update("20")) || !woken(ch) {
		t.Error("the awaited write started a pass, or did not wake the one waiting for it")
	}
	if !r.memo.release(key, true) {
		t.Error("release after the wake-up says the write did not arrive")
	}

	// The pass gave up waiting: the write starts the next pass, once.
	r.memo.await(key)
	if r.memo.release(key, true) {
		t.Error("release says the write arrived before it did")
	}
	tests := []struct {
		name string
		rv   string
		want bool
	}{
		{"an older version", "19", false},
		{"the awaited write", "20", true},
		{"the same again, after the wait ended", "20", false},
	}
	for _, tt := range tests {
		if got := p.Update(update(tt.rv)); got != tt.want {
			t.Errorf("%s: passed %v, want %v", tt.name, got, tt.want)
		}
	}
	r.memo.await(key)
	r.memo.release(key, true)
	if !p.Update(update("25")) {
		t.Error("a later version (a relist folding in the write) did not pass")
	}

	// The pass found the write at its second look: nothing waits any more.
	r.memo.await(key)
	r.memo.release(key, false)
	if p.Update(update("20")) {
		t.Error("passed a write no pass waits for any more")
	}
}
