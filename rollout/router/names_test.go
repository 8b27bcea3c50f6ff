package router

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

func TestRouteName(t *testing.T) {
	long := alice
	long.Apex = strings.Repeat("a", 63)
	tests := []struct {
		name, kind string
		target     Target
		want       string
	}{
		{"TrafficRoute: apex and namespace", KindTrafficRoute, alice, "alice.apps-a-mesh-a"},
		{"MeshHTTPRoute: not the apex's own name", KindMeshHTTPRoute, alice, "alice-coalmine"},
		{"MeshHTTPRoute of a 63-character apex: cut, hashed, still ours", KindMeshHTTPRoute, long, strings.Repeat("a", 45) + "-" + hashOf(long.Apex) + "-coalmine"},
		{"unknown kind", "HTTPRoute", alice, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := RouteName(tt.kind, tt.target); got != tt.want {
				t.Errorf("RouteName(%s) = %q, want %q", tt.kind, got, tt.want)
			}
		})
	}
}

// hashOf is the first 8 hex digits of s's SHA-256, the suffix of a name cut short.
func hashOf(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:8]
}

// Names must be valid for the apiserver and Kuma whatever the apex, and two apexes that
// only differ past the cut must not share a route.
func TestRouteNamesFitTheirLimits(t *testing.T) {
	for _, apex := range []string{"a", strings.Repeat("b", 54), strings.Repeat("c", 55), strings.Repeat("d-", 31) + "e", strings.Repeat("f", 63)} {
		name := MeshHTTPRouteName(apex)
		if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
			t.Errorf("MeshHTTPRouteName(%q) = %q: %v", apex, name, errs)
		}
		if !strings.HasSuffix(name, "-coalmine") || name != MeshHTTPRouteName(apex) {
			t.Errorf("MeshHTTPRouteName(%q) = %q: not coalmine's, or not deterministic", apex, name)
		}
	}
	if a, b := MeshHTTPRouteName(strings.Repeat("x", 62)+"1"), MeshHTTPRouteName(strings.Repeat("x", 62)+"2"); a == b {
		t.Errorf("two long apexes share the MeshHTTPRoute name %q", a)
	}
	huge := TrafficRouteName(strings.Repeat("g", 63), strings.Repeat("h", 200))
	if errs := validation.IsDNS1123Subdomain(huge); len(errs) > 0 {
		t.Errorf("TrafficRouteName of an oversize pair = %q: %v", huge, errs)
	}
}

// The kinds are the values of the Canary's coalmine.dev/route-kind annotation, so the loop
// can pass that annotation to RouteName as it is.
func TestKindsAreTheAnnotationValues(t *testing.T) {
	if KindTrafficRoute != v1beta1.RouteKindTrafficRoute || KindMeshHTTPRoute != v1beta1.RouteKindMeshHTTPRoute {
		t.Errorf("kinds %q, %q; the API says %q, %q", KindTrafficRoute, KindMeshHTTPRoute, v1beta1.RouteKindTrafficRoute, v1beta1.RouteKindMeshHTTPRoute)
	}
}

// Ref and Object name exactly the object SetWeights wrote, so status and the metadata
// cache point at it.
func TestRefAndObjectNameTheWrittenRoute(t *testing.T) {
	want := map[string]RouteRef{
		KindTrafficRoute:  {Kind: "TrafficRoute", Name: "alice.apps-a-mesh-a", Mesh: "mesh-a"},
		KindMeshHTTPRoute: {Kind: "MeshHTTPRoute", Name: "alice-coalmine", Namespace: "apps-a-mesh-a", Mesh: "mesh-a"},
	}
	for kind := range routers(nil) {
		t.Run(kind, func(t *testing.T) {
			c, _ := newClient(t)
			r := routers(c)[kind]
			if err := r.SetWeights(context.Background(), alice, 5); err != nil {
				t.Fatal(err)
			}
			ref := r.Ref(alice)
			if ref != want[kind] {
				t.Errorf("Ref() = %+v, want %+v", ref, want[kind])
			}
			obj := r.Object(alice)
			if obj.Kind != ref.Kind || obj.Name != ref.Name || obj.Namespace != ref.Namespace || obj.APIVersion != "kuma.io/v1alpha1" {
				t.Errorf("Object() = %+v, Ref() = %+v", obj, ref)
			}
			if err := c.Get(context.Background(), client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}, r.(*kumaRouter).k.empty()); err != nil {
				t.Errorf("no route where Ref points: %v", err)
			}
		})
	}
}

func TestRefOfTheDefaultMesh(t *testing.T) {
	noMesh := alice
	noMesh.Mesh = ""
	if got := NewTrafficRouteRouter(nil).Ref(noMesh).Mesh; got != DefaultMesh {
		t.Errorf("Ref().Mesh = %q, want %q", got, DefaultMesh)
	}
}
