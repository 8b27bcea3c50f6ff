package sandbox

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// flaggerTool is Flagger, the controller coalmine replaces, built only on demand
// (BuildFlagger): it is the yardstick of make bench-peer, not part of the sandbox, so Build
// and make sandbox never spend its ~3.5 minutes of compilation.
var flaggerTool = tool{
	name: "flagger", toolsModule: "flagger", module: flaggerModule, pkg: flaggerModule + "/cmd/flagger",
	ldflags: stripLDFlags,
}

const flaggerModule = "github.com/fluxcd/flagger"

// Flagger's identity in the sandbox: a ServiceAccount, impersonated, so RBAC judges its
// requests as in a cluster.
const (
	FlaggerNamespace      = "flagger-system"
	FlaggerServiceAccount = "flagger"
)

// FlaggerBinaries are Flagger's binary and its CRDs (Canary, MetricTemplate,
// AlertProvider of flagger.app/v1beta1), both from the cache.
type FlaggerBinaries struct {
	Binary, CRDs, Version string
}

// BuildFlagger builds Flagger from sandbox/tools/flagger, or reuses it from the cache, and
// puts its CRDs next to it, copied from the module the binary was built from (the module
// cache holds it after the build, so nothing is fetched for them).
func BuildFlagger(ctx context.Context, w io.Writer) (*FlaggerBinaries, error) {
	if w == nil {
		w = io.Discard
	}
	b, err := lockBuild(ctx, w)
	if err != nil {
		return nil, err
	}
	defer b.unlock()
	bin, err := buildTool(ctx, w, b.goBin, b.toolsDir, b.root, flaggerTool)
	if err != nil {
		return nil, err
	}
	version, err := requiredVersion(filepath.Join(b.toolsDir, flaggerTool.toolsModule, "go.mod"), flaggerModule)
	if err != nil {
		return nil, err
	}
	crds := filepath.Join(filepath.Dir(bin), "crd.yaml")
	if !isFile(crds) {
		dir, err := moduleDir(ctx, flaggerModule, version)
		if err != nil {
			return nil, err
		}
		data, err := os.ReadFile(filepath.Join(dir, "artifacts", "flagger", "crd.yaml"))
		if err != nil {
			return nil, fmt.Errorf("read Flagger's CRDs: %w", err)
		}
		tmp := fmt.Sprintf("%s.tmp-%d", crds, os.Getpid())
		if err := os.WriteFile(tmp, data, 0o644); err != nil {
			return nil, fmt.Errorf("copy Flagger's CRDs: %w", err)
		}
		if err := os.Rename(tmp, crds); err != nil {
			return nil, fmt.Errorf("copy Flagger's CRDs: %w", err)
		}
	}
	return &FlaggerBinaries{Binary: bin, CRDs: crds, Version: version}, nil
}

// FlaggerUser is Flagger's ServiceAccount as Impersonate wants it.
func FlaggerUser() (string, []string) {
	return ServiceAccountUser(FlaggerNamespace, FlaggerServiceAccount)
}

// FlaggerRBAC are the objects that let Flagger's ServiceAccount do what its Kuma provider
// does. The rules are the part of the ClusterRole Flagger ships (kustomize/base/flagger)
// that the Kuma provider uses: core objects it copies or creates (Services, ConfigMaps and
// Secrets it tracks, Events), Deployments and DaemonSets (the -primary copy), HPAs, its
// own CRDs, Kuma's TrafficRoutes, Leases for leader election, /version.
func FlaggerRBAC() []client.Object {
	all := []string{"get", "list", "watch", "create", "update", "patch", "delete"}
	name := "flagger"
	return []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: FlaggerNamespace}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: FlaggerServiceAccount, Namespace: FlaggerNamespace}},
		&rbacv1.ClusterRole{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"events", "configmaps", "configmaps/finalizers", "secrets", "secrets/finalizers", "services", "services/finalizers"}, Verbs: all},
				{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: all},
				{APIGroups: []string{"apps"}, Resources: []string{"daemonsets", "daemonsets/finalizers", "deployments", "deployments/finalizers"}, Verbs: all},
				{APIGroups: []string{"autoscaling"}, Resources: []string{"horizontalpodautoscalers", "horizontalpodautoscalers/finalizers"}, Verbs: all},
				{APIGroups: []string{"flagger.app"}, Resources: []string{"canaries", "canaries/status", "canaries/finalizers", "metrictemplates", "metrictemplates/status", "alertproviders", "alertproviders/status"}, Verbs: all},
				{APIGroups: []string{"kuma.io"}, Resources: []string{"trafficroutes", "trafficroutes/finalizers"}, Verbs: all},
				{NonResourceURLs: []string{"/version"}, Verbs: []string{"get"}},
			},
		},
		&rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: FlaggerServiceAccount, Namespace: FlaggerNamespace}},
		},
	}
}
