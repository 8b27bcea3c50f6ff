package e2e

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	kstatus "github.com/fluxcd/cli-utils/pkg/kstatus/status"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	coalminev1beta1 "github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/sandbox"
)

type fluxScenario struct {
	*scenario
	flux *sandbox.Flux
	repo *sandbox.GitRepo
	ks   *kustomizationRecorder
	// healthChecks are the kinds of alice's objects the Kustomization health-checks.
	healthChecks []string
	// sourceCreated: the GitRepository exists, so a push is followed by a request to fetch.
	sourceCreated bool
	// optIn ships alice with the opt-in annotation (and overrides) instead of a Canary, and
	// waitAll gives the Kustomization `wait: true` instead of health checks.
	optIn, waitAll bool
}

// manifests is the repository's content for a release of alice: the Deployment and the
// seed's Canary, as YAML files. The seed deploys no Service ("do not deploy a service"):
// coalmine creates alice, alice-primary and alice-canary from the Canary.
func (fs *fluxScenario) manifests(image string, env map[string]string) map[string][]byte {
	fs.t.Helper()
	d := fs.release(image, env)
	if fs.optIn {
		d.Annotations = map[string]string{
			coalminev1beta1.AnnotationCanary:               "enabled",
			coalminev1beta1.AnnotationPrefix + "interval":  analysisInterval.String(),
			coalminev1beta1.AnnotationPrefix + "threshold": "2",
		}
		return map[string][]byte{"apps/alice/deployment.yaml": fs.yamlOf(d)}
	}
	return map[string][]byte{
		"apps/alice/deployment.yaml": fs.yamlOf(d),
		"apps/alice/canary.yaml":     fs.yamlOf(fs.seedCanary()),
	}
}

func (fs *fluxScenario) yamlOf(obj client.Object) []byte {
	fs.t.Helper()
	u, err := toUnstructured(obj)
	if err != nil {
		fs.t.Fatal(err)
	}
	data, err := yaml.Marshal(u.Object)
	if err != nil {
		fs.t.Fatal(err)
	}
	return data
}

// commit pushes a commit and asks the source-controller to fetch it now (as `flux
// reconcile source git` does; its interval would find it too). It returns the revision
// Flux reports for it, main@sha1:<hash>.
func (fs *fluxScenario) commit(message string, files map[string][]byte) string {
	fs.t.Helper()
	sha, err := fs.repo.Commit(fs.ctx, message, files)
	if err != nil {
		fs.t.Fatal(err)
	}
	if fs.sourceCreated {
		fs.requestReconcile(gitRepositoryGVK, fs.ns)
	}
	return "main@sha1:" + sha
}

func (fs *fluxScenario) revert() string {
	fs.t.Helper()
	sha, err := fs.repo.Revert(fs.ctx)
	if err != nil {
		fs.t.Fatal(err)
	}
	if fs.sourceCreated {
		fs.requestReconcile(gitRepositoryGVK, fs.ns)
	}
	return "main@sha1:" + sha
}

// createFluxObjects creates the GitRepository and the Kustomization, the configuration
// the README recommends: prune, healthChecks on the Canary and its Deployment, no wait,
// a short retryInterval (a failed health check is looked at again soon).
func (fs *fluxScenario) createFluxObjects() {
	fs.t.Helper()
	repo := &unstructured.Unstructured{Object: map[string]any{
		"metadata": map[string]any{"namespace": fs.ns, "name": fs.ns},
		"spec": map[string]any{
			"url":      fs.repo.URL,
			"interval": "1m",
			"ref":      map[string]any{"branch": "main"},
		},
	}}
	repo.SetGroupVersionKind(gitRepositoryGVK)
	ks := fs.appKustomization()
	// The source first, as a bootstrap has it: a Kustomization created before its source
	// has an artifact reports ArtifactFailed, which expectNoFailureButHealth refuses.
	if err := k8s.Create(fs.ctx, repo); err != nil {
		fs.t.Fatalf("create GitRepository: %v", err)
	}
	fs.await(time.Minute, "GitRepository Ready", func(ctx context.Context) (bool, error) {
		got := repo.DeepCopy()
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(repo), got); err != nil {
			return false, err
		}
		if ready := condition(got, "Ready"); ready == nil || ready["status"] != "True" {
			return false, fmt.Errorf("GitRepository Ready %v", ready)
		}
		return true, nil
	})
	fs.sourceCreated = true
	if err := k8s.Create(fs.ctx, ks); err != nil {
		fs.t.Fatalf("create Kustomization: %v", err)
	}
	fs.t.Cleanup(func() {
		// Prune everything while the controllers still run, so the namespace goes away.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := k8s.Delete(ctx, ks); err != nil && !apierrors.IsNotFound(err) {
			fs.t.Logf("delete Kustomization: %v", err)
			return
		}
		err := sandbox.Poll(ctx, 30*time.Second, 200*time.Millisecond, func(ctx context.Context) (bool, error) {
			err := k8s.Get(ctx, client.ObjectKeyFromObject(ks), ks.DeepCopy())
			if apierrors.IsNotFound(err) {
				return true, nil
			}
			return false, fmt.Errorf("Kustomization still there (%v)", err)
		})
		if err != nil {
			fs.t.Logf("Kustomization not gone: %v", err)
		}
	})
}

// appKustomization is manifests/examples/flux/app-kustomization.yaml, the configuration
// the README recommends, moved to the scenario: its namespace, its source, the sandbox's
// short interval, retry and timeout. fluxScenario.healthChecks may drop the Deployment's
// check (COALMINE_E2E_FLUX_HEALTH=canary).
func (fs *fluxScenario) appKustomization() *unstructured.Unstructured {
	fs.t.Helper()
	objs := readYAML(fs.t, "../manifests/examples/flux/app-kustomization.yaml")
	if len(objs) != 1 || objs[0].GroupVersionKind() != kustomizationGVK {
		fs.t.Fatalf("app-kustomization.yaml: want one %s", kustomizationGVK)
	}
	ks := objs[0]
	ks.SetNamespace(fs.ns)
	ks.SetName(kustomizationName)
	set := func(value any, path ...string) {
		if err := unstructured.SetNestedField(ks.Object, value, path...); err != nil {
			fs.t.Fatalf("set %v: %v", path, err)
		}
	}
	set("1m", "spec", "interval")
	set(fluxRetryInterval.String(), "spec", "retryInterval")
	set(fluxHealthTimeout.String(), "spec", "timeout")
	set(fs.ns, "spec", "sourceRef", "name")
	checks, _, _ := unstructured.NestedSlice(ks.Object, "spec", "healthChecks")
	var kept []any
	for _, c := range checks {
		m := c.(map[string]any)
		if slices.Contains(fs.healthChecks, fmt.Sprint(m["kind"])) {
			m["namespace"] = fs.ns
			kept = append(kept, m)
		}
	}
	if len(kept) != len(fs.healthChecks) {
		fs.t.Fatalf("app-kustomization.yaml health-checks %v, want at least %v", checks, fs.healthChecks)
	}
	if wait, _, _ := unstructured.NestedBool(ks.Object, "spec", "wait"); wait {
		fs.t.Fatal("app-kustomization.yaml sets wait: true")
	}
	if fs.waitAll {
		unstructured.RemoveNestedField(ks.Object, "spec", "healthChecks")
		set(true, "spec", "wait")
		set(fluxWaitTimeout.String(), "spec", "timeout")
		return ks
	}
	if err := unstructured.SetNestedSlice(ks.Object, kept, "spec", "healthChecks"); err != nil {
		fs.t.Fatal(err)
	}
	return ks
}

// requestReconcile annotates a Flux object with reconcile.fluxcd.io/requestedAt, as the
// flux CLI does, and returns the token; the controller echoes it in
// status.lastHandledReconcileAt once it has reconciled.
func (fs *fluxScenario) requestReconcile(gvk schema.GroupVersionKind, name string) string {
	fs.t.Helper()
	token := time.Now().Format(time.RFC3339Nano)
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvk)
	u.SetNamespace(fs.ns)
	u.SetName(name)
	patch := fmt.Sprintf(`{"metadata":{"annotations":{"reconcile.fluxcd.io/requestedAt":%q}}}`, token)
	if err := k8s.Patch(fs.ctx, u, client.RawPatch("application/merge-patch+json", []byte(patch))); err != nil {
		fs.t.Fatalf("request reconciliation of %s %s: %v", gvk.Kind, name, err)
	}
	return token
}

// waitReady waits until the Kustomization is Ready=True with rev applied.
func (fs *fluxScenario) waitReady(rev string) {
	fs.t.Helper()
	fs.await(fluxHealthTimeout+time.Minute, "Kustomization Ready at "+rev, func(ctx context.Context) (bool, error) {
		k, err := fs.kustomization(ctx)
		if err != nil {
			return false, err
		}
		ready := condition(k, "Ready")
		applied, _, _ := unstructured.NestedString(k.Object, "status", "lastAppliedRevision")
		if ready == nil || ready["status"] != "True" || applied != rev {
			return false, fmt.Errorf("Kustomization lastAppliedRevision %s, Ready %v; want True at %s", applied, ready, rev)
		}
		return true, nil
	})
}

// waitHealthFailed waits until the Kustomization is Ready=False, HealthCheckFailed, at
// revision rev: applied, then judged. (A failed health check leaves lastAppliedRevision
// on the previous revision; lastAttemptedRevision is rev.)
func (fs *fluxScenario) waitHealthFailed(rev string) {
	fs.t.Helper()
	var msg string
	start := time.Now()
	fs.await(fluxHealthTimeout+time.Minute, "Kustomization health check failed at "+rev, func(ctx context.Context) (bool, error) {
		k, err := fs.kustomization(ctx)
		if err != nil {
			return false, err
		}
		ready := condition(k, "Ready")
		attempted, _, _ := unstructured.NestedString(k.Object, "status", "lastAttemptedRevision")
		if ready == nil || ready["status"] != "False" || ready["reason"] != "HealthCheckFailed" || attempted != rev {
			return false, fmt.Errorf("Kustomization lastAttemptedRevision %s, Ready %v; want False/HealthCheckFailed at %s", attempted, ready, rev)
		}
		msg, _ = ready["message"].(string)
		return true, nil
	})
	fs.t.Logf("Kustomization Ready=False %s after the rollback: %q", time.Since(start).Round(time.Millisecond), msg)
	want := fmt.Sprintf("Canary/%s/%s status: 'Failed'", fs.ns, appName)
	if !strings.Contains(msg, want) {
		fs.t.Errorf("Kustomization message %q, want it to name %s", msg, want)
	}
}

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

func (fs *fluxScenario) applies() []sandbox.FluxApply {
	fs.t.Helper()
	a, err := fs.flux.Applies(fs.ns, kustomizationName)
	if err != nil {
		fs.t.Fatalf("read the kustomize-controller's log: %v", err)
	}
	return a
}

func (fs *fluxScenario) kustomization(ctx context.Context) (*unstructured.Unstructured, error) {
	k := &unstructured.Unstructured{}
	k.SetGroupVersionKind(kustomizationGVK)
	err := k8s.Get(ctx, client.ObjectKey{Namespace: fs.ns, Name: kustomizationName}, k)
	return k, err
}

// condition returns the status condition typ of u, or nil.
func condition(u *unstructured.Unstructured, typ string) map[string]any {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == typ {
			return m
		}
	}
	return nil
}

// kustomizationRecorder watches a Kustomization and notes every change of its Ready
// condition, with the Canary's phase as last seen at that moment.
type kustomizationRecorder struct {
	mu     sync.Mutex
	trs    []readyTransition
	last   string
	canary *canaryRecorder
}

type readyTransition struct {
	at      time.Time
	ready   bool
	reason  string
	message string
	// attempted is status.lastAttemptedRevision: the revision the condition is about.
	attempted   string
	canaryPhase coalminev1beta1.CanaryPhase
}

func recordKustomization(t *testing.T, ctx context.Context, ns, name string, canary *canaryRecorder) *kustomizationRecorder {
	r := &kustomizationRecorder{canary: canary}
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(kustomizationGVK.GroupVersion().WithKind(kustomizationGVK.Kind + "List"))
	watchNamed(t, ctx, watchClient(t, sb.Config), list, ns, name, func(obj k8sruntime.Object, typ watch.EventType) {
		if typ != watch.Deleted {
			r.observe(obj.(*unstructured.Unstructured))
		}
	})
	return r
}

func (r *kustomizationRecorder) observe(u *unstructured.Unstructured) {
	ready := condition(u, "Ready")
	if ready == nil {
		return
	}
	rev, _, _ := unstructured.NestedString(u.Object, "status", "lastAttemptedRevision")
	status, _ := ready["status"].(string)
	reason, _ := ready["reason"].(string)
	message, _ := ready["message"].(string)
	key := status + "|" + reason + "|" + rev
	r.mu.Lock()
	defer r.mu.Unlock()
	if key == r.last {
		return
	}
	r.last = key
	tr := readyTransition{at: time.Now(), ready: status == "True", reason: reason, message: message, attempted: rev}
	if c := r.canary.latest(); c != nil {
		tr.canaryPhase = c.Status.Phase
	}
	if tr.ready {
		// The Canary's own watch may deliver the status Flux just read a little later
		// than this event: read it, so the phase is at least as new as Flux's.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c := &coalminev1beta1.Canary{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: u.GetNamespace(), Name: appName}, c); err == nil {
			tr.canaryPhase = c.Status.Phase
		}
	}
	r.trs = append(r.trs, tr)
}

func (r *kustomizationRecorder) transitions() []readyTransition {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.trs)
}

func (r *kustomizationRecorder) summary() string {
	var parts []string
	var t0 time.Time
	for i, tr := range r.transitions() {
		if i == 0 {
			t0 = tr.at
		}
		rev := tr.attempted
		if i := strings.LastIndex(rev, ":"); i >= 0 && len(rev) > i+8 {
			rev = rev[:i+8]
		}
		parts = append(parts, fmt.Sprintf("+%s ready=%v %s %s (canary %s)", tr.at.Sub(t0).Round(100*time.Millisecond), tr.ready, tr.reason, rev, tr.canaryPhase))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "; ")
}
