package workload

import (
	"errors"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// Metadata of the target that must not reach the canary Deployment: the kubectl and
// deployment-controller bookkeeping describes the target's history, not the canary's.
var droppedAnnotations = []string{
	"kubectl.kubernetes.io/last-applied-configuration",
	"deployment.kubernetes.io/revision",
}

// AppLabels are the labels that identify the target's pods: its selector's matchLabels.
// Services need an equality selector, so a target selecting by expressions only is refused.
func AppLabels(target *appsv1.Deployment) (map[string]string, error) {
	if target.Spec.Selector == nil || len(target.Spec.Selector.MatchLabels) == 0 {
		return nil, errors.New("deployment selector has no matchLabels; coalmine needs them to select its pods from Services")
	}
	return target.Spec.Selector.MatchLabels, nil
}

// CanaryDeployment returns the canary Deployment for target's current pod template: named
// name, in target's namespace, its selector and pod labels suffixed with -canary (so neither
// the apex nor the primary Service selects its pods, and pod affinity or spread constraints
// about the app apply to the canary's own pods), as many replicas as target or as
// canaryReplicas says (spec.canaryReplicas, a coalmine extension: a number or a percentage
// of the target's replicas, rounded up), at least one either way (so a target scaled to
// zero can still be analysed), never paused. revision is recorded in
// the coalmine.dev/revision annotation so the reconciler can tell when it is out of date.
// Coalmine's own label and annotations of target are dropped: the canary is not managed.
// The caller sets the owner reference.
func CanaryDeployment(target *appsv1.Deployment, name, revision string, canaryReplicas *intstr.IntOrString) (*appsv1.Deployment, error) {
	app, err := AppLabels(target)
	if err != nil {
		return nil, err
	}
	rw := labelRewriter{app: app, suffix: v1beta1.CanarySuffix}

	spec := *target.Spec.DeepCopy()
	spec.Paused = false
	var targetReplicas int32 = 1 // a Deployment's default
	if spec.Replicas != nil {
		targetReplicas = *spec.Replicas
	}
	// An unusable value (the webhook refuses it) falls back to the target's replicas.
	replicas, err := v1beta1.CanaryReplicasOf(canaryReplicas, targetReplicas)
	if err != nil {
		replicas = targetReplicas
	}
	replicas = max(replicas, 1)
	spec.Replicas = &replicas
	rw.selector(spec.Selector)
	spec.Template.Labels = rw.labels(spec.Template.Labels)
	rw.podSpec(&spec.Template.Spec)

	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Namespace:   target.Namespace,
			Labels:      rw.labels(withoutCoalmine(target.Labels)),
			Annotations: withoutCoalmine(target.Annotations),
		},
		Spec: spec,
	}
	for _, k := range droppedAnnotations {
		delete(d.Annotations, k)
	}
	if d.Annotations == nil {
		d.Annotations = map[string]string{}
	}
	d.Annotations[v1beta1.AnnotationRevision] = revision
	return d, nil
}

// withoutCoalmine copies m without coalmine.dev/ keys.
func withoutCoalmine(m map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		if !strings.HasPrefix(k, v1beta1.AnnotationPrefix) {
			out[k] = v
		}
	}
	return out
}

// UpdateCanaryDeployment makes existing run desired's template with desired's replicas and
// revision, keeping anything else (status, metadata added by others). It reports whether
// existing changed, so an unchanged canary costs no write.
func UpdateCanaryDeployment(existing, desired *appsv1.Deployment) bool {
	changed := false
	if existing.Annotations[v1beta1.AnnotationRevision] != desired.Annotations[v1beta1.AnnotationRevision] {
		if existing.Annotations == nil {
			existing.Annotations = map[string]string{}
		}
		existing.Annotations[v1beta1.AnnotationRevision] = desired.Annotations[v1beta1.AnnotationRevision]
		existing.Spec.Template = *desired.Spec.Template.DeepCopy()
		changed = true
	}
	if want := desired.Spec.Replicas; want != nil && (existing.Spec.Replicas == nil || *existing.Spec.Replicas != *want) {
		r := *want
		existing.Spec.Replicas = &r
		changed = true
	}
	if existing.Spec.Paused {
		existing.Spec.Paused = false
		changed = true
	}
	return changed
}
