package e2e

import (
	"context"
	"fmt"
	"maps"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	coalminev1beta1 "github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/sandbox"
	"github.com/coalmine-dev/coalmine/sandbox/meshsim"
)

// The two Prometheus tiers the seed runs (issue 16): a zone Prometheus scrapes the
// callers' Envoy stats and remote-writes them, with external labels zone and cluster, to
// the main one coalmine queries. These tests look at the series themselves; the rollout
// scenarios on top of the tiers are in prometheus_outages_test.go.
//
// They play zones with the mesh simulator on a fake cluster (a fake client holding the
// seed's Services, Ready pods and TrafficRoute): what matters here is the traffic and its
// series, and a second real cluster per zone would only cost time.

// TestPrometheusTiersLag measures the lag from a request in the simulator to its sample
// being queryable on main, and how long a canary's first traffic takes to give the seed's
// queries a value there (what the first analysis step sees). It also proves that the
// seed's queries match series that carry the zone's external labels.
func TestPrometheusTiersLag(t *testing.T) {
	t.Parallel()
	ctx := testContext(t, 3*time.Minute)
	zone := sb.Zone()
	ns := namespaceName("tiers-lag")
	c := fakeZoneCluster(t, map[string]map[string]string{ns: nil})
	sim := startZoneSimulator(t, ctx, zone, c, ns)
	tag := meshsim.Tag(appName+coalminev1beta1.CanarySuffix, ns, 8080)
	main, zoneAPI := promClient(t, sb.PrometheusURL), promClient(t, zone.URL())
	// Envoy has the canary's cluster, at zero, from the route's creation on.
	mustAwait(t, ctx, main, fmt.Sprintf(`envoy_cluster_upstream_rq{envoy_cluster_name=%q}`, tag), time.Minute)

	// The canary's first step: the route starts sending it traffic now.
	setCanaryWeight(t, ctx, c, ns, 50)
	stepAt := time.Now()
	success, duration := seedQueries(t, ns, "1m", "30s")
	onZone := mustAwait(t, ctx, zoneAPI, success, time.Minute)
	onMain := mustAwait(t, ctx, main, success, time.Minute)
	t.Logf("first canary traffic -> the seed's success rate has a value: on the zone after %s, on main after %s",
		onZone.Sub(stepAt).Round(100*time.Millisecond), onMain.Sub(stepAt).Round(100*time.Millisecond))

	// The seed's queries, unchanged, match the series with the zone's external labels.
	if v := queryValue(t, ctx, main, success); v != 100 {
		t.Errorf("seed success rate on main = %v, want 100 (no errors sent)", v)
	}
	if v := queryValue(t, ctx, main, duration); !(v > 0 && v < 500) {
		t.Errorf("seed p99 on main = %v ms, want the simulator's 20 ms bucket, below 500", v)
	}
	for _, s := range queryVector(t, ctx, main, fmt.Sprintf(`envoy_cluster_upstream_rq{envoy_cluster_name=%q}`, tag)) {
		if s.Metric["zone"] != sandbox.DefaultZone || s.Metric["cluster"] != sandbox.DefaultCluster {
			t.Errorf("series on main %v, want external labels zone=%s cluster=%s", s.Metric, sandbox.DefaultZone, sandbox.DefaultCluster)
		}
	}

	// Request -> sample on main, sampled at staggered moments (remote write sends in
	// batches, so the lag depends on when in the batch a request falls).
	const samples = 12
	lags := make([]time.Duration, samples)
	var wg sync.WaitGroup
	tick := time.NewTicker(700 * time.Millisecond)
	defer tick.Stop()
	for i := range samples {
		<-tick.C
		sent, at := sim.Snapshot()[tag].Requests, time.Now()
		wg.Go(func() {
			q := fmt.Sprintf(`sum(envoy_cluster_upstream_rq{envoy_cluster_name=%q}) >= %d`, tag, sent)
			seen, err := awaitValue(ctx, main, q, 30*time.Second)
			if err != nil {
				t.Errorf("request -> sample on main: %v", err)
			}
			lags[i] = seen.Sub(at)
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	slices.Sort(lags)
	t.Logf("request in the simulator -> sample queryable on main (%d samples): min %s, median %s, max %s",
		samples, lags[0].Round(100*time.Millisecond), lags[samples/2].Round(100*time.Millisecond), lags[samples-1].Round(100*time.Millisecond))
}

// TestPrometheusTiersTwoZonesSameApp: two zones run alice in namespaces of the same name
// and write to one main Prometheus. The builtins' envoy_cluster_name holds namespace and
// service, so another namespace never leaks in; but the same namespace and app in another
// zone does: the seed's queries sum both zones, so a healthy canary in zone-a reads zone-b's
// errors and latency. A zone matcher on the external label isolates them.
func TestPrometheusTiersTwoZonesSameApp(t *testing.T) {
	t.Parallel()
	ctx := testContext(t, 3*time.Minute)
	ns, other := namespaceName("tiers-zones"), namespaceName("tiers-other")
	bad := map[string]string{meshsim.EnvErrorRate: "0.5", meshsim.EnvLatencyMs: "900"}
	zones := map[string]map[string]map[string]string{
		"zone-a": {ns: nil, other: bad}, // healthy canary; a bad one in another namespace
		"zone-b": {ns: bad},             // same namespace, same app, bad canary
	}
	for _, name := range []string{"zone-a", "zone-b"} {
		z, err := sb.AddZonePrometheus(ctx, name, "cluster-"+name)
		if err != nil {
			t.Fatalf("start zone Prometheus %s: %v", name, err)
		}
		t.Cleanup(func() { _ = z.Stop() })
		c := fakeZoneCluster(t, zones[name])
		for n := range zones[name] {
			setCanaryWeight(t, ctx, c, n, 50)
		}
		startZoneSimulator(t, ctx, z, c, slices.Sorted(maps.Keys(zones[name]))...)
	}

	main := promClient(t, sb.PrometheusURL)
	tag := meshsim.Tag(appName+coalminev1beta1.CanarySuffix, ns, 8080)
	for _, name := range []string{"zone-a", "zone-b"} {
		mustAwait(t, ctx, main, fmt.Sprintf(`sum(rate(envoy_cluster_upstream_rq{envoy_cluster_name=%q,zone=%q}[30s]))`, tag, name), time.Minute)
	}
	success, duration := seedQueries(t, ns, "1m", "30s")
	// Both zones' windows must be full before the values are compared.
	mustAwait(t, ctx, main, fmt.Sprintf(`count_over_time(envoy_cluster_upstream_rq{envoy_cluster_name=%q,zone="zone-b",envoy_response_code="200"}[30s]) >= 20`, tag), time.Minute)

	seedSuccess, seedP99 := queryValue(t, ctx, main, success), queryValue(t, ctx, main, duration)
	if !(seedSuccess < 99) || !(seedP99 > 500) {
		t.Errorf("seed queries across zones: success %v, p99 %v ms; want zone-b's errors and latency mixed in (< 99, > 500)", seedSuccess, seedP99)
	}
	aSuccess, aP99 := queryValue(t, ctx, main, withZone(success, "zone-a")), queryValue(t, ctx, main, withZone(duration, "zone-a"))
	if aSuccess != 100 || !(aP99 < 500) {
		t.Errorf("zone-a's canary with a zone matcher: success %v, p99 %v ms; want 100 and < 500 (the other namespace must not leak in)", aSuccess, aP99)
	}
	bSuccess := queryValue(t, ctx, main, withZone(success, "zone-b"))
	if math.Abs(bSuccess-50) > 5 {
		t.Errorf("zone-b's canary with a zone matcher: success %v, want about 50", bSuccess)
	}
	t.Logf("alice-canary in %s, two zones on one main: seed success %.2f%% p99 %.0f ms; zone-a only %.2f%% p99 %.0f ms; zone-b only %.2f%%: the builtins need a zone matcher",
		ns, seedSuccess, seedP99, aSuccess, aP99, bSuccess)
}

// seedQueries renders the builtin success rate and duration for alice in ns, as the loop
// renders them.
func seedQueries(t *testing.T, ns, successInterval, durationInterval string) (success, duration string) {
	t.Helper()
	render := func(metric, interval string) string {
		tmpl, ok := coalminev1beta1.BuiltinQuery(metric)
		if !ok {
			t.Fatalf("no builtin query %s", metric)
		}
		q, err := coalminev1beta1.RenderQuery(tmpl, coalminev1beta1.QueryVars{
			Name: appName, Namespace: ns, Target: appName, Service: appName, Interval: interval,
		}, true)
		if err != nil {
			t.Fatalf("render %s: %v", metric, err)
		}
		return q
	}
	return render(coalminev1beta1.MetricRequestSuccessRate, successInterval), render(coalminev1beta1.MetricRequestDuration, durationInterval)
}

// withZone adds a zone matcher after each envoy_cluster_name matcher of a rendered builtin:
// what a {{ zone }} variable in the builtins would render.
func withZone(query, zone string) string {
	return strings.ReplaceAll(query, `_svc_[0-9a-zA-Z-]+",`, fmt.Sprintf(`_svc_[0-9a-zA-Z-]+", zone=%q,`, zone))
}

// fakeZoneCluster is a zone's cluster as the simulator reads it: per namespace the seed's
// Services for alice, two Ready primary pods, one Ready canary pod with canaryEnv, and
// TrafficRoute alice.<ns> at 100% primary.
func fakeZoneCluster(t *testing.T, canaryEnv map[string]map[string]string) client.Client {
	t.Helper()
	var objs []client.Object
	for ns, env := range canaryEnv {
		objs = append(objs, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
			Name: ns, Annotations: map[string]string{coalminev1beta1.AnnotationMesh: meshName},
		}})
		for _, svc := range []struct{ name, app string }{{appName, appName}, {appName + coalminev1beta1.PrimarySuffix, appName}, {appName + coalminev1beta1.CanarySuffix, appName + coalminev1beta1.CanarySuffix}} {
			objs = append(objs, &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: svc.name},
				Spec: corev1.ServiceSpec{Selector: map[string]string{"app": svc.app},
					Ports: []corev1.ServicePort{{Name: "http", Port: 8080, TargetPort: intstr.FromString("http")}}},
			})
		}
		objs = append(objs, readyPod(ns, appName+"-0", appName, nil), readyPod(ns, appName+"-1", appName, nil),
			readyPod(ns, appName+"-canary-0", appName+coalminev1beta1.CanarySuffix, env))
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).Build()
	for ns := range canaryEnv {
		if err := c.Create(t.Context(), zoneTrafficRoute(ns, 0)); err != nil {
			t.Fatalf("create TrafficRoute in the fake zone: %v", err)
		}
	}
	return c
}

func readyPod(ns, name, app string, env map[string]string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": app}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: imageV2}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
	for k, v := range env {
		p.Spec.Containers[0].Env = append(p.Spec.Containers[0].Env, corev1.EnvVar{Name: k, Value: v})
	}
	return p
}

// zoneTrafficRoute is the seed's TrafficRoute of alice in ns, canary at weight w.
func zoneTrafficRoute(ns string, w int) *unstructured.Unstructured {
	dest := func(svc string, weight int) any {
		return map[string]any{"weight": int64(weight), "destination": map[string]any{"kuma.io/service": meshsim.Tag(svc, ns, 8080)}}
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"mesh": meshName,
		"spec": map[string]any{
			"sources":      []any{map[string]any{"match": map[string]any{"kuma.io/service": "*"}}},
			"destinations": []any{map[string]any{"match": map[string]any{"kuma.io/service": meshsim.Tag(appName, ns, 8080)}}},
			"conf": map[string]any{"split": []any{
				dest(appName+coalminev1beta1.PrimarySuffix, 100-w), dest(appName+coalminev1beta1.CanarySuffix, w),
			}},
		},
	}}
	u.SetGroupVersionKind(trafficRouteGVK)
	u.SetName(appName + "." + ns)
	return u
}

// setCanaryWeight rewrites the fake zone's route, as coalmine's step would.
func setCanaryWeight(t *testing.T, ctx context.Context, c client.Client, ns string, w int) {
	t.Helper()
	cur := &unstructured.Unstructured{}
	cur.SetGroupVersionKind(trafficRouteGVK)
	if err := c.Get(ctx, client.ObjectKey{Name: appName + "." + ns}, cur); err != nil {
		t.Fatalf("get fake zone route: %v", err)
	}
	next := zoneTrafficRoute(ns, w)
	next.SetResourceVersion(cur.GetResourceVersion())
	if err := c.Update(ctx, next); err != nil {
		t.Fatalf("set fake zone route to %d%%: %v", w, err)
	}
}

// startZoneSimulator runs the simulator on a fake zone cluster, scraped by zone, until t ends.
func startZoneSimulator(t *testing.T, ctx context.Context, zone *sandbox.ZonePrometheus, c client.Client, namespaces ...string) *meshsim.Simulator {
	t.Helper()
	simCtx, stop := context.WithCancel(rolloutEnv.ctx)
	sim, err := meshsim.Start(simCtx, meshsim.Options{Client: c, RouteClient: c, Namespaces: namespaces, RPS: simulatorRPS})
	if err != nil {
		stop()
		t.Fatalf("start the simulator of %s: %v", zone.Zone, err)
	}
	t.Cleanup(func() { stop(); <-sim.Done() })
	job := "meshsim-" + namespaces[0]
	if err := zone.AddScrapeTarget(ctx, job, sim.Addr()); err != nil {
		t.Fatalf("scrape the simulator from %s: %v", zone.Zone, err)
	}
	t.Cleanup(func() { _ = zone.RemoveScrapeTarget(context.Background(), job, sim.Addr()) })
	return sim
}

func promClient(t *testing.T, base string) promv1.API {
	t.Helper()
	c, err := promapi.NewClient(promapi.Config{Address: base, Client: &http.Client{Timeout: 5 * time.Second}})
	if err != nil {
		t.Fatalf("prometheus client for %s: %v", base, err)
	}
	return promv1.NewAPI(c)
}

// tryVector runs q now; an empty result is no error.
func tryVector(ctx context.Context, api promv1.API, q string) (model.Vector, error) {
	v, _, _, err := api.Query(ctx, q, time.Now())
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", q, err)
	}
	vec, ok := v.(model.Vector)
	if !ok {
		return nil, fmt.Errorf("query %s: %s, want a vector", q, v.Type())
	}
	return vec, nil
}

func queryVector(t *testing.T, ctx context.Context, api promv1.API, q string) model.Vector {
	t.Helper()
	vec, err := tryVector(ctx, api, q)
	if err != nil {
		t.Fatal(err)
	}
	return vec
}

// queryValue is the first sample's value of q now, NaN when there is none.
func queryValue(t *testing.T, ctx context.Context, api promv1.API, q string) float64 {
	t.Helper()
	vec := queryVector(t, ctx, api, q)
	if len(vec) == 0 {
		return math.NaN()
	}
	return float64(vec[0].Value)
}

// awaitValue polls q every 100 ms until it returns a non-NaN sample and says when it did.
func awaitValue(ctx context.Context, api promv1.API, q string, timeout time.Duration) (time.Time, error) {
	var at time.Time
	err := sandbox.Poll(ctx, timeout, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		vec, err := tryVector(ctx, api, q)
		if err != nil {
			return false, err
		}
		if len(vec) == 0 || math.IsNaN(float64(vec[0].Value)) {
			return false, fmt.Errorf("%s: no value", q)
		}
		at = time.Now()
		return true, nil
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("await a value: %w", err)
	}
	return at, nil
}

// mustAwait is awaitValue failing the test.
func mustAwait(t *testing.T, ctx context.Context, api promv1.API, q string, timeout time.Duration) time.Time {
	t.Helper()
	at, err := awaitValue(ctx, api, q, timeout)
	if err != nil {
		t.Fatal(err)
	}
	return at
}
