package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
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
