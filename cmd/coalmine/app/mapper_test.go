package app

import (
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// countingMapper serves the kinds it was given and counts the questions.
type countingMapper struct {
	*meta.DefaultRESTMapper
	asked int
}

func (m *countingMapper) RESTMapping(gk schema.GroupKind, versions ...string) (*meta.RESTMapping, error) {
	m.asked++
	return m.DefaultRESTMapper.RESTMapping(gk, versions...)
}

func TestMappingCacheKeepsOnlyMappingsFound(t *testing.T) {
	canary := schema.GroupVersionKind{Group: "coalmine.dev", Version: "v1beta1", Kind: "Canary"}
	route := schema.GroupVersionKind{Group: "kuma.io", Version: "v1alpha1", Kind: "MeshHTTPRoute"}
	under := &countingMapper{DefaultRESTMapper: meta.NewDefaultRESTMapper(nil)}
	under.Add(canary, meta.RESTScopeNamespace)
	c := newMappingCache(under)

	for range 3 {
		m, err := c.RESTMapping(canary.GroupKind(), canary.Version)
		if err != nil || m.Resource.Resource != "canaries" || m.Scope.Name() != meta.RESTScopeNameNamespace {
			t.Fatalf("RESTMapping(Canary) = %v, %v; want canaries, namespaced", m, err)
		}
	}
	if under.asked != 1 {
		t.Errorf("the mapper underneath was asked %d times for one kind, want once", under.asked)
	}

	if _, err := c.RESTMapping(route.GroupKind(), route.Version); !meta.IsNoMatchError(err) {
		t.Fatalf("RESTMapping of a kind not served: %v, want a no-match error", err)
	}
	under.Add(route, meta.RESTScopeNamespace) // the CRD is installed afterwards
	if m, err := c.RESTMapping(route.GroupKind(), route.Version); err != nil || m.Resource.Resource != "meshhttproutes" {
		t.Errorf("RESTMapping once the kind is served: %v, %v; want meshhttproutes (a miss is not kept)", m, err)
	}

	asked := under.asked
	if _, err := c.RESTMapping(canary.GroupKind(), "v1", canary.Version); err != nil {
		t.Fatal(err)
	}
	if under.asked != asked+1 {
		t.Error("a question with more than one version must go to the mapper underneath")
	}
}
