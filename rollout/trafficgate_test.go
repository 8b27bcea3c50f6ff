package rollout

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// TestConfirmTrafficIncreaseHoldsWeight: Flagger's confirm-traffic-increase gate holds
// the canary weight where it is, the first step included, until it answers 2xx; the
// rollout then goes on to promotion.
func TestConfirmTrafficIncreaseHoldsWeight(t *testing.T) {
	e, h := hookEnv(t, canaryWithHooks(v1beta1.CanaryWebhook{Name: "more?", Type: v1beta1.ConfirmTrafficIncreaseHook, URL: "http://gate/"}))
	h.set("more?", errClosed)
	e.ship("alice:2")
	for range 4 {
		e.settle()
		e.clock.Step(30 * time.Second)
	}
	c := e.canary()
	if c.Status.Phase != v1beta1.PhaseProgressing || c.Status.CanaryWeight != 0 || !strings.Contains(c.Status.Message, "traffic increase waits for approval") {
		t.Fatalf("with the gate closed before the first step: %+v", c.Status)
	}
	h.set("more?", nil)
	e.runUntil("weight 10", weightIs(10))
	h.set("more?", errClosed)
	for range 4 {
		e.clock.Step(30 * time.Second)
		e.settle()
	}
	if c := e.canary(); c.Status.CanaryWeight != 10 || c.Status.FailedChecks != 0 {
		t.Fatalf("with the gate closed at 10%%: %+v", c.Status)
	}
	if n := len(e.eventsWith(ReasonWaiting)); n != 2 {
		t.Errorf("%d Waiting events, want one per hold", n)
	}
	h.set("more?", nil)
	e.runUntil("Succeeded", phaseIs(v1beta1.PhaseSucceeded))
	want := []int{0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 0}
	if got := distinct(e.router.history); !slices.Equal(got, want) {
		t.Errorf("weights %v, want %v", got, want)
	}
}
