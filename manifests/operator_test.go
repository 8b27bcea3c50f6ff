package manifests

import (
	"slices"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// operatorRules are the rights of ClusterRole coalmine-operator, and no more: read
// Canaries, patch their command annotation, read their Events (README "Operating a
// rollout").
var operatorRules = []rbacv1.PolicyRule{
	{APIGroups: []string{"coalmine.dev"}, Resources: []string{"canaries"}, Verbs: []string{"get", "list", "watch", "patch"}},
	{APIGroups: []string{"", "events.k8s.io"}, Resources: []string{"events"}, Verbs: []string{"get", "list"}},
}

func assertOperatorRole(t *testing.T, source string, objs []*unstructured.Unstructured) {
	t.Helper()
	role := mustFind[rbacv1.ClusterRole](t, source, objs, "ClusterRole", "coalmine-operator")
	if !slices.EqualFunc(role.Rules, operatorRules, func(a, b rbacv1.PolicyRule) bool {
		return slices.Equal(a.APIGroups, b.APIGroups) && slices.Equal(a.Resources, b.Resources) &&
			slices.Equal(a.Verbs, b.Verbs) && len(a.ResourceNames) == 0 && len(a.NonResourceURLs) == 0
	}) {
		t.Errorf("%s: ClusterRole coalmine-operator rules %+v, want exactly %+v", source, role.Rules, operatorRules)
	}
	// Nobody is bound to it by the install: the cluster's owners choose who operates.
	for _, u := range objs {
		if k := u.GetKind(); k != "ClusterRoleBinding" && k != "RoleBinding" {
			continue
		}
		if name, _, _ := unstructured.NestedString(u.Object, "roleRef", "name"); name == "coalmine-operator" {
			t.Errorf("%s: %s %s binds coalmine-operator; the install must leave that to the cluster's owners", source, u.GetKind(), u.GetName())
		}
	}
}

func TestOperatorRoleKustomize(t *testing.T) {
	for _, dir := range []string{"kustomize/base", "kustomize/overlays/cert-manager"} {
		assertOperatorRole(t, dir, renderKustomize(t, dir))
	}
	assertOperatorRole(t, "rbac/operator.yaml (embedded)", parseObjects(t, "rbac/operator.yaml", OperatorRole))
}

func TestOperatorRoleHelm(t *testing.T) {
	assertOperatorRole(t, "helm (defaults)", renderHelm(t))
}
