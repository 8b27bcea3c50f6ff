package webhook

import (
	"encoding/json"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

const (
	testNamespace  = "apps-a-mesh-a"
	controllerUser = "system:serviceaccount:coalmine-system:coalmine"
	adminUser      = "kubernetes-admin"
	fluxUser       = "system:serviceaccount:flux-system:kustomize-controller"
)

// deployment is alice as the seed runs it, with image as its only template variable.
func deployment(image string) *appsv1.Deployment {
	labels := map[string]string{"app": "alice"}
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: "alice", Namespace: testNamespace, Labels: map[string]string{"app": "alice"}},
		Spec: appsv1.DeploymentSpec{
			Replicas: new(int32(3)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "app", Image: image,
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				}}},
			},
		},
	}
}

// managed marks d as the loop leaves it after initialisation at stable.
func managed(d *appsv1.Deployment, stable string) *appsv1.Deployment {
	d = d.DeepCopy()
	if d.Labels == nil {
		d.Labels = map[string]string{}
	}
	d.Labels[v1beta1.LabelManaged] = "true"
	if d.Annotations == nil {
		d.Annotations = map[string]string{}
	}
	d.Annotations[v1beta1.AnnotationStableRevision] = stable
	return d
}

func rev(d *appsv1.Deployment) string { return v1beta1.TemplateRevision(&d.Spec.Template) }

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	return b
}

// review builds the admission request the apiserver would send.
func review(t testing.TB, op admissionv1.Operation, user string, resource metav1.GroupVersionResource, obj, old any) admission.Request {
	t.Helper()
	req := admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID:       types.UID("5b1f0000-0000-4000-8000-000000000001"),
		Operation: op,
		Resource:  resource,
		Namespace: testNamespace,
		UserInfo:  authenticationv1.UserInfo{Username: user},
		DryRun:    new(false),
	}}
	if obj != nil {
		req.Object = runtime.RawExtension{Raw: mustJSON(t, obj)}
		if m, ok := obj.(metav1.Object); ok {
			req.Name = m.GetName()
		}
	}
	if old != nil {
		req.OldObject = runtime.RawExtension{Raw: mustJSON(t, old)}
	}
	return req
}

var (
	deploymentsResource     = metav1.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	servicesResource        = metav1.GroupVersionResource{Version: "v1", Resource: "services"}
	canariesResource        = metav1.GroupVersionResource{Group: "coalmine.dev", Version: "v1beta1", Resource: "canaries"}
	metricTemplatesResource = metav1.GroupVersionResource{Group: "coalmine.dev", Version: "v1beta1", Resource: "metrictemplates"}
)

// applyPatch applies resp's JSON patch to raw the way the apiserver does.
func applyPatch(t testing.TB, raw []byte, resp admission.Response) []byte {
	t.Helper()
	if len(resp.Patches) == 0 {
		return raw
	}
	p, err := jsonpatch.DecodePatch(mustJSON(t, resp.Patches))
	if err != nil {
		t.Fatalf("decode patch: %v", err)
	}
	out, err := p.Apply(raw)
	if err != nil {
		t.Fatalf("apply patch %s: %v", mustJSON(t, resp.Patches), err)
	}
	return out
}
