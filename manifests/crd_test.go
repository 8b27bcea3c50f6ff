package manifests

import (
	"os"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

// The loop is the one writer of a Canary's status (a merge patch, which replaces lists
// whole), so per-entry field ownership in status.metrics and status.ownership only made
// every Canary's managedFields, and every status write the apiserver handles, larger.
func TestCanaryStatusListsAreAtomic(t *testing.T) {
	b, err := os.ReadFile("crd/coalmine.dev_canaries.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.Unmarshal(b, &crd); err != nil {
		t.Fatalf("decode the Canary CRD: %v", err)
	}
	for _, v := range crd.Spec.Versions {
		status := v.Schema.OpenAPIV3Schema.Properties["status"].Properties
		for _, tc := range []struct {
			field string
			got   *string
		}{
			{"status.metrics x-kubernetes-list-type", status["metrics"].XListType},
			{"status.ownership x-kubernetes-map-type", status["ownership"].XMapType},
		} {
			if tc.got == nil || *tc.got != "atomic" {
				t.Errorf("%s: %s is %v, want atomic", v.Name, tc.field, tc.got)
			}
		}
	}
}
