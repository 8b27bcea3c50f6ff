package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilrand "k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/coalmine-dev/coalmine/cmd/coalmine/demo"
	"github.com/coalmine-dev/coalmine/sandbox"
)

// The install tests hand every rendering of the shipped manifests (kustomize base and
// overlays, the Helm chart with default and seed-like values) to the sandbox's real
// apiserver: schemas, CRD validation, admission (Pod Security included) and RBAC's
// escalation check judge them as they would on a cluster.
//
// Coalmine is one per cluster: its ClusterRole, bindings, CRDs and webhook configurations
// have fixed names, and the sandbox runs a live install of them that other tests use. So
// cluster-scoped objects are applied with server-side dry-run (judged in full, stored
// nowhere) under a fresh name, so each is judged as the create of a first install, not
// merged into the live sandbox object (whose webhooks call a loopback url, which the
// shipped service clientConfig would join); CRDs keep their names (the live ones come
// from the same manifests). Namespaced objects really are applied, moved into a
// throwaway namespace that carries the labels of coalmine's (the restricted Pod Security
// Standard): the Deployment's ReplicaSet must then be allowed to create its pods.

// certManagerVersion is the cert-manager release whose CRDs the cert-manager install
// is applied against.
const certManagerVersion = "v1.21.2"

// installTimeout bounds one rendering's apply and the wait for its pods.
const installTimeout = 2 * time.Minute

func TestInstallKustomize(t *testing.T) {
	root := repoRoot(t)
	for _, tt := range []struct {
		name, dir string
		// certManager: the rendering holds cert-manager objects, so its CRDs go first.
		certManager bool
	}{
		{name: "base", dir: "manifests/kustomize/base"},
		{name: "self-signed overlay", dir: "manifests/kustomize/overlays/self-signed"},
		{name: "cert-manager overlay", dir: "manifests/kustomize/overlays/cert-manager", certManager: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.certManager {
				installCertManagerCRDs(t)
			}
			objs := renderKustomize(t, filepath.Join(root, tt.dir))
			applyInstall(t, tt.dir, objs, "")
		})
	}
}

func TestInstallHelm(t *testing.T) {
	root := repoRoot(t)
	chart := filepath.Join(root, "manifests", "helm", "coalmine")
	for _, tt := range []struct {
		name   string
		values string
		// certManager: the rendering holds cert-manager objects, so its CRDs go first.
		certManager bool
	}{
		{name: "default values"},
		{
			// The values of the seed's Flagger install that coalmine's chart shares.
			name: "seed values",
			values: `meshProvider: kuma
metricsServer: http://prometheus.monitoring:9090
controlplane:
  kubeconfig:
    secretName: gcp-kubeconfig
    key: kubeconfig
`,
		},
		{name: "cert-manager mode", values: "certs:\n  mode: cert-manager\n", certManager: true},
		{
			// The dashboard and the rules as ConfigMaps (a PrometheusRule needs the
			// operator's CRD, which the sandbox lacks) and the web view.
			name:   "dashboard rules and web view",
			values: "grafanaDashboard: {enabled: true}\nprometheusRules: {enabled: true, kind: ConfigMap}\nwebView: {enabled: true}\n",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			bin := helmBinary(t)
			if tt.certManager {
				installCertManagerCRDs(t)
			}
			// Helm renders into the release namespace itself, so the throwaway namespace
			// is the release's: nothing is moved.
			ns := newInstallNamespace(t, nil)
			args := []string{"template", "coalmine", chart, "--namespace", ns, "--include-crds"}
			if tt.values != "" {
				f := filepath.Join(t.TempDir(), "values.yaml")
				if err := os.WriteFile(f, []byte(tt.values), 0o600); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--values", f)
			}
			out := runHelm(t, bin, args...)
			objs, err := parseYAML(out)
			if err != nil {
				t.Fatalf("parse helm template output: %v", err)
			}
			applyInstall(t, "helm ("+tt.name+")", objs, ns)

			if strings.Contains(tt.values, "gcp-kubeconfig") {
				d := &appsv1.Deployment{}
				if err := k8s.Get(testContext(t, 10*time.Second), client.ObjectKey{Namespace: ns, Name: "coalmine"}, d); err != nil {
					t.Fatalf("get deployment: %v", err)
				}
				if !slices.ContainsFunc(d.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool {
					return v.Secret != nil && v.Secret.SecretName == "gcp-kubeconfig"
				}) {
					t.Errorf("the seed's Secret gcp-kubeconfig is not mounted by the applied Deployment")
				}
			}
		})
	}
}

// applyInstall applies one rendering: cluster-scoped objects with server-side dry-run,
// namespaced ones for real into ns (a new throwaway namespace when ns is empty, labelled
// like the rendered Namespace of coalmine). Every object must be accepted without
// warnings, and the Deployment's pods must be admitted.
func applyInstall(t *testing.T, source string, objs []*unstructured.Unstructured, ns string) {
	t.Helper()
	ctx := testContext(t, installTimeout)
	if ns == "" {
		var labels map[string]string
		for _, o := range objs {
			if o.GetKind() == "Namespace" {
				labels = o.GetLabels()
			}
		}
		if labels == nil {
			t.Fatalf("%s renders no Namespace", source)
		}
		ns = newInstallNamespace(t, labels)
	}
	c, warnings := warningClient(t)

	// CRDs and Namespaces first, then who the pods run as, then the rest, as Flux and
	// kubectl order an install.
	rank := func(u *unstructured.Unstructured) int {
		switch u.GetKind() {
		case "CustomResourceDefinition", "Namespace":
			return 0
		case "ServiceAccount":
			return 1
		}
		return 2
	}
	objs = slices.Clone(objs)
	slices.SortStableFunc(objs, func(a, b *unstructured.Unstructured) int { return rank(a) - rank(b) })

	dryRunSuffix := "e2e-" + utilrand.String(6)
	applied := map[string]int{}
	var deployments []string
	for _, o := range objs {
		o = o.DeepCopy()
		id := fmt.Sprintf("%s %s", o.GetKind(), o.GetName())
		namespaced, err := c.IsObjectNamespaced(o)
		if err != nil {
			t.Errorf("%s: %s: %v", source, id, err)
			continue
		}
		opts := []client.PatchOption{client.FieldOwner("coalmine-e2e-install"), client.ForceOwnership}
		if namespaced {
			o.SetNamespace(ns)
			applied["applied"]++
		} else {
			// The live install's objects of the same names must stay as they are.
			opts = append(opts, client.DryRunAll)
			if o.GetKind() != "CustomResourceDefinition" {
				o.SetName(o.GetName() + "-" + dryRunSuffix)
			}
			applied["dry-run"]++
		}
		warnings.reset()
		if err := c.Patch(ctx, o, client.Apply, opts...); err != nil { //nolint:staticcheck // unstructured apply
			t.Errorf("%s: apply %s: %v", source, id, err)
			continue
		}
		if w := warnings.reset(); len(w) > 0 {
			t.Errorf("%s: apply %s: the apiserver warned: %s", source, id, strings.Join(w, "; "))
		}
		if o.GetKind() == "Deployment" && namespaced {
			deployments = append(deployments, o.GetName())
		}
	}
	t.Logf("%s: %d objects applied into %s, %d cluster-scoped dry-run", source, applied["applied"], ns, applied["dry-run"])
	if t.Failed() {
		return
	}
	if len(deployments) == 0 {
		t.Fatalf("%s renders no Deployment", source)
	}
	for _, name := range deployments {
		waitPodsAdmitted(t, client.ObjectKey{Namespace: ns, Name: name})
	}
}

// waitPodsAdmitted waits until the Deployment's ReplicaSet has created all its pods: the
// namespace enforces the restricted Pod Security Standard, so that proves the pod
// template meets it. The pods stay Pending (they do not tolerate the fake node's taint,
// and there is no image to run).
func waitPodsAdmitted(t *testing.T, key client.ObjectKey) {
	t.Helper()
	waitFor(t, 60*time.Second, func(ctx context.Context) (bool, error) {
		d := &appsv1.Deployment{}
		if err := k8s.Get(ctx, key, d); err != nil {
			return false, err
		}
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		rsList := &appsv1.ReplicaSetList{}
		if err := k8s.List(ctx, rsList, client.InNamespace(key.Namespace)); err != nil {
			return false, err
		}
		for _, rs := range rsList.Items {
			if !metav1.IsControlledBy(&rs, d) {
				continue
			}
			for _, c := range rs.Status.Conditions {
				if c.Type == appsv1.ReplicaSetReplicaFailure && c.Status == corev1.ConditionTrue {
					return false, fmt.Errorf("replicaset %s cannot create pods: %s", rs.Name, c.Message)
				}
			}
			if rs.Status.Replicas == want {
				return true, nil
			}
			return false, fmt.Errorf("replicaset %s has %d of %d pods", rs.Name, rs.Status.Replicas, want)
		}
		return false, fmt.Errorf("deployment %s has no replicaset yet", key)
	})
}

// newInstallNamespace creates a namespace outside the mesh (coalmine's own is never in
// it) with labels, deleted when the test ends.
func newInstallNamespace(t *testing.T, labels map[string]string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespaceName(t.Name()), Labels: labels}}
	if err := k8s.Create(testContext(t, 30*time.Second), ns); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := k8s.Delete(ctx, ns); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete namespace %s: %v", ns.Name, err)
		}
	})
	return ns.Name
}

// warningRecorder keeps the warnings the apiserver sends (deprecations, unknown fields,
// Pod Security violations of the warn level).
type warningRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warningRecorder) HandleWarningHeaderWithContext(_ context.Context, _ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, text)
}

// reset returns the warnings so far and forgets them.
func (w *warningRecorder) reset() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.msgs
	w.msgs = nil
	return out
}

// warningClient is an admin client whose requests' warnings are recorded.
func warningClient(t *testing.T) (client.Client, *warningRecorder) {
	t.Helper()
	w := &warningRecorder{}
	cfg := rest.CopyConfig(sb.Config)
	cfg.WarningHandler = nil
	cfg.WarningHandlerWithContext = w
	return newClient(t, cfg), w
}

// renderKustomize builds a kustomization as `kubectl kustomize` does (kustomize as a
// library, default load restrictions).
func renderKustomize(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	out, err := m.AsYaml()
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	objs, err := parseYAML(out)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	return objs
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := sandbox.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// ---------------------------------------------------------------------------
// cert-manager's CRDs

var (
	certManagerOnce sync.Once
	certManagerErr  error
)

// installCertManagerCRDs installs the CRDs of cert-manager certManagerVersion (its
// module's deploy/crds) once per test binary. They stay: nothing else defines them, and
// nothing runs that acts on them.
func installCertManagerCRDs(t *testing.T) {
	t.Helper()
	certManagerOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		certManagerErr = applyCertManagerCRDs(ctx)
	})
	if certManagerErr != nil {
		t.Fatalf("install cert-manager %s CRDs: %v", certManagerVersion, certManagerErr)
	}
}

func applyCertManagerCRDs(ctx context.Context) error {
	dir, err := downloadModule(ctx, "github.com/cert-manager/cert-manager", certManagerVersion)
	if err != nil {
		return err
	}
	files, err := filepath.Glob(filepath.Join(dir, "deploy", "crds", "*.yaml"))
	if err != nil || len(files) == 0 {
		return fmt.Errorf("no CRDs in %s/deploy/crds (%v)", dir, err)
	}
	var names []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		objs, err := parseYAML(data)
		if err != nil {
			return fmt.Errorf("parse %s: %w", f, err)
		}
		for _, o := range objs {
			if o.GetKind() != "CustomResourceDefinition" {
				continue
			}
			if err := tryApply(ctx, o); err != nil {
				return fmt.Errorf("apply %s: %w", o.GetName(), err)
			}
			names = append(names, o.GetName())
		}
	}
	for _, name := range names {
		if err := waitEstablished(ctx, name); err != nil {
			return err
		}
	}
	return nil
}

func waitEstablished(ctx context.Context, name string) error {
	for {
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := k8s.Get(ctx, client.ObjectKey{Name: name}, crd); err != nil {
			return fmt.Errorf("get CRD %s: %w", name, err)
		}
		for _, c := range crd.Status.Conditions {
			if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("CRD %s not established: %w", name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// downloadModule fetches module@version through the Go module proxy (or finds it in the
// module cache) and returns its directory; run outside any module, it touches no go.mod.
func downloadModule(ctx context.Context, module, version string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", module+"@"+version)
	cmd.Dir = os.TempDir()
	cmd.Env = append(os.Environ(), "GOWORK=off", "GO111MODULE=on")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var info struct{ Dir, Error string }
	_ = json.Unmarshal(stdout.Bytes(), &info)
	if runErr != nil || info.Error != "" || info.Dir == "" {
		return "", fmt.Errorf("go mod download %s@%s: %v %s %s", module, version, runErr, info.Error, stderr.String())
	}
	return info.Dir, nil
}

// ---------------------------------------------------------------------------
// Helm

var (
	helmOnce sync.Once
	helmPath string
	helmErr  error
)

// helmBinary returns $COALMINE_HELM, or helm built from the tools module sandbox/tools/helm
// into the sandbox cache (<cache>/helm-<version>/helm), building it the first time
// (minutes on two cores with a cold build cache). The test skips, saying why, when there
// is no helm and it cannot be built.
func helmBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("COALMINE_HELM"); p != "" {
		return p
	}
	helmOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		defer cancel()
		helmPath, helmErr = cachedHelm(ctx, t)
	})
	if helmErr != nil {
		t.Skipf("no helm binary: set COALMINE_HELM to one, or let the test build it from sandbox/tools/helm: %v", helmErr)
	}
	return helmPath
}

func cachedHelm(ctx context.Context, t *testing.T) (string, error) {
	toolsDir, err := sandbox.ToolsDir()
	if err != nil {
		return "", err
	}
	moduleDir := filepath.Join(toolsDir, "helm")
	gomod, err := os.ReadFile(filepath.Join(moduleDir, "go.mod"))
	if err != nil {
		return "", fmt.Errorf("read helm tools module: %w", err)
	}
	version := ""
	for _, line := range strings.Split(string(gomod), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && f[0] == "require" {
			f = f[1:]
		}
		if len(f) >= 2 && f[0] == "helm.sh/helm/v3" {
			version = f[1]
		}
	}
	if version == "" {
		return "", fmt.Errorf("%s/go.mod does not require helm.sh/helm/v3", moduleDir)
	}
	cache, err := sandbox.CacheDir()
	if err != nil {
		return "", err
	}
	out := filepath.Join(cache, "helm-"+version, "helm")
	if fi, err := os.Stat(out); err == nil && fi.Mode().IsRegular() {
		return out, nil
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return "", err
	}
	t.Logf("building helm %s into %s (a cold build takes minutes) ...", version, out)
	start := time.Now()
	// A temporary name, renamed when complete: an interrupted build never looks done.
	tmp := fmt.Sprintf("%s.tmp-%d", out, os.Getpid())
	defer os.Remove(tmp)
	cmd := exec.CommandContext(ctx, "go", "build", "-ldflags", "-s -w", "-o", tmp, "helm.sh/helm/v3/cmd/helm")
	cmd.Dir = moduleDir
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if output, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build helm in %s: %w\n%s", moduleDir, err, output)
	}
	if err := os.Rename(tmp, out); err != nil {
		return "", err
	}
	t.Logf("built helm %s in %s", version, time.Since(start).Round(time.Second))
	return out, nil
}

// runHelm runs helm with its config, cache and data in a temporary directory.
func runHelm(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	home := t.TempDir()
	cmd := exec.CommandContext(testContext(t, time.Minute), bin, args...)
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes()
}

// ---------------------------------------------------------------------------
// RBAC of the live install

// TestInstallRBACGrantsOnlyApprovedVerbs asks the apiserver what coalmine's
// ServiceAccount may do under the shipped RBAC (a SelfSubjectRulesReview as that
// identity, which every scenario's coalmine runs as) and holds it against
// manifests/rbac/approved-verbs.txt: rules in an app namespace are the cluster-wide ones,
// rules only in coalmine's namespace are the namespaced ones. What any ServiceAccount
// gets by default (discovery, self reviews) is left out.
func TestInstallRBACGrantsOnlyApprovedVerbs(t *testing.T) {
	sharedRollout(t) // installs the shipped RBAC, as every scenario runs with it
	ctx := testContext(t, time.Minute)
	appNS := newNamespace(t, nil)
	user, groups := sandbox.ServiceAccountUser(demo.Namespace, demo.ServiceAccount)
	coalmine := newClient(t, sb.Impersonate(user, groups...))
	// A ServiceAccount nobody granted anything: what it may do, every identity may.
	user, groups = sandbox.ServiceAccountUser(appNS, "nobody")
	nobody := newClient(t, sb.Impersonate(user, groups...))

	defaults := rbacRules(t, ctx, nobody, appNS)
	maps.Copy(defaults, rbacRules(t, ctx, nobody, demo.Namespace))
	clusterWide := rbacRules(t, ctx, coalmine, appNS)
	own := rbacRules(t, ctx, coalmine, demo.Namespace)
	for r := range defaults {
		delete(clusterWide, r)
		delete(own, r)
	}
	for r := range clusterWide {
		delete(own, r)
	}
	if len(clusterWide) == 0 || len(own) == 0 {
		t.Fatalf("coalmine has %d cluster-wide and %d namespaced rules; is the shipped RBAC installed?", len(clusterWide), len(own))
	}

	approvals := loadApprovedVerbs(t, filepath.Join(repoRoot(t), "manifests", "rbac", "approved-verbs.txt"))
	granted := map[approvedVerb]bool{}
	for scope, set := range map[string]map[rbacRule]bool{"cluster": clusterWide, "namespace": own} {
		for r := range set {
			a, ok := approvedFor(approvals, scope, r)
			if !ok {
				t.Errorf("coalmine may %s, which manifests/rbac/approved-verbs.txt does not approve (%s scope)", r, scope)
				continue
			}
			granted[a] = true
		}
	}
	for _, a := range approvals {
		if !granted[a] {
			t.Logf("approved but not granted: %s %q %s %s %v", a.scope, a.group, a.resource, a.verb, a.names)
		}
	}
	t.Logf("coalmine's effective RBAC: %d cluster-wide and %d namespaced verb grants, all approved", len(clusterWide), len(own))

	// The promises of approved-verbs.txt, asked one by one.
	for _, tt := range []struct {
		what string
		attr authorizationv1.ResourceAttributes
	}{
		{"list Secrets in an app namespace", authorizationv1.ResourceAttributes{Namespace: appNS, Verb: "list", Resource: "secrets"}},
		// Reading a Secret by name is granted cluster-wide (MetricTemplate credentials);
		// writing is limited to the serving Secret.
		{"update another Secret of its own namespace",
			authorizationv1.ResourceAttributes{Namespace: demo.Namespace, Verb: "update", Resource: "secrets", Name: "other"}},
		{"delete its serving Secret",
			authorizationv1.ResourceAttributes{Namespace: demo.Namespace, Verb: "delete", Resource: "secrets", Name: "coalmine-webhook-tls"}},
		{"create a webhook configuration",
			authorizationv1.ResourceAttributes{Verb: "create", Group: "admissionregistration.k8s.io", Resource: "mutatingwebhookconfigurations"}},
		{"patch another webhook configuration",
			authorizationv1.ResourceAttributes{Verb: "patch", Group: "admissionregistration.k8s.io", Resource: "validatingwebhookconfigurations", Name: "other"}},
		{"list webhook configurations",
			authorizationv1.ResourceAttributes{Verb: "list", Group: "admissionregistration.k8s.io", Resource: "mutatingwebhookconfigurations"}},
		{"update Pods", authorizationv1.ResourceAttributes{Namespace: appNS, Verb: "update", Resource: "pods"}},
	} {
		review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &tt.attr}}
		if err := coalmine.Create(ctx, review); err != nil {
			t.Fatalf("access review: %v", err)
		}
		if review.Status.Allowed {
			t.Errorf("coalmine may %s", tt.what)
		}
	}
}

// rbacRule is one verb on one resource, optionally limited to one object name.
type rbacRule struct {
	group, resource, verb, name string
}

func (r rbacRule) String() string {
	s := fmt.Sprintf("%s %q %s", r.verb, r.group, r.resource)
	if r.name != "" {
		s += " named " + r.name
	}
	return s
}

// rbacRules is what c's user may do in ns, one entry per verb, resource and name.
func rbacRules(t *testing.T, ctx context.Context, c client.Client, ns string) map[rbacRule]bool {
	t.Helper()
	review := &authorizationv1.SelfSubjectRulesReview{Spec: authorizationv1.SelfSubjectRulesReviewSpec{Namespace: ns}}
	if err := c.Create(ctx, review); err != nil {
		t.Fatalf("rules review in %s: %v", ns, err)
	}
	if review.Status.Incomplete {
		t.Fatalf("rules review in %s is incomplete: %s", ns, review.Status.EvaluationError)
	}
	out := map[rbacRule]bool{}
	for _, r := range review.Status.ResourceRules {
		names := r.ResourceNames
		if len(names) == 0 {
			names = []string{""}
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					for _, n := range names {
						out[rbacRule{group: g, resource: res, verb: v, name: n}] = true
					}
				}
			}
		}
	}
	return out
}

// approvedVerb is one line of approved-verbs.txt, expanded to one group, resource and
// verb.
type approvedVerb struct {
	scope, group, resource, verb string
	names                        string // comma-separated; empty: any object
}

// loadApprovedVerbs reads approved-verbs.txt (format in its header; manifests_test.go
// holds the render-time check of the same file).
func loadApprovedVerbs(t *testing.T, path string) []approvedVerb {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []approvedVerb
	for i, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if len(f) < 4 || len(f) > 5 {
			t.Fatalf("%s:%d: want `scope apiGroup resources verbs [resourceNames]`", path, i+1)
		}
		names := ""
		if len(f) == 5 {
			names = f[4]
		}
		for _, g := range strings.Split(f[1], ",") {
			if g == "core" {
				g = ""
			}
			for _, r := range strings.Split(f[2], ",") {
				for _, v := range strings.Split(f[3], ",") {
					out = append(out, approvedVerb{scope: f[0], group: g, resource: r, verb: v, names: names})
				}
			}
		}
	}
	return out
}

// approvedFor finds the approval of r: same scope, group, resource and verb, and, when
// the approval names objects, r is limited to one of them.
func approvedFor(approvals []approvedVerb, scope string, r rbacRule) (approvedVerb, bool) {
	for _, a := range approvals {
		if a.scope != scope || a.group != r.group || a.resource != r.resource || a.verb != r.verb {
			continue
		}
		if a.names == "" || r.name != "" && slices.Contains(strings.Split(a.names, ","), r.name) {
			return a, true
		}
	}
	return approvedVerb{}, false
}
