package rollout

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// ReasonRolledBack: a revision ended as failed.
const ReasonRolledBack = "RolledBack"

// rollback ends the analysed revision as failed. The decision is recorded first; converge
// then routes everything to primary, deletes the canary and keeps the target paused on
// the failed revision, so its pods stay on the stable ReplicaSet.
func (x *pass) rollback(reason string) {
	rev := x.status.CanaryRevision
	x.status.FailedRevision = rev
	x.status.CanaryWeight = 0
	x.status.ProgressStartTime = nil
	x.postRollout = true
	x.transition(v1beta1.PhaseFailed, fmt.Sprintf("revision %s rolled back: %s. %s", rev, reason, x.retryHint()))
	x.event(corev1.EventTypeWarning, ReasonRolledBack, "Rollback",
		"Canary failed, revision %s rolled back: %s. Deployment %s stays paused on stable revision %s",
		rev, reason, x.target.Name, x.stableRevision())
}

// refuseFailed holds a revision that failed before (re-applied, or arriving again mid-
// analysis): it is not analysed again until a new revision or a revert.
func (x *pass) refuseFailed() {
	live := x.revision()
	if x.status.Phase.Analysing() || x.status.Phase == v1beta1.PhaseWaiting {
		x.event(corev1.EventTypeWarning, ReasonRolledBack, "Rollback", "Revision %s replaced %s but failed before: not analysed again", live, x.status.CanaryRevision)
	}
	x.status.CanaryRevision = live
	x.status.CanaryWeight = 0
	x.status.ProgressStartTime = nil
	x.transition(v1beta1.PhaseFailed, fmt.Sprintf("revision %s failed before; waiting for a new revision or a revert. %s", live, x.retryHint()))
}

// retryHint tells a user how to move on from Failed: kubectl rollout restart and undo
// refuse a paused Deployment, so the usual reflexes do not work.
func (x *pass) retryHint() string {
	return fmt.Sprintf("To retry, run `coalmine retry -n %s %s`, ship a new revision (any pod template change, e.g. an annotation) or revert the template to %s; kubectl rollout restart/undo refuse the paused Deployment %s",
		x.canary.Namespace, x.canary.Name, x.stableRevision(), x.target.Name)
}
