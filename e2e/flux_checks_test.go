package e2e

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	kstatus "github.com/fluxcd/cli-utils/pkg/kstatus/status"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	coalminev1beta1 "github.com/coalmine-dev/coalmine/api/v1beta1"
)

// What the Flux scenarios check once a release has settled.

// expectKstatusFailed checks the Canary as Flux's health check reads it (Flux's fork of
// kstatus): Failed, with coalmine's rollback reason naming metric. Flux's Ready message
// carries only "<Kind>/<namespace>/<name> status: 'Failed'" (fluxcd/pkg/ssa's WaitForSet
// prints the status, not kstatus' message), so the metric is in the Canary's own Stalled
// condition (and status.message), where `kubectl describe` and kstatus find it.
func (fs *fluxScenario) expectKstatusFailed(metric string) {
	fs.t.Helper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(coalminev1beta1.GroupVersion.WithKind("Canary"))
	if err := k8s.Get(fs.ctx, client.ObjectKey{Namespace: fs.ns, Name: appName}, u); err != nil {
		fs.t.Fatal(err)
	}
	res, err := kstatus.Compute(u)
	if err != nil {
		fs.t.Fatal(err)
	}
	if res.Status != kstatus.FailedStatus || !strings.Contains(res.Message, metric) {
		fs.t.Errorf("kstatus of the rolled-back Canary: %s %q, want Failed naming %s", res.Status, res.Message, metric)
	}
	stalled := condition(u, "Stalled")
	if stalled == nil || stalled["status"] != "True" || stalled["reason"] != "RolledBack" || !strings.Contains(fmt.Sprint(stalled["message"]), metric) {
		fs.t.Errorf("Canary Stalled condition %v, want True/RolledBack naming %s", stalled, metric)
	}
	fs.t.Logf("the rolled-back Canary to kstatus: %s %q", res.Status, res.Message)
}

// logPausedOwners logs which field managers own alice's spec.paused (why Flux never
// reverts coalmine's pause: the webhook writes it inside Flux's own request).
func (fs *fluxScenario) logPausedOwners(when string) {
	fs.t.Helper()
	var owners []string
	for _, m := range fs.target().ManagedFields {
		if m.FieldsV1 != nil && strings.Contains(string(m.FieldsV1.Raw), `"f:paused"`) {
			owners = append(owners, fmt.Sprintf("%s (%s)", m.Manager, m.Operation))
		}
	}
	fs.t.Logf("%s: spec.paused=%v owned by %v", when, fs.target().Spec.Paused, owners)
}

// expectDeploymentInProgress checks what `wait: true` would wait on after the rollback:
// alice, paused on the failed template, reads InProgress to kstatus ("Updated: 0/2")
// however long it waits, so such a Kustomization ends HealthCheckFailed on its timeout
// although the rollback was right.
func (fs *fluxScenario) expectDeploymentInProgress() {
	fs.t.Helper()
	u, err := toUnstructured(fs.target())
	if err != nil {
		fs.t.Fatal(err)
	}
	live := &unstructured.Unstructured{}
	live.SetGroupVersionKind(u.GroupVersionKind())
	if err := k8s.Get(fs.ctx, client.ObjectKeyFromObject(u), live); err != nil {
		fs.t.Fatal(err)
	}
	res, err := kstatus.Compute(live)
	if err != nil {
		fs.t.Fatal(err)
	}
	want := fmt.Sprintf("Updated: 0/%d", replicas)
	if res.Status != kstatus.InProgressStatus || res.Message != want {
		fs.t.Errorf("kstatus of the paused alice after the rollback: %s %q, want InProgress %q", res.Status, res.Message, want)
	}
	fs.t.Logf("kstatus of alice after the rollback: %s %q", res.Status, res.Message)
}

// expectRolledBack checks the rollback of the shipped image: Failed at the seed's
// threshold, alice paused on the shipped template (Git and the cluster agree) with its pods
// on the promoted image, no canary, the route 100% primary.
func (fs *fluxScenario) expectRolledBack(c *coalminev1beta1.Canary, shipped, serving string) {
	fs.t.Helper()
	d := fs.target()
	if c.Status.FailedChecks != 5 || c.Status.FailedRevision != d.Annotations[coalminev1beta1.AnnotationRevision] {
		fs.t.Errorf("failedChecks %d, failedRevision %s; want 5 at the shipped revision %s", c.Status.FailedChecks, c.Status.FailedRevision, d.Annotations[coalminev1beta1.AnnotationRevision])
	}
	if !d.Spec.Paused || d.Spec.Template.Spec.Containers[0].Image != shipped {
		fs.t.Errorf("alice paused=%v on %s after the rollback, want paused on the shipped %s", d.Spec.Paused, d.Spec.Template.Spec.Containers[0].Image, shipped)
	}
	fs.expectPodsOn(serving, true)
	fs.expectNoCanaryDeployment()
	fs.expectRouteAllPrimary()
}

// replicaSets lists alice's ReplicaSets by name.
func (fs *fluxScenario) replicaSets() []string {
	fs.t.Helper()
	rss := &appsv1.ReplicaSetList{}
	if err := k8s.List(fs.ctx, rss, client.InNamespace(fs.ns), client.MatchingLabels{"app": appName}); err != nil {
		fs.t.Fatalf("list replicasets: %v", err)
	}
	var names []string
	for _, rs := range rss.Items {
		names = append(names, rs.Name)
	}
	sort.Strings(names)
	return names
}

// expectNeverReadyAt checks that the Kustomization was never Ready=True at rev.
func (fs *fluxScenario) expectNeverReadyAt(rev string) {
	fs.t.Helper()
	for _, tr := range fs.ks.transitions() {
		if tr.ready && tr.attempted == rev {
			fs.t.Errorf("Kustomization went Ready at %s (Canary %s), a release that was rolled back", rev, tr.canaryPhase)
		}
	}
}

// expectHealthWaitedFor checks that the Kustomization was never Ready at rev before the
// Canary reached phase: the health check waited for the analysis instead of passing on the
// previous revision's status.
func (fs *fluxScenario) expectHealthWaitedFor(rev string, phase coalminev1beta1.CanaryPhase) {
	fs.t.Helper()
	for _, tr := range fs.ks.transitions() {
		if tr.ready && tr.attempted == rev && tr.canaryPhase != phase {
			fs.t.Errorf("Kustomization went Ready at %s while the Canary was %s (want %s): the health check passed before the analysis ended",
				rev, tr.canaryPhase, phase)
		}
	}
}

// expectNoFailureButHealth checks every Ready condition the Kustomization had: it never
// failed to build, apply or prune (no drift fought, no webhook refusal). The only False
// reasons allowed are Progressing and a failed health check at the rolled-back revision
// (and at its revert, when the first poll still read the rollback's Failed Canary;
// logged, since the retry then turns it Ready).
func (fs *fluxScenario) expectNoFailureButHealth(rolledBack, revert string) {
	fs.t.Helper()
	for _, tr := range fs.ks.transitions() {
		switch {
		case tr.ready, strings.HasPrefix(tr.reason, "Progressing"):
		case tr.reason == "HealthCheckFailed" && tr.attempted == rolledBack:
		case tr.reason == "HealthCheckFailed" && tr.attempted == revert:
			fs.t.Logf("the revert's first health check read the rolled-back Canary (Failed) before coalmine's pass; Ready %s later", fluxRetryInterval)
		default:
			fs.t.Errorf("Kustomization Ready=False %s at %s: %s", tr.reason, tr.attempted, tr.message)
		}
	}
}

// expectInventory checks that Flux's inventory holds exactly the repository's objects:
// nothing coalmine creates (the Services, alice-canary, the route) shows up as Flux's.
func (fs *fluxScenario) expectInventory() {
	fs.t.Helper()
	k, err := fs.kustomization(fs.ctx)
	if err != nil {
		fs.t.Fatal(err)
	}
	entries, _, _ := unstructured.NestedSlice(k.Object, "status", "inventory", "entries")
	var ids []string
	for _, e := range entries {
		if m, ok := e.(map[string]any); ok {
			ids = append(ids, fmt.Sprint(m["id"]))
		}
	}
	sort.Strings(ids)
	want := []string{
		fs.ns + "_alice_apps_Deployment",
		fs.ns + "_alice_coalmine.dev_Canary",
	}
	if !slices.Equal(ids, want) {
		fs.t.Errorf("Kustomization inventory %v, want %v", ids, want)
	}
}

// expectNoDrift forces a reconciliation of the unchanged revision rev (as `flux reconcile
// kustomization` does) and checks that the kustomize-controller applied nothing: every
// object "unchanged", and Ready as before (healthy: True; after a rollback: the health
// check fails again, nothing else). Flagger's set-up fails this: its primary copy and the
// scaled-down target differ from Git.
func (fs *fluxScenario) expectNoDrift(rev string, healthy bool) {
	fs.t.Helper()
	before := len(fs.applies())
	token := fs.requestReconcile(kustomizationGVK, kustomizationName)
	fs.await(fluxHealthTimeout+time.Minute, "forced reconciliation at "+rev, func(ctx context.Context) (bool, error) {
		k, err := fs.kustomization(ctx)
		if err != nil {
			return false, err
		}
		handled, _, _ := unstructured.NestedString(k.Object, "status", "lastHandledReconcileAt")
		if handled != token {
			return false, fmt.Errorf("lastHandledReconcileAt %q, want %q", handled, token)
		}
		ready := condition(k, "Ready")
		attempted, _, _ := unstructured.NestedString(k.Object, "status", "lastAttemptedRevision")
		want := "True"
		if !healthy {
			want = "False"
		}
		if ready == nil || ready["status"] != want || attempted != rev {
			return false, fmt.Errorf("after the forced reconciliation: Ready %v at %s, want %s at %s", ready, attempted, want, rev)
		}
		return true, nil
	})
	applies := fs.applies()
	if len(applies) <= before {
		fs.t.Fatalf("the forced reconciliation logged no server-side apply (%d before, %d after)", before, len(applies))
	}
	last := applies[len(applies)-1]
	if last.Revision != rev {
		fs.t.Errorf("last apply at %s, want the forced one at %s", last.Revision, rev)
	}
	for obj, action := range last.Output {
		if action != "unchanged" {
			fs.t.Errorf("reconciliation of the unchanged revision %s: %s %s; want unchanged (drift)", rev, obj, action)
		}
	}
}

// expectAppliesOnlyOnNewRevisions checks every apply the kustomize-controller logged: the
// first creates both objects, the first apply of each later revision configures the
// Deployment alone, and every other apply changes nothing.
func (fs *fluxScenario) expectAppliesOnlyOnNewRevisions() {
	fs.t.Helper()
	seen := map[string]bool{}
	deployment := fmt.Sprintf("Deployment/%s/%s", fs.ns, appName)
	applies := fs.applies()
	for i, a := range applies {
		first := !seen[a.Revision]
		seen[a.Revision] = true
		for obj, action := range a.Output {
			switch {
			case action == "unchanged":
			case i == 0 && action == "created":
			case first && i > 0 && obj == deployment && action == "configured":
			default:
				fs.t.Errorf("apply %d (revision %s, first=%v): %s %s; want only the release's Deployment configured on a new revision", i, a.Revision, first, obj, action)
			}
		}
	}
	fs.t.Logf("kustomize-controller applies: %d over %d revisions", len(applies), len(seen))
}
