package rollout

import (
	"errors"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// TestIntervalCountsFromTheRouteWrite: the route takes its weight a while after the step
// is recorded (decision first); the step's check comes a whole interval after the route
// took the weight, not after the recorded stamp.
func TestIntervalCountsFromTheRouteWrite(t *testing.T) {
	const lag = 1500 * time.Millisecond
	e := newEnv(t, seedCanary(), targetDeployment())
	e.settle()
	e.router.onSet = func() { e.clock.Step(lag) }
	e.ship("alice:2")
	e.runUntil("weight 5", weightIs(5))
	step := e.canary().Status.LastStepTime.Time
	interval := seedCanary().AnalysisInterval()

	e.clock.SetTime(step.Add(interval)) // due by the stamp, but the route had it for 28.5 s only
	calls := e.analyzer.calls
	if d := e.settle(); d != lag {
		t.Errorf("requeue %s at stamp+interval, want the %s the route took", d, lag)
	}
	if e.analyzer.calls != calls || e.canary().Status.CanaryWeight != 5 {
		t.Errorf("checked %d times, weight %d: the interval did not run its length on the route", e.analyzer.calls-calls, e.canary().Status.CanaryWeight)
	}
	e.clock.SetTime(step.Add(interval + lag))
	e.settle()
	if e.analyzer.calls != calls+1 || e.canary().Status.CanaryWeight != 10 {
		t.Errorf("checked %d times, weight %d, want one check and the next step", e.analyzer.calls-calls, e.canary().Status.CanaryWeight)
	}
	if p := e.phase(); p != v1beta1.PhaseProgressing {
		t.Errorf("phase %s", p)
	}
}

// TestConditionsOfTroubleAreAbsentWhileAllIsWell: RouteSynced and BareServices are
// there only while something is wrong (the route misses the weight; Services bypass the
// split), as Reconciling and Stalled are; routeSynced says why.
func TestConditionsOfTroubleAreAbsentWhileAllIsWell(t *testing.T) {
	e := newEnv(t, seedCanary(), targetDeployment())
	e.settle()
	e.ship("alice:2")
	e.runUntil("weight 10", weightIs(10))
	for _, typ := range []string{ConditionRouteSynced, ConditionBareServices} {
		if cond := meta.FindStatusCondition(e.canary().Status.Conditions, typ); cond != nil {
			t.Errorf("condition %+v while the route carries the weight and no Service bypasses the split, want none", cond)
		}
	}

	e.router.err = errors.New("dial tcp 10.0.0.1:6443: connect: connection refused")
	e.clock.Step(seedCanary().AnalysisInterval())
	for range 3 {
		_ = e.reconcileMayFail()
	}
	if cond := meta.FindStatusCondition(e.canary().Status.Conditions, ConditionRouteSynced); cond == nil || cond.Status != metav1.ConditionFalse {
		t.Fatalf("RouteSynced %+v while the route misses the weight, want False", cond)
	}

	e.router.err = nil
	e.clock.Step(seedCanary().AnalysisInterval())
	e.settle()
	if cond := meta.FindStatusCondition(e.canary().Status.Conditions, ConditionRouteSynced); cond != nil {
		t.Errorf("RouteSynced %+v once the route carries the weight again, want none", cond)
	}
}
