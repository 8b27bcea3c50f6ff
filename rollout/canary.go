package rollout

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/rollout/workload"
)

// Event reasons of a revision's start.
const (
	ReasonNewRevision     = "NewRevision"
	ReasonRevisionReplace = "RevisionReplaced"
	ReasonWaiting         = "WaitingForApproval"
	ReasonUnguarded       = "UnguardedChange"
	ReasonNotOwned        = "CanaryDeploymentNotOwned"
)

// start begins the analysis of the live revision: counters reset, weight 0; converge
// creates the canary Deployment and holds the target.
func (x *pass) start() {
	live, stable := x.revision(), x.stableRevision()
	x.resetProgress(live)
	x.transition(v1beta1.PhaseProgressing, fmt.Sprintf("analysing revision %s: waiting for Deployment %s to be ready", live, x.canary.CanaryDeploymentName()))
	x.event(corev1.EventTypeNormal, ReasonNewRevision, "Analyse", "New revision %s detected (stable %s): starting canary analysis", live, stable)
	x.requeueAfter(min(x.canary.AnalysisInterval(), x.canary.ProgressDeadline()))
}

// wait holds a new revision behind a closed confirm-rollout gate (Flagger's manual gate):
// nothing starts, the gate is asked again each interval.
func (x *pass) wait() {
	live := x.revision()
	if x.status.Phase != v1beta1.PhaseWaiting || x.status.CanaryRevision != live {
		x.event(corev1.EventTypeNormal, ReasonWaiting, "Analyse", "Halt: revision %s waits for approval: %s", live, x.gate)
	}
	x.resetProgress(live)
	x.status.ProgressStartTime = nil
	x.transition(v1beta1.PhaseWaiting, fmt.Sprintf("revision %s waits for approval: %s", live, x.gate))
	x.requeueAfter(x.canary.AnalysisInterval())
}

// restart points a running analysis at a newer revision: the canary takes the new
// template, weight goes back to 0 and the counters reset (Flagger: a new revision
// restarts).
func (x *pass) restart(why string) {
	live, prev := x.revision(), x.status.CanaryRevision
	x.resetProgress(live)
	x.transition(v1beta1.PhaseProgressing, fmt.Sprintf("analysing revision %s: waiting for Deployment %s to be ready", live, x.canary.CanaryDeploymentName()))
	x.event(corev1.EventTypeNormal, ReasonRevisionReplace, "Analyse", "New revision %s replaces %s%s, analysis restarted", live, prev, why)
	x.requeueAfter(min(x.canary.AnalysisInterval(), x.canary.ProgressDeadline()))
}

func (x *pass) resetProgress(rev string) {
	x.status.CanaryRevision = rev
	x.status.CanaryWeight = 0
	x.status.FailedChecks = 0
	x.status.Iterations = 0
	x.status.PassedChecks = 0
	x.status.ProgressStartTime = x.stamp()
	x.status.LastStepTime = nil
	x.status.Metrics = nil
}

// awaitCanary waits for the canary Deployment, bounded by the progress deadline. Its
// readiness changes start the next pass (see deploymentHandler); the requeue is for the
// deadline, and a slow safety net.
func (x *pass) awaitCanary() {
	if x.status.ProgressStartTime == nil {
		x.status.ProgressStartTime = x.stamp()
	}
	deadline := x.status.ProgressStartTime.Add(x.canary.ProgressDeadline())
	x.requeueAfter(min(deadline.Sub(x.now), readinessPoll(x.canary)))
}

// stuckReason says why the canary is given up on (SitCanaryStuck).
func (x *pass) stuckReason() string {
	name := x.canary.CanaryDeploymentName()
	if x.canaryD == nil {
		if x.degraded != nil && x.degraded.reason == ReasonNotOwned {
			return fmt.Sprintf("canary Deployment %s exists and is not controlled by Canary %s, so the revision could not be analysed within the progress deadline of %s: rename or delete that Deployment",
				name, x.canary.Name, x.canary.ProgressDeadline())
		}
		return fmt.Sprintf("canary Deployment %s not created within the progress deadline of %s", name, x.canary.ProgressDeadline())
	}
	rd := workload.DeploymentReadiness(x.canaryD, x.canary.CanaryReadyThreshold())
	if rd.Failed {
		return rd.Message
	}
	return fmt.Sprintf("canary Deployment %s not ready within the progress deadline of %s (%s)", name, x.canary.ProgressDeadline(), rd.Message)
}

// readinessPoll is how often a pass waiting for a Deployment to become ready looks again
// without being woken by the Deployment's own status change: ten analysis intervals, at
// least 30 s. Polling each interval was most of the passes with hundreds of canaries
// waiting for the cluster to run their pods (make bench).
func readinessPoll(c *v1beta1.Canary) time.Duration {
	return max(10*c.AnalysisInterval(), 30*time.Second)
}

// canaryDeployment reads the canary Deployment; nil when it does not exist. One that
// exists but is not this Canary's makes Ready false and counts as not ready: the wait
// is bounded by the progress deadline, not retried as an error.
func (x *pass) canaryDeployment(ctx context.Context) (*appsv1.Deployment, error) {
	d := &appsv1.Deployment{}
	err := x.r.Client.Get(ctx, client.ObjectKey{Namespace: x.canary.Namespace, Name: x.canary.CanaryDeploymentName()}, d)
	if apierrors.IsNotFound(err) {
		x.r.memo.canaryGone(canaryKey(x.canary), "")
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get canary deployment: %w", err)
	}
	if x.r.memo.canaryGone(canaryKey(x.canary), d.UID) {
		return nil, nil // deleted by this process; the cache is behind
	}
	if !metav1.IsControlledBy(d, x.canary) {
		x.degrade(ReasonNotOwned, "Deployment %s exists and is not controlled by Canary %s: rename or delete it; until then the canary counts as not ready", d.Name, x.canary.Name)
		return nil, nil
	}
	return d, nil
}

// ensureCanaryDeployment creates the canary Deployment for revision rev or brings the
// existing one to it.
func (x *pass) ensureCanaryDeployment(ctx context.Context, rev string) error {
	c := x.canary
	desired, err := workload.CanaryDeployment(x.target, c.CanaryDeploymentName(), rev, c.Spec.CanaryReplicas)
	if err != nil {
		return fmt.Errorf("build canary deployment: %w", err)
	}
	if err := controllerutil.SetControllerReference(c, desired, x.r.Client.Scheme()); err != nil {
		return fmt.Errorf("own canary deployment: %w", err)
	}
	existing := &appsv1.Deployment{}
	err = x.r.Client.Get(ctx, client.ObjectKeyFromObject(desired), existing)
	if apierrors.IsNotFound(err) {
		x.r.memo.canaryGone(canaryKey(c), "")
		if err := x.r.Client.Create(ctx, desired); err != nil {
			return fmt.Errorf("create canary deployment: %w", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("get canary deployment: %w", err)
	}
	if x.r.memo.canaryGone(canaryKey(c), existing.UID) {
		// The cache still shows the canary this process deleted: create the new one
		// once the cache has seen it go.
		return fmt.Errorf("canary deployment %s was deleted: %w", existing.Name, errCacheLag)
	}
	if !metav1.IsControlledBy(existing, c) {
		x.degrade(ReasonNotOwned, "Deployment %s exists and is not controlled by Canary %s: rename or delete it; until then the canary counts as not ready", existing.Name, c.Name)
		return nil
	}
	if !existing.DeletionTimestamp.IsZero() {
		// The previous canary is still going away; create the new one once it is gone.
		return fmt.Errorf("canary deployment %s is being deleted: %w", existing.Name, errCacheLag)
	}
	if workload.UpdateCanaryDeployment(existing, desired) {
		if err := x.r.Client.Update(ctx, existing); err != nil {
			if apierrors.IsNotFound(err) {
				return fmt.Errorf("update canary deployment: %w", errCacheLag)
			}
			return fmt.Errorf("update canary deployment: %w", err)
		}
	}
	return nil
}

// deleteCanaryDeployment removes the canary Deployment, if it is this Canary's.
func (x *pass) deleteCanaryDeployment(ctx context.Context) error {
	d := &appsv1.Deployment{}
	err := x.r.Client.Get(ctx, client.ObjectKey{Namespace: x.canary.Namespace, Name: x.canary.CanaryDeploymentName()}, d)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get canary deployment: %w", err)
	}
	if !metav1.IsControlledBy(d, x.canary) || !d.DeletionTimestamp.IsZero() || x.r.memo.canaryGone(canaryKey(x.canary), d.UID) {
		return nil
	}
	if err := x.r.Client.Delete(ctx, d, client.PropagationPolicy(metav1.DeletePropagationBackground), client.Preconditions{UID: &d.UID}); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("delete canary deployment: %w", err)
	}
	x.r.memo.deletedCanary(canaryKey(x.canary), d.UID)
	return nil
}
