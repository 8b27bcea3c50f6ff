package router

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	structuraldefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	"sigs.k8s.io/yaml"
)

// These tests put the routes through what the apiserver does to a custom resource before
// storing it (defaulting, pruning of unknown fields, OpenAPI validation) with the CRDs the
// sandbox installs: Kuma v1.8.1's TrafficRoute and the sandbox's Kuma 2.x MeshHTTPRoute.
// A field the CRD does not know would be silently dropped by the apiserver (the top-level
// mesh, say), and a weight left out would be defaulted; both are caught here without a
// cluster. The e2e scenarios then round-trip the same objects through a real apiserver.

// kumaCRD finds a CRD of the Kuma v1.8.1 module in the module cache, where the sandbox
// takes them from.
func kumaCRD(t *testing.T, file string) []byte {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Skipf("go env GOMODCACHE: %v", err)
	}
	path := filepath.Join(strings.TrimSpace(string(out)), "github.com", "kumahq", "kuma@v1.8.1", "deployments", "charts", "kuma", "crds", file)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Skipf("Kuma v1.8.1 CRDs are not in the module cache (go mod download github.com/kumahq/kuma@v1.8.1): %v", err)
	}
	return data
}

type crdSchema struct {
	structural *structuralschema.Structural
	validator  apiservervalidation.SchemaValidator
}

func loadSchema(t *testing.T, data []byte) crdSchema {
	t.Helper()
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := yaml.Unmarshal(data, crd); err != nil {
		t.Fatal(err)
	}
	var v1props *apiextensionsv1.JSONSchemaProps
	for _, v := range crd.Spec.Versions {
		if v.Name == GroupVersion.Version {
			v1props = v.Schema.OpenAPIV3Schema
		}
	}
	if v1props == nil {
		t.Fatalf("CRD %s has no %s schema", crd.Name, GroupVersion.Version)
	}
	internal := &apiextensions.JSONSchemaProps{}
	if err := apiextensionsv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(v1props, internal, nil); err != nil {
		t.Fatal(err)
	}
	structural, err := structuralschema.NewStructural(internal)
	if err != nil {
		t.Fatal(err)
	}
	validator, _, err := apiservervalidation.NewSchemaValidator(internal)
	if err != nil {
		t.Fatal(err)
	}
	return crdSchema{structural: structural, validator: validator}
}

// store does to obj what the apiserver does on create and reports what changed it.
func (s crdSchema) store(t *testing.T, obj any) (pruned []string, defaulted bool, invalid []string) {
	t.Helper()
	data, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	var u, before map[string]any
	if err := json.Unmarshal(data, &u); err != nil {
		t.Fatal(err)
	}
	_ = json.Unmarshal(data, &before)
	structuraldefaulting.Default(u, s.structural)
	defaulted = !reflect.DeepEqual(u, before)
	pruned = pruning.PruneWithOptions(u, s.structural, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true})
	for _, e := range apiservervalidation.ValidateCustomResource(nil, u, s.validator) {
		invalid = append(invalid, e.Error())
	}
	return pruned, defaulted, invalid
}

func TestRoutesSurviveTheirCRDs(t *testing.T) {
	tests := []struct {
		name string
		crd  func(t *testing.T) []byte
		obj  func(w int) any
	}{
		{"TrafficRoute with Kuma v1.8.1's CRD", func(t *testing.T) []byte { return kumaCRD(t, "kuma.io_trafficroutes.yaml") },
			func(w int) any { return NewTrafficRoute(alice, w) }},
		{"MeshHTTPRoute with the sandbox's Kuma 2.x CRD", func(t *testing.T) []byte {
			data, err := os.ReadFile(filepath.Join("..", "..", "sandbox", "testdata", "meshhttproute-crd.yaml"))
			if err != nil {
				t.Fatalf("the sandbox's MeshHTTPRoute CRD: %v", err)
			}
			return data
		}, func(w int) any { return NewMeshHTTPRoute(alice, w) }},
		{"A/B TrafficRoute with Kuma v1.8.1's CRD", func(t *testing.T) []byte { return kumaCRD(t, "kuma.io_trafficroutes.yaml") },
			func(w int) any { return NewTrafficRoute(aliceAB, w) }},
		{"A/B MeshHTTPRoute with the sandbox's Kuma 2.x CRD", func(t *testing.T) []byte {
			data, err := os.ReadFile(filepath.Join("..", "..", "sandbox", "testdata", "meshhttproute-crd.yaml"))
			if err != nil {
				t.Fatalf("the sandbox's MeshHTTPRoute CRD: %v", err)
			}
			return data
		}, func(w int) any { return NewMeshHTTPRoute(aliceAB, w) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := loadSchema(t, tt.crd(t))
			for _, w := range []int{0, 5, 100} {
				pruned, defaulted, invalid := s.store(t, tt.obj(w))
				if len(pruned) > 0 || defaulted || len(invalid) > 0 {
					t.Errorf("weight %d: pruned %v, defaulted %v, invalid %v", w, pruned, defaulted, invalid)
				}
			}
		})
	}
}

// TestCRDCheckCatchesMistakes shows the check above has teeth.
func TestCRDCheckCatchesMistakes(t *testing.T) {
	tr := loadSchema(t, kumaCRD(t, "kuma.io_trafficroutes.yaml"))
	misplacedMesh := map[string]any{
		"apiVersion": "kuma.io/v1alpha1", "kind": "TrafficRoute",
		"metadata": map[string]any{"name": "x", "mesh": "mesh-a"},
		"spec":     map[string]any{"mesh": "kept: spec is opaque"},
		"meshName": "mesh-a",
	}
	if pruned, _, _ := tr.store(t, misplacedMesh); len(pruned) != 1 || pruned[0] != "meshName" {
		t.Errorf("TrafficRoute: pruned %v, want [meshName]", pruned)
	}

	data, err := os.ReadFile(filepath.Join("..", "..", "sandbox", "testdata", "meshhttproute-crd.yaml"))
	if err != nil {
		t.Fatalf("the sandbox's MeshHTTPRoute CRD: %v", err)
	}
	mr := loadSchema(t, data)
	noWeight := asMap(t, NewMeshHTTPRoute(alice, 0))
	refs := noWeight["spec"].(map[string]any)["to"].([]any)[0].(map[string]any)["rules"].([]any)[0].(map[string]any)["default"].(map[string]any)["backendRefs"].([]any)
	delete(refs[1].(map[string]any), "weight")
	if _, defaulted, _ := mr.store(t, noWeight); !defaulted {
		t.Error("MeshHTTPRoute: a backendRef without weight was not defaulted")
	}
}
