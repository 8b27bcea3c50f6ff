package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
	"sigs.k8s.io/controller-runtime/pkg/client"

	coalminev1beta1 "github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/sandbox"
)

// The smoke tests prove the sandbox is a cluster coalmine can be tested on: workloads
// become Ready, the CRDs judge objects like the real ones, RBAC is enforced, and
// Prometheus scrapes what a test serves.

func TestSmokeDeploymentBecomesReady(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t, nil)
	d := testDeployment(ns, "alice", 3, nil)
	apply(t, d)

	waitFor(t, 60*time.Second, func(ctx context.Context) (bool, error) {
		return deploymentReady(ctx, client.ObjectKeyFromObject(d))
	})
	pods := &corev1.PodList{}
	if err := k8s.List(testContext(t, 10*time.Second), pods, client.InNamespace(ns), client.MatchingLabels{"app": "alice"}); err != nil {
		t.Fatalf("list pods: %v", err)
	}
	for _, p := range pods.Items {
		if p.Spec.NodeName != sandbox.FakeNodeName || p.Status.PodIP == "" {
			t.Errorf("pod %s on node %q with IP %q, want on %s with an IP", p.Name, p.Spec.NodeName, p.Status.PodIP, sandbox.FakeNodeName)
		}
	}
	// The controller-manager gives new namespaces their default ServiceAccount.
	waitFor(t, 30*time.Second, func(ctx context.Context) (bool, error) {
		err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "default"}, &corev1.ServiceAccount{})
		return err == nil, err
	})
}

func TestSmokeSeedCanaryIsAccepted(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t, map[string]string{"kuma.io/mesh": "mesh-a"})
	objs := readYAML(t, "testdata/seed-canary.yaml")
	if len(objs) != 1 {
		t.Fatalf("seed-canary.yaml holds %d objects, want 1", len(objs))
	}
	seed := objs[0]
	seed.SetNamespace(ns)
	sent := seed.DeepCopy()
	apply(t, seed)

	// Nothing the seed says may be pruned by the CRD schema.
	if diff := missingFrom(sent.Object["spec"], seed.Object["spec"], "spec"); diff != "" {
		t.Errorf("the apiserver dropped or changed parts of the seed's spec: %s", diff)
	}
	canary := &coalminev1beta1.Canary{}
	if err := k8s.Get(testContext(t, 10*time.Second), client.ObjectKey{Namespace: ns, Name: "alice"}, canary); err != nil {
		t.Fatalf("get canary: %v", err)
	}
	if canary.Spec.TargetRef.Name != "alice" || canary.Spec.Analysis == nil || canary.Spec.Analysis.StepWeight != 5 || canary.Spec.Analysis.MaxWeight != 50 {
		t.Errorf("canary spec = %+v, want the seed's", canary.Spec)
	}
}

func TestSmokeTrafficRouteIsJudgedLikeKuma(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t, nil)
	split := func(primary, canary any) []any {
		return []any{
			map[string]any{"weight": primary, "destination": map[string]any{"kuma.io/service": "alice-primary_" + ns + "_svc_8080"}},
			map[string]any{"weight": canary, "destination": map[string]any{"kuma.io/service": "alice-canary_" + ns + "_svc_8080"}},
		}
	}
	tests := []struct {
		name    string
		edit    func(route map[string]any)
		refused string // part of the refusal message; empty: accepted
	}{
		{name: "flagger's route is accepted", edit: func(map[string]any) {}},
		{name: "a zero canary weight is accepted", edit: func(r map[string]any) {
			r["spec"].(map[string]any)["conf"] = map[string]any{"split": split(int64(100), int64(0))}
		}},
		{name: "a weight that is a string is refused", refused: "spec.conf.split", edit: func(r map[string]any) {
			r["spec"].(map[string]any)["conf"] = map[string]any{"split": split("95", int64(5))}
		}},
		{name: "all weights zero is refused", refused: "weight above 0", edit: func(r map[string]any) {
			r["spec"].(map[string]any)["conf"] = map[string]any{"split": split(int64(0), int64(0))}
		}},
		{name: "a route without conf is refused", refused: "spec.conf", edit: func(r map[string]any) {
			delete(r["spec"].(map[string]any), "conf")
		}},
		{name: "a route without sources is refused", refused: "spec.sources", edit: func(r map[string]any) {
			delete(r["spec"].(map[string]any), "sources")
		}},
		{name: "a destination with a second tag is refused", refused: "spec.destinations", edit: func(r map[string]any) {
			r["spec"].(map[string]any)["destinations"] = []any{map[string]any{"match": map[string]any{"kuma.io/service": "alice", "version": "v1"}}}
		}},
		{name: "a mesh that is not a string is refused", refused: "mesh", edit: func(r map[string]any) {
			r["mesh"] = int64(5)
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			route := flaggerTrafficRoute(fmt.Sprintf("alice-%d.%s", i, ns), "mesh-a", ns)
			tt.edit(route.Object)
			if tt.refused != "" {
				requireRefused(t, route, tt.refused)
				return
			}
			apply(t, route)
			t.Cleanup(func() { _ = k8s.Delete(context.Background(), route) })
		})
	}
}

// flaggerTrafficRoute is a TrafficRoute as Flagger writes it for the seed (DESIGN,
// appendix): cluster-scoped, mesh at the top level, 95/5 split.
func flaggerTrafficRoute(name, mesh, ns string) *unstructured.Unstructured {
	tag := func(svc string) map[string]any {
		return map[string]any{"kuma.io/service": svc + "_" + ns + "_svc_8080"}
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kuma.io/v1alpha1",
		"kind":       "TrafficRoute",
		"mesh":       mesh,
		"metadata":   map[string]any{"name": name},
		"spec": map[string]any{
			"sources":      []any{map[string]any{"match": map[string]any{"kuma.io/service": "*"}}},
			"destinations": []any{map[string]any{"match": tag("alice")}},
			"conf": map[string]any{"split": []any{
				map[string]any{"weight": int64(95), "destination": tag("alice-primary")},
				map[string]any{"weight": int64(5), "destination": tag("alice-canary")},
			}},
		},
	}}
}

func TestSmokeMeshHTTPRouteSchema(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t, nil)
	backend := func(name string, weight any) map[string]any {
		return map[string]any{"kind": "MeshService", "name": name + "_" + ns + "_svc_8080", "weight": weight}
	}
	rule := func() map[string]any {
		return map[string]any{
			"matches": []any{map[string]any{"path": map[string]any{"type": "PathPrefix", "value": "/"}}},
			"default": map[string]any{"backendRefs": []any{backend("alice-primary", int64(95)), backend("alice-canary", int64(5))}},
		}
	}
	tests := []struct {
		name    string
		edit    func(to map[string]any)
		refused string
	}{
		{name: "a weighted catch-all route is accepted", edit: func(map[string]any) {}},
		{name: "a weight that is a string is refused", refused: "weight", edit: func(to map[string]any) {
			rules(to)[0]["default"].(map[string]any)["backendRefs"] = []any{backend("alice-primary", "95")}
		}},
		{name: "a negative weight is refused", refused: "weight", edit: func(to map[string]any) {
			rules(to)[0]["default"].(map[string]any)["backendRefs"] = []any{backend("alice-primary", int64(-1))}
		}},
		{name: "a rule without matches is refused", refused: "matches", edit: func(to map[string]any) {
			delete(rules(to)[0], "matches")
		}},
		{name: "an unknown path match type is refused", refused: "type", edit: func(to map[string]any) {
			rules(to)[0]["matches"] = []any{map[string]any{"path": map[string]any{"type": "Prefix", "value": "/"}}}
		}},
		{name: "a destination without a targetRef is refused", refused: "targetRef", edit: func(to map[string]any) {
			delete(to, "targetRef")
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			to := map[string]any{
				"targetRef": map[string]any{"kind": "MeshService", "name": "alice_" + ns + "_svc_8080"},
				"rules":     []any{rule()},
			}
			tt.edit(to)
			route := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "kuma.io/v1alpha1",
				"kind":       "MeshHTTPRoute",
				"metadata":   map[string]any{"name": fmt.Sprintf("alice-%d", i), "namespace": ns, "labels": map[string]any{"kuma.io/mesh": "mesh-a"}},
				"spec": map[string]any{
					"targetRef": map[string]any{"kind": "Mesh"},
					"to":        []any{to},
				},
			}}
			if tt.refused != "" {
				requireRefused(t, route, tt.refused)
				return
			}
			apply(t, route)
		})
	}
}

func rules(to map[string]any) []map[string]any {
	var out []map[string]any
	for _, r := range to["rules"].([]any) {
		out = append(out, r.(map[string]any))
	}
	return out
}

// TestSmokeRBACIsEnforced: coalmine runs as its ServiceAccount by impersonation, so
// what that identity may do must be decided by RBAC, not by the admin's certificate.
func TestSmokeRBACIsEnforced(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t, nil)
	user, groups := sandbox.ServiceAccountUser(ns, "probe")
	probe := newClient(t, sb.Impersonate(user, groups...))
	ctx := testContext(t, 30*time.Second)

	if err := probe.List(ctx, &corev1.ConfigMapList{}, client.InNamespace(ns)); !apierrors.IsForbidden(err) {
		t.Fatalf("list configmaps without a grant: %v, want Forbidden", err)
	}
	apply(t, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "read-configmaps"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"list"}}},
	})
	apply(t, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "probe-reads-configmaps"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "read-configmaps"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: "probe"}},
	})
	waitFor(t, 10*time.Second, func(ctx context.Context) (bool, error) {
		err := probe.List(ctx, &corev1.ConfigMapList{}, client.InNamespace(ns))
		return err == nil, err
	})
	if err := probe.List(ctx, &corev1.SecretList{}, client.InNamespace(ns)); !apierrors.IsForbidden(err) {
		t.Fatalf("list secrets with a configmap grant: %v, want Forbidden", err)
	}

	// The same identity through a kubeconfig file, for processes that take one.
	kubeconfig, err := sb.KubeconfigFor(user, groups...)
	if err != nil {
		t.Fatalf("write kubeconfig: %v", err)
	}
	out, err := exec.CommandContext(ctx, sb.Kubectl, "--kubeconfig", kubeconfig, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").CombinedOutput()
	if err != nil || string(out) != user {
		t.Fatalf("kubectl auth whoami = %q (%v), want %s", out, err, user)
	}
}

func TestSmokeKubectlAndVersion(t *testing.T) {
	t.Parallel()
	dc, err := discovery.NewDiscoveryClientForConfig(sb.Config)
	if err != nil {
		t.Fatalf("discovery client: %v", err)
	}
	v, err := dc.ServerVersion()
	if err != nil {
		t.Fatalf("server version: %v", err)
	}
	if !strings.HasPrefix(v.GitVersion, "v1.37.") {
		t.Errorf("apiserver version %s, want v1.37.x", v.GitVersion)
	}
	ctx := testContext(t, 30*time.Second)
	out, err := exec.CommandContext(ctx, sb.Kubectl, "--kubeconfig", sb.KubeconfigPath, "get", "nodes", "-o", "name").CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl get nodes: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "node/"+sandbox.FakeNodeName) {
		t.Errorf("kubectl get nodes = %q, want node/%s", out, sandbox.FakeNodeName)
	}
}

func TestSmokePrometheusScrapesARuntimeTarget(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	gauge := prometheus.NewGauge(prometheus.GaugeOpts{Name: "coalmine_e2e_smoke", Help: "A value the smoke test reads back."})
	reg.MustRegister(gauge)
	gauge.Set(42)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(srv.Close)
	hostport := strings.TrimPrefix(srv.URL, "http://")
	if _, _, err := net.SplitHostPort(hostport); err != nil {
		t.Fatalf("test server address %q: %v", hostport, err)
	}
	job := "smoke-" + strings.ReplaceAll(hostport, ":", "-")

	ctx := testContext(t, 60*time.Second)
	if err := sb.AddScrapeTarget(ctx, job, hostport); err != nil {
		t.Fatalf("add scrape target: %v", err)
	}
	t.Cleanup(func() { _ = sb.RemoveScrapeTarget(context.Background(), job, hostport) })

	pc, err := promapi.NewClient(promapi.Config{Address: sb.PrometheusURL, Client: &http.Client{Timeout: 5 * time.Second}})
	if err != nil {
		t.Fatalf("prometheus client: %v", err)
	}
	api := promv1.NewAPI(pc)
	query := fmt.Sprintf(`coalmine_e2e_smoke{job=%q}`, job)
	waitFor(t, 30*time.Second, func(ctx context.Context) (bool, error) {
		value, _, _, err := api.Query(ctx, query, time.Now())
		if err != nil {
			return false, err
		}
		vec, ok := value.(model.Vector)
		if !ok || len(vec) != 1 {
			return false, fmt.Errorf("%s = %v, want one sample", query, value)
		}
		if vec[0].Value != 42 || string(vec[0].Metric["instance"]) != hostport {
			return false, fmt.Errorf("%s = %v, want 42 from %s", query, vec[0], hostport)
		}
		return true, nil
	})
}

// missingFrom returns where got lacks or differs from a value in want (a JSON-like
// tree), or "" when got holds all of want.
func missingFrom(want, got any, path string) string {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return path + ": not an object"
		}
		for k, wv := range w {
			if d := missingFrom(wv, g[k], path+"."+k); d != "" {
				return d
			}
		}
		return ""
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return path + ": list differs"
		}
		for i := range w {
			if d := missingFrom(w[i], g[i], fmt.Sprintf("%s[%d]", path, i)); d != "" {
				return d
			}
		}
		return ""
	default:
		if !reflect.DeepEqual(want, got) {
			return fmt.Sprintf("%s: sent %v, stored %v", path, want, got)
		}
		return ""
	}
}

// TestSmokeSecondControlPlane starts what multi-zone scenarios use as Kuma's Global
// Control Plane: a second, control-plane-only sandbox next to the shared one.
func TestSmokeSecondControlPlane(t *testing.T) {
	t.Parallel()
	ctx := testContext(t, 2*time.Minute)
	global, err := sandbox.Start(ctx, sandbox.Options{ControlPlaneOnly: true, Binaries: sb.Binaries})
	if err != nil {
		t.Fatalf("start a second sandbox: %v", err)
	}
	t.Cleanup(func() {
		if err := global.Stop(); err != nil {
			t.Errorf("stop the second sandbox: %v", err)
		}
	})
	if global.Config.Host == sb.Config.Host || global.PrometheusURL != "" {
		t.Errorf("second sandbox at %s with Prometheus %q, want its own apiserver and no Prometheus", global.Config.Host, global.PrometheusURL)
	}
	gc := newClient(t, global.Config)
	route := flaggerTrafficRoute("alice.apps-a-mesh-a", "mesh-a", "apps-a-mesh-a")
	if err := gc.Create(ctx, route); err != nil {
		t.Fatalf("create a TrafficRoute on the second control plane: %v", err)
	}
	err = k8s.Get(ctx, client.ObjectKeyFromObject(route), route.DeepCopy())
	if !apierrors.IsNotFound(err) {
		t.Errorf("the shared sandbox sees the second one's route: %v", err)
	}
}

// TestSmokePrometheusRestart is the Prometheus-outage scenario's footing: stopped,
// queries fail; started again, it serves the same URL with the data it had. It runs
// before the parallel tests resume, so it disturbs none of them.
func TestSmokePrometheusRestart(t *testing.T) {
	reg := prometheus.NewRegistry()
	up := prometheus.NewCounter(prometheus.CounterOpts{Name: "coalmine_e2e_restart_total", Help: "Counts scrapes."})
	reg.MustRegister(up)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(srv.Close)
	hostport := strings.TrimPrefix(srv.URL, "http://")
	job := "restart-" + strings.ReplaceAll(hostport, ":", "-")
	ctx := testContext(t, 2*time.Minute)
	if err := sb.AddScrapeTarget(ctx, job, hostport); err != nil {
		t.Fatalf("add scrape target: %v", err)
	}
	t.Cleanup(func() { _ = sb.RemoveScrapeTarget(context.Background(), job, hostport) })

	pc, err := promapi.NewClient(promapi.Config{Address: sb.PrometheusURL, Client: &http.Client{Timeout: 2 * time.Second}})
	if err != nil {
		t.Fatalf("prometheus client: %v", err)
	}
	api := promv1.NewAPI(pc)
	query := fmt.Sprintf(`count_over_time(coalmine_e2e_restart_total{job=%q}[10m])`, job)
	samples := func(ctx context.Context) (float64, error) {
		v, _, _, err := api.Query(ctx, query, time.Now())
		if err != nil {
			return 0, err
		}
		if vec, ok := v.(model.Vector); ok && len(vec) == 1 {
			return float64(vec[0].Value), nil
		}
		return 0, fmt.Errorf("%s = %v", query, v)
	}
	var before float64
	waitFor(t, 30*time.Second, func(ctx context.Context) (bool, error) {
		n, err := samples(ctx)
		before = n
		return n >= 1, err
	})

	stoppedAt := time.Now()
	if err := sb.StopPrometheus(); err != nil {
		t.Fatalf("stop prometheus: %v", err)
	}
	if _, err := samples(ctx); err == nil {
		t.Fatalf("a query succeeded while Prometheus was stopped")
	}
	if err := sb.StartPrometheus(ctx); err != nil {
		t.Fatalf("start prometheus again: %v", err)
	}
	waitFor(t, 30*time.Second, func(ctx context.Context) (bool, error) {
		n, err := samples(ctx)
		if err == nil && n <= before {
			err = fmt.Errorf("%v samples, want more than the %v before the restart", n, before)
		}
		return err == nil, err
	})
	// What was scraped before the outage is still there.
	old := fmt.Sprintf(`coalmine_e2e_restart_total{job=%q}`, job)
	v, _, _, err := api.Query(ctx, old, stoppedAt)
	if vec, ok := v.(model.Vector); err != nil || !ok || len(vec) != 1 {
		t.Fatalf("%s at %s = %v (%v), want the sample from before the restart", old, stoppedAt.Format(time.RFC3339Nano), v, err)
	}
}
