package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"sort"
	"strings"

	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	kjson "sigs.k8s.io/json"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// DeploymentMutator keeps a managed Deployment paused while its pod template differs from
// its stable revision (DESIGN §2.3, §3).
//
// It decides from the request alone: the stable revision is read from the old object,
// where only coalmine can have written it, so the hot path makes no API call. Requests of
// ControllerUsername pass untouched: the loop unpauses at promotion and moves the stable
// revision itself, and its updates never change the template.
type DeploymentMutator struct {
	ControllerUsername string
}

var _ admission.Handler = &DeploymentMutator{}

// Handle implements admission.Handler.
//
// It is on the path of every update of a managed Deployment, so it decodes only what the
// rule reads (name, labels, annotations, paused and the pod templates) in one pass per
// object, hashes the old template only when the rule asks for its revision, and writes
// the JSON patch operations directly instead of re-encoding the object and diffing it.
// Fields it does not read are not decoded, so a malformed one (which the apiserver never
// sends) is not refused here; the apiserver's own validation judges the object.
func (m *DeploymentMutator) Handle(ctx context.Context, req admission.Request) admission.Response {
	// Status and scale subresources never change the template; HPA and kubectl scale
	// pass. The shipped rules do not send them, this guards a hand-edited configuration.
	if req.Operation != admissionv1.Update || req.SubResource != "" {
		return admission.Allowed("")
	}
	if m.ControllerUsername != "" && req.UserInfo.Username == m.ControllerUsername {
		return admission.Allowed("coalmine's own request")
	}
	oldDep, err := decodeDeploymentView(req.OldObject.Raw)
	if err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decode old Deployment: %w", err))
	}
	newDep, err := decodeDeploymentView(req.Object.Raw)
	if err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decode Deployment: %w", err))
	}
	ch := decideDeployment(oldDep, newDep)
	if ch.empty() {
		return admission.Allowed("")
	}
	if logger := log.FromContext(ctx).V(1); logger.Enabled() {
		logger.Info("mutate Deployment", "deployment", req.Namespace+"/"+req.Name,
			"revision", ch.annotations[v1beta1.AnnotationRevision], "paused", ch.paused,
			"dryRun", req.DryRun != nil && *req.DryRun)
	}
	patches := deploymentPatch(newDep, ch)
	pt := admissionv1.PatchTypeJSONPatch
	return admission.Response{
		Patches:           patches,
		AdmissionResponse: admissionv1.AdmissionResponse{Allowed: true, PatchType: &pt},
	}.WithWarnings(ch.warnings...)
}

// deploymentView is the part of a Deployment the mutator reads, decoded in one pass. It
// is decoded case-sensitively, as the apiserver decodes, so that the fields the rule reads
// are the ones the patch edits. Nil pointers and maps are members that are missing or
// null: the patch adds those.
type deploymentView struct {
	Metadata *struct {
		Name        string            `json:"name"`
		Namespace   string            `json:"namespace"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec *struct {
		Paused   *bool                  `json:"paused"`
		Template corev1.PodTemplateSpec `json:"template"`
	} `json:"spec"`

	revision string // of the template, once computed
}

func decodeDeploymentView(raw []byte) (*deploymentView, error) {
	// Anything but an object (the apiserver never sends one) has nowhere to patch.
	if t := bytes.TrimLeft(raw, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return nil, errors.New("not a JSON object")
	}
	d := &deploymentView{}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(raw, d); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *deploymentView) name() (namespace, name string) {
	if d.Metadata == nil {
		return "", ""
	}
	return d.Metadata.Namespace, d.Metadata.Name
}

func (d *deploymentView) labels() map[string]string {
	if d.Metadata == nil {
		return nil
	}
	return d.Metadata.Labels
}

func (d *deploymentView) annotations() map[string]string {
	if d.Metadata == nil {
		return nil
	}
	return d.Metadata.Annotations
}

func (d *deploymentView) paused() bool {
	return d.Spec != nil && d.Spec.Paused != nil && *d.Spec.Paused
}

var zeroTemplate corev1.PodTemplateSpec

func (d *deploymentView) template() *corev1.PodTemplateSpec {
	if d.Spec == nil {
		return &zeroTemplate
	}
	return &d.Spec.Template
}

// templateRevision is v1beta1.TemplateRevision of the pod template, computed once.
func (d *deploymentView) templateRevision() string {
	if d.revision == "" {
		d.revision = v1beta1.TemplateRevision(d.template())
	}
	return d.revision
}

// deploymentChange is what the mutator sets on the incoming Deployment.
type deploymentChange struct {
	labels      map[string]string
	annotations map[string]string
	paused      *bool
	warnings    []string
}

func (c *deploymentChange) empty() bool {
	return len(c.labels) == 0 && len(c.annotations) == 0 && c.paused == nil
}

func (c *deploymentChange) setLabel(k, v string) {
	if c.labels == nil {
		c.labels = map[string]string{}
	}
	c.labels[k] = v
}

func (c *deploymentChange) setAnnotation(k, v string) {
	if c.annotations == nil {
		c.annotations = map[string]string{}
	}
	c.annotations[k] = v
}

// decideDeployment is the mutation rule for an update by anyone but coalmine. It depends
// only on its arguments, so a re-invocation or a dry-run gets the same answer, and
// applied to its own output it asks for nothing more.
func decideDeployment(oldDep, newDep *deploymentView) deploymentChange {
	var c deploymentChange
	oldLabels, oldAnnotations := oldDep.labels(), oldDep.annotations()
	newLabels, newAnnotations := newDep.labels(), newDep.annotations()
	stable := oldAnnotations[v1beta1.AnnotationStableRevision]
	if stable == "" {
		// Not initialised by the loop yet: nothing to compare with.
		return c
	}
	ns, name := newDep.name()
	ref := ns + "/" + name

	// Coalmine's metadata is the loop's, not the user's: a kubectl replace or a Flux apply
	// of a manifest that never had it must not drop it, and nobody but coalmine may move
	// the stable revision (that would let the next template change roll unguarded).
	var restored []string
	if v, ok := oldLabels[v1beta1.LabelManaged]; ok && newLabels[v1beta1.LabelManaged] != v {
		c.setLabel(v1beta1.LabelManaged, v)
		restored = append(restored, "label "+v1beta1.LabelManaged)
	}
	if newAnnotations[v1beta1.AnnotationStableRevision] != stable {
		c.setAnnotation(v1beta1.AnnotationStableRevision, stable)
		restored = append(restored, "annotation "+v1beta1.AnnotationStableRevision)
	}
	if len(restored) > 0 {
		c.warnings = append(c.warnings, fmt.Sprintf("coalmine: kept %s on Deployment %s: coalmine owns them (delete the Canary to release the Deployment)",
			joinAnd(restored), ref))
	}

	newRev := newDep.templateRevision()
	oldTemplateRev := oldDep.templateRevision
	recorded := oldAnnotations[v1beta1.AnnotationRevision]
	newPaused := newDep.paused()

	revision := recorded
	switch {
	case newRev != stable && isRepresentationDrift(oldDep, newDep, stable):
		// The hash moved, the template did not (a k8s.io/api bump, a new server default,
		// a field the apiserver drops): nothing new would roll, so this is no revision.
		// The loop re-stamps the stable revision once the stable revision's ReplicaSet is
		// seen to run it; until then such updates pass like any other outside a canary.
		// They pass unmarked: the loop takes a revision annotation equal to the new
		// template's as this webhook's verdict "new revision" (rollout/identity.go).
		revision = idleRevision(recorded, stable, newAnnotations)
	case newRev != stable:
		// A new revision, or any update while one is under analysis or rolled back.
		revision = newRev
		if !newPaused {
			c.paused = new(true)
			if newRev != oldTemplateRev() {
				c.warnings = append(c.warnings, fmt.Sprintf("coalmine: Deployment %s paused at new revision %s: the canary analysis decides whether it rolls (stable revision %s)",
					ref, newRev, stable))
			} else {
				c.warnings = append(c.warnings, fmt.Sprintf("coalmine: spec.paused of Deployment %s kept true: revision %s differs from the stable revision %s and is under canary analysis or rolled back",
					ref, newRev, stable))
			}
		}
	default:
		wasActive := recorded != "" && recorded != stable
		if !wasActive {
			wasActive = oldTemplateRev() != stable
		}
		switch {
		case wasActive:
			// The template is back at the stable revision: nothing new would roll.
			revision = stable
			if newPaused {
				c.paused = new(false)
				c.warnings = append(c.warnings, fmt.Sprintf("coalmine: Deployment %s is back at its stable revision %s: unpaused", ref, stable))
			}
		default:
			revision = idleRevision(recorded, stable, newAnnotations)
		}
	}
	if revision != "" && newAnnotations[v1beta1.AnnotationRevision] != revision {
		c.setAnnotation(v1beta1.AnnotationRevision, revision)
	}
	return c
}

// idleRevision is the revision annotation of a Deployment outside a canary (recorded is
// empty or the stable revision): replica changes, labels and the user's own pause pass,
// and only a revision annotation the request added is put back, to the stable revision.
func idleRevision(recorded, stable string, newAnnotations map[string]string) string {
	if _, ok := newAnnotations[v1beta1.AnnotationRevision]; ok && recorded == "" {
		return stable
	}
	return recorded
}

// isRepresentationDrift reports whether an update whose template hash differs from the
// stable revision is still no new revision: the old object runs its template unguarded by
// any canary, and the request does not change that template semantically.
//
// The old object must be unpaused: then the Deployment controller already rolls (or has
// rolled) its template, and the same template again rolls nothing new. A paused old
// object may hold a change that never rolled (the user's pause of an unrolled change, or
// coalmine's hold of a canary or a rolled-back revision): unpausing it would roll that
// change unanalysed, so it keeps the ordinary rule.
func isRepresentationDrift(oldDep, newDep *deploymentView, stable string) bool {
	if oldDep.paused() {
		return false
	}
	if r := oldDep.annotations()[v1beta1.AnnotationRevision]; r != "" && r != stable {
		return false // coalmine recorded a revision under analysis or rolled back
	}
	return sameTemplate(oldDep, newDep)
}

// sameTemplate compares the pod templates as the apiserver means them: equal hashes are
// equal templates; otherwise equality.Semantic (nil and empty lists and maps alike,
// quantities by value) without the deployment controller's pod-template-hash label. The
// hashes are cached, and the reflective deep comparison (27 more allocations per
// intercept) runs only when they differ and no image did.
func sameTemplate(oldDep, newDep *deploymentView) bool {
	if oldDep.templateRevision() == newDep.templateRevision() {
		return true
	}
	a, b := oldDep.template(), newDep.template()
	if imagesDiffer(&a.Spec, &b.Spec) {
		return false
	}
	return equality.Semantic.DeepEqual(withoutTemplateHash(a), withoutTemplateHash(b))
}

// imagesDiffer is a cheap, exact test for the commonest real change, a new image or a
// container more or less: semantically equal templates never differ there.
func imagesDiffer(a, b *corev1.PodSpec) bool {
	if len(a.Containers) != len(b.Containers) {
		return true
	}
	for i := range a.Containers {
		if a.Containers[i].Image != b.Containers[i].Image {
			return true
		}
	}
	return false
}

// withoutTemplateHash is t without the pod-template-hash label: a shallow copy with its
// own labels when t has it (nothing else is written through the copy), else t.
func withoutTemplateHash(t *corev1.PodTemplateSpec) *corev1.PodTemplateSpec {
	if _, ok := t.Labels[appsv1.DefaultDeploymentUniqueLabelKey]; !ok {
		return t
	}
	c := *t
	c.Labels = maps.Clone(t.Labels)
	delete(c.Labels, appsv1.DefaultDeploymentUniqueLabelKey)
	return &c
}

// deploymentPatch writes the JSON patch operations that set c on the Deployment d was
// decoded from: a member that is there is replaced, one that is missing is added, as a
// diff of the two objects would say (a null member is added too: RFC 6902 add sets a
// member whether or not it exists). Touching only these paths leaves every other field as
// the apiserver sent it, including fields this build of k8s.io/api does not know
// (kubebuilder#510). Sorted by path, the same request gives the same bytes.
func deploymentPatch(d *deploymentView, c deploymentChange) []jsonpatch.Operation {
	var ops []jsonpatch.Operation
	if len(c.labels) > 0 || len(c.annotations) > 0 {
		if d.Metadata == nil {
			// No metadata object (or null): add it whole.
			meta := map[string]any{}
			if len(c.labels) > 0 {
				meta["labels"] = c.labels
			}
			if len(c.annotations) > 0 {
				meta["annotations"] = c.annotations
			}
			ops = append(ops, jsonpatch.NewOperation("add", "/metadata", meta))
		} else {
			ops = memberPatch(ops, "/metadata/labels", d.Metadata.Labels, c.labels)
			ops = memberPatch(ops, "/metadata/annotations", d.Metadata.Annotations, c.annotations)
		}
	}
	if c.paused != nil {
		switch {
		case d.Spec == nil:
			ops = append(ops, jsonpatch.NewOperation("add", "/spec", map[string]any{"paused": *c.paused}))
		case d.Spec.Paused != nil:
			ops = append(ops, jsonpatch.NewOperation("replace", "/spec/paused", *c.paused))
		default:
			ops = append(ops, jsonpatch.NewOperation("add", "/spec/paused", *c.paused))
		}
	}
	sort.Stable(jsonpatch.ByPath(ops))
	return ops
}

// memberPatch appends the operations that set the entries of set in the string map at
// path, whose current state is cur.
func memberPatch(ops []jsonpatch.Operation, path string, cur, set map[string]string) []jsonpatch.Operation {
	switch {
	case len(set) == 0:
		return ops
	case cur == nil:
		return append(ops, jsonpatch.NewOperation("add", path, set))
	}
	for k, v := range set {
		op := "add"
		if _, ok := cur[k]; ok {
			op = "replace"
		}
		ops = append(ops, jsonpatch.NewOperation(op, path+"/"+jsonPointerEscape.Replace(k), v))
	}
	return ops
}

// jsonPointerEscape escapes an object key for a JSON pointer (RFC 6901).
var jsonPointerEscape = strings.NewReplacer("~", "~0", "/", "~1")

func joinAnd(s []string) string {
	switch len(s) {
	case 0:
		return ""
	case 1:
		return s[0]
	}
	out := s[0]
	for _, x := range s[1 : len(s)-1] {
		out += ", " + x
	}
	return out + " and " + s[len(s)-1]
}
