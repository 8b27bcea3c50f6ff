package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// ServiceValidator refuses Services that would carry traffic around a canary split: a
// Service that is not coalmine's and selects the pods of a managed Deployment (or of its
// canary), or that takes one of a Canary's reserved names. The namespace annotation
// coalmine.dev/service-policy: warn turns the refusal into an admission warning.
//
// It fails open like its configuration (failurePolicy Ignore): when a lookup fails it
// allows with a warning, and the loop reports bare Services as a Canary condition anyway.
type ServiceValidator struct {
	// Client reads Namespaces, Deployments and Canaries; the manager's cached client.
	Client             client.Reader
	ControllerUsername string
}

var _ admission.Handler = &ServiceValidator{}

// Handle implements admission.Handler.
func (v *ServiceValidator) Handle(ctx context.Context, req admission.Request) admission.Response {
	if req.Operation != admissionv1.Create && req.Operation != admissionv1.Update || req.SubResource != "" {
		return admission.Allowed("")
	}
	if v.ControllerUsername != "" && req.UserInfo.Username == v.ControllerUsername {
		return admission.Allowed("coalmine's own Service")
	}
	var svc corev1.Service
	if err := json.Unmarshal(req.Object.Raw, &svc); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decode Service: %w", err))
	}
	if req.Operation == admissionv1.Update {
		var old corev1.Service
		if err := json.Unmarshal(req.OldObject.Raw, &old); err != nil {
			return admission.Errored(http.StatusBadRequest, fmt.Errorf("decode old Service: %w", err))
		}
		// Owner references, finalizers, managed fields and annotations change as garbage
		// collection and controllers go (Kuma's zone CP annotates every Service of a mesh
		// namespace with ingress.kubernetes.io/service-upstream, coalmine's own included);
		// only a change that can move traffic, the spec, or labels a selector could use,
		// is judged.
		if equality.Semantic.DeepEqual(old.Spec, svc.Spec) &&
			equality.Semantic.DeepEqual(old.Labels, svc.Labels) {
			return admission.Allowed("")
		}
	}
	if svc.Namespace == "" {
		svc.Namespace = req.Namespace
	}
	if svc.Name == "" {
		svc.Name = req.Name
	}
	logger := log.FromContext(ctx).WithValues("service", svc.Namespace+"/"+svc.Name)

	var ns corev1.Namespace
	if err := v.Client.Get(ctx, client.ObjectKey{Name: svc.Namespace}, &ns); err != nil {
		logger.Error(err, "get namespace; allowing the Service unchecked")
		return admission.Allowed("").WithWarnings(uncheckedWarning(&svc, fmt.Errorf("get namespace: %w", err)))
	}
	if ns.Labels[v1beta1.LabelSidecarInjection] != "enabled" {
		return admission.Allowed("namespace not in the mesh")
	}
	var canaries v1beta1.CanaryList
	if err := v.Client.List(ctx, &canaries, client.InNamespace(svc.Namespace)); err != nil {
		logger.Error(err, "list canaries; allowing the Service unchecked")
		return admission.Allowed("").WithWarnings(uncheckedWarning(&svc, fmt.Errorf("list canaries: %w", err)))
	}
	var deps appsv1.DeploymentList
	if err := v.Client.List(ctx, &deps, client.InNamespace(svc.Namespace),
		client.MatchingLabels{v1beta1.LabelManaged: "true"}); err != nil {
		logger.Error(err, "list deployments; allowing the Service unchecked")
		return admission.Allowed("").WithWarnings(uncheckedWarning(&svc, fmt.Errorf("list managed deployments: %w", err)))
	}

	problems := ServiceConflicts(&svc, canaries.Items, deps.Items)
	if len(problems) == 0 {
		return admission.Allowed("")
	}
	if ns.Annotations[v1beta1.AnnotationServicePolicy] == v1beta1.ServicePolicyWarn {
		logger.V(1).Info("Service conflicts with a Canary; allowed by the namespace's warn policy", "problems", problems)
		return admission.Allowed("").WithWarnings(problems...)
	}
	logger.V(1).Info("deny Service", "problems", problems)
	return admission.Denied(strings.Join(problems, "; "))
}

func uncheckedWarning(svc *corev1.Service, err error) string {
	return fmt.Sprintf("coalmine could not check Service %s/%s against its Canaries (%v); the controller checks it again", svc.Namespace, svc.Name, err)
}

// ServiceConflicts says, in sentences a user can act on, why svc would route around the
// canary split of one of canaries: it takes a reserved name, or its selector selects the
// pods of a managed Deployment among deps or of that Deployment's canary. Only Deployments
// labelled coalmine.dev/managed: "true" count. Empty when there is no conflict.
func ServiceConflicts(svc *corev1.Service, canaries []v1beta1.Canary, deps []appsv1.Deployment) []string {
	canaries = append([]v1beta1.Canary(nil), canaries...)
	sort.Slice(canaries, func(i, j int) bool { return canaries[i].Name < canaries[j].Name })
	deps = append([]appsv1.Deployment(nil), deps...)
	sort.Slice(deps, func(i, j int) bool { return deps[i].Name < deps[j].Name })

	ref := svc.Namespace + "/" + svc.Name
	var problems []string
	reservedBy := map[string]bool{} // Canaries whose reserved name svc took: one message each
	for i := range canaries {
		c := &canaries[i]
		if c.ApexName() == "" {
			continue
		}
		if svc.Name == c.ApexName() || svc.Name == c.PrimaryName() || svc.Name == c.CanaryName() {
			reservedBy[c.Name] = true
			problems = append(problems, fmt.Sprintf(
				"Service %s takes a name reserved by Canary %s/%s: coalmine alone writes its Services %s, %s and %s, which split the traffic between the stable and the canary pods. Rename the Service, or set the Canary's spec.service.name to give its Services other names",
				ref, c.Namespace, c.Name, c.ApexName(), c.PrimaryName(), c.CanaryName()))
		}
	}

	if len(svc.Spec.Selector) == 0 || svc.Spec.Type == corev1.ServiceTypeExternalName {
		return problems // selects no pods
	}
	sel := labels.SelectorFromSet(svc.Spec.Selector)
	for i := range deps {
		d := &deps[i]
		if d.Labels[v1beta1.LabelManaged] != "true" {
			continue
		}
		owner := managingCanary(canaries, d.Name)
		if owner != nil && reservedBy[owner.Name] {
			continue
		}
		var whose string
		switch {
		case sel.Matches(labels.Set(d.Spec.Template.Labels)):
			whose = "pods of Deployment " + d.Name
		case sel.Matches(labels.Set(canaryPodLabels(d))):
			whose = "the canary pods of Deployment " + d.Name
		default:
			continue
		}
		if owner == nil {
			problems = append(problems, fmt.Sprintf(
				"Service %s selects %s (selector %s), which coalmine manages: traffic through it would bypass the canary split. Use the Services coalmine owns for it",
				ref, whose, sel))
			continue
		}
		problems = append(problems, fmt.Sprintf(
			"Service %s selects %s (selector %s), which Canary %s/%s manages: traffic through it would bypass the canary split. Use the Service %s that coalmine owns, or set the Canary's spec.service (spec.service.name: %s makes coalmine own this one)",
			ref, whose, sel, owner.Namespace, owner.Name, owner.ApexName(), svc.Name))
	}
	return problems
}

// managingCanary is the Canary whose target is Deployment name, or nil.
func managingCanary(canaries []v1beta1.Canary, name string) *v1beta1.Canary {
	for i := range canaries {
		t := canaries[i].Spec.TargetRef
		if t.Name == name && (t.Kind == "" || t.Kind == "Deployment") {
			return &canaries[i]
		}
	}
	return nil
}

// canaryPodLabels are the labels of the canary Deployment's pods as the loop writes them
// (DESIGN §2.4): the target's template labels with the selector's values suffixed -canary.
func canaryPodLabels(d *appsv1.Deployment) map[string]string {
	out := make(map[string]string, len(d.Spec.Template.Labels))
	for k, v := range d.Spec.Template.Labels {
		out[k] = v
	}
	if d.Spec.Selector != nil {
		for k, v := range d.Spec.Selector.MatchLabels {
			out[k] = v + v1beta1.CanarySuffix
		}
	}
	return out
}
