package e2e

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	coalminev1beta1 "github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/cmd/coalmine/ctl"
	"github.com/coalmine-dev/coalmine/sandbox/meshsim"
)

// TestFlaggerMigration moves apps that real Flagger v1.36.1 manages (it has initialised
// them: <app>-primary serves, the user's Deployment is at 0 replicas, the apex Service
// selects the primary's pods, TrafficRoute <app> is Flagger's) to coalmine with `coalmine
// migrate`, as the README's "Migrating from Flagger" says, while the simulator calls every
// apex and Flagger keeps running. Throughout, a monitor checks that each apex Service
// selects ready pods and that no route sends a weight to a Service without ready pods; the
// simulator must count no failed request. At the end nothing of Flagger's is left for the
// apps (Canary, primary Deployment and HPA, TrafficRoute), and the next release of each is
// analysed by coalmine step by step and promoted.
func TestFlaggerMigration(t *testing.T) {
	// Before t.Parallel: a cold build of Flagger (~4 min on two cores) overlaps no scenario.
	fl := migrationFlagger(t)
	t.Parallel()
	env := sharedRollout(t)
	ctx := testContext(t, 8*time.Minute)
	ns := newNamespace(t, nil)
	nsObj := &corev1.Namespace{}
	if err := k8s.Get(ctx, client.ObjectKey{Name: ns}, nsObj); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(nsObj.DeepCopy())
	nsObj.Annotations = map[string]string{coalminev1beta1.AnnotationMesh: meshName}
	if err := k8s.Patch(ctx, nsObj, patch); err != nil {
		t.Fatalf("annotate namespace with its mesh: %v", err)
	}
	apps := []migrationApp{
		{name: "alice", replicas: 2},
		{name: "bob", replicas: 3, hpa: true},
	}
	var names []string
	for _, a := range apps {
		names = append(names, a.name)
	}

	// Given: Flagger has initialised both apps.
	start := time.Now()
	migrationStartFlagger(t, ctx, fl, ns)
	for _, a := range apps {
		apply(t, a.deployment(ns, imageV1))
		if a.hpa {
			apply(t, a.autoscaler(ns))
		}
		apply(t, a.flaggerCanary(t, ns))
	}
	for _, a := range apps {
		migrationExpectFlaggerInitialized(t, ctx, ns, a)
	}
	t.Logf("Flagger initialised %v in %s", names, time.Since(start).Round(100*time.Millisecond))
	sim := env.simulator()
	migrationAwaitTraffic(t, sim, ns, names, coalminev1beta1.PrimarySuffix, "through Flagger's route")

	// When: each app is migrated, under watch.
	recorders := map[string]*canaryRecorder{}
	for _, a := range apps {
		recorders[a.name] = recordCanary(t, ctx, watchClient(t, sb.Config), ns, a.name)
	}
	mon := startMigrationMonitor(t, ns, names)
	req0, err0, _ := migrationTraffic(sim, ns)
	moveStart := time.Now()
	for _, a := range apps {
		var out bytes.Buffer
		args := []string{"migrate", "-n", ns, a.name, "--kubeconfig", sb.KubeconfigPath, "--drain", "1s", "--timeout", "3m"}
		code := ctl.Run(ctx, "coalmine", args, ctl.IO{Out: &out, Err: &out})
		t.Logf("$ coalmine %v  (exit %d)\n%s", args, code, out.String())
		if code != 0 {
			t.Fatalf("coalmine migrate %s: exit %d", a.name, code)
		}
	}
	moved := time.Since(moveStart)
	// Then: traffic flows to the apps' own pods, and the move cost no request.
	migrationAwaitTraffic(t, sim, ns, names, coalminev1beta1.PrimarySuffix, "after the move")
	req1, err1, byCluster := migrationTraffic(sim, ns)
	samples, violations, routes := mon.report()
	t.Logf("moved %d apps in %s: %d requests, %d failed; %d checks, routes seen %v", len(apps), moved.Round(100*time.Millisecond),
		req1-req0, err1-err0, samples, routes)
	if err1 != err0 {
		t.Errorf("the simulator counted %d failed requests during the move: %v", err1-err0, byCluster)
	}
	if req1 <= req0 || samples < 10 {
		t.Errorf("during the move: %d requests, %d checks; want traffic and checks", req1-req0, samples)
	}
	if len(violations) > 0 {
		t.Errorf("while moving:\n%s", migrationLines(violations))
	}
	for _, a := range apps {
		for _, want := range []string{a.name, a.name + "." + ns} {
			if !slices.Contains(routes, want) {
				t.Errorf("the monitor never saw route %s (it saw %v): the move was not watched from Flagger's route to coalmine's", want, routes)
			}
		}
		migrationExpectMoved(t, ctx, ns, a)
	}

	// The next release of each app is coalmine's to analyse: step by step, promoted.
	revisions := map[string]string{}
	for _, a := range apps {
		d := a.deployment(ns, imageV2)
		apply(t, d)
		if !d.Spec.Paused || d.Annotations[coalminev1beta1.AnnotationRevision] == "" {
			t.Fatalf("%s v2: paused=%v revision %q: coalmine's webhook did not hold the release", a.name, d.Spec.Paused, d.Annotations[coalminev1beta1.AnnotationRevision])
		}
		revisions[a.name] = d.Annotations[coalminev1beta1.AnnotationRevision]
	}
	for _, a := range apps {
		rec := recorders[a.name]
		waitFor(t, 3*time.Minute, func(context.Context) (bool, error) {
			c := rec.latest()
			if c == nil || c.Status.Phase != coalminev1beta1.PhaseSucceeded || c.Status.LastPromotedRevision != revisions[a.name] {
				return false, fmt.Errorf("canary %s: phases %v weights %v", a.name, rec.phases(), rec.weights())
			}
			return true, nil
		})
		if got, want := rec.weights(), weightSeq([]int{0}, seedSteps(), []int{0}); !slices.Equal(got, want) {
			t.Errorf("canary %s went through weights %v, want %v", a.name, got, want)
		}
		if !slices.Contains(rec.phases(), coalminev1beta1.PhaseProgressing) {
			t.Errorf("canary %s phases %v: the release was not analysed", a.name, rec.phases())
		}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: a.name + coalminev1beta1.PrimarySuffix}, &appsv1.Deployment{}); !apierrors.IsNotFound(err) {
			t.Errorf("Deployment %s-primary is back after the release (err %v)", a.name, err)
		}
	}
	mon.finish()
	_, err2, byCluster := migrationTraffic(sim, ns)
	if _, violations, _ := mon.report(); len(violations) > 0 {
		t.Errorf("during the release:\n%s", migrationLines(violations))
	}
	if err2 != err0 {
		t.Errorf("the simulator counted %d failed requests since the move began: %v", err2-err0, byCluster)
	}
}

// migrationExpectFlaggerInitialized waits until Flagger reports the app Initialized and
// checks that it left the app as the brief describes it.
func migrationExpectFlaggerInitialized(t *testing.T, ctx context.Context, ns string, a migrationApp) {
	t.Helper()
	fc := &unstructured.Unstructured{}
	fc.SetAPIVersion(migrationFlaggerAPIVersion)
	fc.SetKind("Canary")
	waitFor(t, 2*time.Minute, func(ctx context.Context) (bool, error) {
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: a.name}, fc); err != nil {
			return false, err
		}
		if phase, _, _ := unstructured.NestedString(fc.Object, "status", "phase"); phase != "Initialized" {
			return false, fmt.Errorf("Flagger Canary %s in phase %q", a.name, phase)
		}
		return true, nil
	})
	primary := client.ObjectKey{Namespace: ns, Name: a.name + coalminev1beta1.PrimarySuffix}
	waitFor(t, time.Minute, func(ctx context.Context) (bool, error) { return deploymentReady(ctx, primary) })
	target := &appsv1.Deployment{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: a.name}, target); err != nil {
		t.Fatal(err)
	}
	if r := ptrValue(target.Spec.Replicas); r != 0 {
		t.Fatalf("Flagger left Deployment %s at %d replicas, want 0", a.name, r)
	}
	for svc, app := range map[string]string{a.name: a.name + "-primary", a.name + "-primary": a.name + "-primary", a.name + "-canary": a.name} {
		s := &corev1.Service{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: svc}, s); err != nil {
			t.Fatalf("Flagger's Service %s: %v", svc, err)
		}
		if want := map[string]string{"app": app}; !maps.Equal(s.Spec.Selector, want) {
			t.Fatalf("Flagger's Service %s selects %v, want %v", svc, s.Spec.Selector, want)
		}
	}
	tr := &unstructured.Unstructured{}
	tr.SetGroupVersionKind(trafficRouteGVK)
	if err := k8s.Get(ctx, client.ObjectKey{Name: a.name}, tr); err != nil {
		t.Fatalf("Flagger's TrafficRoute %s: %v", a.name, err)
	}
	if w, err := canaryWeightOf(tr, meshsim.Tag(a.name+coalminev1beta1.CanarySuffix, ns, 8080)); err != nil || w != 0 {
		t.Fatalf("Flagger's TrafficRoute %s: canary weight %d (%v), want 0", a.name, w, err)
	}
	if a.hpa {
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: a.name + "-primary"}, &autoscalingv2.HorizontalPodAutoscaler{}); err != nil {
			t.Fatalf("Flagger's HPA %s-primary: %v", a.name, err)
		}
	}
}

// migrationExpectMoved checks an app after `coalmine migrate`: nothing of Flagger's left,
// its own Deployment serving at the primary's replica count behind coalmine's Services
// and route.
func migrationExpectMoved(t *testing.T, ctx context.Context, ns string, a migrationApp) {
	t.Helper()
	gone := map[string]client.Object{
		"Deployment " + a.name + "-primary": &appsv1.Deployment{},
		"HPA " + a.name + "-primary":        &autoscalingv2.HorizontalPodAutoscaler{},
	}
	for what, obj := range gone {
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: a.name + "-primary"}, obj); !apierrors.IsNotFound(err) {
			t.Errorf("%s still exists (err %v)", what, err)
		}
	}
	for _, obj := range []*unstructured.Unstructured{migrationObject(trafficRouteGVK.GroupVersion().String(), "TrafficRoute", "", a.name),
		migrationObject(migrationFlaggerAPIVersion, "Canary", ns, a.name)} {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(obj), obj); !apierrors.IsNotFound(err) {
			t.Errorf("Flagger's %s %s still exists (err %v)", obj.GetKind(), obj.GetName(), err)
		}
	}
	key := client.ObjectKey{Namespace: ns, Name: a.name}
	if ok, err := deploymentReady(ctx, key); !ok {
		t.Errorf("Deployment %s after the move: %v", a.name, err)
	}
	d := &appsv1.Deployment{}
	if err := k8s.Get(ctx, key, d); err != nil {
		t.Fatal(err)
	}
	if got := ptrValue(d.Spec.Replicas); got != a.replicas {
		t.Errorf("Deployment %s at %d replicas, want the primary's %d", a.name, got, a.replicas)
	}
	for _, name := range []string{a.name, a.name + coalminev1beta1.PrimarySuffix} {
		s := &corev1.Service{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, s); err != nil {
			t.Fatal(err)
		}
		if want := map[string]string{"app": a.name}; !maps.Equal(s.Spec.Selector, want) {
			t.Errorf("Service %s selects %v after the move, want %v", name, s.Spec.Selector, want)
		}
	}
	c := &coalminev1beta1.Canary{}
	if err := k8s.Get(ctx, key, c); err != nil {
		t.Fatalf("coalmine Canary %s: %v", a.name, err)
	}
	if c.Status.Phase != coalminev1beta1.PhaseInitialized {
		t.Errorf("coalmine Canary %s in phase %s, want Initialized", a.name, c.Status.Phase)
	}
	tr := migrationObject(trafficRouteGVK.GroupVersion().String(), "TrafficRoute", "", a.name+"."+ns)
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(tr), tr); err != nil {
		t.Fatalf("coalmine's TrafficRoute: %v", err)
	}
	if w, err := canaryWeightOf(tr, meshsim.Tag(a.name+coalminev1beta1.CanarySuffix, ns, 8080)); err != nil || w != 0 {
		t.Errorf("coalmine's TrafficRoute %s: canary weight %d (%v), want 0", tr.GetName(), w, err)
	}
}

// migrationAwaitTraffic waits until the simulator has sent each app a second's worth of
// requests more, through its <app><suffix> Envoy cluster.
func migrationAwaitTraffic(t *testing.T, sim *meshsim.Simulator, ns string, apps []string, suffix, when string) {
	t.Helper()
	before := sim.UserSnapshot()
	waitFor(t, 30*time.Second, func(context.Context) (bool, error) {
		now := sim.UserSnapshot()
		for _, app := range apps {
			tag := meshsim.Tag(app+suffix, ns, 8080)
			if now[tag].Requests < before[tag].Requests+simulatorRPS {
				return false, fmt.Errorf("%s: %d requests to %s %s so far", app, now[tag].Requests-before[tag].Requests, tag, when)
			}
		}
		return true, nil
	})
}

func migrationObject(apiVersion, kind, ns, name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(apiVersion)
	u.SetKind(kind)
	u.SetNamespace(ns)
	u.SetName(name)
	return u
}

func migrationLines(lines []string) string {
	var b bytes.Buffer
	for _, l := range lines {
		b.WriteString("  " + l + "\n")
	}
	return b.String()
}
