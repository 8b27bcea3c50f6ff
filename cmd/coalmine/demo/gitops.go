package demo

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/manifests"
	"github.com/coalmine-dev/coalmine/sandbox"
)

// releaser ships alice's releases: by server-side applies made the way Flux's
// kustomize-controller makes them (the default), or (--flux) as Git commits that the real
// kustomize-controller applies.
type releaser interface {
	// deploy puts the first release and the seed's Canary in place.
	deploy(ctx context.Context, first Release, canary *v1beta1.Canary) error
	// release ships r and says how, for the screen.
	release(ctx context.Context, r Release, label string) (string, error)
	// verdict waits for what the delivery tool says once coalmine has decided (promoted:
	// the release was promoted, else rolled back) and says it; "" when there is no such
	// tool.
	verdict(ctx context.Context, promoted bool) (string, error)
}

// applyReleaser applies alice with kustomize-controller's field manager.
type applyReleaser struct{ c client.Client }

func (a applyReleaser) deploy(ctx context.Context, first Release, canary *v1beta1.Canary) error {
	if err := ApplyDeployment(ctx, a.c, first); err != nil {
		return err
	}
	return applyObject(ctx, a.c, canary)
}

func (a applyReleaser) release(ctx context.Context, r Release, _ string) (string, error) {
	return "applied the way Flux does (server-side apply, field manager kustomize-controller)", ApplyDeployment(ctx, a.c, r)
}

func (applyReleaser) verdict(context.Context, bool) (string, error) { return "", nil }

var (
	gitRepositoryGVK = schema.GroupVersionKind{Group: "source.toolkit.fluxcd.io", Version: "v1", Kind: "GitRepository"}
	kustomizationGVK = schema.GroupVersionKind{Group: "kustomize.toolkit.fluxcd.io", Version: "v1", Kind: "Kustomization"}
)

const (
	// fluxSource is the GitRepository (and the repository on the Git server) the
	// recommended Kustomization reads: manifests/examples/flux/app-kustomization.yaml.
	fluxSource = "apps"
	// fluxVerdictTimeout bounds each wait for the Kustomization's Ready condition.
	fluxVerdictTimeout = 2 * time.Minute
)

// fluxReleaser commits alice's manifests to a repository on the sandbox's Git server, from
// which Flux's source-controller and kustomize-controller apply them with the
// Kustomization the README recommends.
type fluxReleaser struct {
	c      client.Client // the zone's admin: the Flux objects, and reading their status
	flux   *sandbox.Flux
	repo   *sandbox.GitRepo
	canary *v1beta1.Canary
	// rev is the revision Flux reports for the last commit: main@sha1:<hash>.
	rev string
}

func (f *fluxReleaser) files(r Release) (map[string][]byte, error) {
	canary := f.canary.DeepCopy()
	canary.APIVersion, canary.Kind = v1beta1.GroupVersion.String(), "Canary"
	out := map[string][]byte{}
	for path, obj := range map[string]client.Object{"apps/alice/deployment.yaml": Deployment(r), "apps/alice/canary.yaml": canary} {
		data, err := manifestOf(obj)
		if err != nil {
			return nil, err
		}
		out[path] = data
	}
	return out, nil
}

// manifestOf is obj as a file in Git holds it: no status, no empty timestamps.
func manifestOf(obj client.Object) ([]byte, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, fmt.Errorf("render %s: %w", obj.GetName(), err)
	}
	delete(m, "status")
	unstructured.RemoveNestedField(m, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(m, "spec", "template", "metadata", "creationTimestamp")
	data, err := yaml.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("render %s: %w", obj.GetName(), err)
	}
	return data, nil
}

// commit pushes r and asks the source-controller to fetch it now, as `flux reconcile
// source git` does (its interval would find it a minute later).
func (f *fluxReleaser) commit(ctx context.Context, r Release, message string) error {
	files, err := f.files(r)
	if err != nil {
		return err
	}
	sha, err := f.repo.Commit(ctx, message, files)
	if err != nil {
		return fmt.Errorf("commit %s: %w", message, err)
	}
	f.rev = "main@sha1:" + sha
	return f.requestReconcile(ctx, gitRepositoryGVK, fluxSource)
}

func (f *fluxReleaser) deploy(ctx context.Context, first Release, canary *v1beta1.Canary) error {
	f.canary = canary
	var err error
	if f.repo, err = f.flux.NewGitRepo(ctx, fluxSource); err != nil {
		return err
	}
	files, err := f.files(first)
	if err != nil {
		return err
	}
	sha, err := f.repo.Commit(ctx, "alice "+imageTag(first.Image)+" and the seed's Canary", files)
	if err != nil {
		return err
	}
	f.rev = "main@sha1:" + sha
	src := &unstructured.Unstructured{Object: map[string]any{
		"metadata": map[string]any{"namespace": AppNamespace, "name": fluxSource},
		"spec":     map[string]any{"url": f.repo.URL, "interval": "1m", "ref": map[string]any{"branch": "main"}},
	}}
	src.SetGroupVersionKind(gitRepositoryGVK)
	if err := applyAs(ctx, f.c, src, "coalmine-demo"); err != nil {
		return err
	}
	ks, err := recommendedKustomization()
	if err != nil {
		return err
	}
	if err := applyAs(ctx, f.c, ks, "coalmine-demo"); err != nil {
		return err
	}
	_, err = f.verdict(ctx, true)
	return err
}

func (f *fluxReleaser) release(ctx context.Context, r Release, label string) (string, error) {
	if err := f.commit(ctx, r, "alice "+imageTag(r.Image)+" ("+label+")"); err != nil {
		return "", err
	}
	return fmt.Sprintf("committed to Git as %s; Flux's kustomize-controller applies it", f.rev), nil
}

// verdict waits until the Kustomization has judged the last commit: Ready=True once
// applied and healthy (the Canary promoted), Ready=False HealthCheckFailed once the
// Canary failed (a rolled-back release is not healthy to Flux).
func (f *fluxReleaser) verdict(ctx context.Context, promoted bool) (string, error) {
	var say string
	err := sandbox.Poll(ctx, fluxVerdictTimeout, 250*time.Millisecond, func(ctx context.Context) (bool, error) {
		ks := &unstructured.Unstructured{}
		ks.SetGroupVersionKind(kustomizationGVK)
		if err := f.c.Get(ctx, client.ObjectKey{Namespace: AppNamespace, Name: AppName}, ks); err != nil {
			return false, fmt.Errorf("read Kustomization %s: %w", AppName, err)
		}
		ready := readyCondition(ks)
		applied, _, _ := unstructured.NestedString(ks.Object, "status", "lastAppliedRevision")
		attempted, _, _ := unstructured.NestedString(ks.Object, "status", "lastAttemptedRevision")
		switch {
		case promoted && ready["status"] == "True" && applied == f.rev:
			say = fmt.Sprintf("Flux: Kustomization %s Ready=True at %s (health checks on the Canary and the Deployment passed)", AppName, f.rev)
			return true, nil
		case !promoted && ready["status"] == "False" && ready["reason"] == "HealthCheckFailed" && attempted == f.rev:
			say = fmt.Sprintf("Flux: Kustomization %s Ready=False (HealthCheckFailed) at %s: %s", AppName, f.rev, ready["message"])
			return true, nil
		}
		return false, fmt.Errorf("Kustomization %s: lastAppliedRevision %s, lastAttemptedRevision %s, Ready %v; waiting for %s to be judged",
			AppName, applied, attempted, ready, f.rev)
	})
	if err != nil {
		return "", fmt.Errorf("wait for Flux's verdict (logs: %s): %w", f.flux.LogPath(sandbox.FluxKustomizeController), err)
	}
	return say, nil
}

// requestReconcile annotates a Flux object with reconcile.fluxcd.io/requestedAt, as the
// flux CLI does.
func (f *fluxReleaser) requestReconcile(ctx context.Context, gvk schema.GroupVersionKind, name string) error {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvk)
	u.SetNamespace(AppNamespace)
	u.SetName(name)
	patch := fmt.Sprintf(`{"metadata":{"annotations":{"reconcile.fluxcd.io/requestedAt":%q}}}`, time.Now().Format(time.RFC3339Nano))
	if err := f.c.Patch(ctx, u, client.RawPatch("application/merge-patch+json", []byte(patch))); err != nil {
		return fmt.Errorf("request reconciliation of %s %s: %w", gvk.Kind, name, err)
	}
	return nil
}

// recommendedKustomization is manifests/examples/flux/app-kustomization.yaml as shipped:
// its names are the seed's, which the demo uses.
func recommendedKustomization() (*unstructured.Unstructured, error) {
	root, err := sandbox.RepoRoot()
	if err != nil {
		return nil, err
	}
	path := filepath.Join(root, "manifests", "examples", "flux", "app-kustomization.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read the recommended Kustomization: %w", err)
	}
	objs, err := manifests.Objects(data)
	if err != nil || len(objs) != 1 || objs[0].GroupVersionKind() != kustomizationGVK {
		return nil, fmt.Errorf("read %s: want one %s (%v)", path, kustomizationGVK.Kind, err)
	}
	ks := objs[0]
	if ks.GetNamespace() != AppNamespace || ks.GetName() != AppName {
		return nil, fmt.Errorf("%s names %s/%s, want %s/%s", path, ks.GetNamespace(), ks.GetName(), AppNamespace, AppName)
	}
	return ks, nil
}

func readyCondition(u *unstructured.Unstructured) map[string]any {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == "Ready" {
			return m
		}
	}
	return map[string]any{}
}

// imageTag is the tag of an image reference: ghcr.example/alice:1.1.0 -> 1.1.0.
func imageTag(image string) string {
	if i := strings.LastIndex(image, ":"); i >= 0 {
		return image[i+1:]
	}
	return image
}
