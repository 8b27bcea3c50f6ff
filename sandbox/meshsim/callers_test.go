package meshsim

import (
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// routerGolden reads a route coalmine's router writes, from the router's golden files, so
// that the simulator is tested on exactly what coalmine puts in the cluster.
func routerGolden(t *testing.T, name string) *unstructured.Unstructured {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "rollout", "router", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(data, &u.Object); err != nil {
		t.Fatal(err)
	}
	return u
}

// annotate returns svc with annotations added.
func annotate(svc *corev1.Service, kv ...string) *corev1.Service {
	if svc.Annotations == nil {
		svc.Annotations = map[string]string{}
	}
	for i := 0; i < len(kv); i += 2 {
		svc.Annotations[kv[i]] = kv[i+1]
	}
	return svc
}

// abScenario is the seed's app whose apex also has callers with headers: two that match
// coalmine's A/B golden routes (a header, a cookie), one on the third entry's path,
// method and headers, and two that do not match (another header value, the right headers
// on another path).
func abScenario() scenario {
	sc := scenario{canaryReady: true}
	callers := CallersAnnotation(
		CallerSpec{Name: "insiders", Headers: map[string]string{"X-Canary": "insider"}},
		CallerSpec{Name: "cookies", Headers: map[string]string{"cookie": "canary=always; session=1"}},
		CallerSpec{Name: "safari-api", Path: "/api/v1", Headers: map[string]string{"user-agent": "Mozilla Safari/605.1", "x-beta": ""}},
		CallerSpec{Name: "outsiders", Headers: map[string]string{"x-canary": "outsider", "cookie": "canary=never"}},
		CallerSpec{Name: "safari-root", Headers: map[string]string{"user-agent": "Mozilla Safari/605.1", "x-beta": "1"}},
	)
	objs := sc.objects()
	for _, o := range objs {
		if svc, ok := o.(*corev1.Service); ok && svc.Name == "alice" && svc.Namespace == ns {
			annotate(svc, AnnotationCallers, callers)
		}
	}
	sc.extraObjects = nil
	sc.objectsOverride = objs
	return sc
}

// TestHeaderCallersFollowMatches: callers with headers are routed by the A/B matches of
// both route kinds as coalmine writes them; the users (no header) and the callers that
// match nothing stay on primary.
func TestHeaderCallersFollowMatches(t *testing.T) {
	for _, golden := range []string{"trafficroute-ab.json", "meshhttproute-ab.yaml"} {
		t.Run(golden, func(t *testing.T) {
			sc := abScenario()
			routes := []*unstructured.Unstructured{routerGolden(t, golden)}
			s, clk := newTestSimulator(newFakeClient(t, sc.objectsOverride, routes, nil), nil)
			tick(t, s, clk, ticks)
			for caller, want := range map[string]map[string]Counts{
				CallerUsers:   {primary: {Requests: perCaller}, canary: {}},
				"insiders":    {canary: {Requests: perCaller}, primary: {}},
				"cookies":     {canary: {Requests: perCaller}, primary: {}},
				"safari-api":  {canary: {Requests: perCaller}, primary: {}},
				"outsiders":   {primary: {Requests: perCaller}, canary: {}},
				"safari-root": {primary: {Requests: perCaller}, canary: {}},
			} {
				t.Run(caller, func(t *testing.T) { assertCounts(t, s.CallerSnapshot(caller), want) })
			}
			if got := s.Snapshot()[canary].Requests; got != 3*perCaller {
				t.Errorf("canary got %d requests in all, want the three matching callers' %d", got, 3*perCaller)
			}
		})
	}
}

// TestHeaderCallersWithoutMatchFollowTheSplit: with a plain route the extra callers are
// split like the users.
func TestHeaderCallersWithoutMatchFollowTheSplit(t *testing.T) {
	sc := abScenario()
	routes := []*unstructured.Unstructured{newTrafficRoute("alice.apps-a-mesh-a", apex, primary, 90, canary, 10)}
	s, clk := newTestSimulator(newFakeClient(t, sc.objectsOverride, routes, nil), nil)
	tick(t, s, clk, ticks)
	assertCounts(t, s.CallerSnapshot("insiders"), map[string]Counts{primary: {Requests: 450}, canary: {Requests: 50}})
}

// TestLoadTesterCallsTheCanaryDirectly: a Service annotated for the load tester is called
// by its own tag whatever the route says (Flagger's load tester calls <app>-canary), at the
// annotation's rate, only while it has Ready pods; the users never reach it under a 100/0
// route, and UserSnapshot leaves the load tester out.
func TestLoadTesterCallsTheCanaryDirectly(t *testing.T) {
	for _, ready := range []bool{true, false} {
		sc := scenario{canaryReady: ready}
		objs := sc.objects()
		for _, o := range objs {
			if svc, ok := o.(*corev1.Service); ok && svc.Name == "alice-canary" {
				annotate(svc, AnnotationLoadTest, "20")
			}
		}
		routes := []*unstructured.Unstructured{newTrafficRoute("alice.apps-a-mesh-a", apex, primary, 100, canary, 0)}
		s, clk := newTestSimulator(newFakeClient(t, objs, routes, nil), nil)
		tick(t, s, clk, ticks) // 10 s
		want := map[string]Counts{canary: {Requests: 200}}
		if !ready {
			want = map[string]Counts{}
		}
		assertCounts(t, s.CallerSnapshot(CallerLoadTester), want)
		if got := s.UserSnapshot()[canary]; got.Requests != 0 {
			t.Errorf("ready=%v: users sent %d requests to the canary under a 100/0 route", ready, got.Requests)
		}
		if got := s.Snapshot()[canary].Requests; got != want[canary].Requests {
			t.Errorf("ready=%v: Snapshot counts %d canary requests, want the load tester's %d", ready, got, want[canary].Requests)
		}
	}
}

func TestCallersAnnotationRefusesReservedNames(t *testing.T) {
	for _, v := range []string{`[{"name":"users"}]`, `[{"name":"load-tester"}]`, `[{"name":""}]`, `[{"name":"a"},{"name":"a"}]`, `not json`, `[{"name":"a","rps":-1}]`} {
		svc := annotate(service(ns, "alice", "alice"), AnnotationCallers, v)
		if _, err := callersOf(svc); err == nil {
			t.Errorf("%s: accepted", v)
		}
	}
	var _ client.Object = &corev1.Service{}
}

// TestMeshHTTPRoutePrecedenceIsKumas: the rule a request takes is the one of its most
// specific matching entry in Kuma's order (path kind, then length, method, headers): a
// pattern ranks below any path prefix, so /api/v1 under the rules {regex /api.* -> canary,
// prefix / -> primary} goes to primary, and under {prefix /api -> canary, ...} to canary.
func TestMeshHTTPRoutePrecedenceIsKumas(t *testing.T) {
	rule := func(path map[string]any, backend string) any {
		return map[string]any{
			"matches": []any{map[string]any{"path": path}},
			"default": map[string]any{"backendRefs": []any{map[string]any{"kind": "MeshService", "name": backend, "weight": int64(1)}}},
		}
	}
	for _, tt := range []struct {
		name  string
		first map[string]any
		want  string
	}{
		{"pattern below the catch-all prefix", map[string]any{"type": "RegularExpression", "value": "/api.*"}, primary},
		{"longer prefix first", map[string]any{"type": "PathPrefix", "value": "/api"}, canary},
		{"exact first", map[string]any{"type": "Exact", "value": "/api/v1"}, canary},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sc := scenario{canaryReady: true}
			objs := sc.objects()
			for _, o := range objs {
				if svc, ok := o.(*corev1.Service); ok && svc.Name == "alice" && svc.Namespace == ns {
					annotate(svc, AnnotationCallers, CallersAnnotation(CallerSpec{Name: "api", Path: "/api/v1"}))
				}
			}
			route := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "kuma.io/v1alpha1", "kind": "MeshHTTPRoute",
				"metadata": map[string]any{"namespace": ns, "name": "alice"},
				"spec": map[string]any{"to": []any{map[string]any{
					"targetRef": map[string]any{"kind": "MeshService", "name": apex},
					"rules":     []any{rule(tt.first, canary), rule(map[string]any{"type": "PathPrefix", "value": "/"}, primary)},
				}}},
			}}
			s, clk := newTestSimulator(newFakeClient(t, objs, []*unstructured.Unstructured{route}, nil), nil)
			tick(t, s, clk, ticks)
			if got := s.CallerSnapshot("api")[tt.want].Requests; got != perCaller {
				t.Errorf("%s got %d of the api caller's requests, want all %d: %v", tt.want, got, perCaller, s.CallerSnapshot("api"))
			}
		})
	}
}
