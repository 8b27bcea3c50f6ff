package e2e

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fluxcd/pkg/ssa"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	coalminev1beta1 "github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/rollout"
)

// The admission webhooks end to end (DESIGN §2.3, §3): the shipped webhook configurations
// (sandbox overlay), coalmine's HTTPS webhook server in this process under its
// ServiceAccount, and the apiserver calling it for kubectl, Flux and dry-run requests.
//
// Each managed app's Canary is suspended once it is Initialized. The loop has safety nets
// of its own (it pauses a Deployment whose template changed unpaused, and puts coalmine's
// label and annotation back), which would hide a webhook that did not act; suspended, it
// writes nothing, so every pause these tests see is the webhook's.

// fluxManager is the field manager of Flux's kustomize-controller.
const fluxManager = "kustomize-controller"

// TestWebhook runs the admission scenarios in parallel, each in its own namespace, with
// the rollout scenarios (they share the one coalmine the webhook configurations call).
func TestWebhook(t *testing.T) {
	t.Parallel()
	env := sharedRollout(t)
	t.Run("KubectlApplyPausesManagedDeployment", func(t *testing.T) { t.Parallel(); testWebhookKubectlApply(t, env) })
	t.Run("FluxApplyPausesWithoutDrift", func(t *testing.T) { t.Parallel(); testWebhookFluxApply(t, env) })
	t.Run("ServerSideDryRun", func(t *testing.T) { t.Parallel(); testWebhookDryRun(t, env) })
	t.Run("BareServiceDeniedOrWarned", func(t *testing.T) { t.Parallel(); testWebhookBareService(t, env) })
	t.Run("MalformedCanaryDenied", func(t *testing.T) { t.Parallel(); testWebhookMalformedCanary(t) })
}

// testWebhookKubectlApply: `kubectl apply --server-side` of a new image leaves the
// Deployment paused at the new revision; `kubectl get deploy` shows what was applied
// while the old ReplicaSet keeps serving. An unmanaged Deployment next to it rolls.
func testWebhookKubectlApply(t *testing.T, env *rolloutEnvironment) {
	s := managedApp(t, env, func(o client.Object) { apply(t, o) })

	out := kubectl(t, s.ctx, s.release(imageV2, nil), "apply", "--server-side", "--force-conflicts", "-f", "-")
	if !strings.Contains(out, "serverside-applied") {
		t.Errorf("kubectl apply said %q", out)
	}
	d := s.target()
	rev2 := expectHeld(t, d, imageV2, s.stable)
	got := kubectl(t, s.ctx, nil, "get", "deployment", appName, "-n", s.ns, "-o",
		`jsonpath={.spec.paused} {.spec.template.spec.containers[0].image} {.metadata.annotations.coalmine\.dev/revision}`)
	if want := fmt.Sprintf("true %s %s", imageV2, rev2); got != want {
		t.Errorf("kubectl get deployment: %q, want %q (paused, the applied image, its revision)", got, want)
	}
	if !slices.ContainsFunc(d.ManagedFields, func(e metav1.ManagedFieldsEntry) bool {
		return e.Manager == "kubectl" && e.Operation == metav1.ManagedFieldsOperationApply
	}) {
		t.Errorf("no server-side apply by kubectl in managedFields: the apply did not go through")
	}
	s.expectNothingRolled()

	// bob, in the same namespace, has no Canary: the webhook never sees it.
	bob := testDeployment(s.ns, "bob", 2, nil)
	apply(t, bob)
	s.await(time.Minute, "bob v1 rolled out", func(ctx context.Context) (bool, error) {
		return deploymentReady(ctx, client.ObjectKeyFromObject(bob))
	})
	bob = testDeployment(s.ns, "bob", 2, nil)
	bob.Spec.Template.Spec.Containers[0].Image = imageV2
	apply(t, bob)
	if bob.Spec.Paused || bob.Annotations[coalminev1beta1.AnnotationRevision] != "" {
		t.Errorf("unmanaged Deployment bob: paused=%v, annotations %v; want it untouched", bob.Spec.Paused, bob.Annotations)
	}
	s.await(time.Minute, "bob rolled to v2", func(ctx context.Context) (bool, error) {
		if ok, err := deploymentReady(ctx, client.ObjectKeyFromObject(bob)); !ok {
			return false, err
		}
		return podsOn(ctx, s.ns, "bob", imageV2, 2)
	})
}

// testWebhookFluxApply: Flux's server-side apply engine (fluxcd/pkg/ssa, as the
// kustomize-controller runs it) ships a new image; the Deployment is paused and the next
// reconciliation of the same manifests finds no drift (Flagger's primary copy and scaled
// down target make Flux report drift forever). A re-apply that takes spec.paused away
// mid-canary leaves it paused.
func testWebhookFluxApply(t *testing.T, env *rolloutEnvironment) {
	flux := newFluxApplier(t)
	s := managedApp(t, env, func(o client.Object) { flux.apply(t, "", o) })

	// Coalmine's label and annotation on the target are not drift either.
	flux.apply(t, ssa.UnchangedAction, s.release(imageV1, nil))

	flux.apply(t, ssa.ConfiguredAction, s.release(imageV2, nil))
	rev2 := expectHeld(t, s.target(), imageV2, s.stable)
	s.expectNothingRolled()

	// The next reconciliation: Flux's dry-run gets the webhook's patch too, so the
	// cluster equals what Git says plus what the webhook adds.
	flux.apply(t, ssa.UnchangedAction, s.release(imageV2, nil))

	// A manifest that sets spec.paused: false (Flux takes the field over) and scales:
	// the apply goes through, the replicas change, the pause stays.
	v2 := s.release(imageV2, nil)
	v2.Spec.Replicas = new(int32(replicas + 1))
	u := flux.unstructured(t, v2)
	if err := unstructured.SetNestedField(u.Object, false, "spec", "paused"); err != nil {
		t.Fatal(err)
	}
	flux.apply(t, ssa.ConfiguredAction, u)
	d := s.target()
	if rev := expectHeld(t, d, imageV2, s.stable); rev != rev2 {
		t.Errorf("revision %s after scaling, want %s still", rev, rev2)
	}
	if ptrValue(d.Spec.Replicas) != replicas+1 {
		t.Errorf("replicas %d, want the applied %d", ptrValue(d.Spec.Replicas), replicas+1)
	}
	if !ownsField(d, fluxManager, "f:spec", "f:paused") {
		t.Errorf("%s does not own spec.paused after applying it; managedFields %s", fluxManager, managedFieldsJSON(d))
	}

	// Git drops paused again: server-side apply removes the field Flux owned (paused
	// false), the webhook puts it back, and Flux sees no drift.
	v2 = s.release(imageV2, nil)
	v2.Spec.Replicas = new(int32(replicas + 1))
	flux.apply(t, ssa.UnchangedAction, v2)
	if rev := expectHeld(t, s.target(), imageV2, s.stable); rev != rev2 {
		t.Errorf("revision %s, want %s still", rev, rev2)
	}
	s.expectNothingRolled()
}

// testWebhookDryRun: a server-side dry-run of a new image returns the object as the
// webhook would leave it, and stores nothing.
func testWebhookDryRun(t *testing.T, env *rolloutEnvironment) {
	s := managedApp(t, env, func(o client.Object) { apply(t, o) })
	before := s.target()

	v2 := s.release(imageV2, nil)
	if err := tryApply(testContext(t, 30*time.Second), v2, client.DryRunAll); err != nil {
		t.Fatalf("dry-run apply: %v", err)
	}
	expectHeld(t, v2, imageV2, s.stable)

	after := s.target()
	if after.ResourceVersion != before.ResourceVersion || after.Generation != before.Generation {
		t.Errorf("dry-run changed the Deployment: resourceVersion %s -> %s, generation %d -> %d",
			before.ResourceVersion, after.ResourceVersion, before.Generation, after.Generation)
	}
	if after.Spec.Paused || after.Spec.Template.Spec.Containers[0].Image != imageV1 || after.Annotations[coalminev1beta1.AnnotationRevision] != "" || len(after.ManagedFields) != len(before.ManagedFields) {
		t.Errorf("after the dry-run: paused=%v image=%s revision=%q; want v1, unpaused, no revision",
			after.Spec.Paused, after.Spec.Template.Spec.Containers[0].Image, after.Annotations[coalminev1beta1.AnnotationRevision])
	}
	s.expectNothingRolled()
}

// testWebhookBareService: a Service of the user's that selects the managed app's pods
// would carry traffic around the canary split. Refused, with the Canary named; in a
// namespace annotated coalmine.dev/service-policy: warn, allowed with that as a warning.
func testWebhookBareService(t *testing.T, env *rolloutEnvironment) {
	s := managedApp(t, env, func(o client.Object) { apply(t, o) })
	c, warnings := warningClient(t)
	canaryRef := "Canary " + s.ns + "/" + appName
	bare := func() *corev1.Service {
		return &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: appName + "-direct"},
			Spec: corev1.ServiceSpec{
				Selector: map[string]string{"app": appName},
				Ports:    []corev1.ServicePort{{Name: "http", Port: 8080, TargetPort: intstr.FromString("http")}},
			},
		}
	}

	// Coalmine's webhook reads the Canary and the managed label from its cache: probe
	// with dry-runs until it has them, then create for real.
	s.await(30*time.Second, "bare Service refused", func(ctx context.Context) (bool, error) {
		switch err := c.Create(ctx, bare(), client.DryRunAll); {
		case err == nil:
			return false, errors.New("dry-run create of the bare Service allowed")
		case !apierrors.IsForbidden(err):
			return false, err
		}
		return true, nil
	})
	err := c.Create(s.ctx, bare())
	switch {
	case err == nil:
		t.Fatal("bare Service created, want it refused")
	case !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), canaryRef) || !strings.Contains(err.Error(), "bypass the canary split"):
		t.Fatalf("create bare Service: %v; want a refusal naming %s", err, canaryRef)
	}
	t.Logf("refused: %v", err)

	ns := &corev1.Namespace{}
	if err := k8s.Get(s.ctx, client.ObjectKey{Name: s.ns}, ns); err != nil {
		t.Fatalf("get namespace: %v", err)
	}
	patch := client.MergeFrom(ns.DeepCopy())
	ns.Annotations[coalminev1beta1.AnnotationServicePolicy] = coalminev1beta1.ServicePolicyWarn
	if err := k8s.Patch(s.ctx, ns, patch); err != nil {
		t.Fatalf("annotate namespace: %v", err)
	}
	s.await(30*time.Second, "bare Service allowed with a warning", func(ctx context.Context) (bool, error) {
		warnings.reset()
		if err := c.Create(ctx, bare(), client.DryRunAll); err != nil {
			return false, err
		}
		return true, nil
	})
	warnings.reset()
	if err := c.Create(s.ctx, bare()); err != nil {
		t.Fatalf("create bare Service under the warn policy: %v", err)
	}
	got := warnings.reset()
	if !slices.ContainsFunc(got, func(w string) bool { return strings.Contains(w, canaryRef) }) {
		t.Fatalf("warnings %q, want one naming %s", got, canaryRef)
	}
	t.Logf("warned: %q", got)
	if err := k8s.Get(s.ctx, client.ObjectKeyFromObject(bare()), &corev1.Service{}); err != nil {
		t.Errorf("the warned Service is not there: %v", err)
	}
}

// testWebhookMalformedCanary: a Canary the loop could not run is refused at the door,
// every problem named by its field path.
func testWebhookMalformedCanary(t *testing.T) {
	ns := newNamespace(t, nil)
	bad := &coalminev1beta1.Canary{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "alice"},
		Spec: coalminev1beta1.CanarySpec{
			TargetRef: coalminev1beta1.LocalObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "alice"},
			Service:   coalminev1beta1.CanaryService{Port: 8080},
			Analysis: &coalminev1beta1.CanaryAnalysis{
				Interval:   "30 seconds",
				MaxWeight:  50,
				StepWeight: 60,
				Metrics:    []coalminev1beta1.CanaryMetric{{Name: coalminev1beta1.MetricRequestSuccessRate, Interval: "1m"}},
			},
		},
	}
	ctx := testContext(t, 30*time.Second)
	err := k8s.Create(ctx, bad)
	if err == nil {
		t.Fatal("malformed Canary created, want it refused")
	}
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), `admission webhook "canaries.coalmine.dev" denied the request`) {
		t.Errorf("create malformed Canary: %v; want coalmine's webhook to refuse it as Invalid", err)
	}
	for _, path := range []string{"spec.analysis.interval", "spec.analysis.stepWeight", "spec.analysis.metrics[0].threshold"} {
		if !strings.Contains(err.Error(), path) {
			t.Errorf("refusal does not name %s: %v", path, err)
		}
	}
	t.Logf("refused: %v", err)
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(bad), &coalminev1beta1.Canary{}); !apierrors.IsNotFound(err) {
		t.Errorf("get refused Canary: %v, want NotFound", err)
	}
}

// managedApp deploys alice v1 and the seed's Canary with applyObj, waits until the loop
// has initialised it and alice's pods are up, then suspends the Canary (see the top of
// this file). The scenario's stable field is alice's stable revision.
func managedApp(t *testing.T, env *rolloutEnvironment, applyObj func(client.Object)) *webhookScenario {
	t.Helper()
	s := &webhookScenario{scenario: newScenario(t, env, scenarioOptions{})}
	s.canary = recordCanary(t, s.ctx, watchClient(t, sb.Config), s.ns, appName)
	applyObj(s.release(imageV1, nil))
	applyObj(s.seedCanary())
	s.waitPhase(coalminev1beta1.PhaseInitialized, time.Minute)

	suspended := s.seedCanary()
	if err := unstructured.SetNestedField(suspended.Object, true, "spec", "suspend"); err != nil {
		t.Fatal(err)
	}
	applyObj(suspended)
	s.await(30*time.Second, "canary suspended", func(context.Context) (bool, error) {
		c := s.canary.latest()
		cond := meta.FindStatusCondition(c.Status.Conditions, rollout.ConditionReady)
		if !c.Spec.Suspend || c.Status.ObservedGeneration != c.Generation || cond == nil || cond.Reason != "Suspended" {
			return false, fmt.Errorf("generation %d observed %d, condition %v", c.Generation, c.Status.ObservedGeneration, cond)
		}
		return true, nil
	})
	s.await(time.Minute, appName+" v1 rolled out", func(ctx context.Context) (bool, error) {
		return deploymentReady(ctx, client.ObjectKey{Namespace: s.ns, Name: appName})
	})

	d := s.target()
	s.stable = coalminev1beta1.TemplateRevision(&d.Spec.Template)
	if d.Labels[coalminev1beta1.LabelManaged] != "true" || d.Annotations[coalminev1beta1.AnnotationStableRevision] != s.stable {
		t.Fatalf("initialised Deployment has labels %v, annotations %v; want it managed at stable revision %s", d.Labels, d.Annotations, s.stable)
	}
	return s
}

// webhookScenario is a rollout scenario whose Canary is suspended after initialisation.
type webhookScenario struct {
	*scenario
	stable string
}

// expectNothingRolled waits until the deployment controller has seen alice's latest
// generation, then checks that alice still runs only its first ReplicaSet, on v1.
func (s *webhookScenario) expectNothingRolled() {
	s.t.Helper()
	s.await(30*time.Second, "deployment controller observed "+appName, func(ctx context.Context) (bool, error) {
		d := &appsv1.Deployment{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: appName}, d); err != nil {
			return false, err
		}
		if d.Status.ObservedGeneration < d.Generation {
			return false, fmt.Errorf("observed generation %d of %d", d.Status.ObservedGeneration, d.Generation)
		}
		return true, nil
	})
	d := s.target()
	// A paused Deployment still scales its current ReplicaSet.
	s.await(time.Minute, appName+" pods on v1", func(ctx context.Context) (bool, error) {
		return podsOn(ctx, s.ns, appName, imageV1, int(ptrValue(d.Spec.Replicas)))
	})
	rss := &appsv1.ReplicaSetList{}
	if err := k8s.List(s.ctx, rss, client.InNamespace(s.ns), client.MatchingLabels{"app": appName}); err != nil {
		s.t.Fatalf("list replicasets: %v", err)
	}
	if len(rss.Items) != 1 || rss.Items[0].Spec.Template.Spec.Containers[0].Image != imageV1 {
		var got []string
		for _, rs := range rss.Items {
			got = append(got, rs.Name+"="+rs.Spec.Template.Spec.Containers[0].Image)
		}
		s.t.Errorf("ReplicaSets of %s: %v, want only the first one, on %s", appName, got, imageV1)
	}
}

// expectHeld checks that the webhook held d: its template is the applied one (on image),
// it is paused and annotated with that template's revision, and its stable revision has
// not moved. It returns the revision.
func expectHeld(t *testing.T, d *appsv1.Deployment, image, stable string) string {
	t.Helper()
	rev := coalminev1beta1.TemplateRevision(&d.Spec.Template)
	if got := d.Spec.Template.Spec.Containers[0].Image; got != image {
		t.Errorf("Deployment %s template image %s, want the applied %s (Git and cluster agree)", d.Name, got, image)
	}
	if !d.Spec.Paused {
		t.Errorf("Deployment %s not paused, want the webhook to pause it", d.Name)
	}
	if got := d.Annotations[coalminev1beta1.AnnotationRevision]; got != rev {
		t.Errorf("Deployment %s %s=%q, want its template's revision %s", d.Name, coalminev1beta1.AnnotationRevision, got, rev)
	}
	if got := d.Annotations[coalminev1beta1.AnnotationStableRevision]; got != stable || got == rev {
		t.Errorf("Deployment %s %s=%q, want %s (the template's is %s)", d.Name, coalminev1beta1.AnnotationStableRevision, got, stable, rev)
	}
	return rev
}

// podsOn reports whether the live pods labelled app=name are n, all on image.
func podsOn(ctx context.Context, ns, name, image string, n int) (bool, error) {
	pods := &corev1.PodList{}
	if err := k8s.List(ctx, pods, client.InNamespace(ns), client.MatchingLabels{"app": name}); err != nil {
		return false, err
	}
	var images []string
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			images = append(images, p.Spec.Containers[0].Image)
		}
	}
	if len(images) != n || slices.ContainsFunc(images, func(i string) bool { return i != image }) {
		return false, fmt.Errorf("pods of %s run %v, want %d on %s", name, images, n, image)
	}
	return true, nil
}

// kubectl runs the sandbox's kubectl as the admin with obj (if any) as YAML on stdin,
// and returns its standard output.
func kubectl(t *testing.T, ctx context.Context, obj client.Object, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(ctx, sb.Kubectl, append([]string{"--kubeconfig", sb.KubeconfigPath}, args...)...)
	if obj != nil {
		u, err := toUnstructured(obj)
		if err != nil {
			t.Fatal(err)
		}
		data, err := yaml.Marshal(u.Object)
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdin = strings.NewReader(string(data))
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// fluxApplier applies manifests the way Flux's kustomize-controller does: fluxcd/pkg/ssa's
// staged server-side apply with its field manager and owner labels, applying only what a
// server-side dry-run shows has drifted.
type fluxApplier struct {
	m *ssa.ResourceManager
}

func newFluxApplier(t *testing.T) *fluxApplier {
	t.Helper()
	m := ssa.NewResourceManager(k8s, nil, ssa.Owner{Field: fluxManager, Group: "kustomize.toolkit.fluxcd.io"})
	return &fluxApplier{m: m}
}

// unstructured is obj as Flux reads it from Git: apiVersion, kind, no status.
func (f *fluxApplier) unstructured(t *testing.T, obj client.Object) *unstructured.Unstructured {
	t.Helper()
	u, err := toUnstructured(obj)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// apply reconciles obj as one Flux Kustomization would and checks the action Flux
// reports for it, unless want is empty.
func (f *fluxApplier) apply(t *testing.T, want ssa.Action, obj client.Object) {
	t.Helper()
	u := f.unstructured(t, obj)
	objs := []*unstructured.Unstructured{u}
	f.m.SetOwnerLabels(objs, "apps", "flux-system")
	opts := ssa.DefaultApplyOptions()
	opts.WaitTimeout = 30 * time.Second
	cs, err := f.m.ApplyAllStaged(testContext(t, 30*time.Second), objs, opts)
	if err != nil {
		t.Fatalf("flux apply %s: %v", u.GetName(), err)
	}
	if len(cs.Entries) != 1 {
		t.Fatalf("flux apply %s: change set %v, want one entry", u.GetName(), cs.Entries)
	}
	if got := cs.Entries[0].Action; want != "" && got != want {
		t.Fatalf("flux apply %s: %s, want %s", u.GetName(), got, want)
	}
}

// ownsField reports whether manager owns the field at path (f:spec, f:paused, ...) of d.
func ownsField(d *appsv1.Deployment, manager string, path ...string) bool {
	for _, e := range d.ManagedFields {
		if e.Manager != manager || e.FieldsV1 == nil {
			continue
		}
		var fields map[string]any
		if err := yaml.Unmarshal(e.FieldsV1.Raw, &fields); err != nil {
			continue
		}
		cur := fields
		found := true
		for _, p := range path {
			next, ok := cur[p].(map[string]any)
			if !ok {
				found = false
				break
			}
			cur = next
		}
		if found {
			return true
		}
	}
	return false
}

func managedFieldsJSON(d *appsv1.Deployment) string {
	var b strings.Builder
	for _, e := range d.ManagedFields {
		fmt.Fprintf(&b, "\n  %s (%s): %s", e.Manager, e.Operation, e.FieldsV1.Raw)
	}
	return b.String()
}
