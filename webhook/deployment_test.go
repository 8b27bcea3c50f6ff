package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"strings"
	"testing"

	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// The revisions of the tests: v1 is stable, v2 a new release, v3 the one after.
var (
	depV1 = deployment("ghcr.io/example/alice:1.0.0")
	depV2 = deployment("ghcr.io/example/alice:2.0.0")
	depV3 = deployment("ghcr.io/example/alice:3.0.0")
	revV1 = rev(depV1)
	revV2 = rev(depV2)
	revV3 = rev(depV3)
)

// at is d as the webhook leaves it while revision r is under analysis: paused, recorded.
func at(d *appsv1.Deployment, stable string) *appsv1.Deployment {
	d = managed(d, stable)
	d.Spec.Paused = true
	d.Annotations[v1beta1.AnnotationRevision] = rev(d)
	return d
}

func with(d *appsv1.Deployment, f func(*appsv1.Deployment)) *appsv1.Deployment {
	d = d.DeepCopy()
	f(d)
	return d
}

// mutationCase is one admission request to the Deployment mutator and what it must do.
type mutationCase struct {
	name        string
	user        string
	op          admissionv1.Operation // "" is UPDATE
	subResource string
	old, new    *appsv1.Deployment
	want        mutationWant
}

type mutationWant struct {
	untouched bool
	paused    bool
	revision  string // "" means the annotation is absent
	warning   string // a substring of one warning, if any is expected
}

func TestDeploymentMutator(t *testing.T) {
	idle := managed(depV1, revV1)
	canaryV2 := at(depV2, revV1)

	cases := []mutationCase{{
		name: "new template is intercepted: paused, revision recorded, template kept",
		user: fluxUser, old: idle, new: managed(depV2, revV1),
		want: mutationWant{paused: true, revision: revV2, warning: "paused at new revision " + revV2},
	}, {
		name: "new template that arrives paused only gets its revision recorded",
		user: adminUser, old: idle, new: with(managed(depV2, revV1), func(d *appsv1.Deployment) { d.Spec.Paused = true }),
		want: mutationWant{paused: true, revision: revV2},
	}, {
		name: "Flux re-apply that drops paused during a canary is paused again",
		user: fluxUser, old: canaryV2, new: with(canaryV2, func(d *appsv1.Deployment) { d.Spec.Paused = false }),
		want: mutationWant{paused: true, revision: revV2, warning: "spec.paused of Deployment apps-a-mesh-a/alice kept true"},
	}, {
		name: "kubectl unpause by an admin during a canary is paused again",
		user: adminUser, old: canaryV2, new: with(canaryV2, func(d *appsv1.Deployment) { d.Spec.Paused = false }),
		want: mutationWant{paused: true, revision: revV2},
	}, {
		name: "newer template mid-analysis records the newer revision",
		user: fluxUser, old: canaryV2, new: with(managed(depV3, revV1), func(d *appsv1.Deployment) {
			d.Annotations[v1beta1.AnnotationRevision] = revV2
		}),
		want: mutationWant{paused: true, revision: revV3, warning: "paused at new revision " + revV3},
	}, {
		name: "re-apply of a rolled-back revision stays paused",
		user: fluxUser, old: canaryV2, new: managed(depV2, revV1),
		want: mutationWant{paused: true, revision: revV2},
	}, {
		name: "coalmine's service account may unpause at promotion",
		user: controllerUser, old: canaryV2, new: with(canaryV2, func(d *appsv1.Deployment) {
			d.Spec.Paused = false
			d.Annotations[v1beta1.AnnotationStableRevision] = revV2
		}),
		want: mutationWant{untouched: true},
	}, {
		name: "coalmine's service account may remove the managed label at Canary deletion",
		user: controllerUser, old: canaryV2, new: with(canaryV2, func(d *appsv1.Deployment) {
			d.Spec.Paused = false
			delete(d.Labels, v1beta1.LabelManaged)
		}),
		want: mutationWant{untouched: true},
	}, {
		name: "a user cannot move the stable revision to roll unguarded",
		user: adminUser, old: idle, new: with(managed(depV2, revV2), func(d *appsv1.Deployment) {}),
		want: mutationWant{paused: true, revision: revV2, warning: "kept annotation coalmine.dev/stable-revision"},
	}, {
		name: "revert of the template to the stable revision unpauses",
		user: fluxUser, old: canaryV2, new: with(managed(depV1, revV1), func(d *appsv1.Deployment) {
			d.Spec.Paused = true
			d.Annotations[v1beta1.AnnotationRevision] = revV2
		}),
		want: mutationWant{paused: false, revision: revV1, warning: "back at its stable revision"},
	}, {
		name: "revert by a re-apply without paused records the stable revision",
		user: fluxUser, old: canaryV2, new: managed(depV1, revV1),
		want: mutationWant{paused: false, revision: revV1},
	}, {
		name: "replica-only change of an idle Deployment passes untouched",
		user: "system:serviceaccount:kube-system:horizontal-pod-autoscaler", old: idle,
		new:  with(idle, func(d *appsv1.Deployment) { d.Spec.Replicas = new(int32(7)) }),
		want: mutationWant{untouched: true},
	}, {
		name: "replica-only change during a canary passes untouched",
		user: adminUser, old: canaryV2, new: with(canaryV2, func(d *appsv1.Deployment) { d.Spec.Replicas = new(int32(7)) }),
		want: mutationWant{untouched: true},
	}, {
		name: "the user's own pause of an idle Deployment passes untouched",
		user: adminUser, old: idle, new: with(idle, func(d *appsv1.Deployment) { d.Spec.Paused = true }),
		want: mutationWant{untouched: true},
	}, {
		name: "the deployment controller's revision annotation passes untouched",
		user: "system:serviceaccount:kube-system:deployment-controller", old: canaryV2,
		new:  with(canaryV2, func(d *appsv1.Deployment) { d.Annotations["deployment.kubernetes.io/revision"] = "2" }),
		want: mutationWant{untouched: true},
	}, {
		name: "kubectl replace that drops coalmine's label and annotations keeps them",
		user: adminUser, old: canaryV2, new: depV2,
		want: mutationWant{paused: true, revision: revV2, warning: "kept label coalmine.dev/managed and annotation coalmine.dev/stable-revision"},
	}, {
		name: "Flux apply of an idle Deployment that never had coalmine's metadata keeps it",
		user: fluxUser, old: with(idle, func(d *appsv1.Deployment) { d.Annotations[v1beta1.AnnotationRevision] = revV1 }),
		new:  with(depV1, func(d *appsv1.Deployment) { d.Labels = nil }),
		want: mutationWant{paused: false, revision: revV1},
	}, {
		name: "a Deployment the loop has not initialised passes untouched",
		user: fluxUser, old: with(depV1, func(d *appsv1.Deployment) { d.Labels[v1beta1.LabelManaged] = "true" }),
		new:  with(depV2, func(d *appsv1.Deployment) { d.Labels[v1beta1.LabelManaged] = "true" }),
		want: mutationWant{untouched: true},
	}, {
		name: "scale subresource passes untouched",
		user: adminUser, subResource: "scale", old: idle, new: managed(depV2, revV1),
		want: mutationWant{untouched: true},
	}, {
		name: "status subresource passes untouched",
		user: "system:serviceaccount:kube-system:deployment-controller", subResource: "status", old: idle, new: managed(depV2, revV1),
		want: mutationWant{untouched: true},
	}, {
		name: "create passes untouched",
		user: adminUser, op: admissionv1.Create, new: managed(depV2, revV1),
		want: mutationWant{untouched: true},
	}}

	runMutationCases(t, cases)
}

// runMutationCases sends each case's request to the mutator and checks its answer: the
// patched object has the wanted pause and revision, keeps coalmine's label and stable
// revision as the old object had them, and keeps the user's template and replicas.
func runMutationCases(t *testing.T, cases []mutationCase) {
	t.Helper()
	m := &DeploymentMutator{ControllerUsername: controllerUser}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			op := tc.op
			if op == "" {
				op = admissionv1.Update
			}
			var old any
			if tc.old != nil {
				old = tc.old
			}
			req := review(t, op, tc.user, deploymentsResource, tc.new, old)
			req.SubResource = tc.subResource
			resp := m.Handle(context.Background(), req)
			if !resp.Allowed {
				t.Fatalf("denied: %+v", resp.Result)
			}
			if tc.want.untouched {
				if len(resp.Patches) != 0 || len(resp.Warnings) != 0 {
					t.Fatalf("want untouched, got patch %s warnings %q", mustJSON(t, resp.Patches), resp.Warnings)
				}
				return
			}
			var got appsv1.Deployment
			if err := json.Unmarshal(applyPatch(t, req.Object.Raw, resp), &got); err != nil {
				t.Fatal(err)
			}
			if got.Spec.Paused != tc.want.paused {
				t.Errorf("paused = %v, want %v (patch %s)", got.Spec.Paused, tc.want.paused, mustJSON(t, resp.Patches))
			}
			if r := got.Annotations[v1beta1.AnnotationRevision]; r != tc.want.revision {
				t.Errorf("revision annotation = %q, want %q", r, tc.want.revision)
			}
			if s := tc.old.Annotations[v1beta1.AnnotationStableRevision]; got.Annotations[v1beta1.AnnotationStableRevision] != s {
				t.Errorf("stable-revision = %q, want the old object's %q", got.Annotations[v1beta1.AnnotationStableRevision], s)
			}
			if v := tc.old.Labels[v1beta1.LabelManaged]; got.Labels[v1beta1.LabelManaged] != v {
				t.Errorf("managed label = %q, want %q", got.Labels[v1beta1.LabelManaged], v)
			}
			if !equality.Semantic.DeepEqual(got.Spec.Template, tc.new.Spec.Template) {
				t.Errorf("template changed: the user's template must stay in the object")
			}
			if !equality.Semantic.DeepEqual(got.Spec.Replicas, tc.new.Spec.Replicas) {
				t.Errorf("replicas changed")
			}
			if tc.want.warning != "" && !strings.Contains(strings.Join(resp.Warnings, "\n"), tc.want.warning) {
				t.Errorf("warnings %q do not mention %q", resp.Warnings, tc.want.warning)
			}
		})
	}
}

func TestDeploymentMutatorIsIdempotent(t *testing.T) {
	m := &DeploymentMutator{ControllerUsername: controllerUser}
	cases := []struct {
		name     string
		old, new *appsv1.Deployment
	}{
		{"intercept", managed(depV1, revV1), managed(depV2, revV1)},
		{"force pause", at(depV2, revV1), with(at(depV2, revV1), func(d *appsv1.Deployment) { d.Spec.Paused = false })},
		{"revert", at(depV2, revV1), managed(depV1, revV1)},
		{"replace dropping metadata", at(depV2, revV1), depV2},
		{"replace dropping metadata after a hash drift", managed(depV1, revBeforeUpgrade), depV1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := review(t, admissionv1.Update, fluxUser, deploymentsResource, tc.new, tc.old)
			first := m.Handle(context.Background(), req)
			again := m.Handle(context.Background(), req)
			if !bytes.Equal(mustJSON(t, first.Patches), mustJSON(t, again.Patches)) {
				t.Fatalf("same request, different patches:\n%s\n%s", mustJSON(t, first.Patches), mustJSON(t, again.Patches))
			}
			if len(first.Patches) == 0 {
				t.Fatal("want a patch")
			}
			// Re-invocation (reinvocationPolicy IfNeeded) sees its own output: nothing more to do.
			patched := applyPatch(t, req.Object.Raw, first)
			req.Object.Raw = patched
			if re := m.Handle(context.Background(), req); len(re.Patches) != 0 {
				t.Fatalf("re-invocation patches again: %s", mustJSON(t, re.Patches))
			}
		})
	}
}

func TestDeploymentMutatorDryRunGetsTheSamePatch(t *testing.T) {
	m := &DeploymentMutator{ControllerUsername: controllerUser}
	req := review(t, admissionv1.Update, fluxUser, deploymentsResource, managed(depV2, revV1), managed(depV1, revV1))
	wet := m.Handle(context.Background(), req)
	req.DryRun = new(true)
	dry := m.Handle(context.Background(), req)
	if len(wet.Patches) == 0 || !bytes.Equal(mustJSON(t, wet.Patches), mustJSON(t, dry.Patches)) {
		t.Fatalf("dry-run patch %s, want %s", mustJSON(t, dry.Patches), mustJSON(t, wet.Patches))
	}
}

// A field this build of k8s.io/api does not know must survive the patch: the mutator
// edits the JSON it got, not a re-encoded typed object.
func TestDeploymentMutatorKeepsUnknownFields(t *testing.T) {
	m := &DeploymentMutator{ControllerUsername: controllerUser}
	req := review(t, admissionv1.Update, fluxUser, deploymentsResource, managed(depV2, revV1), managed(depV1, revV1))
	var obj map[string]any
	if err := json.Unmarshal(req.Object.Raw, &obj); err != nil {
		t.Fatal(err)
	}
	obj["spec"].(map[string]any)["fromTheFuture"] = map[string]any{"enabled": true}
	req.Object.Raw = mustJSON(t, obj)

	resp := m.Handle(context.Background(), req)
	for _, p := range resp.Patches {
		if strings.Contains(p.Path, "fromTheFuture") || p.Operation == "remove" {
			t.Fatalf("patch touches what it should not: %s", mustJSON(t, resp.Patches))
		}
	}
	if !bytes.Contains(applyPatch(t, req.Object.Raw, resp), []byte(`"fromTheFuture":{"enabled":true}`)) {
		t.Fatal("unknown field lost")
	}
}

func TestDeploymentMutatorRefusesGarbage(t *testing.T) {
	m := &DeploymentMutator{ControllerUsername: controllerUser}
	req := review(t, admissionv1.Update, fluxUser, deploymentsResource, managed(depV2, revV1), managed(depV1, revV1))
	req.Object.Raw = []byte(`{"spec": "not an object"}`)
	resp := m.Handle(context.Background(), req)
	if resp.Allowed || resp.Result.Code != http.StatusBadRequest {
		t.Fatalf("want a 400 refusal, got %+v", resp.AdmissionResponse)
	}
}

// The mutator writes its JSON patch operations directly; they must be the ones a diff of
// the object before and after the change gives (what it did before it was made cheaper),
// whatever shape the members it sets are in. A null member is the one exception: the
// diff replaces it, the mutator adds it, which RFC 6902 defines to the same effect.
func TestDeploymentPatchEqualsDiff(t *testing.T) {
	change := deploymentChange{
		labels:      map[string]string{v1beta1.LabelManaged: "true"},
		annotations: map[string]string{v1beta1.AnnotationStableRevision: "s", v1beta1.AnnotationRevision: "r"},
		paused:      new(true),
	}
	cases := []struct {
		name string
		raw  string
		c    deploymentChange
	}{
		{"members exist with other keys",
			`{"metadata":{"name":"a","labels":{"app":"a"},"annotations":{"x":"y"}},"spec":{"paused":false,"template":{}}}`, change},
		{"keys exist with other values",
			`{"metadata":{"labels":{"coalmine.dev/managed":"no"},"annotations":{"coalmine.dev/revision":"old","coalmine.dev/stable-revision":""}},"spec":{"paused":false}}`, change},
		{"labels, annotations and paused missing",
			`{"metadata":{"name":"a"},"spec":{"replicas":2}}`, change},
		{"empty labels and annotations",
			`{"metadata":{"labels":{},"annotations":{}},"spec":{}}`, change},
		{"metadata and spec missing", `{"kind":"Deployment"}`, change},
		{"only the revision annotation", `{"metadata":{"annotations":{"a/b~c":"1"}},"spec":{"paused":true}}`,
			deploymentChange{annotations: map[string]string{v1beta1.AnnotationRevision: "r"}}},
		{"unpause", `{"metadata":{},"spec":{"paused":true}}`, deploymentChange{paused: new(false)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, err := decodeDeploymentView([]byte(tc.raw))
			if err != nil {
				t.Fatal(err)
			}
			got := deploymentPatch(d, tc.c)
			want := diffPatch(t, []byte(tc.raw), tc.c)
			if !bytes.Equal(mustJSON(t, got), mustJSON(t, want)) {
				t.Fatalf("patch\n%s\nwant the diff's\n%s", mustJSON(t, got), mustJSON(t, want))
			}
		})
	}
}

// diffPatch sets c on the generic JSON of raw and diffs the two, sorted by path.
func diffPatch(t *testing.T, raw []byte, c deploymentChange) []jsonpatch.Operation {
	t.Helper()
	var obj map[string]any
	if err := json.Unmarshal(raw, &obj); err != nil {
		t.Fatal(err)
	}
	child := func(m map[string]any, key string) map[string]any {
		if v, ok := m[key].(map[string]any); ok {
			return v
		}
		v := map[string]any{}
		m[key] = v
		return v
	}
	if len(c.labels) > 0 || len(c.annotations) > 0 {
		meta := child(obj, "metadata")
		for k, v := range c.labels {
			child(meta, "labels")[k] = v
		}
		for k, v := range c.annotations {
			child(meta, "annotations")[k] = v
		}
	}
	if c.paused != nil {
		child(obj, "spec")["paused"] = *c.paused
	}
	resp := admission.PatchResponseFromRaw(raw, mustJSON(t, obj))
	sort.Stable(jsonpatch.ByPath(resp.Patches))
	return resp.Patches
}
