package rollout

import (
	"context"
	"fmt"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/rollout/workload"
)

// Revision identity: which template the target runs, without caching ReplicaSets (the
// cache would hold every ReplicaSet of the cluster and follow its watch). The Deployment
// controller already compares the template with its ReplicaSets, by its own semantic
// equality and pod-template-hash aside, and writes the outcome on the Deployment: the
// deployment.kubernetes.io/revision annotation numbers the ReplicaSet of the template, and
// status.updatedReplicas says how many replicas run it, both as of
// status.observedGeneration. The loop reads that. It reads ReplicaSets, past the cache,
// only where the Deployment cannot tell (initialServing, stableUnderAnotherHash): a
// generation the controller has not observed and no webhook verdict, no replicas wanted,
// no number recorded, a paused Deployment not fully on its template at initialization.

// servingRS is what the pass learnt about the ReplicaSet that runs the stable revision.
type servingRS struct {
	// revision is coalmine's template revision of what it runs.
	revision string
	// deploymentRevision is its deployment.kubernetes.io/revision.
	deploymentRevision string
	// name is the ReplicaSet's name, for messages; "" when only the Deployment was read.
	name string
}

// describe names the ReplicaSet for an event: by name when it was read, else by number.
func (s servingRS) describe() string {
	if s.name != "" {
		return "ReplicaSet " + s.name
	}
	return "the ReplicaSet of deployment revision " + s.deploymentRevision
}

// revision is the template revision of the target as it is now. A pass asks three to
// five times, and each answer encodes and hashes the pod template: it is computed once per
// target object the pass holds (a pass never edits a template in place).
func (x *pass) revision() string {
	if x.revisionOf != x.target {
		x.liveRevision, x.revisionOf = v1beta1.TemplateRevision(&x.target.Spec.Template), x.target
	}
	return x.liveRevision
}

// stableRevision is the revision the status records as serving, else the target's
// stable-revision annotation (a status from before it was recorded).
func (x *pass) stableRevision() string {
	if x.status.StableRevision != "" {
		return x.status.StableRevision
	}
	return x.target.Annotations[v1beta1.AnnotationStableRevision]
}

// observedNow: the Deployment controller has acted on the target's latest generation, so
// its revision annotation and status describe the template as it is.
func observedNow(d *appsv1.Deployment) bool { return d.Status.ObservedGeneration >= d.Generation }

// initialServing finds what serves when a Canary initialises: the stable revision is
// what runs, not what the template asks for, so a Deployment the user paused with a
// change that never rolled has that change analysed. The Deployment answers when the
// controller runs its template: it rolls it (unpaused) or every wanted replica runs it.
// Otherwise (paused with an unrolled change, not observed yet, scaled to zero) the
// ReplicaSets are read; with none serving, the template is stable as it is.
func (x *pass) initialServing(ctx context.Context) (servingRS, error) {
	d := x.target
	live := servingRS{revision: x.revision(), deploymentRevision: workload.DeploymentRevision(d)}
	if observedNow(d) && (!d.Spec.Paused || (workload.DesiredReplicas(d) > 0 && d.Status.UpdatedReplicas >= workload.DesiredReplicas(d))) {
		return live, nil
	}
	rs, err := x.readReplicaSet(ctx, "")
	if err != nil || rs == nil {
		live.deploymentRevision = ""
		return live, err
	}
	return servingOf(rs), nil
}

// servingOf is what a ReplicaSet read from the API server says about itself.
func servingOf(rs *appsv1.ReplicaSet) servingRS {
	return servingRS{revision: workload.ReplicaSetRevision(rs), deploymentRevision: workload.DeploymentRevision(rs), name: rs.Name}
}

// stableUnderAnotherHash reports whether the live template, whose hash differs from the
// stable revision, is the stable template all the same (representation drift: a
// k8s.io/api bump, a new server default, a field the apiserver drops): the Deployment
// controller runs it on the very ReplicaSet recorded for the stable revision. A template
// that rolled unguarded got a new ReplicaSet (a new number); one held paused has no
// ReplicaSet with replicas (updatedReplicas 0). Either is not drift.
func (x *pass) stableUnderAnotherHash(ctx context.Context) (bool, servingRS, error) {
	d := x.target
	rec := x.status.StableDeploymentRevision
	switch {
	case observedNow(d) && rec != "" && workload.DesiredReplicas(d) > 0:
		same := workload.DeploymentRevision(d) == rec && d.Status.UpdatedReplicas > 0
		return same, servingRS{revision: x.revision(), deploymentRevision: rec}, nil
	case !observedNow(d) && d.Annotations[v1beta1.AnnotationRevision] == x.revision():
		// The webhook judged this update a new revision, not drift (it passes drift
		// unmarked): the controller's verdict, still to come, is not needed.
		return false, servingRS{}, nil
	}
	rs, err := x.readReplicaSet(ctx, rec)
	if err != nil || rs == nil {
		return false, servingRS{}, err
	}
	return workload.SameTemplate(rs, &d.Spec.Template), servingOf(rs), nil
}

// rolledRevision is the deployment revision of a target that has just rolled its template
// (a promotion's end, a steady pass): "" unless the controller shows it running it.
func rolledRevision(d *appsv1.Deployment) string {
	if !observedNow(d) || d.Spec.Paused || d.Status.UpdatedReplicas < workload.DesiredReplicas(d) {
		return ""
	}
	return workload.DeploymentRevision(d)
}

// readReplicaSet reads the target's ReplicaSets from the API server (the cache holds
// none) and returns the one of deployment revision rev, or with rev "" the one that runs
// its pods now: of those it controls with replicas, the highest revision. nil when there
// is none.
func (x *pass) readReplicaSet(ctx context.Context, rev string) (*appsv1.ReplicaSet, error) {
	sel := x.target.Spec.Selector
	if sel == nil || len(sel.MatchLabels) == 0 {
		return nil, nil
	}
	var list appsv1.ReplicaSetList
	if err := x.r.apiReader().List(ctx, &list, client.InNamespace(x.target.Namespace), client.MatchingLabels(sel.MatchLabels)); err != nil {
		return nil, fmt.Errorf("list replicasets of %s: %w", x.target.Name, err)
	}
	var best *appsv1.ReplicaSet
	bestRev := int64(-1)
	for i := range list.Items {
		rs := &list.Items[i]
		if !metav1.IsControlledBy(rs, x.target) {
			continue
		}
		if rev != "" {
			if workload.DeploymentRevision(rs) == rev {
				return rs, nil
			}
			continue
		}
		if rs.Spec.Replicas == nil || *rs.Spec.Replicas == 0 {
			continue
		}
		n, _ := strconv.ParseInt(workload.DeploymentRevision(rs), 10, 64)
		if n > bestRev {
			best, bestRev = rs, n
		}
	}
	return best, nil
}
