package rollout

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1beta1 "github.com/coalmine-dev/coalmine/api/v1beta1"
)

// reconcileMayFail is reconcileOnce for passes expected to fail (an unreachable router).
func (e *env) reconcileMayFail() error {
	e.t.Helper()
	e.kube()
	e.inReconcile = true
	before := e.router.writes
	_, err := e.r.Reconcile(context.Background(), reconcile.Request{NamespacedName: e.key})
	e.writes += e.router.writes - before
	e.inReconcile = false
	e.drainEvents()
	return err
}

// Scenarios found by the chaos run (e2e/chaos, issue 11), one test per violation, written
// before the fix.

// I3, seed 276177455: the Canary of a TrafficRoute app was deleted mid-analysis (canary at
// 10%) while the Global CP's apiserver was down. finalize deleted the canary Deployment
// before it could set the route to primary, so the route kept sending 10% of the traffic
// to a canary with no pods for the whole outage (and for good if the control plane had
// not come back within the clean-up deadline). Traffic first: the canary Deployment stays
// while the route that still gives it weight cannot be changed, and goes once the route
// is on primary (or at the clean-up deadline, when the route is left behind anyway).
func TestChaosFoundCanaryKeptWhileUnreachableRouteGivesItWeight(t *testing.T) {
	setUp := func(t *testing.T) (*env, time.Time) {
		e := newEnv(t, seedCanary(), targetDeployment())
		e.settle()
		e.ship("alice:2")
		e.runUntil("weight 10", weightIs(10))
		down := errors.New("dial tcp 10.0.0.1:6443: connect: connection refused")
		e.router.err, e.router.deleteErr = down, down
		deleted := e.deleteCanary()
		e.clock.SetTime(deleted)
		e.reconcileOnce()
		if d := e.target(); d.Spec.Paused || d.Labels[v1beta1.LabelManaged] != "" {
			t.Errorf("target paused=%v labels %v, want it given back first", d.Spec.Paused, d.Labels)
		}
		return e, deleted
	}
	keptWhileWeighted := func(t *testing.T, e *env, when string) {
		t.Helper()
		w, found := e.router.weight("alice")
		if !found || w != 10 {
			t.Fatalf("%s: route weight %d (found %v), want the 10%% the unreachable control plane still has", when, w, found)
		}
		if _, ok := e.deployment("alice-canary"); !ok {
			t.Errorf("%s: canary Deployment deleted while the route sends it %d%% of the traffic", when, w)
		}
	}

	t.Run("control plane back", func(t *testing.T) {
		e, deleted := setUp(t)
		keptWhileWeighted(t, e, "first finalize pass")
		e.clock.SetTime(deleted.Add(time.Minute))
		e.settle()
		keptWhileWeighted(t, e, "a minute into the outage")

		e.router.err, e.router.deleteErr = nil, nil
		e.clock.SetTime(deleted.Add(70 * time.Second))
		e.settle()
		if e.exists() {
			t.Fatalf("Canary still there once the control plane is back: %+v", e.canary().Status)
		}
		if _, found := e.router.weight("alice"); found {
			t.Error("route not deleted once the control plane is back")
		}
		if _, ok := e.deployment("alice-canary"); ok {
			t.Error("canary Deployment left after the finalizer went")
		}
	})

	t.Run("deadline", func(t *testing.T) {
		e, deleted := setUp(t)
		e.clock.SetTime(deleted.Add(routeCleanupDeadline))
		e.settle()
		if e.exists() {
			t.Fatal("Canary still there at the clean-up deadline")
		}
		if _, ok := e.deployment("alice-canary"); ok {
			t.Error("canary Deployment left after the finalizer went at the deadline")
		}
		if n := len(e.eventsWith(ReasonRouteLeftOver)); n != 1 {
			t.Errorf("%d RouteLeftBehind events, want 1", n)
		}
	})
}

// I2, seed 276177455: a bad release (50% errors) of a TrafficRoute app was promoted. It
// arrived mid-analysis just before an outage of the Global CP; the loop recorded each
// step (10, 20, 30%) and analysed the next interval although the route on the unreachable
// control plane stayed at 0%, so the canary got no request at any step, the checks read
// the previous canary's samples still in the metric window, passed, and the release was
// promoted. A step is analysed only once the route carries its weight; the interval
// starts when it does.
func TestChaosFoundNoAnalysisWhileTheRouteMissesItsWeight(t *testing.T) {
	e := newEnv(t, seedCanary(), targetDeployment())
	e.settle()
	e.ship("alice:2")
	e.runUntil("weight 10", weightIs(10))
	calls := e.analyzer.calls
	e.router.err = errors.New("dial tcp 10.0.0.1:6443: connect: connection refused")
	for i := 0; i < 12; i++ {
		e.clock.Step(30 * time.Second)
		for range 3 {
			_ = e.reconcileMayFail()
		}
	}
	c := e.canary()
	w, _ := e.router.weight("alice")
	if c.Status.Phase != v1beta1.PhaseProgressing || c.Status.CanaryWeight > 15 {
		t.Errorf("after 12 intervals with the route stuck at %d%%: phase %s at weight %d, want Progressing at most one step ahead",
			w, c.Status.Phase, c.Status.CanaryWeight)
	}
	if n := e.analyzer.calls - calls; n > 1 {
		t.Errorf("%d analyses while the route stayed at %d%%, want at most the one that decided the step", n, w)
	}
	if n := len(e.eventsWith(ReasonRouteBehind)); n != 1 {
		t.Errorf("%d %s events during the outage, want 1", n, ReasonRouteBehind)
	}

	e.router.err = nil
	e.runUntil("promoted", phaseIs(v1beta1.PhaseSucceeded))
	want := []int{0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 0}
	if got := distinct(e.router.history); !slices.Equal(got, want) {
		t.Errorf("route went through %v, want every step on the route: %v", got, want)
	}
}

// I5, found reading the fix above: a step whose weight never reaches the route (a mesh
// control plane that stays unreachable) left the Canary Progressing for good, its interval
// restarting every pass. The wait is bounded by the progress deadline: it shows as the
// RouteSynced condition (False since the write first failed), and past the deadline the
// revision is rolled back, so the target stays on stable and the route goes to primary
// once the control plane takes writes again.
func TestChaosFoundRouteThatNeverTakesItsWeightIsBounded(t *testing.T) {
	e := newEnv(t, seedCanary(), targetDeployment())
	e.settle()
	e.ship("alice:2")
	e.runUntil("weight 10", weightIs(10))
	e.router.err = errors.New("dial tcp 10.0.0.1:6443: connect: connection refused")
	start := e.clock.Now()
	deadline := e.canary().ProgressDeadline()

	for e.clock.Now().Before(start.Add(deadline - time.Minute)) {
		e.clock.Step(30 * time.Second)
		for range 3 {
			_ = e.reconcileMayFail()
		}
	}
	c := e.canary()
	if c.Status.Phase != v1beta1.PhaseProgressing {
		t.Fatalf("a minute before the progress deadline: phase %s, want Progressing (%s)", c.Status.Phase, c.Status.Message)
	}
	cond := meta.FindStatusCondition(c.Status.Conditions, ConditionRouteSynced)
	if cond == nil || cond.Status != metav1.ConditionFalse || cond.Reason != ReasonRouteBehind {
		t.Fatalf("RouteSynced condition %+v, want False/%s while the route misses the weight", cond, ReasonRouteBehind)
	}
	if since := cond.LastTransitionTime.Time; since.Before(start) || since.After(start.Add(time.Minute)) {
		t.Errorf("RouteSynced False since %s, want when the write first failed (~%s)", since, start)
	}

	for e.clock.Now().Before(start.Add(deadline + 2*time.Minute)) {
		e.clock.Step(30 * time.Second)
		for range 3 {
			_ = e.reconcileMayFail()
		}
	}
	c = e.canary()
	if c.Status.Phase != v1beta1.PhaseFailed || !strings.Contains(c.Status.Message, "progress deadline") {
		t.Fatalf("past the progress deadline: phase %s (%s), want Failed naming the progress deadline", c.Status.Phase, c.Status.Message)
	}
	if d := e.target(); !d.Spec.Paused {
		t.Error("target unpaused after the rollback: the unanalysed revision would roll")
	}

	e.router.err = nil
	e.settle()
	if w, _ := e.router.weight("alice"); w != 0 {
		t.Errorf("route weight %d once the control plane is back, want 0", w)
	}
	if _, ok := e.deployment("alice-canary"); ok {
		t.Error("canary Deployment left once the route is on primary")
	}
	if cond := meta.FindStatusCondition(e.canary().Status.Conditions, ConditionRouteSynced); cond != nil {
		t.Errorf("RouteSynced %+v after the control plane came back, want none", cond)
	}
}

// Found by make test in CI (TestOperatorCommands/scenarios/Retry failed the retried good
// revision at 97.3% < 99 on a loaded machine): abort deleted the canary Deployment, and a
// retry right after, while the cache still showed that Deployment ready at the same
// revision, took it for the new canary. The route gave 5% to pods being removed, and
// their 503s stayed in the metric window. A canary Deployment the loop deleted counts as
// gone however long the cache shows it: no new one, no weight, until the cache has seen
// it go and a new one is created and ready.
func TestFoundRetryIgnoresTheCanaryItDeleted(t *testing.T) {
	e := newEnv(t, seedCanary(), targetDeployment())
	e.settle()
	e.ship("alice:2")
	e.runUntil("weight 10", weightIs(10))
	deleted, ok := e.deployment("alice-canary")
	if !ok {
		t.Fatal("no canary Deployment while progressing")
	}
	e.command(v1beta1.CommandAbort, "jane")
	e.settle()
	if p := e.phase(); p != v1beta1.PhaseFailed {
		t.Fatalf("phase %s after abort", p)
	}
	if _, ok := e.deployment("alice-canary"); ok {
		t.Fatal("canary Deployment kept after the abort")
	}

	e.staleDeployments = map[string]*appsv1.Deployment{"alice-canary": deleted}
	e.command(v1beta1.CommandRetry, "jane")
	history := len(e.router.history)
	for range 5 {
		e.reconcileOnce()
		e.clock.Step(30 * time.Second)
	}
	if c := e.canary(); c.Status.Phase != v1beta1.PhaseProgressing || c.Status.CanaryWeight != 0 {
		t.Errorf("while the cache shows the deleted canary: phase %s weight %d, want Progressing at 0", c.Status.Phase, c.Status.CanaryWeight)
	}
	if w, _ := e.router.weight("alice"); w != 0 || len(e.router.history) != history {
		t.Errorf("route weight %d, history %v: the deleted canary got traffic", w, e.router.history[history:])
	}
	if _, ok := e.deployment("alice-canary"); ok {
		t.Error("a canary Deployment was created while the cache still showed the deleted one")
	}

	e.staleDeployments = nil // the cache catches up
	e.runUntil("Succeeded", phaseIs(v1beta1.PhaseSucceeded))
	if d, ok := e.deployment("alice-canary"); ok && d.UID == deleted.UID {
		t.Error("the deleted canary Deployment came back")
	}
}

// I1, seed 990722065 (stop 23): a Canary was deleted during an outage of the Global CP,
// which then crashed and refused every route write. The Canary was re-created: it was
// initialized, but its pass failed at the route and never reached the target's marks (the
// managed label the Deployment webhook selects on, the stable revision), so the next
// release rolled unguarded. A route that takes no write must not leave the target
// unguarded: the target is marked and held anyway, never released, and the route error
// still fails the pass.
func TestChaosFoundRouteFailureStillGuardsTheTarget(t *testing.T) {
	e := newEnv(t, seedCanary(), targetDeployment())
	e.router.setErr = errors.New(`failed calling webhook "validator.kuma-admission.kuma.io": connect: connection refused`)
	for range 6 {
		e.clock.Step(time.Second)
		_ = e.reconcileMayFail()
	}
	d := e.target()
	if d.Labels[v1beta1.LabelManaged] != "true" || d.Annotations[v1beta1.AnnotationStableRevision] == "" {
		t.Fatalf("target labels %v annotations %v while the route takes no write: want the managed label and the stable revision",
			d.Labels, d.Annotations)
	}

	t.Run("a revision that got through is held, not released", func(t *testing.T) {
		e.router.setErr = nil
		e.settle()
		e.router.setErr = errors.New("connection refused")
		// A template change past the webhook (the fake API server has none).
		live := e.target()
		live.Spec.Template.Spec.Containers[0].Image = "alice:2"
		if err := e.base.Update(t.Context(), live); err != nil {
			t.Fatal(err)
		}
		for range 6 {
			e.clock.Step(time.Second)
			_ = e.reconcileMayFail()
		}
		if !e.target().Spec.Paused {
			t.Error("target unpaused at an unanalysed revision while the route takes no write")
		}
	})
}
