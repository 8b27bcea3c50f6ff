package manifests

import (
	"os"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// The app Kustomization the README recommends health-checks alice's Canary and its
// Deployment and does not wait on everything (e2e/flux_test.go runs it on real Flux).
func TestFluxAppKustomizationExample(t *testing.T) {
	data, err := os.ReadFile("examples/flux/app-kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Objects(data)
	if err != nil || len(objs) != 1 {
		t.Fatalf("app-kustomization.yaml: %d objects, %v; want one Kustomization", len(objs), err)
	}
	ks := objs[0]
	if ks.GetAPIVersion() != "kustomize.toolkit.fluxcd.io/v1" || ks.GetKind() != "Kustomization" {
		t.Fatalf("app-kustomization.yaml is a %s %s", ks.GetAPIVersion(), ks.GetKind())
	}
	if wait, _, _ := unstructured.NestedBool(ks.Object, "spec", "wait"); wait {
		t.Error("app-kustomization.yaml sets wait: true")
	}
	checks, _, _ := unstructured.NestedSlice(ks.Object, "spec", "healthChecks")
	want := map[string]string{"Canary": "coalmine.dev/v1beta1", "Deployment": "apps/v1"}
	for _, c := range checks {
		m, _ := c.(map[string]any)
		kind, _ := m["kind"].(string)
		if want[kind] == m["apiVersion"] && m["name"] == "alice" && m["namespace"] == ks.GetNamespace() {
			delete(want, kind)
		}
	}
	if len(want) > 0 {
		t.Errorf("app-kustomization.yaml lacks health checks on alice's %v", want)
	}
}
