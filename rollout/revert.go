package rollout

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// ReasonReverted: the held or analysed revision was replaced by the stable one.
const ReasonReverted = "Reverted"

// revert ends a revision that was replaced by the stable template before it rolled
// (Waiting, Progressing, Failed, or Promoting when the user went back): nothing rolled.
// With SitDrift the stable template came back under another hash, which becomes the
// stable revision. Converge unpauses the target and removes the canary.
func (x *pass) revert() {
	live := x.revision()
	if x.situation == SitDrift {
		x.status.StableRevision = live
		x.status.StableDeploymentRevision = x.serving.deploymentRevision
	}
	abandoned := x.status.CanaryRevision
	if x.status.Phase == v1beta1.PhaseFailed {
		abandoned = x.status.FailedRevision
	}
	x.status.FailedRevision = ""
	x.status.CanaryWeight = 0
	x.status.ProgressStartTime = nil
	stable := x.stableRevision()
	x.transition(v1beta1.PhaseSucceeded, fmt.Sprintf("template reverted to stable revision %s; nothing rolled", stable))
	x.event(corev1.EventTypeNormal, ReasonReverted, "Revert",
		"Deployment %s reverted to stable revision %s: revision %s abandoned, nothing rolled", x.target.Name, stable, abandoned)
}
