package rollout

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// Event reasons of the steady state.
const (
	ReasonInitialized = "Initialized"
	ReasonRestamped   = "Restamped"
)

// initialize records the stable revision: what serves (initialServing). A Deployment the
// user paused with a change that never rolled has that change analysed next (its template
// is not what serves); a Deployment with no ReplicaSet yet is stable as it is.
func (x *pass) initialize() {
	stable := x.serving.revision
	x.status.StableRevision = stable
	x.status.StableDeploymentRevision = x.serving.deploymentRevision
	x.status.CanaryWeight = 0
	x.transition(v1beta1.PhaseInitialized, fmt.Sprintf("stable revision %s serves all traffic", stable))
	route := x.ownedRoute()
	x.event(corev1.EventTypeNormal, ReasonInitialized, "Initialize",
		"Initialized: guarding Deployment %s through %s; Services %s, %s and %s, all traffic to %s, stable revision %s",
		x.target.Name, route.Kind+" "+route.Name, x.rt.Apex, x.rt.Primary, x.rt.Canary, x.rt.Primary, stable)
	x.requeueAfter(0)
}

// idle is a steady phase with the stable revision live, or Failed with the failed one
// held. The user's own pause is what the target says now: no revision is held, so a pause
// is not coalmine's.
func (x *pass) idle() {
	x.status.StableRevision = x.stableRevision()
	switch rev := rolledRevision(x.target); {
	case rev != "" && x.revision() == x.status.StableRevision:
		// The stable template's ReplicaSet as the controller numbers it now (it renumbers
		// an old one it rolls back to); stableUnderAnotherHash compares with it. Only
		// with the stable template live: the number is then its ReplicaSet's.
		x.status.StableDeploymentRevision = rev
	case x.status.StableDeploymentRevision == "" && x.serving.deploymentRevision != "" && x.serving.revision == x.status.StableRevision:
		// No number recorded (a re-created target, a supersede, an older status) and the
		// pass read the ReplicaSet that runs the stable revision: keep its number, so the
		// next passes need not read again.
		x.status.StableDeploymentRevision = x.serving.deploymentRevision
	}
	if own := x.status.Ownership; own != nil && x.status.Phase != v1beta1.PhaseFailed && !x.heldByCoalmine() {
		own.UserPaused = x.target.Spec.Paused
	}
}

// heldByCoalmine: the target is paused at a revision the webhook or the loop recorded,
// other than the live one's stable revision.
func (x *pass) heldByCoalmine() bool {
	held := x.target.Annotations[v1beta1.AnnotationRevision]
	return x.target.Spec.Paused && held != "" && held != x.stableRevision()
}

// restamp records the live hash as the stable revision: the template is what the stable
// ReplicaSet runs, only its representation changed (see SitDrift). No canary.
func (x *pass) restamp() {
	live, old := x.revision(), x.stableRevision()
	x.status.StableRevision = live
	x.status.StableDeploymentRevision = x.serving.deploymentRevision
	x.event(corev1.EventTypeNormal, ReasonRestamped, "Initialize",
		"Deployment %s: template hash %s differs from stable revision %s but the template is what %s runs: recorded %s as stable, nothing to analyse",
		x.target.Name, live, old, x.serving.describe(), live)
	x.transition(x.status.Phase, fmt.Sprintf("stable revision %s serves all traffic", live))
}
