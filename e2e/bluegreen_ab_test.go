package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	coalminev1beta1 "github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/sandbox/meshsim"
)

// Blue/green and A/B testing on Kuma (Flagger's analysis.iterations and analysis.match),
// end to end on both route kinds: the seed's Canary with iterations instead of weights, the
// simulator playing Flagger's load tester (it calls alice-canary directly) and callers that
// send headers and cookies.

const (
	// bgIterations is the blue/green and A/B iterations of these scenarios.
	bgIterations = 3
	// bgTimeout bounds the whole test: four scenarios in parallel, each about ten
	// intervals, and Kuma's validator (built once, about a minute cold).
	bgTimeout = 8 * time.Minute
	// extraRPS is the rate of the load tester and of each header-carrying caller.
	extraRPS = 50
)

// TestBlueGreenAndABTesting runs the blue/green and A/B scenarios on TrafficRoute and
// MeshHTTPRoute, then has Kuma's own validator judge every TrafficRoute they wrote (the
// A/B ones carry conf.http matches).
func TestBlueGreenAndABTesting(t *testing.T) {
	t.Parallel()
	env := sharedRollout(t)
	ctx := testContext(t, bgTimeout)
	dump := filepath.Join(sb.Dir, "trafficroutes-bluegreen-ab")
	if err := os.MkdirAll(dump, 0o755); err != nil {
		t.Fatal(err)
	}
	kinds := []string{coalminev1beta1.RouteKindTrafficRoute, coalminev1beta1.RouteKindMeshHTTPRoute}
	t.Run("scenarios", func(t *testing.T) {
		for _, kind := range kinds {
			t.Run("BlueGreen/"+kind, func(t *testing.T) { t.Parallel(); testBlueGreen(t, env, kind, dump) })
			t.Run("BlueGreenFailure/"+kind, func(t *testing.T) { t.Parallel(); testBlueGreenFailure(t, env, kind, dump) })
			t.Run("ABTesting/"+kind, func(t *testing.T) { t.Parallel(); testABTesting(t, env, kind, dump) })
		}
	})
	if ctx.Err() != nil {
		t.Fatalf("over the time bound of %s", bgTimeout)
	}
	t.Run("KumaValidatesTrafficRoutes", func(t *testing.T) { judgeTrafficRoutes(t, dump) })
}

// bgScenario is a scenario whose Canary is edited before it is applied.
func bgScenario(t *testing.T, env *rolloutEnvironment, kind, dump string) *scenario {
	s := newScenario(t, env, scenarioOptions{routeKind: kind})
	s.dumpDir = dump
	return s
}

// deployEdited is deploy with the seed's Canary changed by edit.
func (s *scenario) deployEdited(edit func(c *unstructured.Unstructured)) *coalminev1beta1.Canary {
	s.t.Helper()
	s.canary = recordCanary(s.t, s.ctx, watchClient(s.t, sb.Config), s.ns, appName)
	s.route = s.recordRoute(s.routes, s.routesLabel)
	apply(s.t, s.release(imageV1, nil))
	c := s.seedCanary()
	edit(c)
	apply(s.t, c)
	return s.waitPhase(coalminev1beta1.PhaseInitialized, time.Minute)
}

// blueGreen makes the seed's Canary Flagger's blue/green: iterations, no weights, and the
// canary Service annotated for the simulator's load tester (Flagger's loadtester webhook
// calls <app>-canary; in the sandbox the simulator does).
func (s *scenario) blueGreen(c *unstructured.Unstructured) {
	s.t.Helper()
	unstructured.RemoveNestedField(c.Object, "spec", "analysis", "stepWeight")
	unstructured.RemoveNestedField(c.Object, "spec", "analysis", "maxWeight")
	must(s.t, unstructured.SetNestedField(c.Object, int64(bgIterations), "spec", "analysis", "iterations"))
	must(s.t, unstructured.SetNestedField(c.Object, fmt.Sprint(extraRPS), "spec", "service", "canary", "annotations", meshsim.AnnotationLoadTest))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// simulator is the shared simulator.
func (e *rolloutEnvironment) simulator() *meshsim.Simulator {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.sim
}

func (s *scenario) tag(svc string) string { return meshsim.Tag(svc, s.ns, 8080) }

// testBlueGreen: a good release is analysed for three iterations on the load tester's
// traffic while no user request reaches it; then the route switches 0 -> 100, one more
// check passes with the users on the canary, alice rolls, and traffic goes back.
func testBlueGreen(t *testing.T, env *rolloutEnvironment, kind, dump string) {
	s := bgScenario(t, env, kind, dump)
	s.deployEdited(s.blueGreen)
	v2 := s.ship(imageV2, nil)
	sim, canaryTag := env.simulator(), s.tag(appName+coalminev1beta1.CanarySuffix)

	// Two iterations passed, the route still on primary: the canary has had the load
	// tester's requests and not one of the users'.
	s.await(2*time.Minute, "two blue/green iterations", func(context.Context) (bool, error) {
		c := s.canary.latest()
		if c.Status.PassedChecks < 2 {
			return false, fmt.Errorf("passedChecks %d", c.Status.PassedChecks)
		}
		return true, nil
	})
	if c := s.canary.latest(); c.Status.CanaryWeight != 0 {
		t.Fatalf("canary weight %d after %d of %d iterations, want 0", c.Status.CanaryWeight, c.Status.PassedChecks, bgIterations)
	}
	if got := sim.UserSnapshot()[canaryTag]; got.Requests != 0 {
		t.Errorf("during the blue/green iterations users sent %d requests to %s, want none", got.Requests, canaryTag)
	}
	if got := sim.CallerSnapshot(meshsim.CallerLoadTester)[canaryTag]; got.Requests == 0 {
		t.Errorf("the load tester sent no request to %s: the iterations analysed nothing", canaryTag)
	}

	c := s.waitPhase(coalminev1beta1.PhaseSucceeded, 3*time.Minute)
	s.expectWeights([]int{0, 100, 0})
	s.expectPromoted(c, v2)
	if c.Status.PassedChecks != bgIterations+1 {
		t.Errorf("passedChecks %d, want %d iterations and the check after the switch", c.Status.PassedChecks, bgIterations+1)
	}
	if got := sim.UserSnapshot()[canaryTag]; got.Requests == 0 {
		t.Errorf("users never reached %s after the switch", canaryTag)
	}
}

// testBlueGreenFailure: a release failing 20% of requests fails its iterations on the load
// tester's traffic and is rolled back at the threshold; the route never left 0 and no user
// request ever reached the canary.
func testBlueGreenFailure(t *testing.T, env *rolloutEnvironment, kind, dump string) {
	s := bgScenario(t, env, kind, dump)
	s.deployEdited(s.blueGreen)
	v2 := s.ship(imageV2, map[string]string{meshsim.EnvErrorRate: "0.2"})
	c := s.waitPhase(coalminev1beta1.PhaseFailed, 3*time.Minute)

	s.expectWeights([]int{0})
	expectOutcome(t, c, coalminev1beta1.MetricRequestSuccessRate, coalminev1beta1.MetricFailed)
	s.expectRolledBack(c, v2, imageV1)
	sim, canaryTag := env.simulator(), s.tag(appName+coalminev1beta1.CanarySuffix)
	if got := sim.UserSnapshot()[canaryTag]; got.Requests != 0 {
		t.Errorf("users sent %d requests to the failed blue/green canary %s, want none", got.Requests, canaryTag)
	}
	if got := sim.CallerSnapshot(meshsim.CallerLoadTester)[canaryTag]; got.Errors == 0 {
		t.Errorf("the load tester saw no error from %s (%+v): the rollback was not its doing", canaryTag, got)
	}
}

// testABTesting: with analysis.match (a header, a cookie) and iterations, only the callers
// whose requests match reach the canary, for the whole analysis and promotion; users
// without the header and a caller with another header value stay on primary.
func testABTesting(t *testing.T, env *rolloutEnvironment, kind, dump string) {
	s := bgScenario(t, env, kind, dump)
	callers := meshsim.CallersAnnotation(
		meshsim.CallerSpec{Name: "insiders", RPS: extraRPS, Headers: map[string]string{"x-canary": "insider"}},
		meshsim.CallerSpec{Name: "testers", RPS: extraRPS, Headers: map[string]string{"cookie": "canary=always; theme=dark"}},
		meshsim.CallerSpec{Name: "outsiders", RPS: extraRPS, Headers: map[string]string{"x-canary": "outsider", "cookie": "canary=never"}},
	)
	s.deployEdited(func(c *unstructured.Unstructured) {
		unstructured.RemoveNestedField(c.Object, "spec", "analysis", "stepWeight")
		unstructured.RemoveNestedField(c.Object, "spec", "analysis", "maxWeight")
		must(t, unstructured.SetNestedField(c.Object, int64(bgIterations), "spec", "analysis", "iterations"))
		// Flagger's documented A/B example.
		must(t, unstructured.SetNestedSlice(c.Object, []any{
			map[string]any{"headers": map[string]any{"x-canary": map[string]any{"exact": "insider"}}},
			map[string]any{"headers": map[string]any{"cookie": map[string]any{"regex": "^(.*?;)?(canary=always)(;.*)?$"}}},
		}, "spec", "analysis", "match"))
		must(t, unstructured.SetNestedField(c.Object, callers, "spec", "service", "apex", "annotations", meshsim.AnnotationCallers))
	})
	v2 := s.ship(imageV2, nil)
	c := s.waitPhase(coalminev1beta1.PhaseSucceeded, 3*time.Minute)

	s.expectWeights([]int{0, 100, 0})
	s.expectPromoted(c, v2)
	if c.Status.PassedChecks != bgIterations {
		t.Errorf("passedChecks %d, want the %d iterations", c.Status.PassedChecks, bgIterations)
	}
	sim := env.simulator()
	canaryTag, primaryTag := s.tag(appName+coalminev1beta1.CanarySuffix), s.tag(appName+coalminev1beta1.PrimarySuffix)
	for _, caller := range []string{meshsim.CallerUsers, "outsiders"} {
		got := sim.CallerSnapshot(caller)
		if got[canaryTag].Requests != 0 || got[primaryTag].Requests == 0 {
			t.Errorf("%s: %d requests to the canary, %d to primary; want none on the canary", caller, got[canaryTag].Requests, got[primaryTag].Requests)
		}
	}
	for _, caller := range []string{"insiders", "testers"} {
		if got := sim.CallerSnapshot(caller)[canaryTag]; got.Requests == 0 {
			t.Errorf("%s: no request reached the canary, want the matching requests there", caller)
		}
	}
	if got := sim.CallerSnapshot(meshsim.CallerLoadTester)[canaryTag]; got.Requests != 0 {
		t.Errorf("the load tester called %s in an A/B scenario that did not ask for it", canaryTag)
	}
}
