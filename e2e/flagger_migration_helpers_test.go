package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/coalmine-dev/coalmine/sandbox"
	"github.com/coalmine-dev/coalmine/sandbox/meshsim"
)

// The Flagger side of TestFlaggerMigration: Flagger v1.36.1 built on demand, its CRDs and
// RBAC installed once, and a process of it per test watching that test's namespace only.

const migrationFlaggerAPIVersion = "flagger.app/v1beta1"

var (
	migrationFlaggerOnce sync.Once
	migrationFlaggerBin  *sandbox.FlaggerBinaries
	migrationFlaggerErr  error
)

// migrationFlagger builds Flagger (cached; ~4 minutes cold) and installs its CRDs and the
// RBAC of its ServiceAccount on the shared sandbox, once.
func migrationFlagger(t *testing.T) *sandbox.FlaggerBinaries {
	t.Helper()
	migrationFlaggerOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		start := time.Now()
		if migrationFlaggerBin, migrationFlaggerErr = sandbox.BuildFlagger(ctx, os.Stderr); migrationFlaggerErr != nil {
			return
		}
		fmt.Fprintf(os.Stderr, "e2e: Flagger %s ready in %s\n", migrationFlaggerBin.Version, time.Since(start).Round(100*time.Millisecond))
		if _, err := envtest.InstallCRDs(sb.Config, envtest.CRDInstallOptions{Paths: []string{migrationFlaggerBin.CRDs}, ErrorIfPathMissing: true}); err != nil {
			migrationFlaggerErr = fmt.Errorf("install Flagger's CRDs: %w", err)
			return
		}
		for _, o := range sandbox.FlaggerRBAC() {
			if err := tryApply(ctx, o); err != nil {
				migrationFlaggerErr = fmt.Errorf("install Flagger's RBAC: %w", err)
				return
			}
		}
	})
	if migrationFlaggerErr != nil {
		t.Fatalf("Flagger: %v", migrationFlaggerErr)
	}
	return migrationFlaggerBin
}

// migrationStartFlagger runs Flagger as its ServiceAccount, watching namespace ns only (so
// no other test's Flagger Canaries are its business), until t ends.
func migrationStartFlagger(t *testing.T, ctx context.Context, fl *sandbox.FlaggerBinaries, ns string) *sandbox.FlaggerProcess {
	t.Helper()
	user, groups := sandbox.FlaggerUser()
	kubeconfig, err := sb.KubeconfigFor(user, groups...)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(sb.Dir, "flagger-"+ns)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := sandbox.StartFlagger(ctx, sandbox.FlaggerOptions{
		Binary: fl.Binary, Kubeconfig: kubeconfig, MetricsServer: sb.PrometheusURL, LogDir: dir,
		Args: []string{"-namespace=" + ns},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.Stop(); err != nil {
			t.Logf("stop Flagger: %v", err)
		}
	})
	t.Logf("Flagger runs for namespace %s (log %s)", ns, f.LogPath())
	return f
}

// migrationApp is one app Flagger manages before the move.
type migrationApp struct {
	name     string
	replicas int32
	// hpa gives the app an HPA with minReplicas = replicas, named in the Canary's
	// autoscalerRef: Flagger then copies it as <app>-primary.
	hpa bool
}

// deployment is the app's Deployment at image.
func (a migrationApp) deployment(ns, image string) *appsv1.Deployment {
	d := testDeployment(ns, a.name, a.replicas, nil)
	d.Spec.Template.Spec.Containers[0].Image = image
	return d
}

func (a migrationApp) autoscaler(ns string) *autoscalingv2.HorizontalPodAutoscaler {
	return &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: a.name},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: a.name},
			MinReplicas:    &a.replicas,
			MaxReplicas:    a.replicas + 2,
		},
	}
}

// flaggerCanary is the seed's Canary as Flagger reads it (apiVersion flagger.app), for
// the app, at the scenarios' analysis interval (Flagger itself runs it at no less than
// 10 s; coalmine, given the same spec after the move, at 3 s).
func (a migrationApp) flaggerCanary(t *testing.T, ns string) *unstructured.Unstructured {
	c := readYAML(t, "testdata/seed-canary.yaml")[0]
	c.SetAPIVersion(migrationFlaggerAPIVersion)
	c.SetNamespace(ns)
	c.SetName(a.name)
	must(t, unstructured.SetNestedField(c.Object, a.name, "spec", "targetRef", "name"))
	must(t, unstructured.SetNestedField(c.Object, a.name, "spec", "service", "name"))
	must(t, unstructured.SetNestedField(c.Object, analysisInterval.String(), "spec", "analysis", "interval"))
	if a.hpa {
		must(t, unstructured.SetNestedMap(c.Object, map[string]any{
			"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "name": a.name,
		}, "spec", "autoscalerRef"))
	}
	return c
}

// migrationMonitor checks, every 50 ms while the apps move, what the brief promises the
// callers: each apex Service selects ready pods, and no route that routes an apex sends
// a weight to a Service without ready pods. It also records which routes it saw.
type migrationMonitor struct {
	ns   string
	apps []string
	port int32

	mu         sync.Mutex
	samples    int
	violations []string
	routes     map[string]bool // names of routes seen routing one of the apexes
	stop       context.CancelFunc
	done       chan struct{}
}

func startMigrationMonitor(t *testing.T, ns string, apps []string) *migrationMonitor {
	ctx, cancel := context.WithCancel(t.Context())
	m := &migrationMonitor{ns: ns, apps: apps, port: 8080, routes: map[string]bool{}, stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			if err := m.check(ctx); err != nil && ctx.Err() == nil {
				t.Logf("monitor: %v", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(m.finish)
	return m
}

// finish stops the monitor and waits for it.
func (m *migrationMonitor) finish() {
	m.stop()
	<-m.done
}

func (m *migrationMonitor) check(ctx context.Context) error {
	var pods corev1.PodList
	if err := k8s.List(ctx, &pods, client.InNamespace(m.ns)); err != nil {
		return fmt.Errorf("list pods: %w", err)
	}
	var svcs corev1.ServiceList
	if err := k8s.List(ctx, &svcs, client.InNamespace(m.ns)); err != nil {
		return fmt.Errorf("list services: %w", err)
	}
	routes := &unstructured.UnstructuredList{}
	routes.SetGroupVersionKind(trafficRouteGVK.GroupVersion().WithKind("TrafficRouteList"))
	if err := k8s.List(ctx, routes); err != nil {
		return fmt.Errorf("list TrafficRoutes: %w", err)
	}
	readyBehind := map[string]int{} // Service -> ready pods it selects
	for _, s := range svcs.Items {
		if len(s.Spec.Selector) == 0 {
			continue
		}
		sel := labels.SelectorFromSet(s.Spec.Selector)
		for i := range pods.Items {
			if p := &pods.Items[i]; migrationPodReady(p) && sel.Matches(labels.Set(p.Labels)) {
				readyBehind[s.Name]++
			}
		}
	}
	var found []string
	apexTags := map[string]string{}
	for _, app := range m.apps {
		apexTags[meshsim.Tag(app, m.ns, m.port)] = app
		if readyBehind[app] == 0 {
			found = append(found, fmt.Sprintf("apex Service %s selects no ready pod", app))
		}
	}
	suffix := fmt.Sprintf("_%s_svc_%d", m.ns, m.port)
	seen := map[string]bool{}
	for _, r := range routes.Items {
		dests, _, _ := unstructured.NestedSlice(r.Object, "spec", "destinations")
		routesApex := false
		for _, d := range dests {
			tag, _, _ := unstructured.NestedString(d.(map[string]any), "match", "kuma.io/service")
			routesApex = routesApex || apexTags[tag] != ""
		}
		if !routesApex {
			continue
		}
		seen[r.GetName()] = true
		split, _, _ := unstructured.NestedSlice(r.Object, "spec", "conf", "split")
		for _, e := range split {
			w, _, _ := unstructured.NestedInt64(e.(map[string]any), "weight")
			tag, _, _ := unstructured.NestedString(e.(map[string]any), "destination", "kuma.io/service")
			svc, ok := strings.CutSuffix(tag, suffix)
			if w > 0 && (!ok || readyBehind[svc] == 0) {
				found = append(found, fmt.Sprintf("TrafficRoute %s sends %d%% to %s, which has no ready pod", r.GetName(), w, tag))
			}
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.samples++
	for name := range seen {
		m.routes[name] = true
	}
	for _, v := range found {
		if len(m.violations) < 20 {
			m.violations = append(m.violations, time.Now().Format("15:04:05.000")+" "+v)
		}
	}
	return nil
}

// report is how many checks ran, what they found and which routes they saw.
func (m *migrationMonitor) report() (int, []string, []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var routes []string
	for r := range m.routes {
		routes = append(routes, r)
	}
	slices.Sort(routes)
	return m.samples, slices.Clone(m.violations), routes
}

func migrationPodReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// migrationTraffic sums the simulator's counts of the namespace's Envoy clusters.
func migrationTraffic(sim *meshsim.Simulator, ns string) (requests, errors uint64, byCluster map[string]meshsim.Counts) {
	byCluster = map[string]meshsim.Counts{}
	for tag, c := range sim.UserSnapshot() {
		if strings.Contains(tag, "_"+ns+"_svc_") {
			requests += c.Requests
			errors += c.Errors
			byCluster[tag] = c
		}
	}
	return requests, errors, byCluster
}
