package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"

	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
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
func (m *DeploymentMutator) Handle(ctx context.Context, req admission.Request) admission.Response {
	// Status and scale subresources never change the template; HPA and kubectl scale
	// pass. The shipped rules do not send them, this guards a hand-edited configuration.
	if req.Operation != admissionv1.Update || req.SubResource != "" {
		return admission.Allowed("")
	}
	if m.ControllerUsername != "" && req.UserInfo.Username == m.ControllerUsername {
		return admission.Allowed("coalmine's own request")
	}
	// Case-sensitive, as the apiserver decodes: the typed view the rule reads and the
	// generic view the patch edits must see the same fields.
	var oldDep, newDep appsv1.Deployment
	if err := kjson.UnmarshalCaseSensitivePreserveInts(req.OldObject.Raw, &oldDep); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decode old Deployment: %w", err))
	}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(req.Object.Raw, &newDep); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decode Deployment: %w", err))
	}
	ch := decideDeployment(&oldDep, &newDep)
	if ch.empty() {
		return admission.Allowed("")
	}
	log.FromContext(ctx).V(1).Info("mutate Deployment", "deployment", req.Namespace+"/"+req.Name,
		"revision", ch.annotations[v1beta1.AnnotationRevision], "paused", ch.paused,
		"dryRun", req.DryRun != nil && *req.DryRun)
	return patchDeployment(req.Object.Raw, ch)
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
func decideDeployment(oldDep, newDep *appsv1.Deployment) deploymentChange {
	var c deploymentChange
	stable := oldDep.Annotations[v1beta1.AnnotationStableRevision]
	if stable == "" {
		// Not initialised by the loop yet: nothing to compare with.
		return c
	}
	ref := newDep.Namespace + "/" + newDep.Name

	// Coalmine's metadata is the loop's, not the user's: a kubectl replace or a Flux apply
	// of a manifest that never had it must not drop it, and nobody but coalmine may move
	// the stable revision (that would let the next template change roll unguarded).
	var restored []string
	if v, ok := oldDep.Labels[v1beta1.LabelManaged]; ok && newDep.Labels[v1beta1.LabelManaged] != v {
		c.setLabel(v1beta1.LabelManaged, v)
		restored = append(restored, "label "+v1beta1.LabelManaged)
	}
	if newDep.Annotations[v1beta1.AnnotationStableRevision] != stable {
		c.setAnnotation(v1beta1.AnnotationStableRevision, stable)
		restored = append(restored, "annotation "+v1beta1.AnnotationStableRevision)
	}
	if len(restored) > 0 {
		c.warnings = append(c.warnings, fmt.Sprintf("coalmine: kept %s on Deployment %s: coalmine owns them (delete the Canary to release the Deployment)",
			joinAnd(restored), ref))
	}

	oldTemplateRev := v1beta1.TemplateRevision(&oldDep.Spec.Template)
	newRev := v1beta1.TemplateRevision(&newDep.Spec.Template)
	recorded := oldDep.Annotations[v1beta1.AnnotationRevision]
	wasActive := oldTemplateRev != stable || (recorded != "" && recorded != stable)

	revision := recorded
	switch {
	case newRev != stable:
		// A new revision, or any update while one is under analysis or rolled back.
		revision = newRev
		if !newDep.Spec.Paused {
			c.paused = new(true)
			if newRev != oldTemplateRev {
				c.warnings = append(c.warnings, fmt.Sprintf("coalmine: Deployment %s paused at new revision %s: the canary analysis decides whether it rolls (stable revision %s)",
					ref, newRev, stable))
			} else {
				c.warnings = append(c.warnings, fmt.Sprintf("coalmine: spec.paused of Deployment %s kept true: revision %s differs from the stable revision %s and is under canary analysis or rolled back",
					ref, newRev, stable))
			}
		}
	case wasActive:
		// The template is back at the stable revision: nothing new would roll.
		revision = stable
		if newDep.Spec.Paused {
			c.paused = new(false)
			c.warnings = append(c.warnings, fmt.Sprintf("coalmine: Deployment %s is back at its stable revision %s: unpaused", ref, stable))
		}
	default:
		// No canary: replica changes, labels, the user's own pause pass. Only a revision
		// annotation the request changed is put back, to the template's revision.
		if _, ok := newDep.Annotations[v1beta1.AnnotationRevision]; ok && recorded == "" {
			revision = stable
		}
	}
	if revision != "" && newDep.Annotations[v1beta1.AnnotationRevision] != revision {
		c.setAnnotation(v1beta1.AnnotationRevision, revision)
	}
	return c
}

// patchDeployment sets c on the raw object and answers with the JSON patch between the
// two. It edits the generic JSON rather than the typed Deployment so that fields this
// build of k8s.io/api does not know survive (kubebuilder#510).
func patchDeployment(raw []byte, c deploymentChange) admission.Response {
	var obj map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&obj); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decode Deployment: %w", err))
	}
	meta := childMap(obj, "metadata")
	if len(c.labels) > 0 {
		labels := childMap(meta, "labels")
		for k, v := range c.labels {
			labels[k] = v
		}
	}
	if len(c.annotations) > 0 {
		annotations := childMap(meta, "annotations")
		for k, v := range c.annotations {
			annotations[k] = v
		}
	}
	if c.paused != nil {
		childMap(obj, "spec")["paused"] = *c.paused
	}
	out, err := json.Marshal(obj)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("encode Deployment: %w", err))
	}
	resp := admission.PatchResponseFromRaw(raw, out)
	// CreatePatch walks maps in random order; sorted, the same request gives the same bytes.
	sort.Stable(jsonpatch.ByPath(resp.Patches))
	return resp.WithWarnings(c.warnings...)
}

// childMap returns m[key] as an object, replacing a missing or null value with an empty one.
func childMap(m map[string]any, key string) map[string]any {
	if v, ok := m[key].(map[string]any); ok {
		return v
	}
	v := map[string]any{}
	m[key] = v
	return v
}

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
