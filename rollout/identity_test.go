package rollout

import (
	"context"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/rollout/analysis"
)

// driftStable records a stable revision the live template no longer hashes to, as a
// k8s.io/api bump of coalmine would: the template and what runs are unchanged.
func (e *env) driftStable() (old string) {
	e.t.Helper()
	old = "0123456789"
	tgt := e.target()
	tgt.Annotations[v1beta1.AnnotationStableRevision] = old
	if err := e.base.Update(context.Background(), tgt); err != nil {
		e.t.Fatal(err)
	}
	e.editCanaryStatus(func(st *v1beta1.CanaryStatus) { st.StableRevision = old })
	return old
}

// updateTarget changes the target as a user would with the webhook down: no pause, no mark.
func (e *env) updateTarget(f func(d *appsv1.Deployment)) {
	e.t.Helper()
	d := e.target()
	f(d)
	bumpGeneration(context.Background(), e.base, d)
	if err := e.base.Update(context.Background(), d); err != nil {
		e.t.Fatal(err)
	}
}

// Revision identity without a ReplicaSet cache (identity.go): the loop takes the Deployment
// controller's word (deployment.kubernetes.io/revision, updatedReplicas at the observed
// generation) and reads ReplicaSets only where that word is missing.
func TestRevisionIdentity(t *testing.T) {
	tests := []struct {
		name string
		// change acts on a settled Canary (stable revision 1, alice:1) and says what the
		// loop must conclude: restamped (drift) or analysed (a new revision).
		change  func(e *env)
		drift   bool
		rsReads bool // whether the loop had to read ReplicaSets
	}{
		{"a hash drift the controller has observed is recognised from the Deployment", func(e *env) {
			e.driftStable()
		}, true, false},
		{"a hash drift with a generation the controller has not observed is read from the ReplicaSets", func(e *env) {
			e.unobserved["alice"] = true
			e.setDeploymentStatus("alice", func(st *appsv1.DeploymentStatus) { st.ObservedGeneration = 0 })
			e.driftStable()
		}, true, true},
		{"a hash drift of a Deployment scaled to zero is read from the ReplicaSets", func(e *env) {
			e.updateTarget(func(d *appsv1.Deployment) { d.Spec.Replicas = new(int32(0)) })
			e.settle()
			e.driftStable()
		}, true, true},
		{"a change the webhook marked is analysed before the controller observes it, without a read", func(e *env) {
			e.unobserved["alice"] = true
			e.ship("alice:2")
		}, false, false},
		{"an unmarked change the controller has not observed is read and analysed", func(e *env) {
			e.unobserved["alice"] = true
			e.updateTarget(func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "alice:2" })
		}, false, true},
		{"a change that rolled unguarded into a new ReplicaSet is analysed, even under a drifted stable hash", func(e *env) {
			e.driftStable()
			e.updateTarget(func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "alice:2" })
			e.kube() // the controller rolls it before the loop's next pass
		}, false, false},
		{"a change held paused is analysed: no ReplicaSet runs it", func(e *env) {
			e.updateTarget(func(d *appsv1.Deployment) {
				d.Spec.Paused = true
				d.Spec.Template.Spec.Containers[0].Image = "alice:2"
			})
		}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, seedCanary(), targetDeployment())
			e.settle()
			if c := e.canary(); c.Status.StableDeploymentRevision != "1" || e.rsReads != 0 {
				t.Fatalf("initialized with deployment revision %q after %d ReplicaSet reads, want 1 and none", c.Status.StableDeploymentRevision, e.rsReads)
			}
			tt.change(e)
			e.settle()
			c := e.canary()
			live := v1beta1.TemplateRevision(&e.target().Spec.Template)
			restamped := e.eventsWith(ReasonRestamped)
			if tt.drift {
				if c.Status.Phase != v1beta1.PhaseInitialized || c.Status.StableRevision != live || len(restamped) != 1 {
					t.Errorf("phase %s stable %s, Restamped %v; want Initialized, stable %s re-stamped once", c.Status.Phase, c.Status.StableRevision, restamped, live)
				}
				if _, ok := e.deployment("alice-canary"); ok {
					t.Error("a canary Deployment was created for a hash drift")
				}
			} else {
				if c.Status.Phase != v1beta1.PhaseProgressing || c.Status.CanaryRevision != live || len(restamped) != 0 {
					t.Errorf("phase %s canary %s, Restamped %v; want Progressing on %s", c.Status.Phase, c.Status.CanaryRevision, restamped, live)
				}
				if !e.target().Spec.Paused {
					t.Error("the change is not held")
				}
			}
			if got := e.rsReads > 0; got != tt.rsReads {
				t.Errorf("%d ReplicaSet reads, want any: %v", e.rsReads, tt.rsReads)
			}
		})
	}
}

// TestRolloutReadsNoReplicaSet: a whole rollout takes revision identity from the
// Deployment alone, and the stable number follows the ReplicaSet the promotion made.
func TestRolloutReadsNoReplicaSet(t *testing.T) {
	e := newEnv(t, seedCanary(), targetDeployment())
	e.settle()
	rev := e.ship("alice:2")
	e.runUntil("Succeeded", phaseIs(v1beta1.PhaseSucceeded))
	c := e.canary()
	if c.Status.StableRevision != rev || c.Status.StableDeploymentRevision != "2" {
		t.Errorf("stable %s at deployment revision %q, want %s at 2", c.Status.StableRevision, c.Status.StableDeploymentRevision, rev)
	}
	if e.rsReads != 0 {
		t.Errorf("%d ReplicaSet reads, want none", e.rsReads)
	}
	// Its drift is recognised against the new number.
	old := e.driftStable()
	e.settle()
	if ev := e.eventsWith(ReasonRestamped); len(ev) != 1 || !strings.Contains(ev[0], old) || !strings.Contains(ev[0], "deployment revision 2") {
		t.Errorf("Restamped events %v", ev)
	}
}

// TestFailedRevisionRecordsTheStableNumberOnce: a Failed Canary with no number recorded
// (a status from an older coalmine) reads ReplicaSets once, keeps the stable one's
// number, and reads no more; a target unpaused at the failed revision and rolled by hand
// never gives the stable revision its number.
func TestFailedRevisionRecordsTheStableNumberOnce(t *testing.T) {
	e := newEnv(t, seedCanary(), targetDeployment())
	e.settle()
	e.analyzer.fail = func(int) []analysis.Result { return failingSuccessRate() }
	e.ship("alice:bad")
	e.runUntil("Failed", phaseIs(v1beta1.PhaseFailed))
	e.editCanaryStatus(func(st *v1beta1.CanaryStatus) { st.StableDeploymentRevision = "" })
	reads := e.rsReads
	e.updateTarget(func(d *appsv1.Deployment) { d.Labels = map[string]string{"poke": "1"} })
	e.settle()
	if got := e.canary().Status.StableDeploymentRevision; got != "1" || e.rsReads != reads+1 {
		t.Fatalf("number %q after %d reads, want 1 after one", got, e.rsReads-reads)
	}
	for i := range 3 {
		e.updateTarget(func(d *appsv1.Deployment) { d.Labels["poke"] = strconv.Itoa(i + 2) })
		e.settle()
	}
	if e.rsReads != reads+1 {
		t.Errorf("%d more reads once the number was kept", e.rsReads-reads-1)
	}

	e.updateTarget(func(d *appsv1.Deployment) { d.Spec.Paused = false })
	e.kube() // the controller rolls the failed revision (revision 2) before the loop re-pauses it
	e.reconcileOnce()
	if got := e.canary().Status.StableDeploymentRevision; got != "1" {
		t.Errorf("number %q after the failed revision rolled by hand, want the stable one's, 1", got)
	}
}
