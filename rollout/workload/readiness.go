package workload

import (
	"fmt"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// Readiness is the outcome of a readiness check.
type Readiness struct {
	// Ready: the Deployment's rollout is done and enough replicas are available.
	Ready bool
	// Failed: the Deployment controller gave up (ProgressDeadlineExceeded); waiting longer
	// will not help.
	Failed bool
	// Message says what is awaited or why it failed.
	Message string
}

// DeploymentReadiness applies Flagger's readiness rule: the controller observed the latest
// generation, every desired replica runs the current template, no old replica is left, and
// at least thresholdPercent of the updated replicas (rounded up) are available.
func DeploymentReadiness(d *appsv1.Deployment, thresholdPercent int) Readiness {
	st := d.Status
	if st.ObservedGeneration < d.Generation {
		return Readiness{Message: fmt.Sprintf("waiting for deployment %s: generation %d not observed yet", d.Name, d.Generation)}
	}
	for _, c := range st.Conditions {
		if isDeadlineExceeded(c) {
			return Readiness{Failed: true, Message: fmt.Sprintf("deployment %s exceeded its progress deadline: %s", d.Name, c.Message)}
		}
	}
	desired := DesiredReplicas(d)
	if st.UpdatedReplicas < desired {
		return Readiness{Message: fmt.Sprintf("waiting for deployment %s: %d of %d replicas updated", d.Name, st.UpdatedReplicas, desired)}
	}
	if st.Replicas > st.UpdatedReplicas {
		return Readiness{Message: fmt.Sprintf("waiting for deployment %s: %d old replicas pending termination", d.Name, st.Replicas-st.UpdatedReplicas)}
	}
	if int64(st.AvailableReplicas)*100 < int64(st.UpdatedReplicas)*int64(thresholdPercent) {
		return Readiness{Message: fmt.Sprintf("waiting for deployment %s: %d of %d updated replicas available (ready threshold %d%%)",
			d.Name, st.AvailableReplicas, st.UpdatedReplicas, thresholdPercent)}
	}
	return Readiness{Ready: true, Message: fmt.Sprintf("deployment %s is ready", d.Name)}
}

// SameReadiness reports whether two versions of a Deployment agree on everything
// DeploymentReadiness reads, so an update between them changes no readiness outcome.
func SameReadiness(a, b *appsv1.Deployment) bool {
	sa, sb := a.Status, b.Status
	return sa.ObservedGeneration == sb.ObservedGeneration &&
		sa.Replicas == sb.Replicas && sa.UpdatedReplicas == sb.UpdatedReplicas &&
		sa.AvailableReplicas == sb.AvailableReplicas && sa.ReadyReplicas == sb.ReadyReplicas &&
		progressDeadlineExceeded(a) == progressDeadlineExceeded(b)
}

func progressDeadlineExceeded(d *appsv1.Deployment) bool {
	return slices.ContainsFunc(d.Status.Conditions, isDeadlineExceeded)
}

func isDeadlineExceeded(c appsv1.DeploymentCondition) bool {
	return c.Type == appsv1.DeploymentProgressing && c.Status == corev1.ConditionFalse && c.Reason == "ProgressDeadlineExceeded"
}

// DesiredReplicas is spec.replicas of d, with the API server's default of 1 when unset.
func DesiredReplicas(d *appsv1.Deployment) int32 {
	if d.Spec.Replicas == nil {
		return 1
	}
	return *d.Spec.Replicas
}
