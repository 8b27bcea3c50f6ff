package rollout

import (
	"testing"
	"time"

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
