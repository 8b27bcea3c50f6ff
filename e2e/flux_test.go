package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	kstatus "github.com/fluxcd/cli-utils/pkg/kstatus/status"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	coalminev1beta1 "github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/sandbox"
	"github.com/coalmine-dev/coalmine/sandbox/meshsim"
)

// Flux for real (issue 12, items 2 and 3): Flux's source-controller and
// kustomize-controller, built from the module proxy and run out of cluster against the
// sandbox under their own ServiceAccounts, pull the seed's app (Deployment, Service,
// Canary) from a Git repository on a local Git server. Releases are commits; everything
// in the cluster is applied by the real kustomize-controller. The Kustomization has
// healthChecks on the Canary, the configuration coalmine recommends (README, "Flux").

var (
	gitRepositoryGVK = schema.GroupVersionKind{Group: "source.toolkit.fluxcd.io", Version: "v1", Kind: "GitRepository"}
	kustomizationGVK = schema.GroupVersionKind{Group: "kustomize.toolkit.fluxcd.io", Version: "v1", Kind: "Kustomization"}
)

const (
	// fluxScenarioTimeout bounds the whole story: four commits, two canary analyses of
	// about a minute each.
	fluxScenarioTimeout = 10 * time.Minute
	// fluxHealthTimeout is the Kustomization's spec.timeout: how long its health check
	// waits for the Canary. A promotion at the seed's steps takes ~40 s here.
	fluxHealthTimeout = 3 * time.Minute
	kustomizationName = "alice"
)

// TestFluxReleasesThroughGit: commit v1 (initialized), a good v2 (promoted; the
// Kustomization Ready only once the Canary is), a bad v3 (rolled back; the Kustomization
// Ready=False, HealthCheckFailed on the Canary, whose kstatus names the failed metric),
// and the revert of v3 (back on v2 with nothing rolled, Ready again). At every settled
// point a forced reconciliation applies nothing: Flux sees no drift.
func TestFluxReleasesThroughGit(t *testing.T) {
	t.Parallel()
	start := time.Now()
	env := sharedRollout(t)
	flux := startFlux(t)

	s := newScenario(t, env, scenarioOptions{})
	ctx, cancel := context.WithTimeout(t.Context(), fluxScenarioTimeout)
	t.Cleanup(cancel)
	s.ctx = ctx
	s.canary = recordCanary(t, s.ctx, watchClient(t, sb.Config), s.ns, appName)
	s.route = s.recordRoute(s.routes, s.routesLabel)
	ks := recordKustomization(t, s.ctx, s.ns, kustomizationName, s.canary)

	repo, err := flux.NewGitRepo(s.ctx, s.ns)
	if err != nil {
		t.Fatal(err)
	}
	fs := &fluxScenario{scenario: s, flux: flux, repo: repo, ks: ks}

	// v1: Deployment, the apex Service as the app team had it before canaries, the seed's
	// Canary. Flux creates all three; coalmine adopts the Service and initializes.
	rev1 := fs.commit("alice v1", fs.manifests(imageV1, nil))
	fs.createFluxObjects()
	fs.waitReady(rev1)
	s.waitPhase(coalminev1beta1.PhaseInitialized, time.Minute)
	fs.expectInventory()
	fs.expectNoDrift(rev1)

	// v2, a good release: applied by Flux, paused by the webhook, analysed, promoted. The
	// health check holds the Kustomization until the Canary is Current again.
	rev2 := fs.commit("alice v2", fs.manifests(imageV2, nil))
	c := s.waitPhase(coalminev1beta1.PhaseSucceeded, 3*time.Minute)
	fs.waitReady(rev2)
	fs.expectHealthWaitedFor(rev2, coalminev1beta1.PhaseSucceeded)
	s.expectPromoted(c, s.target())
	if img := s.target().Spec.Template.Spec.Containers[0].Image; img != imageV2 {
		t.Errorf("alice runs %s after the v2 commit, want %s", img, imageV2)
	}
	fs.expectNoDrift(rev2)
	promotedRS := fs.replicaSets()

	// v3, a bad release (20% errors): rolled back; the health check fails on the Canary.
	rev3 := fs.commit("alice v3", fs.manifests(imageV3, map[string]string{meshsim.EnvErrorRate: "0.2"}))
	failed := s.waitPhase(coalminev1beta1.PhaseFailed, 2*time.Minute)
	if !strings.Contains(failed.Status.Message, coalminev1beta1.MetricRequestSuccessRate) {
		t.Errorf("Canary message %q, want it to name %s", failed.Status.Message, coalminev1beta1.MetricRequestSuccessRate)
	}
	fs.expectRolledBack(failed, imageV3, imageV2)
	fs.waitHealthFailed(rev3)
	fs.expectNeverReadyAt(rev3)
	fs.expectKstatusFailed(coalminev1beta1.MetricRequestSuccessRate)
	fs.expectNoDrift(rev3)

	// The revert of v3: the template is v2 again, the stable one; nothing rolls.
	rev4 := fs.revert()
	c = s.waitPhase(coalminev1beta1.PhaseSucceeded, 2*time.Minute)
	fs.waitReady(rev4)
	if c.Status.StableRevision != c.Status.LastPromotedRevision {
		t.Errorf("after the revert: stableRevision %s, lastPromotedRevision %s; want v2's for both", c.Status.StableRevision, c.Status.LastPromotedRevision)
	}
	if d := s.target(); d.Spec.Paused || d.Spec.Template.Spec.Containers[0].Image != imageV2 {
		t.Errorf("after the revert: paused=%v image %s, want unpaused on %s", d.Spec.Paused, d.Spec.Template.Spec.Containers[0].Image, imageV2)
	}
	s.expectPodsOn(imageV2, true)
	if got := fs.replicaSets(); !slices.Equal(got, promotedRS) {
		t.Errorf("ReplicaSets of alice after the revert %v, want those after v2's promotion %v (nothing rolled)", got, promotedRS)
	}
	s.expectNoCanaryDeployment()
	s.expectRouteAllPrimary()
	fs.expectInventory()
	fs.expectNoDrift(rev4)
	fs.expectAppliesOnlyOnNewRevisions()

	t.Logf("Kustomization Ready transitions: %s", ks.summary())
	reportFlux(t, flux, time.Since(start))
}

// startFlux starts Flux on the shared sandbox for t.
func startFlux(t *testing.T) *sandbox.Flux {
	t.Helper()
	f, err := sb.StartFlux(testContext(t, 3*time.Minute))
	if err != nil {
		t.Fatalf("start Flux: %v", err)
	}
	t.Cleanup(func() {
		if err := f.Stop(); err != nil {
			t.Errorf("stop Flux: %v", err)
		}
	})
	t.Logf("Flux started: %v", f.StartUp)
	return f
}

// reportFlux logs the figures the README quotes: start-up and RSS of each part, and the
// test's wall time.
func reportFlux(t *testing.T, f *sandbox.Flux, wall time.Duration) {
	rss := f.RSS()
	names := make([]string, 0, len(rss))
	for n := range rss {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, " %s: start-up %s, RSS %d MiB;", n, f.StartUp[n].Round(10*time.Millisecond), rss[n]>>20)
	}
	t.Logf("flux figures:%s test wall time %s", b.String(), wall.Round(time.Second))
	if path := os.Getenv("COALMINE_FLUX_REPORT"); path != "" {
		_ = os.WriteFile(path, []byte(fmt.Sprintf("flux figures:%s test wall time %s\n", b.String(), wall.Round(time.Second))), 0o644)
	}
}

type fluxScenario struct {
	*scenario
	flux *sandbox.Flux
	repo *sandbox.GitRepo
	ks   *kustomizationRecorder
}

// manifests is the repository's content for a release of alice: the Deployment, the apex
// Service and the seed's Canary, as YAML files.
func (fs *fluxScenario) manifests(image string, env map[string]string) map[string][]byte {
	fs.t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: fs.ns, Name: appName, Annotations: map[string]string{
			"8080.service.kuma.io/protocol": "http",
		}},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": appName},
			Ports: []corev1.ServicePort{{
				Name: "http", Port: 8080, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP,
			}},
		},
	}
	return map[string][]byte{
		"apps/alice/deployment.yaml": fs.yamlOf(fs.release(image, env)),
		"apps/alice/service.yaml":    fs.yamlOf(svc),
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
	fs.requestReconcile(gitRepositoryGVK, fs.ns)
	return "main@sha1:" + sha
}

func (fs *fluxScenario) revert() string {
	fs.t.Helper()
	sha, err := fs.repo.Revert(fs.ctx)
	if err != nil {
		fs.t.Fatal(err)
	}
	fs.requestReconcile(gitRepositoryGVK, fs.ns)
	return "main@sha1:" + sha
}

// createFluxObjects creates the GitRepository and the Kustomization, the configuration
// the README recommends: prune, healthChecks on the Canary, no wait.
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
	ks := &unstructured.Unstructured{Object: map[string]any{
		"metadata": map[string]any{"namespace": fs.ns, "name": kustomizationName},
		"spec": map[string]any{
			"interval":  "1m",
			"path":      "./apps/alice",
			"prune":     true,
			"timeout":   fluxHealthTimeout.String(),
			"sourceRef": map[string]any{"kind": "GitRepository", "name": fs.ns},
			"healthChecks": []any{map[string]any{
				"apiVersion": coalminev1beta1.GroupVersion.String(), "kind": "Canary",
				"name": appName, "namespace": fs.ns,
			}},
		},
	}}
	ks.SetGroupVersionKind(kustomizationGVK)
	for _, o := range []*unstructured.Unstructured{repo, ks} {
		if err := k8s.Create(fs.ctx, o); err != nil {
			fs.t.Fatalf("create %s: %v", o.GetKind(), err)
		}
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
			return apierrors.IsNotFound(err), err
		})
		if err != nil && !apierrors.IsNotFound(err) {
			fs.t.Logf("Kustomization not gone: %v", err)
		}
	})
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

// waitReady waits until the Kustomization is Ready=True at revision rev.
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

// waitHealthFailed waits until the Kustomization is Ready=False with HealthCheckFailed on
// the Canary at revision rev (applied, then judged).
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
		applied, _, _ := unstructured.NestedString(k.Object, "status", "lastAppliedRevision")
		if ready == nil || ready["status"] != "False" || ready["reason"] != "HealthCheckFailed" || applied != rev {
			return false, fmt.Errorf("Kustomization lastAppliedRevision %s, Ready %v; want False/HealthCheckFailed at %s", applied, ready, rev)
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
// carries only "status: 'Failed'" (fluxcd/pkg/ssa WaitForSet prints the status, not the
// kstatus message), so this is where `flux events`, `kubectl describe` and dashboards
// find the metric.
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
		if tr.ready && tr.revision == rev {
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
		if tr.ready && tr.revision == rev && tr.canaryPhase != phase {
			fs.t.Errorf("Kustomization went Ready at %s while the Canary was %s (want %s): the health check passed before the analysis ended",
				rev, tr.canaryPhase, phase)
		}
	}
}

// expectInventory checks that Flux's inventory holds exactly the three objects of the
// repository: nothing coalmine creates (alice-primary, alice-canary, the route) shows up
// as Flux's.
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
		fs.ns + "_alice__Service",
		fs.ns + "_alice_apps_Deployment",
		fs.ns + "_alice_coalmine.dev_Canary",
	}
	if !slices.Equal(ids, want) {
		fs.t.Errorf("Kustomization inventory %v, want %v", ids, want)
	}
}

// expectNoDrift forces a reconciliation of the unchanged revision rev and checks that the
// kustomize-controller applied nothing: every object "unchanged". Flagger's set-up fails
// this forever (its primary copy and the scaled-down target).
func (fs *fluxScenario) expectNoDrift(rev string) {
	fs.t.Helper()
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
		return true, nil
	})
	applies := fs.applies()
	if len(applies) == 0 {
		fs.t.Fatalf("no server-side apply logged by the kustomize-controller")
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
// first apply of a revision creates or configures what the commit changed (only the
// Deployment after the first), and every later apply of it changes nothing.
func (fs *fluxScenario) expectAppliesOnlyOnNewRevisions() {
	fs.t.Helper()
	seen := map[string]bool{}
	deployment := fmt.Sprintf("Deployment/%s/%s", fs.ns, appName)
	for i, a := range fs.applies() {
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
	fs.t.Logf("kustomize-controller applies: %d over %d revisions", len(fs.applies()), len(seen))
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
	at          time.Time
	ready       bool
	reason      string
	revision    string
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
	rev, _, _ := unstructured.NestedString(u.Object, "status", "lastAppliedRevision")
	status, _ := ready["status"].(string)
	reason, _ := ready["reason"].(string)
	key := status + "|" + reason + "|" + rev
	r.mu.Lock()
	defer r.mu.Unlock()
	if key == r.last {
		return
	}
	r.last = key
	tr := readyTransition{at: time.Now(), ready: status == "True", reason: reason, revision: rev}
	if c := r.canary.latest(); c != nil {
		tr.canaryPhase = c.Status.Phase
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
		rev := tr.revision
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
