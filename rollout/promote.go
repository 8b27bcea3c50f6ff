package rollout

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// Event reasons of a promotion.
const (
	ReasonPromoting       = "Promoting"
	ReasonSucceeded       = "Succeeded"
	ReasonPromotionFailed = "PromotionFailed"
)

// startPromotion records the decision to promote; converge then hands the revision to the
// target (stable-revision and unpause in one update, so the webhook, which lets coalmine's
// own identity through, never sees a half-promoted Deployment) and the target's own
// rolling update runs the new template. The canary keeps its weight until that is done.
func (x *pass) startPromotion(why string) {
	rev := x.status.CanaryRevision
	x.status.ProgressStartTime = x.stamp()
	x.transition(v1beta1.PhasePromoting, fmt.Sprintf("promoting revision %s: Deployment %s rolls it out", rev, x.target.Name))
	x.event(corev1.EventTypeNormal, ReasonPromoting, "Promote", "Promoting revision %s, %s: Deployment %s unpaused", rev, why, x.target.Name)
	x.requeueAfter(x.canary.AnalysisInterval())
}

// supersede: a newer revision arrived while rev was rolling, and the webhook paused the
// target on it. rev was promoted, so it is the stable revision now; the newcomer is judged
// as it would be in Succeeded.
func (x *pass) supersede() {
	rev := x.status.CanaryRevision
	x.status.LastPromotedRevision = rev
	x.status.StableRevision = rev
	x.status.StableDeploymentRevision = "" // the target may not have rolled it fully: none recorded
	x.status.FailedRevision = ""
	x.status.CanaryWeight = 0
	why := fmt.Sprintf(" while %s was being promoted (%s is stable now)", rev, rev)
	switch x.situation {
	case SitGated:
		x.wait()
	case SitFailedRevision:
		x.refuseFailed()
	default:
		x.restart(why)
	}
}

// awaitRoll waits for the target's rollout, bounded by its progress deadline.
func (x *pass) awaitRoll() {
	if x.status.ProgressStartTime == nil {
		x.status.ProgressStartTime = x.stamp()
	}
	deadline := x.status.ProgressStartTime.Add(targetProgressDeadline(x.target))
	x.requeueAfter(min(deadline.Sub(x.now), readinessPoll(x.canary)))
}

// promotionFailed ends a promotion whose rollout did not finish within the target's
// progress deadline: traffic goes back to primary, the canary goes, and the target is
// paused again with the previous stable revision, so its rollout stops where it is.
func (x *pass) promotionFailed() {
	rev := x.status.CanaryRevision
	why := fmt.Sprintf("Deployment %s did not roll revision %s out within its progress deadline of %s",
		x.target.Name, rev, targetProgressDeadline(x.target))
	for _, c := range x.target.Status.Conditions {
		if c.Type == "Progressing" && c.Reason == "ProgressDeadlineExceeded" {
			why = fmt.Sprintf("Deployment %s: %s", x.target.Name, c.Message)
		}
	}
	x.event(corev1.EventTypeWarning, ReasonPromotionFailed, "Promote", "Promotion of revision %s failed: %s", rev, why)
	x.rollback("promotion failed: " + why)
}

// finalise moves traffic back to primary once the target runs the revision: at once, or
// stepWeightPromotion per interval (Finalising), then records the promotion.
func (x *pass) finalise() {
	a := x.canary.Spec.Analysis
	if a != nil && a.StepWeightPromotion > 0 && x.status.CanaryWeight > 0 {
		if x.status.Phase == v1beta1.PhaseFinalising && x.status.LastStepTime != nil {
			if due := x.status.LastStepTime.Add(x.canary.AnalysisInterval()); x.now.Before(due) {
				x.requeueAfter(due.Sub(x.now))
				return
			}
		}
		if w := x.status.CanaryWeight - a.StepWeightPromotion; w > 0 {
			x.status.CanaryWeight = w
			x.status.LastStepTime = x.stamp()
			x.transition(v1beta1.PhaseFinalising, fmt.Sprintf("revision %s rolled out: shifting traffic to primary, canary weight %d%%", x.status.CanaryRevision, w))
			x.event(corev1.EventTypeNormal, ReasonAdvance, "Promote", "Advance primary weight to %d%%", 100-w)
			x.requeueAfter(x.canary.AnalysisInterval())
			return
		}
	}
	x.complete()
}

// complete records the promotion; converge routes everything to primary and removes the
// canary.
func (x *pass) complete() {
	rev := x.status.CanaryRevision
	x.status.CanaryWeight = 0
	x.status.LastPromotedRevision = rev
	x.status.StableRevision = rev
	x.status.StableDeploymentRevision = rolledRevision(x.target) // the ReplicaSet that now runs it
	x.status.FailedRevision = ""
	x.status.ProgressStartTime = nil
	x.postRollout = true
	x.transition(v1beta1.PhaseSucceeded, fmt.Sprintf("revision %s promoted", rev))
	x.event(corev1.EventTypeNormal, ReasonSucceeded, "Promote",
		"Promotion completed: revision %s is stable, all traffic to %s", rev, x.rt.Primary)
}
