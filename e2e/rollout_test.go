package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	coalminev1beta1 "github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/cmd/coalmine/app"
	"github.com/coalmine-dev/coalmine/rollout/hooks"
	"github.com/coalmine-dev/coalmine/rollout/router"
	"github.com/coalmine-dev/coalmine/sandbox"
	"github.com/coalmine-dev/coalmine/sandbox/meshsim"
)

// The progression loop end to end (DESIGN §2, §4). Scenarios that share nothing run in
// parallel under TestRollout; those that stop something shared (Prometheus, coalmine
// itself) are top-level tests without t.Parallel, which Go runs before any parallel
// test resumes, so they never overlap another scenario.

// TestRollout runs the independent scenarios in parallel, then has Kuma's own validator
// judge every TrafficRoute version any scenario observed.
func TestRollout(t *testing.T) {
	t.Parallel()
	env := sharedRollout(t)
	t.Run("scenarios", func(t *testing.T) {
		t.Run("SeedHappyPath", func(t *testing.T) { t.Parallel(); testSeedHappyPath(t, env) })
		t.Run("ErrorRateRegression", func(t *testing.T) { t.Parallel(); testErrorRateRegression(t, env) })
		t.Run("LatencyRegression", func(t *testing.T) { t.Parallel(); testLatencyRegression(t, env) })
		t.Run("NewRevisionMidRollout", func(t *testing.T) { t.Parallel(); testNewRevisionMidRollout(t, env) })
		t.Run("RevertMidRollout", func(t *testing.T) { t.Parallel(); testRevertMidRollout(t, env) })
		t.Run("MeshHTTPRoute", func(t *testing.T) { t.Parallel(); testMeshHTTPRoute(t, env) })
		t.Run("WebhookGates", func(t *testing.T) { t.Parallel(); testWebhookGates(t, env) })
	})
	// The serial scenarios ran before this test resumed from t.Parallel, so their routes
	// are in the directory too.
	t.Run("KumaValidatesTrafficRoutes", func(t *testing.T) { judgeTrafficRoutes(t, env.dumpDir) })
}

// testSeedHappyPath: a good release goes 5, 10, ... 50 and is promoted; alice itself then
// runs it, unpaused, with no copy left.
func testSeedHappyPath(t *testing.T, env *rolloutEnvironment) {
	s := newScenario(t, env, scenarioOptions{})
	s.deploy()
	v2 := s.ship(imageV2, nil)
	c := s.waitPhase(coalminev1beta1.PhaseSucceeded, 3*time.Minute)

	s.expectWeights(weightSeq([]int{0}, seedSteps(), []int{0}))
	s.expectPromoted(c, v2)

	// The TrafficRoute is the seed's, named so two namespaces never collide.
	route := &unstructured.Unstructured{}
	route.SetGroupVersionKind(trafficRouteGVK)
	if err := k8s.Get(s.ctx, client.ObjectKey{Name: appName + "." + s.ns}, route); err != nil {
		t.Fatalf("get TrafficRoute: %v", err)
	}
	if mesh, _, _ := unstructured.NestedString(route.Object, "mesh"); mesh != meshName {
		t.Errorf("TrafficRoute mesh %q, want the Canary's %s", mesh, meshName)
	}
}

// testErrorRateRegression: a release failing 20% of requests is rolled back at the
// threshold, and alice's pods never leave the old release.
func testErrorRateRegression(t *testing.T, env *rolloutEnvironment) {
	s := newScenario(t, env, scenarioOptions{})
	s.deploy()
	v2 := s.ship(imageV2, map[string]string{meshsim.EnvErrorRate: "0.2"})
	c := s.waitPhase(coalminev1beta1.PhaseFailed, 2*time.Minute)

	s.expectWeights([]int{0, 5, 0})
	if !strings.Contains(c.Status.Message, coalminev1beta1.MetricRequestSuccessRate) ||
		strings.Contains(c.Status.Message, coalminev1beta1.MetricRequestDuration) {
		t.Errorf("message %q, want it to name %s alone", c.Status.Message, coalminev1beta1.MetricRequestSuccessRate)
	}
	expectOutcome(t, c, coalminev1beta1.MetricRequestSuccessRate, coalminev1beta1.MetricFailed)
	expectOutcome(t, c, coalminev1beta1.MetricRequestDuration, coalminev1beta1.MetricPassed)
	s.expectRolledBack(c, v2, imageV1)
}

// testLatencyRegression: a release answering in 900 ms is rolled back on request-duration.
func testLatencyRegression(t *testing.T, env *rolloutEnvironment) {
	s := newScenario(t, env, scenarioOptions{})
	s.deploy()
	v2 := s.ship(imageV2, map[string]string{meshsim.EnvLatencyMs: "900"})
	c := s.waitPhase(coalminev1beta1.PhaseFailed, 2*time.Minute)

	s.expectWeights([]int{0, 5, 0})
	if !strings.Contains(c.Status.Message, coalminev1beta1.MetricRequestDuration) {
		t.Errorf("message %q, want it to name %s", c.Status.Message, coalminev1beta1.MetricRequestDuration)
	}
	expectOutcome(t, c, coalminev1beta1.MetricRequestDuration, coalminev1beta1.MetricFailed)
	expectOutcome(t, c, coalminev1beta1.MetricRequestSuccessRate, coalminev1beta1.MetricPassed)
	s.expectRolledBack(c, v2, imageV1)
}

// testNewRevisionMidRollout: v3 arrives while v2 is at weight 20; the canary takes v3,
// the analysis starts again from 5, and v3 is promoted.
func testNewRevisionMidRollout(t *testing.T, env *rolloutEnvironment) {
	s := newScenario(t, env, scenarioOptions{})
	s.deploy()
	s.ship(imageV2, nil)
	s.waitWeight(20)
	v3 := s.ship(imageV3, nil)
	rev3 := v3.Annotations[coalminev1beta1.AnnotationRevision]

	// The running canary is brought to the newest template, not a second one created.
	s.await(time.Minute, "canary on v3", func(ctx context.Context) (bool, error) {
		c := s.canary.latest()
		if c.Status.CanaryRevision != rev3 {
			return false, fmt.Errorf("canaryRevision %s, want %s", c.Status.CanaryRevision, rev3)
		}
		d := &appsv1.Deployment{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: appName + coalminev1beta1.CanarySuffix}, d); err != nil {
			return false, err
		}
		if img := d.Spec.Template.Spec.Containers[0].Image; img != imageV3 || d.Annotations[coalminev1beta1.AnnotationRevision] != rev3 {
			return false, fmt.Errorf("canary Deployment runs %s at revision %s, want %s at %s", img, d.Annotations[coalminev1beta1.AnnotationRevision], imageV3, rev3)
		}
		return true, nil
	})
	c := s.waitPhase(coalminev1beta1.PhaseSucceeded, 3*time.Minute)

	at := s.interruptedAt(20)
	s.expectWeights(weightSeq([]int{0}, stepsUpTo(at), []int{0}, seedSteps(), []int{0}))
	s.expectPromoted(c, v3)
}

// testRevertMidRollout: the template goes back to the stable one while v2 is analysed;
// the analysis ends with nothing rolled.
func testRevertMidRollout(t *testing.T, env *rolloutEnvironment) {
	s := newScenario(t, env, scenarioOptions{})
	initial := s.deploy()
	s.ship(imageV2, nil)
	s.waitWeight(10)
	reverted := s.release(imageV1, nil)
	apply(t, reverted)
	c := s.waitPhase(coalminev1beta1.PhaseSucceeded, time.Minute)

	at := s.interruptedAt(10)
	s.expectWeights(weightSeq([]int{0}, stepsUpTo(at), []int{0}))
	if !strings.Contains(c.Status.Message, "reverted") {
		t.Errorf("message %q, want it to say the template was reverted", c.Status.Message)
	}
	if c.Status.LastPromotedRevision != "" || c.Status.StableRevision != initial.Status.StableRevision {
		t.Errorf("lastPromotedRevision %q, stableRevision %q; want none promoted and %s still stable",
			c.Status.LastPromotedRevision, c.Status.StableRevision, initial.Status.StableRevision)
	}
	target := s.target()
	if target.Spec.Paused {
		t.Errorf("Deployment %s still paused after the revert", appName)
	}
	if img := target.Spec.Template.Spec.Containers[0].Image; img != imageV1 {
		t.Errorf("Deployment %s template image %s, want %s", appName, img, imageV1)
	}
	s.expectPodsOn(imageV1, false)
	s.expectNoCanaryDeployment()
	s.expectRouteAllPrimary()
}

// testMeshHTTPRoute: the happy path with Kuma 2.x's MeshHTTPRoute, the mesh taken from
// the namespace.
func testMeshHTTPRoute(t *testing.T, env *rolloutEnvironment) {
	s := newScenario(t, env, scenarioOptions{routeKind: coalminev1beta1.RouteKindMeshHTTPRoute, meshFromNamespace: true})
	s.deploy()
	v2 := s.ship(imageV2, nil)
	c := s.waitPhase(coalminev1beta1.PhaseSucceeded, 3*time.Minute)

	s.expectWeights(weightSeq([]int{0}, seedSteps(), []int{0}))
	s.expectPromoted(c, v2)

	route := &unstructured.Unstructured{}
	route.SetGroupVersionKind(meshHTTPRouteGVK)
	if err := k8s.Get(s.ctx, client.ObjectKey{Namespace: s.ns, Name: router.MeshHTTPRouteName(appName)}, route); err != nil {
		t.Fatalf("get MeshHTTPRoute: %v", err)
	}
	if mesh := route.GetLabels()[coalminev1beta1.AnnotationMesh]; mesh != meshName {
		t.Errorf("MeshHTTPRoute label kuma.io/mesh %q, want the namespace's %s", mesh, meshName)
	}
	tr := &unstructured.Unstructured{}
	tr.SetGroupVersionKind(trafficRouteGVK)
	if err := k8s.Get(s.ctx, client.ObjectKey{Name: appName + "." + s.ns}, tr); !apierrors.IsNotFound(err) {
		t.Errorf("get TrafficRoute %s.%s: %v, want NotFound (the Canary asked for a MeshHTTPRoute)", appName, s.ns, err)
	}
}

// TestRolloutPrometheusDown: Prometheus goes away mid-analysis; every check is a query
// error, and at the threshold the release is rolled back saying so. It stops the shared
// Prometheus, so it must not run in parallel with anything.
func TestRolloutPrometheusDown(t *testing.T) {
	env := sharedRollout(t)
	s := newScenario(t, env, scenarioOptions{})
	s.deploy()
	v2 := s.ship(imageV2, nil)
	s.waitWeight(10)

	restart := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := sb.StartPrometheus(ctx); err != nil {
			t.Errorf("start prometheus again: %v", err)
			return
		}
		// Wait until it scrapes the simulator again, for the scenarios after this one.
		if err := sb.AddScrapeTarget(ctx, simulatorJob, env.simAddr()); err != nil {
			t.Errorf("scrape the simulator again: %v", err)
		}
	}
	t.Cleanup(restart)
	if err := sb.StopPrometheus(); err != nil {
		t.Fatalf("stop prometheus: %v", err)
	}
	c := s.waitPhase(coalminev1beta1.PhaseFailed, 2*time.Minute)
	restart()

	at := s.interruptedAt(10)
	s.expectWeights(weightSeq([]int{0}, stepsUpTo(at), []int{0}))
	if !strings.Contains(c.Status.Message, "query error") {
		t.Errorf("message %q, want it to say the query failed", c.Status.Message)
	}
	expectOutcome(t, c, coalminev1beta1.MetricRequestSuccessRate, coalminev1beta1.MetricError)
	expectOutcome(t, c, coalminev1beta1.MetricRequestDuration, coalminev1beta1.MetricError)
	s.expectRolledBack(c, v2, imageV1)
}

// TestRolloutControllerRestart: coalmine stops at weight 15 and starts again; the new
// process resumes from the Canary's status (15, then 20), never from the start.
func TestRolloutControllerRestart(t *testing.T) {
	env := sharedRollout(t)
	env.restartCoalmineAtCleanup(t)
	s := newScenario(t, env, scenarioOptions{})
	s.deploy()
	v2 := s.ship(imageV2, nil)
	s.waitWeight(15)
	env.stopCoalmine(t)
	stopped := s.get()
	s.checkInterruptedAt(15, stopped.Status.CanaryWeight)

	// Stay down past the next analysis: a resumed controller must take its schedule
	// from the status, not from a timer of the process that died. Nothing can be awaited
	// here, the point is that nothing happens.
	time.Sleep(time.Until(stopped.Status.LastStepTime.Add(2 * analysisInterval)))
	if now := s.get(); now.ResourceVersion != stopped.ResourceVersion {
		t.Fatalf("the Canary changed while coalmine was stopped: %+v", now.Status)
	}
	env.startCoalmine(t)

	c := s.waitPhase(coalminev1beta1.PhaseSucceeded, 3*time.Minute)
	s.expectWeights(weightSeq([]int{0}, seedSteps(), []int{0}))
	s.expectPromoted(c, v2)
}

// TestRolloutMultiZone: the zone's coalmine writes the TrafficRoute to the Global control
// plane (a second apiserver, --mesh-kubeconfig), never to the zone, and the mesh splits
// the traffic by it. Where kuma-cp runs (root, binary built: sandbox.StartKumaMultiZone),
// the Global is Kuma's Global CP and the zone has a zone CP connected over KDS: the route
// reaches the zone as KDS's copy, which the simulator follows as data planes would, and
// Kuma's zone webhook refuses a TrafficRoute written on the zone directly. Elsewhere the
// Global is the emulation (Kuma's CRDs and an admission policy) and the simulator reads
// the Global's route.
//
// Two coalmines cannot both run the loop on the zone: with one leader-election Lease only
// one of them leads, with two both would reconcile every Canary (and the shipped RBAC
// grants the one Lease name only). So the shared one stops for this test, and the
// multi-zone one takes over its webhook port and Lease: the installed webhook
// configurations and the serving certificate (one Secret) stay valid, as they would for a
// new replica.
func TestRolloutMultiZone(t *testing.T) {
	env := sharedRollout(t)
	env.restartCoalmineAtCleanup(t)
	ctx := testContext(t, scenarioTimeout)

	start := time.Now()
	mz, err := sandbox.StartKumaMultiZone(ctx, sb, sandbox.KumaOptions{
		Dir: filepath.Join(sb.Dir, "global-cp"), Log: os.Stderr, Meshes: []string{meshName},
	})
	if err != nil {
		t.Fatalf("start the Global control plane: %v", err)
	}
	t.Cleanup(func() {
		if err := mz.Stop(); err != nil {
			t.Errorf("stop the Global control plane: %v", err)
		}
	})
	global := mz.Global
	if mz.Real {
		t.Logf("kuma-cp Global CP (webhook in %s) and zone CP %s (webhook in %s, KDS sync %s) up in %s",
			mz.GlobalCP.Ready.Round(time.Millisecond), mz.ZoneName, mz.ZoneCP.Ready.Round(time.Millisecond),
			mz.KDSSync.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	} else {
		t.Logf("emulated Global control plane up in %s (kuma-cp does not run: %s)", time.Since(start).Round(time.Millisecond), mz.Why)
	}

	globalRoutes := watchClient(t, global.Config)
	s := newScenario(t, env, scenarioOptions{routes: globalRoutes, routesLabel: "global"})

	env.stopCoalmine(t)
	env.runOwnCoalmine(t, func(o *app.Options) { o.MeshRESTConfig = global.Config })
	// Data planes take their routes from their zone CP: with a real one, the simulator
	// reads the zone's copy; the emulation has no copy, so it reads the Global's.
	simOpts := meshsim.Options{Config: sb.Config, RouteConfig: global.Config, Namespaces: []string{s.ns}, RPS: simulatorRPS}
	if mz.Real {
		simOpts.RouteConfig = sb.Config
	}
	simCtx, stopSim := context.WithCancel(env.ctx)
	sim, err := meshsim.Start(simCtx, simOpts)
	if err != nil {
		stopSim()
		t.Fatalf("start the multi-zone simulator: %v", err)
	}
	t.Cleanup(func() { stopSim(); <-sim.Done() })
	const job = "meshsim-multizone"
	if err := sb.AddScrapeTarget(ctx, job, sim.Addr()); err != nil {
		t.Fatalf("scrape the multi-zone simulator: %v", err)
	}
	t.Cleanup(func() { _ = sb.RemoveScrapeTarget(context.Background(), job, sim.Addr()) })

	zone := s.recordRoute(watchClient(t, sb.Config), "zone")
	s.deploy()
	v2 := s.ship(imageV2, nil)
	c := s.waitPhase(coalminev1beta1.PhaseSucceeded, 3*time.Minute)

	s.expectWeights(weightSeq([]int{0}, seedSteps(), []int{0}))
	s.expectPromoted(c, v2)
	if mz.Real {
		s.expectZoneCopy(zone)
		for _, cp := range []*sandbox.KumaCP{mz.GlobalCP, mz.ZoneCP} {
			if rss, err := cp.RSS(); err == nil {
				t.Logf("kuma-cp %s CP: %d MiB resident after the rollout", cp.Mode, rss>>20)
			}
		}
	} else if n := zone.seen(); n != 0 {
		t.Errorf("the zone saw %d versions of TrafficRoute %s, want none: it belongs to the Global CP", n, zone.name)
	}
	canaryTag := meshsim.Tag(appName+coalminev1beta1.CanarySuffix, s.ns, 8080)
	if got := sim.Snapshot()[canaryTag]; got.Requests == 0 {
		t.Errorf("the mesh sent no request to %s: it did not split by the %s route", canaryTag, map[bool]string{true: "zone's copy of the", false: "Global CP's"}[mz.Real])
	}

	t.Run("ZoneRefusesTrafficRouteWrites", func(t *testing.T) {
		if !mz.Real {
			t.Skipf("no zone CP: %s", mz.Why)
		}
		testZoneRefusesTrafficRouteWrites(t, s, zone.name)
	})

	// Deleting the Canary removes the route from the Global CP, and KDS from the zone.
	canary := &coalminev1beta1.Canary{}
	canary.Namespace, canary.Name = s.ns, appName
	if err := k8s.Delete(ctx, canary); err != nil {
		t.Fatalf("delete canary: %v", err)
	}
	s.await(time.Minute, "canary finalized and route gone from the Global CP and the zone", func(ctx context.Context) (bool, error) {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(canary), canary); !apierrors.IsNotFound(err) {
			return false, fmt.Errorf("canary still there (%v)", err)
		}
		if _, exists := s.route.current(); exists {
			return false, errors.New("route still on the Global CP")
		}
		if _, exists := zone.current(); exists {
			return false, errors.New("route still on the zone")
		}
		return true, nil
	})
}

// interruptedAt is the weight at which the change made at the awaited weight (a new
// revision, a revert, Prometheus going away) caught the first analysis: the weight
// before the first fall of the recorded weights. A step is due one interval after the
// awaited weight, so it is that weight unless the machine stalled for longer; then it is
// the next step, and the expected weights follow what happened.
func (s *scenario) interruptedAt(awaited int) int {
	s.t.Helper()
	ws := s.canary.weights()
	for i := 1; i < len(ws); i++ {
		if ws[i] < ws[i-1] {
			return s.checkInterruptedAt(awaited, ws[i-1])
		}
	}
	s.t.Fatalf("the weights %v never fell: the change at weight %d did not interrupt the analysis\n%s", ws, awaited, s.describe())
	return 0
}

func (s *scenario) checkInterruptedAt(awaited, got int) int {
	s.t.Helper()
	switch got {
	case awaited:
	case awaited + 5:
		s.t.Logf("the rollout moved to weight %d before the change at weight %d took effect", got, awaited)
	default:
		s.t.Fatalf("the change at weight %d took effect at weight %d\n%s", awaited, got, s.describe())
	}
	return got
}

// expectOutcome checks the last outcome of a metric in the status.
func expectOutcome(t *testing.T, c *coalminev1beta1.Canary, metric string, want coalminev1beta1.MetricOutcome) {
	t.Helper()
	for _, m := range c.Status.Metrics {
		if m.Name == metric {
			if m.Outcome != want {
				t.Errorf("metric %s outcome %s (%q), want %s", metric, m.Outcome, m.Message, want)
			}
			return
		}
	}
	t.Errorf("no status of metric %s in %+v", metric, c.Status.Metrics)
}

// testWebhookGates: Flagger's webhooks over real HTTP. A confirm-rollout gate holds the
// new revision in Waiting, with nothing started, until it answers 200; a rollout hook (a
// load tester) is called each interval with Flagger's payload; the post-rollout hook
// hears of the promotion.
func testWebhookGates(t *testing.T, env *rolloutEnvironment) {
	var approved atomic.Bool
	var mu sync.Mutex
	calls := map[string][]hooks.Payload{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p hooks.Payload
		if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		calls[r.URL.Path] = append(calls[r.URL.Path], p)
		mu.Unlock()
		if r.URL.Path == "/approve" && !approved.Load() {
			http.Error(w, "waiting for the release manager", http.StatusForbidden)
		}
	}))
	t.Cleanup(srv.Close)
	s := newScenario(t, env, scenarioOptions{webhooks: []any{
		map[string]any{"name": "release-manager", "type": "confirm-rollout", "url": srv.URL + "/approve"},
		map[string]any{"name": "load-test", "url": srv.URL + "/load", "timeout": "5s", "metadata": map[string]any{"cmd": "hey -z 2s http://alice-canary/"}},
		map[string]any{"name": "notify", "type": "post-rollout", "url": srv.URL + "/post"},
	}})
	s.deploy()
	v2 := s.ship(imageV2, nil)
	c := s.waitPhase(coalminev1beta1.PhaseWaiting, time.Minute)
	if !strings.Contains(c.Status.Message, "confirm-rollout webhook release-manager") || !strings.Contains(c.Status.Message, "waiting for the release manager") {
		t.Errorf("Waiting message %q, want the gate and its answer", c.Status.Message)
	}
	s.expectNoCanaryDeployment()

	approved.Store(true)
	c = s.waitPhase(coalminev1beta1.PhaseSucceeded, 3*time.Minute)
	s.expectWeights(weightSeq([]int{0}, seedSteps(), []int{0}))
	s.expectPromoted(c, v2)

	mu.Lock()
	defer mu.Unlock()
	load, post := calls["/load"], calls["/post"]
	if len(load) < len(seedSteps())-1 {
		t.Errorf("%d load-test calls, want one per analysis", len(load))
	}
	for _, p := range load {
		if p.Name != appName || p.Namespace != s.ns || p.Type != coalminev1beta1.RolloutHook || p.Checksum != c.Status.LastPromotedRevision ||
			p.Phase != coalminev1beta1.PhaseProgressing || p.Metadata["cmd"] != "hey -z 2s http://alice-canary/" {
			t.Errorf("load-test payload %+v", p)
			break
		}
	}
	if len(post) != 1 || post[0].Phase != coalminev1beta1.PhaseSucceeded {
		t.Errorf("post-rollout calls %+v, want one, Succeeded", post)
	}
}
