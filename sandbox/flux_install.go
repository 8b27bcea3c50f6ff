package sandbox

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// fluxManifests finds the CRD directories and the generated controller ClusterRoles
// (config/rbac/role.yaml) of both controllers in the module cache, at the versions the
// tools modules require. The role files map a controller name to its path.
func fluxManifests(ctx context.Context) (crds []string, roles map[string]string, err error) {
	toolsDir, err := ToolsDir()
	if err != nil {
		return nil, nil, err
	}
	roles = map[string]string{}
	for _, c := range []struct{ name, module string }{
		{FluxSourceController, sourceControllerModule},
		{FluxKustomizeController, kustomizeControllerModule},
	} {
		version, err := requiredVersion(filepath.Join(toolsDir, c.name, "go.mod"), c.module)
		if err != nil {
			return nil, nil, err
		}
		dir, err := moduleDir(ctx, c.module, version)
		if err != nil {
			return nil, nil, err
		}
		crd := filepath.Join(dir, "config", "crd", "bases")
		if !isDir(crd) {
			return nil, nil, fmt.Errorf("find %s CRDs: %s is missing", c.name, crd)
		}
		crds = append(crds, crd)
		roles[c.name] = filepath.Join(dir, "config", "rbac", "role.yaml")
	}
	return crds, roles, nil
}

// fluxUser is the identity a controller runs as: its ServiceAccount in flux-system.
func fluxUser(name string) (string, []string) { return ServiceAccountUser(FluxNamespace, name) }

// installFluxRBAC creates flux-system, a ServiceAccount per controller, and binds each to
// the ClusterRole its module generates (renamed flux-<controller>). The
// kustomize-controller also gets cluster-admin, as Flux's own installation gives it
// (ClusterRoleBinding cluster-reconciler): it applies whatever the repository holds, here
// Deployments, Services and Canaries.
func (s *Sandbox) installFluxRBAC(ctx context.Context, roleFiles map[string]string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: FluxNamespace}}
	if err := s.client.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", FluxNamespace, err)
	}
	for name, file := range roleFiles {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: FluxNamespace, Name: name}}
		if err := s.client.Create(ctx, sa); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create ServiceAccount %s: %w", name, err)
		}
		role, err := readClusterRole(file)
		if err != nil {
			return err
		}
		roleName := "flux-" + name
		role.ObjectMeta = metav1.ObjectMeta{Name: roleName}
		if err := createOrUpdate(ctx, s, role); err != nil {
			return err
		}
		roles := []string{roleName}
		if name == FluxKustomizeController {
			roles = append(roles, "cluster-admin")
		}
		for _, r := range roles {
			binding := &rbacv1.ClusterRoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: "flux-" + name + "-" + r},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: r},
				Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: FluxNamespace, Name: name}},
			}
			if err := createOrUpdate(ctx, s, binding); err != nil {
				return err
			}
		}
	}
	return nil
}

func readClusterRole(path string) (*rbacv1.ClusterRole, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read Flux RBAC: %w", err)
	}
	role := &rbacv1.ClusterRole{}
	if err := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(string(data)), 4096).Decode(role); err != nil {
		return nil, fmt.Errorf("read Flux RBAC %s: %w", path, err)
	}
	if role.Kind != "ClusterRole" || len(role.Rules) == 0 {
		return nil, fmt.Errorf("read Flux RBAC %s: not a ClusterRole with rules", path)
	}
	return role, nil
}

// createOrUpdate creates obj, or updates it when it exists (a second StartFlux on the same
// sandbox).
func createOrUpdate(ctx context.Context, s *Sandbox, obj client.Object) error {
	err := s.client.Create(ctx, obj)
	if err == nil {
		return nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create %s: %w", obj.GetName(), err)
	}
	current := obj.DeepCopyObject().(client.Object)
	if err := s.client.Get(ctx, client.ObjectKeyFromObject(obj), current); err != nil {
		return fmt.Errorf("get %s: %w", obj.GetName(), err)
	}
	obj.SetResourceVersion(current.GetResourceVersion())
	if err := s.client.Update(ctx, obj); err != nil {
		return fmt.Errorf("update %s: %w", obj.GetName(), err)
	}
	return nil
}
