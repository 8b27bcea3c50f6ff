package rollout

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// trafficIncreaseHeld runs Flagger's confirm-traffic-increase gates before the canary
// weight moves up to next. A closed gate holds the weight where it is for this interval
// (the analysis goes on, so failed checks still count), with one event however long it
// stays closed; the gates are asked again at the next interval.
func (x *pass) trafficIncreaseHeld(ctx context.Context, next int) bool {
	closed := x.gateClosed(ctx, v1beta1.ConfirmTrafficIncreaseHook, x.status.CanaryRevision)
	if closed == "" {
		return false
	}
	const waiting = "traffic increase waits for approval"
	if !strings.Contains(x.canary.Status.Message, waiting) {
		x.event(corev1.EventTypeNormal, ReasonWaiting, "Advance", "Halt advancement at weight %d%%: %s to %d%%: %s",
			x.status.CanaryWeight, waiting, next, closed)
	}
	if x.status.LastStepTime != nil {
		// The interval counts from now; before the first step there is none yet, so the
		// canary, which has no traffic, is not analysed while the gate is closed.
		x.status.LastStepTime = x.stamp()
	}
	x.transition(v1beta1.PhaseProgressing, fmt.Sprintf("analysing revision %s at canary weight %d%%; %s to %d%%: %s",
		x.status.CanaryRevision, x.status.CanaryWeight, waiting, next, closed))
	x.requeueAfter(x.canary.AnalysisInterval())
	return true
}
