package meshsim

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

const (
	ns      = "apps-a-mesh-a"
	apex    = "alice_apps-a-mesh-a_svc_8080"
	primary = "alice-primary_apps-a-mesh-a_svc_8080"
	canary  = "alice-canary_apps-a-mesh-a_svc_8080"
)

// The seed's selector of the canary's clusters, anchored as PromQL anchors =~.
var seedClusterRegexp = regexp.MustCompile(`^(?:alice-canary_apps-a-mesh-a_svc_[0-9a-zA-Z-]+)$`)

// scenario builds the seed's app: Services alice, alice-primary, alice-canary on port 8080,
// two primary pods and one canary pod.
type scenario struct {
	primaryEnv   []corev1.EnvVar
	canaryEnv    []corev1.EnvVar
	canaryReady  bool
	noApexPods   bool
	extraObjects []client.Object
	routes       []*unstructured.Unstructured
	// objectsOverride, when set, is the objects as a test edited them.
	objectsOverride []client.Object
}

func (sc scenario) objects() []client.Object {
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
			Name:        ns,
			Labels:      map[string]string{"kuma.io/sidecar-injection": "enabled"},
			Annotations: map[string]string{"kuma.io/mesh": "mesh-a"},
		}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "outside"}},
		service(ns, "alice", "alice"),
		service(ns, "alice-primary", "alice"),
		service(ns, "alice-canary", "alice-canary"),
		service("outside", "bob", "bob"), // not a mesh namespace: never called
		pod("outside", "bob-0", "bob", true, nil),
		pod(ns, "alice-canary-0", "alice-canary", sc.canaryReady, sc.canaryEnv),
	}
	if !sc.noApexPods {
		objs = append(objs,
			pod(ns, "alice-0", "alice", true, sc.primaryEnv),
			pod(ns, "alice-1", "alice", true, sc.primaryEnv),
			pod(ns, "alice-2", "alice", false, nil), // not Ready: no traffic
		)
	}
	return append(objs, sc.extraObjects...)
}

func service(namespace, name, app string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": app},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 8080, TargetPort: intstr.FromInt32(9898)}},
		},
	}
}

func pod(namespace, name, app string, ready bool, env []corev1.EnvVar) *corev1.Pod {
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: map[string]string{"app": app}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "podinfo", Env: env}}},
		Status: corev1.PodStatus{
			Phase:      corev1.PodRunning,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: status}},
		},
	}
}

func env(kv ...string) []corev1.EnvVar {
	var out []corev1.EnvVar
	for i := 0; i < len(kv); i += 2 {
		out = append(out, corev1.EnvVar{Name: kv[i], Value: kv[i+1]})
	}
	return out
}

func newTrafficRoute(name, dest string, split ...any) *unstructured.Unstructured {
	var entries []any
	for i := 0; i < len(split); i += 2 {
		entries = append(entries, map[string]any{
			"weight":      int64(split[i+1].(int)),
			"destination": map[string]any{"kuma.io/service": split[i].(string)},
		})
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kuma.io/v1alpha1",
		"kind":       "TrafficRoute",
		"mesh":       "mesh-a",
		"metadata":   map[string]any{"name": name},
		"spec": map[string]any{
			"sources":      []any{map[string]any{"match": map[string]any{"kuma.io/service": "*"}}},
			"destinations": []any{map[string]any{"match": map[string]any{"kuma.io/service": dest}}},
			"conf":         map[string]any{"split": entries},
		},
	}}
}

// newMeshHTTPRoute targets `to` and splits to backends given as (ref, weight) pairs; a ref is
// a map of backendRef fields besides weight.
func newMeshHTTPRoute(namespace, name string, to map[string]any, backends ...any) *unstructured.Unstructured {
	var refs []any
	for i := 0; i < len(backends); i += 2 {
		ref := map[string]any{"kind": "MeshService", "weight": int64(backends[i+1].(int))}
		for k, v := range backends[i].(map[string]any) {
			ref[k] = v
		}
		refs = append(refs, ref)
	}
	to["kind"] = "MeshService"
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kuma.io/v1alpha1",
		"kind":       "MeshHTTPRoute",
		"metadata":   map[string]any{"namespace": namespace, "name": name},
		"spec": map[string]any{
			"targetRef": map[string]any{"kind": "Mesh"},
			"to": []any{map[string]any{
				"targetRef": to,
				"rules": []any{
					// A rule the callers' GET / does not match must not be taken.
					map[string]any{
						"matches": []any{map[string]any{"path": map[string]any{"type": "PathPrefix", "value": "/admin"}}},
						"default": map[string]any{"backendRefs": []any{map[string]any{"kind": "MeshService", "name": apex, "weight": int64(1)}}},
					},
					map[string]any{
						"matches": []any{map[string]any{"path": map[string]any{"type": "PathPrefix", "value": "/"}}},
						"default": map[string]any{"backendRefs": refs},
					},
				},
			}},
		},
	}}
}

func newFakeClient(t *testing.T, objs []client.Object, routes []*unstructured.Unstructured, funcs *interceptor.Funcs) client.Client {
	t.Helper()
	b := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...)
	if funcs != nil {
		b = b.WithInterceptorFuncs(*funcs)
	}
	c := b.Build()
	for _, r := range routes {
		if err := c.Create(context.Background(), r.DeepCopy()); err != nil {
			t.Fatalf("create %s %s: %v", r.GetKind(), r.GetName(), err)
		}
	}
	return c
}

// newTestSimulator builds a simulator that steps only when the test says so.
func newTestSimulator(c, routeClient client.Reader) (*Simulator, *clocktesting.FakeClock) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	opts := Options{Client: c, RouteClient: routeClient, RPS: DefaultRPS, Interval: DefaultInterval, Clock: clk}
	separate := routeClient != nil
	if routeClient == nil {
		opts.RouteClient = c
	}
	return newSimulator(opts, separate), clk
}

// tick steps the clock by one interval and the simulator once, n times.
func tick(t *testing.T, s *Simulator, clk *clocktesting.FakeClock, n int) {
	t.Helper()
	for range n {
		clk.Step(s.opts.Interval)
		if err := s.step(context.Background()); err != nil {
			t.Fatalf("step: %v", err)
		}
	}
}

// 50 ticks of 200 ms at 50 rps: 500 requests per caller, the warm-up included.
const ticks, perCaller = 50, 500

func TestTrafficSplit(t *testing.T) {
	mhrLegacy := newMeshHTTPRoute(ns, "alice", map[string]any{"name": apex},
		map[string]any{"name": primary}, 95, map[string]any{"name": canary}, 5)
	mhrByPort := newMeshHTTPRoute(ns, "alice", map[string]any{"name": "alice", "sectionName": "http"},
		map[string]any{"name": "alice-primary", "port": int64(8080)}, 95, map[string]any{"name": "alice-canary"}, 5)

	tests := []struct {
		name string
		sc   scenario
		want map[string]Counts
	}{
		{
			name: "no route: all traffic on the apex",
			sc:   scenario{canaryReady: true},
			want: map[string]Counts{apex: {Requests: perCaller}},
		},
		{
			name: "TrafficRoute 95/5",
			sc: scenario{canaryReady: true, routes: []*unstructured.Unstructured{
				newTrafficRoute("alice.apps-a-mesh-a", apex, primary, 95, canary, 5),
			}},
			want: map[string]Counts{primary: {Requests: 475}, canary: {Requests: 25}},
		},
		{
			name: "TrafficRoute 100/0 exposes the idle canary cluster",
			sc: scenario{canaryReady: true, routes: []*unstructured.Unstructured{
				newTrafficRoute("alice.apps-a-mesh-a", apex, primary, 100, canary, 0),
			}},
			want: map[string]Counts{primary: {Requests: perCaller}, canary: {}},
		},
		{
			name: "TrafficRoute for another destination leaves the apex alone",
			sc: scenario{canaryReady: true, routes: []*unstructured.Unstructured{
				newTrafficRoute("bob.outside", "bob_outside_svc_8080", primary, 50, canary, 50),
			}},
			want: map[string]Counts{apex: {Requests: perCaller}},
		},
		{
			name: "wildcard TrafficRoute to itself (Kuma's route-all)",
			sc: scenario{canaryReady: true, routes: []*unstructured.Unstructured{
				newTrafficRoute("route-all-mesh-a", "*", "*", 1),
			}},
			want: map[string]Counts{apex: {Requests: perCaller}},
		},
		{
			name: "MeshHTTPRoute 95/5 with tag names",
			sc:   scenario{canaryReady: true, routes: []*unstructured.Unstructured{mhrLegacy}},
			want: map[string]Counts{primary: {Requests: 475}, canary: {Requests: 25}},
		},
		{
			name: "MeshHTTPRoute 95/5 with service names and ports",
			sc:   scenario{canaryReady: true, routes: []*unstructured.Unstructured{mhrByPort}},
			want: map[string]Counts{primary: {Requests: 475}, canary: {Requests: 25}},
		},
		{
			name: "MeshHTTPRoute takes precedence over TrafficRoute",
			sc: scenario{canaryReady: true, routes: []*unstructured.Unstructured{
				newTrafficRoute("alice.apps-a-mesh-a", apex, primary, 50, canary, 50), mhrLegacy,
			}},
			want: map[string]Counts{primary: {Requests: 475}, canary: {Requests: 25}},
		},
		{
			name: "canary without Ready pods answers 503",
			sc: scenario{canaryReady: false, routes: []*unstructured.Unstructured{
				newTrafficRoute("alice.apps-a-mesh-a", apex, primary, 50, canary, 50),
			}},
			want: map[string]Counts{primary: {Requests: 250}, canary: {Requests: 250, Errors: 250}},
		},
		{
			name: "apex without Ready pods is not called",
			sc:   scenario{canaryReady: true, noApexPods: true},
			want: map[string]Counts{},
		},
		{
			name: "canary error rate 10%",
			sc: scenario{canaryReady: true, canaryEnv: env(EnvErrorRate, "0.1"), routes: []*unstructured.Unstructured{
				newTrafficRoute("alice.apps-a-mesh-a", apex, primary, 50, canary, 50),
			}},
			want: map[string]Counts{primary: {Requests: 250}, canary: {Requests: 250, Errors: 25}},
		},
		{
			name: "error rate averaged over the pods",
			sc: scenario{canaryReady: true, primaryEnv: env(EnvErrorRate, "20%"), extraObjects: []client.Object{
				pod(ns, "alice-canary-1", "alice-canary", true, env(EnvErrorRate, "1")),
			}, routes: []*unstructured.Unstructured{
				newTrafficRoute("alice.apps-a-mesh-a", apex, primary, 50, canary, 50),
			}},
			want: map[string]Counts{primary: {Requests: 250, Errors: 50}, canary: {Requests: 250, Errors: 125}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, clk := newTestSimulator(newFakeClient(t, tt.sc.objects(), tt.sc.routes, nil), nil)
			tick(t, s, clk, ticks)
			assertCounts(t, s.Snapshot(), tt.want)
		})
	}
}

func assertCounts(t *testing.T, got, want map[string]Counts) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("clusters = %v, want %v", got, want)
	}
	for cluster, w := range want {
		if got[cluster] != w {
			t.Errorf("%s: got %+v, want %+v", cluster, got[cluster], w)
		}
	}
}

func TestSplitIsExactAtEveryStep(t *testing.T) {
	routes := []*unstructured.Unstructured{newTrafficRoute("alice.apps-a-mesh-a", apex, primary, 95, canary, 5)}
	sc := scenario{canaryReady: true, canaryEnv: env(EnvErrorRate, "0.1"), routes: routes}
	s, clk := newTestSimulator(newFakeClient(t, sc.objects(), routes, nil), nil)
	tick(t, s, clk, 6) // through the warm-up
	for i := 1; i <= 200; i++ {
		tick(t, s, clk, 2) // 20 requests: 19/1
		got := s.Snapshot()
		total := got[primary].Requests + got[canary].Requests
		if got[canary].Requests*20 != total {
			t.Fatalf("after %d requests: canary got %d, want exactly 5%%", total, got[canary].Requests)
		}
		// One canary error per 10 canary requests, never early or late by more than one.
		if e, want := got[canary].Errors, got[canary].Requests/10; e != want {
			t.Fatalf("after %d canary requests: %d errors, want %d", got[canary].Requests, e, want)
		}
	}
}

func TestWarmUpExposesSeriesAtZero(t *testing.T) {
	sc := scenario{canaryReady: true}
	s, clk := newTestSimulator(newFakeClient(t, sc.objects(), nil, nil), nil)
	tick(t, s, clk, 1)
	text := scrape(t, s, "")
	if !strings.Contains(text, `envoy_cluster_upstream_rq{envoy_cluster_name="`+apex+`",envoy_response_code="200",kuma_io_mesh="mesh-a",namespace="apps-a-mesh-a"} 0`) {
		t.Fatalf("first scrape does not show the new cluster at zero:\n%s", text)
	}
	tick(t, s, clk, 5)
	if got := s.Snapshot()[apex].Requests; got != 60 {
		t.Errorf("after warm-up: %d requests, want the 60 held back and sent", got)
	}
}

func TestLatencyHistogram(t *testing.T) {
	routes := []*unstructured.Unstructured{newTrafficRoute("alice.apps-a-mesh-a", apex, primary, 50, canary, 50)}
	tests := []struct {
		name      string
		latency   string
		wantP99Ms float64 // as histogram_quantile reads it
		wantBelow bool    // p99 < 500 ms
	}{
		{name: "default 20 ms", latency: "", wantP99Ms: 24.85, wantBelow: true},
		{name: "300 ms passes a 500 ms threshold", latency: "300", wantP99Ms: 299.5, wantBelow: true},
		{name: "450 ms passes", latency: "450ms", wantP99Ms: 449.5, wantBelow: true},
		{name: "550 ms fails", latency: "550", wantP99Ms: 549.5, wantBelow: false},
		{name: "900 ms fails", latency: "0.9s", wantP99Ms: 997.5, wantBelow: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var e []corev1.EnvVar
			if tt.latency != "" {
				e = env(EnvLatencyMs, tt.latency)
			}
			sc := scenario{canaryReady: true, canaryEnv: e, primaryEnv: env(EnvLatencyMs, "5000")}
			s, clk := newTestSimulator(newFakeClient(t, sc.objects(), routes, nil), nil)
			tick(t, s, clk, ticks)

			h := histogramOf(t, parseExposition(t, scrape(t, s, "")), canary)
			if h.GetSampleCount() != 250 {
				t.Errorf("count = %d, want 250", h.GetSampleCount())
			}
			p99 := quantile(0.99, h)
			if diff := p99 - tt.wantP99Ms; diff > 0.01 || diff < -0.01 {
				t.Errorf("p99 = %.2f ms, want %.2f", p99, tt.wantP99Ms)
			}
			if (p99 < 500) != tt.wantBelow {
				t.Errorf("p99 = %.2f ms judged on the wrong side of 500 ms", p99)
			}
		})
	}
}

func TestLatencyMixesPods(t *testing.T) {
	// One slow pod of two: half the requests are slow, so p99 is slow.
	routes := []*unstructured.Unstructured{newTrafficRoute("alice.apps-a-mesh-a", apex, primary, 0, canary, 100)}
	sc := scenario{canaryReady: true, canaryEnv: env(EnvLatencyMs, "900"), extraObjects: []client.Object{
		pod(ns, "alice-canary-1", "alice-canary", true, env(EnvLatencyMs, "10")),
	}}
	s, clk := newTestSimulator(newFakeClient(t, sc.objects(), routes, nil), nil)
	tick(t, s, clk, ticks)
	h := histogramOf(t, parseExposition(t, scrape(t, s, "")), canary)
	for _, b := range h.GetBucket() {
		switch b.GetUpperBound() {
		case 10:
			if b.GetCumulativeCount() != 250 {
				t.Errorf("le=10: %d, want 250", b.GetCumulativeCount())
			}
		case 1000:
			if b.GetCumulativeCount() != 500 {
				t.Errorf("le=1000: %d, want 500", b.GetCumulativeCount())
			}
		}
	}
}

// TestExpositionMatchesSeedQueries checks the names and labels the seed's PromQL selects,
// as Prometheus 3 would receive them (it asks for protobuf or OpenMetrics first).
func TestExpositionMatchesSeedQueries(t *testing.T) {
	routes := []*unstructured.Unstructured{newTrafficRoute("alice.apps-a-mesh-a", apex, primary, 90, canary, 10)}
	sc := scenario{canaryReady: true, canaryEnv: env(EnvErrorRate, "0.5")}
	s, clk := newTestSimulator(newFakeClient(t, sc.objects(), routes, nil), nil)
	tick(t, s, clk, ticks)

	const prometheus3Accept = `application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.6,application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1`
	text := scrape(t, s, prometheus3Accept)
	if strings.Contains(text, "_total") {
		t.Errorf("exposition renames the counter:\n%s", text)
	}
	families := parseExposition(t, text)

	rq := families["envoy_cluster_upstream_rq"]
	if rq == nil || rq.GetType() != dto.MetricType_COUNTER {
		t.Fatalf("envoy_cluster_upstream_rq is not an exposed counter: %v", rq)
	}
	var selected, ok, errs float64
	for _, m := range rq.GetMetric() {
		l := labelsOf(m)
		if l["kuma_io_mesh"] != "mesh-a" || l["namespace"] != ns {
			t.Errorf("caller labels = %v", l)
		}
		if !seedClusterRegexp.MatchString(l["envoy_cluster_name"]) {
			continue
		}
		selected++
		if regexp.MustCompile(`^(?:5.*)$`).MatchString(l["envoy_response_code"]) {
			errs += m.GetCounter().GetValue()
		} else {
			ok += m.GetCounter().GetValue()
		}
	}
	if selected != 3 {
		t.Errorf("seed selector matches %v series of the canary, want 200, 500, 503", selected)
	}
	if ok != 25 || errs != 25 {
		t.Errorf("canary: %v ok, %v errors; want 25 and 25", ok, errs)
	}

	h := histogramOf(t, families, canary)
	if h.GetSampleCount() != 50 {
		t.Errorf("envoy_cluster_upstream_rq_time count = %d, want 50", h.GetSampleCount())
	}
	if !strings.Contains(text, `envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="`+canary+`",kuma_io_mesh="mesh-a",namespace="apps-a-mesh-a",le="500"} 50`) {
		t.Errorf("no le bucket series in milliseconds for the canary:\n%s", text)
	}
}

func TestAbsentMeshHTTPRouteCRD(t *testing.T) {
	var mhrLists int
	funcs := &interceptor.Funcs{List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
		if u, ok := list.(*unstructured.UnstructuredList); ok && u.GetKind() == "MeshHTTPRouteList" {
			mhrLists++
			return &meta.NoKindMatchError{GroupKind: meshHTTPRouteGVK.GroupKind(), SearchedVersions: []string{"v1alpha1"}}
		}
		return c.List(ctx, list, opts...)
	}}
	routes := []*unstructured.Unstructured{newTrafficRoute("alice.apps-a-mesh-a", apex, primary, 95, canary, 5)}
	sc := scenario{canaryReady: true}
	s, clk := newTestSimulator(newFakeClient(t, sc.objects(), routes, funcs), nil)
	tick(t, s, clk, ticks) // 10 s

	assertCounts(t, s.Snapshot(), map[string]Counts{primary: {Requests: 475}, canary: {Requests: 25}})
	if mhrLists != 1 {
		t.Errorf("missing MeshHTTPRoute kind listed %d times in 10 s, want once", mhrLists)
	}
}

func TestRoutesFromAnotherCluster(t *testing.T) {
	// Multi-zone: the TrafficRoute is on the Global control plane's cluster, the pods on the
	// zone's.
	sc := scenario{canaryReady: true}
	zone := newFakeClient(t, sc.objects(), nil, nil)
	global := newFakeClient(t, nil, []*unstructured.Unstructured{
		newTrafficRoute("alice.apps-a-mesh-a", apex, primary, 80, canary, 20),
	}, nil)
	s, clk := newTestSimulator(zone, global)
	tick(t, s, clk, ticks)
	assertCounts(t, s.Snapshot(), map[string]Counts{primary: {Requests: 400}, canary: {Requests: 100}})
}

func TestWeightsChange(t *testing.T) {
	sc := scenario{canaryReady: true}
	route := newTrafficRoute("alice.apps-a-mesh-a", apex, primary, 100, canary, 0)
	c := newFakeClient(t, sc.objects(), []*unstructured.Unstructured{route}, nil)
	s, clk := newTestSimulator(c, nil)
	tick(t, s, clk, ticks)
	before := s.Snapshot()

	live := &unstructured.Unstructured{}
	live.SetGroupVersionKind(trafficRouteGVK)
	if err := c.Get(context.Background(), client.ObjectKey{Name: route.GetName()}, live); err != nil {
		t.Fatal(err)
	}
	if err := unstructured.SetNestedSlice(live.Object, newTrafficRoute("", apex, primary, 50, canary, 50).Object["spec"].(map[string]any)["conf"].(map[string]any)["split"].([]any), "spec", "conf", "split"); err != nil {
		t.Fatal(err)
	}
	if err := c.Update(context.Background(), live); err != nil {
		t.Fatal(err)
	}
	tick(t, s, clk, ticks)
	after := s.Snapshot()
	if got := after[canary].Requests - before[canary].Requests; got != 250 {
		t.Errorf("canary got %d requests after the shift to 50%%, want 250", got)
	}
	if got := after[primary].Requests - before[primary].Requests; got != 250 {
		t.Errorf("primary got %d requests after the shift to 50%%, want 250", got)
	}
}

func TestStartServesMetrics(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sc := scenario{canaryReady: true}
	clk := clocktesting.NewFakeClock(time.Now())
	s, err := Start(ctx, Options{Client: newFakeClient(t, sc.objects(), nil, nil), Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	// Step the fake clock until the apex cluster has counted requests (warm-up is 1 s).
	err = wait.PollUntilContextTimeout(ctx, 5*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		if clk.HasWaiters() {
			clk.Step(DefaultInterval)
		}
		return s.Snapshot()[apex].Requests > 0, nil
	})
	if err != nil {
		t.Fatalf("no traffic on %s: %v", apex, err)
	}

	resp, err := http.Get("http://" + s.Addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("Content-Type = %q", ct)
	}
	if !strings.Contains(string(body), `envoy_cluster_upstream_rq{envoy_cluster_name="`+apex+`"`) {
		t.Errorf("no apex series in\n%s", body)
	}

	cancel()
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("simulator did not stop")
	}
}

func TestParseBehaviour(t *testing.T) {
	for _, tt := range []struct {
		in      string
		rate    float64
		rateOK  bool
		latency float64
		latOK   bool
	}{
		{in: "0.1", rate: 0.1, rateOK: true, latency: 0.1, latOK: true},
		{in: "10%", rate: 0.1, rateOK: true},
		{in: "2", rate: 1, rateOK: true, latency: 2, latOK: true},
		{in: "300ms", latency: 300, latOK: true},
		{in: "1.5s", latency: 1500, latOK: true},
		{in: "fast"},
	} {
		if r, ok := parseRate(tt.in); ok != tt.rateOK || r != tt.rate {
			t.Errorf("parseRate(%q) = %v, %v; want %v, %v", tt.in, r, ok, tt.rate, tt.rateOK)
		}
		if l, ok := parseLatencyMs(tt.in); ok != tt.latOK || l != tt.latency {
			t.Errorf("parseLatencyMs(%q) = %v, %v; want %v, %v", tt.in, l, ok, tt.latency, tt.latOK)
		}
	}
}

// scrape GETs /metrics with an Accept header.
func scrape(t *testing.T, s *Simulator, accept string) string {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	rec := httptest.NewRecorder()
	s.metrics.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != string(expfmt.NewFormat(expfmt.TypeTextPlain)) {
		t.Errorf("Content-Type = %q, want the text format", ct)
	}
	return rec.Body.String()
}

func parseExposition(t *testing.T, text string) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	families, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parse exposition: %v\n%s", err, text)
	}
	return families
}

func labelsOf(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

func histogramOf(t *testing.T, families map[string]*dto.MetricFamily, cluster string) *dto.Histogram {
	t.Helper()
	f := families["envoy_cluster_upstream_rq_time"]
	if f == nil || f.GetType() != dto.MetricType_HISTOGRAM {
		t.Fatalf("envoy_cluster_upstream_rq_time is not an exposed histogram: %v", f)
	}
	for _, m := range f.GetMetric() {
		if labelsOf(m)["envoy_cluster_name"] == cluster {
			return m.GetHistogram()
		}
	}
	t.Fatalf("no histogram for %s", cluster)
	return nil
}

// quantile interpolates linearly inside the bucket holding the rank, as PromQL's
// histogram_quantile does for classic buckets.
func quantile(q float64, h *dto.Histogram) float64 {
	rank := q * float64(h.GetSampleCount())
	lower, below := 0.0, 0.0
	for _, b := range h.GetBucket() {
		count := float64(b.GetCumulativeCount())
		if count >= rank {
			return lower + (b.GetUpperBound()-lower)*(rank-below)/(count-below)
		}
		lower, below = b.GetUpperBound(), count
	}
	return lower
}

func TestRouteReadFailureKeepsLastRoutes(t *testing.T) {
	// A blip in the control-plane connection must not send all traffic back to the apex.
	var failing bool
	funcs := &interceptor.Funcs{List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
		if u, ok := list.(*unstructured.UnstructuredList); ok && failing && u.GetKind() == "TrafficRouteList" {
			return errors.New("connection refused")
		}
		return c.List(ctx, list, opts...)
	}}
	routes := []*unstructured.Unstructured{newTrafficRoute("alice.apps-a-mesh-a", apex, primary, 95, canary, 5)}
	sc := scenario{canaryReady: true}
	s, clk := newTestSimulator(newFakeClient(t, sc.objects(), routes, funcs), nil)
	tick(t, s, clk, ticks/2)
	failing = true
	tick(t, s, clk, ticks/2)
	assertCounts(t, s.Snapshot(), map[string]Counts{primary: {Requests: 475}, canary: {Requests: 25}})
}

// TestEmptyClusterIsConfirmedLive: a route's weight to a cluster the cache shows without a
// Ready pod is sent to the pods a live read finds (the Pod informer can lag the route's);
// a cluster empty live too answers 503s, unless the route, read live after the pods, has
// moved the weight away (coalmine does so before it deletes a canary: the cached route
// was the stale one); without a live reader the cache decides.
func TestEmptyClusterIsConfirmedLive(t *testing.T) {
	route := newTrafficRoute("alice.apps-a-mesh-a", apex, primary, 95, canary, 5)
	movedAway := newTrafficRoute("alice.apps-a-mesh-a", apex, primary, 100, canary, 0)
	tests := []struct {
		name         string
		live         *scenario // nil: no live reader
		liveRoute    *unstructured.Unstructured
		routeCluster bool // routes on a cluster of their own, read live by LiveRouteClient
		wantRequests uint64
		wantErrors   uint64
	}{
		{name: "Ready live: the canary's pod answers", live: &scenario{canaryReady: true}, liveRoute: route, wantRequests: 25},
		{name: "empty live too: 503s", live: &scenario{canaryReady: false}, liveRoute: route, wantRequests: 25, wantErrors: 25},
		{name: "empty live, the live route moved the weight away: no 503", live: &scenario{canaryReady: false}, liveRoute: movedAway},
		{name: "route cluster: empty live, its live route moved the weight away: no 503", live: &scenario{canaryReady: false}, liveRoute: movedAway, routeCluster: true},
		{name: "route cluster without a live reader: its cached route decides", live: &scenario{canaryReady: false}, routeCluster: true, wantRequests: 25, wantErrors: 25},
		{name: "no live reader: the cache decides", live: nil, wantRequests: 25, wantErrors: 25},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs := scenario{canaryReady: false}.objects()
			var routeClient client.Reader
			if tt.routeCluster {
				routeClient = newFakeClient(t, nil, []*unstructured.Unstructured{route}, nil)
			}
			cached := newFakeClient(t, objs, []*unstructured.Unstructured{route}, nil)
			if tt.routeCluster {
				cached = newFakeClient(t, objs, nil, nil)
			}
			s, clk := newTestSimulator(cached, routeClient)
			if tt.live != nil {
				var liveRoutes []*unstructured.Unstructured
				if tt.liveRoute != nil && !tt.routeCluster {
					liveRoutes = append(liveRoutes, tt.liveRoute)
				}
				s.opts.LiveClient = newFakeClient(t, tt.live.objects(), liveRoutes, nil)
				if tt.liveRoute != nil && tt.routeCluster {
					s.opts.LiveRouteClient = newFakeClient(t, nil, []*unstructured.Unstructured{tt.liveRoute}, nil)
				}
			}
			tick(t, s, clk, ticks)
			got := s.Snapshot()[canary]
			if got.Requests != tt.wantRequests || got.Errors != tt.wantErrors {
				t.Errorf("canary cluster %+v, want %d requests and %d errors", got, tt.wantRequests, tt.wantErrors)
			}
			if p := s.Snapshot()[primary]; p.Requests+got.Requests != 500 || p.Errors != 0 {
				t.Errorf("primary cluster %+v beside the canary's %d requests, want 500 in all and no errors", p, got.Requests)
			}
		})
	}
}
