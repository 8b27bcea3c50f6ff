package router

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/yaml"
)

// alice is the seed's app.
var alice = Target{
	Namespace: "apps-a-mesh-a", Apex: "alice", Primary: "alice-primary", Canary: "alice-canary",
	Port: 8080, Mesh: "mesh-a", CanaryName: "alice",
}

// writeCounter counts the requests that reach the fake apiserver.
type writeCounter struct{ creates, updates, deletes, patches, applies, gets int }

func (w *writeCounter) total() int { return w.creates + w.updates + w.deletes + w.patches + w.applies }

// hooks stand in for the fake apiserver's answer to a Get or a Delete (the request is
// counted all the same); nil means the fake's own answer.
type hooks struct {
	get    func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object) error
	delete func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error
}

func newClient(t *testing.T, objs ...client.Object) (client.Client, *writeCounter) {
	t.Helper()
	return newHookedClient(t, hooks{}, objs...)
}

func newHookedClient(t *testing.T, h hooks, objs ...client.Object) (client.Client, *writeCounter) {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	mapper := meta.NewDefaultRESTMapper(nil)
	mapper.Add(GroupVersion.WithKind("TrafficRoute"), meta.RESTScopeRoot)
	mapper.Add(GroupVersion.WithKind("MeshHTTPRoute"), meta.RESTScopeNamespace)
	if h.get == nil {
		h.get = func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object) error {
			return c.Get(ctx, key, obj)
		}
	}
	if h.delete == nil {
		h.delete = deleteWithPreconditions
	}
	w := &writeCounter{}
	c := fake.NewClientBuilder().WithScheme(scheme).WithRESTMapper(mapper).WithObjects(objs...).
		WithInterceptorFuncs(interceptor.Funcs{
			Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
				w.creates++
				return c.Create(ctx, obj, opts...)
			},
			Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
				w.updates++
				return c.Update(ctx, obj, opts...)
			},
			Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
				w.patches++
				return c.Patch(ctx, obj, patch, opts...)
			},
			Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
				w.deletes++
				return h.delete(ctx, c, obj, opts...)
			},
			Apply: func(ctx context.Context, c client.WithWatch, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
				w.applies++
				return c.Apply(ctx, obj, opts...)
			},
			Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
				w.gets++
				return h.get(ctx, c, key, obj)
			},
		}).Build()
	return c, w
}

// deleteWithPreconditions deletes as the apiserver does: a UID precondition that the
// stored object does not meet is a Conflict. (The fake client checks only resourceVersion.)
func deleteWithPreconditions(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
	do := (&client.DeleteOptions{}).ApplyOptions(opts)
	if p := do.Preconditions; p != nil && p.UID != nil {
		stored := obj.DeepCopyObject().(client.Object)
		if err := c.Get(ctx, client.ObjectKeyFromObject(obj), stored); err != nil {
			return err
		}
		if stored.GetUID() != *p.UID {
			return apierrors.NewConflict(GroupVersion.WithResource("routes").GroupResource(), obj.GetName(),
				fmt.Errorf("precondition failed: UID in precondition: %s, UID in object meta: %s", *p.UID, stored.GetUID()))
		}
	}
	return c.Delete(ctx, obj, opts...)
}

// asMap renders obj the way it goes over the wire, as generic YAML.
func asMap(t *testing.T, obj any) map[string]any {
	t.Helper()
	data, err := yaml.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func readYAML(t *testing.T, name string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestTrafficRouteIsTheAppendixExample(t *testing.T) {
	got := asMap(t, NewTrafficRoute(alice, 5))
	want := readYAML(t, "appendix-trafficroute.yaml")

	gotMeta, _ := got["metadata"].(map[string]any)
	delete(got, "metadata")
	delete(want, "metadata")
	if !reflect.DeepEqual(got, want) {
		t.Errorf("TrafficRoute differs from DESIGN's appendix:\n got: %v\nwant: %v", got, want)
	}

	wantMeta := map[string]any{
		"name": "alice.apps-a-mesh-a",
		"labels": map[string]any{
			"app.kubernetes.io/managed-by":  "coalmine",
			"coalmine.dev/canary-name":      "alice",
			"coalmine.dev/canary-namespace": "apps-a-mesh-a",
		},
		"annotations": map[string]any{"kustomize.toolkit.fluxcd.io/reconcile": "disabled"},
	}
	if !reflect.DeepEqual(gotMeta, wantMeta) {
		t.Errorf("metadata:\n got: %v\nwant: %v", gotMeta, wantMeta)
	}
}

func TestMeshHTTPRouteShape(t *testing.T) {
	got := asMap(t, NewMeshHTTPRoute(alice, 5))
	want := readYAML(t, "meshhttproute-95-5.yaml")
	if !reflect.DeepEqual(got, want) {
		out, _ := yaml.Marshal(got)
		t.Errorf("MeshHTTPRoute differs from testdata/meshhttproute-95-5.yaml; got:\n%s", out)
	}
}

func TestZeroWeightIsWrittenNotOmitted(t *testing.T) {
	// Kuma refuses a split entry without weight, and its MeshHTTPRoute CRD defaults a
	// missing backendRef weight to 1: a 0 must be on the wire.
	tr := asMap(t, NewTrafficRoute(alice, 0))
	split := tr["spec"].(map[string]any)["conf"].(map[string]any)["split"].([]any)
	if w, ok := split[1].(map[string]any)["weight"]; !ok || w != float64(0) {
		t.Errorf("canary split weight = %v (present %v), want 0", w, ok)
	}
	mr := asMap(t, NewMeshHTTPRoute(alice, 0))
	refs := mr["spec"].(map[string]any)["to"].([]any)[0].(map[string]any)["rules"].([]any)[0].(map[string]any)["default"].(map[string]any)["backendRefs"].([]any)
	if w, ok := refs[1].(map[string]any)["weight"]; !ok || w != float64(0) {
		t.Errorf("canary backendRef weight = %v (present %v), want 0", w, ok)
	}
}

func routers(c client.Client) map[string]Router {
	return map[string]Router{
		"TrafficRoute":  NewTrafficRouteRouter(c),
		"MeshHTTPRoute": NewMeshHTTPRouteRouter(c),
	}
}

// observe reads target's route with r, failing the test on an error.
func observe(t *testing.T, r Router, target Target) Observed {
	t.Helper()
	o, err := r.Observe(context.Background(), target)
	if err != nil {
		t.Fatalf("Observe: %v", err)
	}
	return o
}

func TestObserveRoundTrip(t *testing.T) {
	for kind := range routers(nil) {
		for _, weight := range []int{0, 5, 10, 33, 50, 95, 100} {
			t.Run(fmt.Sprintf("%s at %d%%", kind, weight), func(t *testing.T) {
				c, _ := newClient(t)
				r := routers(c)[kind]
				ctx := context.Background()
				if err := r.SetWeights(ctx, alice, weight); err != nil {
					t.Fatal(err)
				}
				if got, want := observe(t, r, alice), (Observed{Found: true, Ours: true, Weight: weight}); got != want {
					t.Fatalf("Observe() = %+v, want %+v", got, want)
				}
			})
		}
	}
}

// Each step is one apply that reads nothing first. (That an apply changing nothing stores
// nothing is the API server's part; the fake client stores it anyway.)
func TestSetWeightsIsOneApplyWithoutReads(t *testing.T) {
	for kind := range routers(nil) {
		t.Run(kind, func(t *testing.T) {
			c, w := newClient(t)
			r := routers(c)[kind]
			ctx := context.Background()
			for i, weight := range []int{0, 0, 5, 5, 50, 0} {
				if err := r.SetWeights(ctx, alice, weight); err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if w.applies != i+1 || w.total() != w.applies || w.gets != 0 {
					t.Fatalf("step %d (weight %d): requests %+v, want %d applies and nothing else", i, weight, *w, i+1)
				}
				if got := observe(t, r, alice); !got.Found || got.Weight != weight {
					t.Fatalf("step %d: Observe() = %+v, want weight %d", i, got, weight)
				}
				w.gets = 0
			}
		})
	}
}

func TestSetWeightsKeepsWhatOthersAdded(t *testing.T) {
	// Kuma's webhook adds labels (kuma.io/origin, ...) and an owner reference to the Mesh;
	// they must neither trigger writes nor be removed by one.
	ctx := context.Background()
	existing := NewTrafficRoute(alice, 5)
	existing.Labels["kuma.io/origin"] = "global"
	existing.Annotations["note"] = "kept"
	c, _ := newClient(t, existing)
	r := NewTrafficRouteRouter(c)

	if err := r.SetWeights(ctx, alice, 5); err != nil {
		t.Fatal(err)
	}
	if err := r.SetWeights(ctx, alice, 10); err != nil {
		t.Fatal(err)
	}
	got := &TrafficRoute{}
	if err := c.Get(ctx, client.ObjectKey{Name: "alice.apps-a-mesh-a"}, got); err != nil {
		t.Fatal(err)
	}
	if got.Labels["kuma.io/origin"] != "global" || got.Annotations["note"] != "kept" {
		t.Errorf("foreign metadata lost: labels %v annotations %v", got.Labels, got.Annotations)
	}
	if got.Spec.Conf.Split[1].Weight != 10 || got.Mesh != "mesh-a" {
		t.Errorf("route not updated: %+v", got)
	}
}

// Drift on a route coalmine acquired (a label removed by hand, the mesh edited) is undone
// by the next apply. Acquire, not SetWeights, is what keeps coalmine off others' objects.
func TestSetWeightsRestoresDriftedRoute(t *testing.T) {
	ctx := context.Background()
	drifted := NewTrafficRoute(alice, 5)
	drifted.Mesh = "default"
	delete(drifted.Labels, LabelManagedBy)
	c, w := newClient(t, drifted)
	if err := NewTrafficRouteRouter(c).SetWeights(ctx, alice, 5); err != nil {
		t.Fatal(err)
	}
	got := &TrafficRoute{}
	if err := c.Get(ctx, client.ObjectKey{Name: "alice.apps-a-mesh-a"}, got); err != nil {
		t.Fatal(err)
	}
	if w.applies != 1 || got.Mesh != "mesh-a" || got.Labels[LabelManagedBy] != ManagedByValue {
		t.Errorf("drift not repaired with one apply: writes %+v, route %+v", *w, got)
	}
}

func TestTrafficRoutesOfTwoNamespacesDoNotCollide(t *testing.T) {
	ctx := context.Background()
	c, _ := newClient(t)
	r := NewTrafficRouteRouter(c)
	other := alice
	other.Namespace = "apps-b-mesh-a"
	if err := r.SetWeights(ctx, alice, 5); err != nil {
		t.Fatal(err)
	}
	if err := r.SetWeights(ctx, other, 50); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		target Target
		want   int
	}{{alice, 5}, {other, 50}} {
		if got := observe(t, r, tt.target); !got.Ours || got.Weight != tt.want {
			t.Errorf("%s: %+v, want ours at weight %d", tt.target.Namespace, got, tt.want)
		}
	}
}

func TestObserveAbsentRoute(t *testing.T) {
	for kind, r := range routers(func() client.Client { c, _ := newClient(t); return c }()) {
		if got := observe(t, r, alice); got != (Observed{}) {
			t.Errorf("%s: Observe() = %+v, want nothing found", kind, got)
		}
	}
}

func TestDelete(t *testing.T) {
	for kind := range routers(nil) {
		t.Run(kind, func(t *testing.T) {
			ctx := context.Background()
			c, _ := newClient(t)
			r := routers(c)[kind]
			if err := r.SetWeights(ctx, alice, 5); err != nil {
				t.Fatal(err)
			}
			if err := r.Delete(ctx, alice); err != nil {
				t.Fatal(err)
			}
			if got := observe(t, r, alice); got.Found {
				t.Fatalf("after Delete: %+v", got)
			}
			if err := r.Delete(ctx, alice); err != nil {
				t.Errorf("deleting an absent route: %v", err)
			}
		})
	}
}

func TestSetWeightsRejectsBadInput(t *testing.T) {
	c, w := newClient(t)
	r := NewTrafficRouteRouter(c)
	noPort := alice
	noPort.Port = 0
	noCanaryName := alice
	noCanaryName.CanaryName = ""
	for name, call := range map[string]func() error{
		"weight above 100": func() error { return r.SetWeights(context.Background(), alice, 101) },
		"negative weight":  func() error { return r.SetWeights(context.Background(), alice, -1) },
		"no port":          func() error { return r.SetWeights(context.Background(), noPort, 5) },
		"no Canary name":   func() error { return r.SetWeights(context.Background(), noCanaryName, 5) },
	} {
		if err := call(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if w.total() != 0 {
		t.Errorf("bad input wrote %+v", *w)
	}
}

func TestSetWeightsReportsAPIErrors(t *testing.T) {
	scheme := runtime.NewScheme()
	_ = AddToScheme(scheme)
	c := fake.NewClientBuilder().WithScheme(scheme).WithInterceptorFuncs(interceptor.Funcs{
		Apply: func(ctx context.Context, c client.WithWatch, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
			return apierrors.NewForbidden(GroupVersion.WithResource("trafficroutes").GroupResource(), "alice.apps-a-mesh-a", nil)
		},
	}).Build()
	err := NewTrafficRouteRouter(c).SetWeights(context.Background(), alice, 5)
	if !apierrors.IsForbidden(err) {
		t.Errorf("want the Forbidden error wrapped, got %v", err)
	}
}

func TestServiceTag(t *testing.T) {
	if got := ServiceTag("alice-canary", "apps-a-mesh-a", 8080); got != "alice-canary_apps-a-mesh-a_svc_8080" {
		t.Errorf("ServiceTag = %q", got)
	}
}
