package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	coalminev1beta1 "github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/cmd/coalmine/app"
	"github.com/coalmine-dev/coalmine/cmd/coalmine/demo"
	"github.com/coalmine-dev/coalmine/rollout/router"
	"github.com/coalmine-dev/coalmine/sandbox"
	"github.com/coalmine-dev/coalmine/sandbox/meshsim"
)

// The rollout scenarios run the seed's story: Deployment alice in a mesh namespace, the
// seed's Canary (only apiVersion changed, analysis interval shortened), releases shipped
// by server-side apply through the real webhook, traffic played by the mesh simulator and
// judged by the real Prometheus.
const (
	appName  = "alice"
	meshName = "mesh-a"
	replicas = 2
	// analysisInterval replaces the seed's 30s. Not less than 3s: the loop stamps
	// LastStepTime in whole seconds, so a step may follow the previous one after
	// interval-1s, and the scenarios that act "at weight w" need that second or two to
	// get their change in before the next step.
	analysisInterval = 3 * time.Second
	// scenarioTimeout bounds one scenario; a happy path takes about 12 intervals.
	scenarioTimeout = 4 * time.Minute
	simulatorJob    = "meshsim"
	// simulatorRPS is each caller's request rate. At the first step (5%) the canary gets
	// 10 requests a second: enough that a 20% error rate shows in the first check, which
	// comes as early as 2s after the step (at the simulator's default 50 rps it may see
	// no error yet and pass).
	simulatorRPS = 200
)

// Releases of alice. The simulator reads a pod's behaviour from its env.
const (
	imageV1 = "ghcr.io/coalmine-dev/demo-app:v1"
	imageV2 = "ghcr.io/coalmine-dev/demo-app:v2"
	imageV3 = "ghcr.io/coalmine-dev/demo-app:v3"
)

var (
	trafficRouteGVK  = schema.GroupVersionKind{Group: "kuma.io", Version: "v1alpha1", Kind: "TrafficRoute"}
	meshHTTPRouteGVK = schema.GroupVersionKind{Group: "kuma.io", Version: "v1alpha1", Kind: "MeshHTTPRoute"}
)

// seedSteps are the seed's canary weights: stepWeight 5 up to maxWeight 50.
func seedSteps() []int {
	var out []int
	for w := 5; w <= 50; w += 5 {
		out = append(out, w)
	}
	return out
}

// stepsUpTo is the seed's weights up to and including w.
func stepsUpTo(w int) []int {
	return slices.DeleteFunc(seedSteps(), func(s int) bool { return s > w })
}

// weightSeq joins weight runs: weightSeq([]int{0}, stepsUpTo(20), []int{0}).
func weightSeq(parts ...[]int) []int {
	var out []int
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// rolloutEnvironment is what every rollout scenario shares: coalmine installed with the
// shipped RBAC and webhook configurations and running in this process under its
// ServiceAccount, and the mesh simulator scraped by the sandbox's Prometheus.
//
// It runs while at least one test uses it (sharedRollout) and stops when the last one
// ends: TestMain stops the sandbox after the tests, and an apiserver with clients still
// watching it (coalmine's and the simulator's informers) takes longer to stop than envtest
// waits. Between two serial tests it stops and starts again, which takes a second.
type rolloutEnvironment struct {
	// port is the webhook port the installed configurations call. Whatever coalmine runs
	// serves on it, so a replacement (restart, multi-zone) gets the admission traffic.
	port int
	// ctx carries the logger of coalmine and the simulator; it is never cancelled.
	ctx context.Context
	// dumpDir receives every TrafficRoute version a scenario observed, for Kuma's validator.
	dumpDir string

	mu       sync.Mutex
	users    int
	sim      *meshsim.Simulator
	stopSim  context.CancelFunc
	coalmine *demo.Instance
}

var (
	rolloutEnv     = &rolloutEnvironment{ctx: log.IntoContext(context.Background(), log.Log)}
	rolloutInstall sync.Once
	installErr     error
)

// sharedRollout returns the shared environment, started for t and its parallel siblings,
// and stopped when the last test using it ends.
func sharedRollout(t *testing.T) *rolloutEnvironment {
	t.Helper()
	e := rolloutEnv
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.users == 0 {
		if err := e.up(); err != nil {
			e.down()
			t.Fatalf("start coalmine and the mesh simulator: %v", err)
		}
	}
	e.users++
	t.Cleanup(func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.users--; e.users == 0 {
			e.down()
		}
	})
	return e
}

// up installs coalmine (once) and starts the simulator and coalmine. Callers hold mu.
func (e *rolloutEnvironment) up() error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(e.ctx, 2*time.Minute)
	defer cancel()
	rolloutInstall.Do(func() { installErr = e.install(ctx) })
	if installErr != nil {
		return installErr
	}
	simCtx, stopSim := context.WithCancel(e.ctx)
	sim, err := meshsim.Start(simCtx, meshsim.Options{Config: sb.Config, RPS: simulatorRPS})
	if err != nil {
		stopSim()
		return fmt.Errorf("start mesh simulator: %w", err)
	}
	e.sim, e.stopSim = sim, stopSim
	if err := sb.AddScrapeTarget(ctx, simulatorJob, sim.Addr()); err != nil {
		return fmt.Errorf("scrape the mesh simulator: %w", err)
	}
	if e.coalmine, err = demo.StartCoalmine(e.ctx, sb, e.port, withObservability); err != nil {
		return err
	}
	if err := scrapeCoalmine(ctx); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "e2e: coalmine (webhooks on 127.0.0.1:%d) and the mesh simulator (%s) up in %s\n",
		e.port, sim.Addr(), time.Since(start).Round(10*time.Millisecond))
	return nil
}

func (e *rolloutEnvironment) install(ctx context.Context) error {
	var err error
	if e.port, err = demo.FreePort(); err != nil {
		return err
	}
	if err := demo.Install(ctx, sb, e.port); err != nil {
		return fmt.Errorf("install coalmine: %w", err)
	}
	e.dumpDir = filepath.Join(sb.Dir, "trafficroutes")
	if err := os.MkdirAll(e.dumpDir, 0o755); err != nil {
		return fmt.Errorf("create route dump directory: %w", err)
	}
	return nil
}

// down stops coalmine and the simulator. Callers hold mu.
func (e *rolloutEnvironment) down() {
	if e.coalmine != nil {
		if err := e.coalmine.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: stop coalmine: %v\n", err)
		}
		e.coalmine = nil
	}
	if e.sim != nil {
		e.stopSim()
		<-e.sim.Done()
		_ = sb.RemoveScrapeTarget(context.Background(), simulatorJob, e.sim.Addr())
		e.sim, e.stopSim = nil, nil
	}
}

// simAddr is the address of the running simulator.
func (e *rolloutEnvironment) simAddr() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.sim.Addr()
}

// stopCoalmine stops the shared coalmine. Its webhook fails closed for managed
// Deployments while it is down, so only tests that run alone (not t.Parallel) may call it,
// and they must startCoalmine again (restartCoalmineAtCleanup).
func (e *rolloutEnvironment) stopCoalmine(t *testing.T) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.coalmine == nil {
		return
	}
	start := time.Now()
	err := e.coalmine.Stop()
	e.coalmine = nil
	if err != nil {
		t.Fatalf("stop coalmine: %v", err)
	}
	t.Logf("coalmine stopped in %s", time.Since(start).Round(time.Millisecond))
}

// startCoalmine starts the shared coalmine if it is not running.
func (e *rolloutEnvironment) startCoalmine(t *testing.T) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.coalmine != nil {
		return
	}
	start := time.Now()
	in, err := demo.StartCoalmine(e.ctx, sb, e.port, withObservability)
	if err != nil {
		t.Fatalf("start coalmine: %v", err)
	}
	e.coalmine = in
	t.Logf("coalmine started in %s", time.Since(start).Round(time.Millisecond))
}

// restartCoalmineAtCleanup makes sure the shared coalmine runs again after t, whatever
// happened in it.
func (e *rolloutEnvironment) restartCoalmineAtCleanup(t *testing.T) {
	t.Cleanup(func() { e.startCoalmine(t) })
}

// runOwnCoalmine runs another coalmine on the shared webhook port (the shared one must be
// stopped) with its own options, until t ends.
func (e *rolloutEnvironment) runOwnCoalmine(t *testing.T, mutate func(*app.Options)) *demo.Instance {
	t.Helper()
	in, err := demo.StartCoalmine(e.ctx, sb, e.port, mutate)
	if err != nil {
		t.Fatalf("start coalmine: %v", err)
	}
	t.Cleanup(func() {
		if err := in.Stop(); err != nil {
			t.Errorf("stop coalmine: %v", err)
		}
	})
	return in
}

// scenario is one rollout of alice in its own mesh namespace.
type scenario struct {
	t   *testing.T
	env *rolloutEnvironment
	ctx context.Context
	ns  string

	routeKind string
	// routes is the cluster the route is written to (the zone, or the Global CP).
	routes      client.WithWatch
	routesLabel string
	canaryAnn   map[string]string
	webhooks    []any
	// dumpDir receives the TrafficRoute versions for Kuma's validator; "" is the
	// environment's.
	dumpDir string

	canary *canaryRecorder
	route  *routeRecorder
}

type scenarioOptions struct {
	// routeKind is the Canary's coalmine.dev/route-kind; empty: coalmine's default
	// (TrafficRoute).
	routeKind string
	// routes is the cluster where coalmine writes the route; nil: the zone.
	routes      client.WithWatch
	routesLabel string
	// meshFromNamespace drops the seed's kuma.io/mesh annotation from the Canary, so the
	// mesh comes from the namespace's annotation.
	meshFromNamespace bool
	// webhooks are the Canary's spec.analysis.webhooks.
	webhooks []any
}

// newScenario creates the scenario's namespace, in the mesh, annotated with its mesh.
func newScenario(t *testing.T, env *rolloutEnvironment, o scenarioOptions) *scenario {
	t.Helper()
	s := &scenario{
		t: t, env: env, ctx: testContext(t, scenarioTimeout),
		routeKind: o.routeKind, routes: o.routes, routesLabel: o.routesLabel,
		canaryAnn: map[string]string{}, webhooks: o.webhooks,
	}
	if s.routeKind == "" {
		s.routeKind = coalminev1beta1.RouteKindTrafficRoute
	} else {
		s.canaryAnn[coalminev1beta1.AnnotationRouteKind] = s.routeKind
	}
	if s.routes == nil {
		s.routes, s.routesLabel = watchClient(t, sb.Config), "zone"
	}
	if o.meshFromNamespace {
		s.canaryAnn[coalminev1beta1.AnnotationMesh] = ""
	}
	s.ns = newNamespace(t, nil)
	ns := &corev1.Namespace{}
	if err := k8s.Get(s.ctx, client.ObjectKey{Name: s.ns}, ns); err != nil {
		t.Fatalf("get namespace: %v", err)
	}
	patch := client.MergeFrom(ns.DeepCopy())
	ns.Annotations = map[string]string{coalminev1beta1.AnnotationMesh: meshName}
	if err := k8s.Patch(s.ctx, ns, patch); err != nil {
		t.Fatalf("annotate namespace with its mesh: %v", err)
	}
	return s
}

// release is alice at an image, with the simulator's behaviour in env.
func (s *scenario) release(image string, env map[string]string) *appsv1.Deployment {
	d := testDeployment(s.ns, appName, replicas, env)
	d.Spec.Template.Spec.Containers[0].Image = image
	return d
}

// seedCanary is the seed's Canary in the scenario's namespace with the interval shortened.
func (s *scenario) seedCanary() *unstructured.Unstructured {
	objs := readYAML(s.t, "testdata/seed-canary.yaml")
	c := objs[0]
	c.SetNamespace(s.ns)
	if err := unstructured.SetNestedField(c.Object, analysisInterval.String(), "spec", "analysis", "interval"); err != nil {
		s.t.Fatalf("set interval: %v", err)
	}
	ann := c.GetAnnotations()
	for k, v := range s.canaryAnn {
		if v == "" {
			delete(ann, k)
		} else {
			ann[k] = v
		}
	}
	c.SetAnnotations(ann)
	if len(s.webhooks) > 0 {
		if err := unstructured.SetNestedSlice(c.Object, s.webhooks, "spec", "analysis", "webhooks"); err != nil {
			s.t.Fatalf("set webhooks: %v", err)
		}
	}
	return c
}

// deploy runs the managed flow's first half: Deployment v1 and the Canary applied, phase
// Initialized. The recorders watch from before the Canary exists.
func (s *scenario) deploy() *coalminev1beta1.Canary {
	s.t.Helper()
	s.canary = recordCanary(s.t, s.ctx, watchClient(s.t, sb.Config), s.ns, appName)
	s.route = s.recordRoute(s.routes, s.routesLabel)
	apply(s.t, s.release(imageV1, nil))
	apply(s.t, s.seedCanary())
	return s.waitPhase(coalminev1beta1.PhaseInitialized, time.Minute)
}

// recordRoute watches the scenario's route on cluster c.
func (s *scenario) recordRoute(c client.WithWatch, label string) *routeRecorder {
	if s.routeKind == coalminev1beta1.RouteKindMeshHTTPRoute {
		return recordRoute(s.t, s.ctx, c, meshHTTPRouteGVK, s.ns, router.MeshHTTPRouteName(appName), s.ns, "", "")
	}
	dump := s.env.dumpDir
	if s.dumpDir != "" {
		dump = s.dumpDir
	}
	return recordRoute(s.t, s.ctx, c, trafficRouteGVK, "", appName+"."+s.ns, s.ns, label, dump)
}

// ship server-side applies a new release of alice, as Flux would, and checks that the
// webhook paused it at the new revision. It returns the Deployment as stored.
func (s *scenario) ship(image string, env map[string]string) *appsv1.Deployment {
	s.t.Helper()
	d := s.release(image, env)
	apply(s.t, d)
	rev := coalminev1beta1.TemplateRevision(&d.Spec.Template)
	if !d.Spec.Paused || d.Annotations[coalminev1beta1.AnnotationRevision] != rev {
		s.t.Fatalf("after shipping %s: paused=%v, %s=%q; want the webhook to pause it at revision %s",
			image, d.Spec.Paused, coalminev1beta1.AnnotationRevision, d.Annotations[coalminev1beta1.AnnotationRevision], rev)
	}
	return d
}

// await polls cond until it holds, failing the test after timeout or at the scenario's
// time bound with what cond last said and where the Canary is.
func (s *scenario) await(timeout time.Duration, what string, cond func(ctx context.Context) (bool, error)) {
	s.t.Helper()
	if err := sandbox.Poll(s.ctx, timeout, 100*time.Millisecond, cond); err != nil {
		s.t.Fatalf("%s: not yet: %v\n%s", what, err, s.describe())
	}
}

// waitPhase waits until the Canary is in phase p and returns it.
func (s *scenario) waitPhase(p coalminev1beta1.CanaryPhase, timeout time.Duration) *coalminev1beta1.Canary {
	s.t.Helper()
	var c *coalminev1beta1.Canary
	s.await(timeout, fmt.Sprintf("canary phase %s", p), func(context.Context) (bool, error) {
		c = s.canary.latest()
		if c == nil || c.Status.Phase != p {
			return false, errors.New("phase not reached")
		}
		return true, nil
	})
	return c
}

// waitWeight waits until the Canary progresses at canary weight w and returns it.
func (s *scenario) waitWeight(w int) *coalminev1beta1.Canary {
	s.t.Helper()
	var c *coalminev1beta1.Canary
	s.await(2*time.Minute, fmt.Sprintf("canary weight %d", w), func(context.Context) (bool, error) {
		c = s.canary.latest()
		if c == nil || c.Status.Phase != coalminev1beta1.PhaseProgressing || c.Status.CanaryWeight != w {
			return false, errors.New("weight not reached")
		}
		return true, nil
	})
	return c
}

// get reads the current Canary.
func (s *scenario) get() *coalminev1beta1.Canary {
	s.t.Helper()
	c := &coalminev1beta1.Canary{}
	if err := k8s.Get(s.ctx, client.ObjectKey{Namespace: s.ns, Name: appName}, c); err != nil {
		s.t.Fatalf("get canary: %v", err)
	}
	return c
}

// describe says where the Canary is, for failure messages.
func (s *scenario) describe() string {
	if s.canary == nil {
		return "canary not recorded"
	}
	c := s.canary.latest()
	if c == nil {
		return "canary not seen yet"
	}
	b, _ := json.MarshalIndent(c.Status, "", "  ")
	return fmt.Sprintf("canary %s/%s weights %v phases %v\nstatus %s", s.ns, appName, s.canary.weights(), s.canary.phases(), b)
}

// expectWeights checks the canary weights the Canary and the route went through.
func (s *scenario) expectWeights(want []int) {
	s.t.Helper()
	if got := s.canary.weights(); !slices.Equal(got, want) {
		s.t.Errorf("canary status went through weights %v, want %v", got, want)
	}
	// The loop records a decision before it acts on it (DESIGN §4a): the route follows
	// the status within a pass, so it may still be one write behind the phase just seen.
	s.await(10*time.Second, "route weights "+fmt.Sprint(want), func(context.Context) (bool, error) {
		if got := s.route.weights(); !slices.Equal(got, want) {
			return false, fmt.Errorf("route %s went through weights %v, want %v", s.route.name, got, want)
		}
		return true, nil
	})
}

// expectRouteAllPrimary checks that the route exists and sends everything to primary.
func (s *scenario) expectRouteAllPrimary() {
	s.t.Helper()
	s.await(30*time.Second, "route 100% primary", func(context.Context) (bool, error) {
		w, ok := s.route.current()
		if !ok {
			return false, fmt.Errorf("route %s does not exist", s.route.name)
		}
		if w != 0 {
			return false, fmt.Errorf("route %s sends %d%% to the canary", s.route.name, w)
		}
		return true, nil
	})
}

// target reads alice's Deployment.
func (s *scenario) target() *appsv1.Deployment {
	s.t.Helper()
	d := &appsv1.Deployment{}
	if err := k8s.Get(s.ctx, client.ObjectKey{Namespace: s.ns, Name: appName}, d); err != nil {
		s.t.Fatalf("get deployment: %v", err)
	}
	return d
}

// expectNoCanaryDeployment waits until alice-canary is gone.
func (s *scenario) expectNoCanaryDeployment() {
	s.t.Helper()
	s.await(30*time.Second, "no "+appName+"-canary Deployment", func(ctx context.Context) (bool, error) {
		err := k8s.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: appName + coalminev1beta1.CanarySuffix}, &appsv1.Deployment{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		return false, errors.New("canary Deployment still exists")
	})
}

// expectPodsOn waits until alice's own pods (not the canary's) are all on image, as many
// as the Deployment wants, and checks that only one ReplicaSet of alice has replicas.
// rolledOut false also checks that alice never got a second ReplicaSet: nothing rolled.
func (s *scenario) expectPodsOn(image string, rolledOut bool) {
	s.t.Helper()
	s.await(time.Minute, fmt.Sprintf("%s pods on %s", appName, image), func(ctx context.Context) (bool, error) {
		return podsOn(ctx, s.ns, appName, image, replicas)
	})
	rss := &appsv1.ReplicaSetList{}
	if err := k8s.List(s.ctx, rss, client.InNamespace(s.ns), client.MatchingLabels{"app": appName}); err != nil {
		s.t.Fatalf("list replicasets: %v", err)
	}
	var active, all []string
	for _, rs := range rss.Items {
		desc := fmt.Sprintf("%s(%s, %d replicas)", rs.Name, rs.Spec.Template.Spec.Containers[0].Image, ptrValue(rs.Spec.Replicas))
		all = append(all, desc)
		if ptrValue(rs.Spec.Replicas) > 0 {
			active = append(active, desc)
			if img := rs.Spec.Template.Spec.Containers[0].Image; img != image {
				s.t.Errorf("ReplicaSet %s of %s runs %s, want %s", rs.Name, appName, img, image)
			}
		}
	}
	if len(active) != 1 {
		s.t.Errorf("ReplicaSets of %s with replicas: %v, want exactly one", appName, active)
	}
	if !rolledOut && len(all) != 1 {
		s.t.Errorf("ReplicaSets of %s: %v, want only the first one (nothing rolled)", appName, all)
	}
}

func ptrValue(p *int32) int32 {
	if p == nil {
		return 0
	}
	return *p
}

// expectPromoted checks the end of a successful rollout of d: Succeeded at its revision,
// the Deployment unpaused on it with its pods, the canary gone, the route 100% primary.
func (s *scenario) expectPromoted(c *coalminev1beta1.Canary, d *appsv1.Deployment) {
	s.t.Helper()
	rev := d.Annotations[coalminev1beta1.AnnotationRevision]
	image := d.Spec.Template.Spec.Containers[0].Image
	if c.Status.LastPromotedRevision != rev || c.Status.StableRevision != rev {
		s.t.Errorf("lastPromotedRevision %q, stableRevision %q; want both %s", c.Status.LastPromotedRevision, c.Status.StableRevision, rev)
	}
	if c.Status.CanaryWeight != 0 {
		s.t.Errorf("canary weight %d after promotion, want 0", c.Status.CanaryWeight)
	}
	target := s.target()
	if target.Spec.Paused {
		s.t.Errorf("Deployment %s still paused after promotion", appName)
	}
	if got := target.Annotations[coalminev1beta1.AnnotationStableRevision]; got != rev {
		s.t.Errorf("Deployment %s stable revision %q, want %s", appName, got, rev)
	}
	if got := target.Spec.Template.Spec.Containers[0].Image; got != image {
		s.t.Errorf("Deployment %s template image %s, want %s", appName, got, image)
	}
	s.await(time.Minute, "deployment rolled out", func(ctx context.Context) (bool, error) {
		return deploymentReady(ctx, client.ObjectKey{Namespace: s.ns, Name: appName})
	})
	s.expectPodsOn(image, true)
	s.expectNoCanaryDeployment()
	s.expectRouteAllPrimary()
}

// expectRolledBack checks a rollback of revision d: Failed with failedChecks at the
// threshold, the Deployment paused on d's template with its pods on the old image, the
// canary gone, the route 100% primary.
func (s *scenario) expectRolledBack(c *coalminev1beta1.Canary, d *appsv1.Deployment, oldImage string) {
	s.t.Helper()
	rev := d.Annotations[coalminev1beta1.AnnotationRevision]
	if c.Status.FailedChecks != 5 {
		s.t.Errorf("failedChecks %d at rollback, want the seed's threshold 5", c.Status.FailedChecks)
	}
	if c.Status.FailedRevision != rev {
		s.t.Errorf("failedRevision %q, want %s", c.Status.FailedRevision, rev)
	}
	target := s.target()
	if !target.Spec.Paused {
		s.t.Errorf("Deployment %s unpaused after rollback, want it paused", appName)
	}
	if got, want := target.Spec.Template.Spec.Containers[0].Image, d.Spec.Template.Spec.Containers[0].Image; got != want {
		s.t.Errorf("Deployment %s template image %s, want the shipped %s (Git and cluster agree)", appName, got, want)
	}
	s.expectPodsOn(oldImage, false)
	s.expectNoCanaryDeployment()
	s.expectRouteAllPrimary()
}

// watchClient is a client that can watch, acting as cfg.
func watchClient(t *testing.T, cfg *rest.Config) client.WithWatch {
	t.Helper()
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatalf("create watching client: %v", err)
	}
	return c
}

// canaryRecorder keeps what a watch of one Canary saw: the latest version and the runs of
// canary weights and phases.
type canaryRecorder struct {
	mu   sync.Mutex
	last *coalminev1beta1.Canary
	ws   []int
	ps   []coalminev1beta1.CanaryPhase
}

func recordCanary(t *testing.T, ctx context.Context, c client.WithWatch, ns, name string) *canaryRecorder {
	r := &canaryRecorder{}
	watchNamed(t, ctx, c, &coalminev1beta1.CanaryList{}, ns, name, func(obj k8sruntime.Object, typ watch.EventType) {
		if typ == watch.Deleted {
			return
		}
		r.observe(obj.(*coalminev1beta1.Canary))
	})
	return r
}

func (r *canaryRecorder) observe(c *coalminev1beta1.Canary) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.last = c.DeepCopy()
	if w := c.Status.CanaryWeight; len(r.ws) == 0 || r.ws[len(r.ws)-1] != w {
		r.ws = append(r.ws, w)
	}
	if p := c.Status.Phase; p != "" && (len(r.ps) == 0 || r.ps[len(r.ps)-1] != p) {
		r.ps = append(r.ps, p)
	}
}

func (r *canaryRecorder) latest() *coalminev1beta1.Canary {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last == nil {
		return nil
	}
	return r.last.DeepCopy()
}

// weights are the canary weights the Canary's status went through, consecutive
// repetitions folded.
func (r *canaryRecorder) weights() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ws)
}

func (r *canaryRecorder) phases() []coalminev1beta1.CanaryPhase {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ps)
}

// routeRecorder keeps what a watch of one route saw: the canary weights it went through
// and whether it exists now. TrafficRoute versions are also written to a directory as
// JSON, as stored, for Kuma's validator.
type routeRecorder struct {
	name     string
	canary   string // the canary's kuma.io/service tag
	dumpDir  string
	label    string
	mu       sync.Mutex
	ws       []int
	versions int
	exists   bool
	weight   int
	// managers are the field managers of every version seen: who wrote the route.
	managers map[string]bool
}

func recordRoute(t *testing.T, ctx context.Context, c client.WithWatch, gvk schema.GroupVersionKind, ns, name, appNS, label, dumpDir string) *routeRecorder {
	r := &routeRecorder{name: name, canary: meshsim.Tag(appName+coalminev1beta1.CanarySuffix, appNS, 8080), dumpDir: dumpDir, label: label}
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
	watchNamed(t, ctx, c, list, ns, name, func(obj k8sruntime.Object, typ watch.EventType) {
		r.observe(t, obj.(*unstructured.Unstructured), typ)
	})
	return r
}

func (r *routeRecorder) observe(t *testing.T, u *unstructured.Unstructured, typ watch.EventType) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if typ == watch.Deleted {
		r.exists = false
		return
	}
	w, err := canaryWeightOf(u, r.canary)
	if err != nil {
		t.Errorf("route %s version %s: %v", r.name, u.GetResourceVersion(), err)
		return
	}
	r.exists, r.weight = true, w
	r.versions++
	if r.managers == nil {
		r.managers = map[string]bool{}
	}
	for _, f := range u.GetManagedFields() {
		r.managers[f.Manager] = true
	}
	if len(r.ws) == 0 || r.ws[len(r.ws)-1] != w {
		r.ws = append(r.ws, w)
	}
	if r.dumpDir != "" && u.GetKind() == trafficRouteGVK.Kind {
		data, err := u.MarshalJSON()
		if err == nil {
			err = os.WriteFile(filepath.Join(r.dumpDir, fmt.Sprintf("%s-%s-rv%s.json", r.label, r.name, u.GetResourceVersion())), data, 0o644)
		}
		if err != nil {
			t.Errorf("dump route %s: %v", r.name, err)
		}
	}
}

func (r *routeRecorder) weights() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ws)
}

// current is the canary weight of the route now, and whether it exists.
func (r *routeRecorder) current() (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.weight, r.exists
}

// writers are the field managers of the versions seen, sorted.
func (r *routeRecorder) writers() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Sorted(maps.Keys(r.managers))
}

// seen is how many versions of the route were observed.
func (r *routeRecorder) seen() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.versions
}

// canaryWeightOf reads the percentage of a TrafficRoute's or MeshHTTPRoute's traffic that
// goes to the canary tag: of the split that gives it the most (conf.split or a conf.http
// entry; one rule of a MeshHTTPRoute), so that an A/B route's weight is the matching
// requests'.
func canaryWeightOf(u *unstructured.Unstructured, canaryTag string) (int, error) {
	var splits [][]any
	var nameKey []string
	switch u.GetKind() {
	case trafficRouteGVK.Kind:
		split, _, _ := unstructured.NestedSlice(u.Object, "spec", "conf", "split")
		splits = append(splits, split)
		httpEntries, _, _ := unstructured.NestedSlice(u.Object, "spec", "conf", "http")
		for _, h := range httpEntries {
			hs, _, _ := unstructured.NestedSlice(h.(map[string]any), "split")
			splits = append(splits, hs)
		}
		nameKey = []string{"destination", "kuma.io/service"}
	case meshHTTPRouteGVK.Kind:
		to, _, _ := unstructured.NestedSlice(u.Object, "spec", "to")
		for _, t := range to {
			rules, _, _ := unstructured.NestedSlice(t.(map[string]any), "rules")
			for _, rule := range rules {
				refs, _, _ := unstructured.NestedSlice(rule.(map[string]any), "default", "backendRefs")
				splits = append(splits, refs)
			}
		}
		nameKey = []string{"name"}
	default:
		return 0, fmt.Errorf("unexpected kind %s", u.GetKind())
	}
	best, weighted := 0, false
	for _, entries := range splits {
		var canary, total int64
		for _, e := range entries {
			m, ok := e.(map[string]any)
			if !ok {
				return 0, fmt.Errorf("split entry %v is not an object", e)
			}
			w, ok, err := unstructured.NestedInt64(m, "weight")
			if err != nil || !ok {
				return 0, fmt.Errorf("split entry %v has no integer weight", e)
			}
			total += w
			if tag, _, _ := unstructured.NestedString(m, nameKey...); tag == canaryTag {
				canary += w
			}
		}
		if total > 0 {
			best, weighted = max(best, int(canary*100/total)), true
		}
	}
	if !weighted {
		return 0, errors.New("route has no weight")
	}
	return best, nil
}

// watchNamed lists, then watches the object called name (in ns when namespaced) of list's
// kind until ctx ends, calling observe with every version it sees. A closed watch resumes
// from the last resource version, an expired one starts again from a list.
func watchNamed(t *testing.T, ctx context.Context, c client.WithWatch, list client.ObjectList, ns, name string, observe func(k8sruntime.Object, watch.EventType)) {
	opts := []client.ListOption{client.MatchingFields{"metadata.name": name}}
	if ns != "" {
		opts = append(opts, client.InNamespace(ns))
	}
	ready := make(chan struct{})
	go func() {
		rv := ""
		first := true
		for ctx.Err() == nil {
			if rv == "" {
				l := list.DeepCopyObject().(client.ObjectList)
				if err := c.List(ctx, l, opts...); err != nil {
					if ctx.Err() == nil {
						t.Logf("list %s for watch: %v", name, err)
					}
					sleepCtx(ctx, 200*time.Millisecond)
					continue
				}
				items, err := meta.ExtractList(l)
				if err != nil {
					t.Errorf("read list of %s: %v", name, err)
					return
				}
				for _, it := range items {
					observe(it, watch.Added)
				}
				rv = l.GetResourceVersion()
				if first {
					close(ready)
					first = false
				}
			}
			w, err := c.Watch(ctx, list.DeepCopyObject().(client.ObjectList),
				append(slices.Clone(opts), &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true}})...)
			if err != nil {
				if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
					rv = ""
				}
				sleepCtx(ctx, 200*time.Millisecond)
				continue
			}
			rv = drain(w, rv, observe)
		}
	}()
	select {
	case <-ready:
	case <-ctx.Done():
	}
}

// drain passes a watch's events to observe until it closes and returns the resource
// version to resume from ("" to list again).
func drain(w watch.Interface, rv string, observe func(k8sruntime.Object, watch.EventType)) string {
	defer w.Stop()
	for ev := range w.ResultChan() {
		switch ev.Type {
		case watch.Error:
			if st, ok := ev.Object.(*metav1.Status); ok && (st.Code == 410 || st.Reason == metav1.StatusReasonExpired) {
				return ""
			}
			return rv
		case watch.Bookmark:
		default:
			observe(ev.Object, ev.Type)
		}
		if o, ok := ev.Object.(client.Object); ok && o.GetResourceVersion() != "" {
			rv = o.GetResourceVersion()
		}
	}
	return rv
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// judgeTrafficRoutes runs Kuma's own TrafficRoute validator (the kumajudge module) over
// every route version the scenarios observed, failing t if Kuma refuses any.
func judgeTrafficRoutes(t *testing.T, dir string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		t.Fatalf("list observed routes: %v", err)
	}
	if len(files) == 0 {
		t.Log("no TrafficRoute observed: nothing for Kuma's validator")
		return
	}
	root, err := sandbox.RepoRoot()
	if err != nil {
		t.Fatalf("find repository: %v", err)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	ctx := testContext(t, 15*time.Minute)
	bin := filepath.Join(t.TempDir(), "kumajudge")
	build := exec.CommandContext(ctx, goBin, "build", "-o", bin, "./cmd/kumajudge")
	build.Dir = filepath.Join(root, "e2e", "kumajudge")
	// The judge is its own module (it imports Kuma); a go.work must not pull it in.
	build.Env = append(os.Environ(), "GOWORK=off")
	start := time.Now()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build kumajudge: %v\n%s", err, out)
	}
	t.Logf("built kumajudge in %s", time.Since(start).Round(time.Millisecond))
	out, err := exec.CommandContext(ctx, bin, dir).CombinedOutput()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err != nil {
		t.Fatalf("Kuma's validator refused TrafficRoutes coalmine wrote (%s):\n%s", dir, out)
	}
	t.Logf("Kuma's validator accepted all %d TrafficRoute versions the scenarios observed", len(lines))
}
