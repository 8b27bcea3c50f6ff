package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

func admissionReview(t testing.TB, req admission.Request) []byte {
	return mustJSON(t, admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request:  &req.AdmissionRequest,
	})
}

// FuzzDeploymentAdmission feeds AdmissionReview bytes through the Deployment webhook as
// the server runs it (panics not recovered, so the fuzzer sees them). Whatever arrives,
// the answer is a well-formed AdmissionReview; an allowed answer's patch applies to the
// object, and applied, leaves nothing more to patch.
func FuzzDeploymentAdmission(f *testing.F) {
	canaryV2 := at(depV2, revV1)
	seeds := []admission.Request{
		review(f, admissionv1.Update, fluxUser, deploymentsResource, managed(depV2, revV1), managed(depV1, revV1)),
		review(f, admissionv1.Update, fluxUser, deploymentsResource, with(canaryV2, func(d *appsv1.Deployment) { d.Spec.Paused = false }), canaryV2),
		review(f, admissionv1.Update, adminUser, deploymentsResource, depV2, canaryV2),
		review(f, admissionv1.Update, fluxUser, deploymentsResource, managed(depV1, revV1), canaryV2),
		review(f, admissionv1.Update, controllerUser, deploymentsResource, managed(depV2, revV2), canaryV2),
		review(f, admissionv1.Create, adminUser, deploymentsResource, depV1, nil),
	}
	for _, s := range seeds {
		f.Add(admissionReview(f, s))
	}
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x","operation":"UPDATE","object":{"spec":{}},"oldObject":{"metadata":{"annotations":{"coalmine.dev/stable-revision":"abc"}}}}}`))
	f.Add([]byte(`{}`))

	wh := (&admission.Webhook{Handler: &DeploymentMutator{ControllerUsername: controllerUser}}).WithRecoverPanic(false)
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, PathMutateDeployment, bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		wh.ServeHTTP(rec, r)

		var out admissionv1.AdmissionReview
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
			t.Fatalf("malformed answer %q: %v", rec.Body.String(), err)
		}
		resp := out.Response
		if resp.Result == nil || resp.Result.Code == 0 {
			t.Fatalf("answer without a status code: %s", rec.Body.String())
		}
		if !resp.Allowed {
			if resp.Result.Message == "" {
				t.Fatalf("refusal without a message: %s", rec.Body.String())
			}
			return
		}
		var in admissionv1.AdmissionReview
		if err := json.Unmarshal(body, &in); err != nil || in.Request == nil {
			// An empty review, or YAML (controller-runtime's deserializer reads it too):
			// allowed untouched, nothing more to compare with.
			if len(resp.Patch) != 0 {
				t.Fatalf("patched a request without an object: %s", rec.Body.String())
			}
			return
		}
		if resp.UID != in.Request.UID {
			t.Fatalf("UID %q, want %q", resp.UID, in.Request.UID)
		}
		if len(resp.Patch) == 0 {
			return
		}
		if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
			t.Fatalf("patch without JSONPatch type")
		}
		var ops admission.Response
		if err := json.Unmarshal(resp.Patch, &ops.Patches); err != nil {
			t.Fatalf("patch is not a JSON patch: %v", err)
		}
		patched := applyPatch(t, in.Request.Object.Raw, ops)
		var d appsv1.Deployment
		if err := json.Unmarshal(patched, &d); err != nil {
			t.Fatalf("patched object is no Deployment: %v", err)
		}
		req := admission.Request{AdmissionRequest: *in.Request}
		req.Object.Raw = patched
		if again := (&DeploymentMutator{ControllerUsername: controllerUser}).Handle(context.Background(), req); len(again.Patches) != 0 {
			t.Fatalf("not idempotent: second patch %s after %s", mustJSON(t, again.Patches), resp.Patch)
		}
	})
}

// FuzzValidateCanary feeds Canary JSON to the validator: no panic, and a well-formed
// answer (a 422 with causes when denied).
func FuzzValidateCanary(f *testing.F) {
	f.Add(mustJSON(f, seed(f)))
	bad := seed(f)
	bad.Spec.Analysis.StepWeights = []int{50, 10, 0}
	bad.Spec.Analysis.Metrics[0].ThresholdRange = &v1beta1.CanaryThresholdRange{Min: new(5.0), Max: new(1.0)}
	bad.Spec.Analysis.Webhooks = []v1beta1.CanaryWebhook{{Name: "x", URL: "::", Timeout: "1x"}}
	f.Add(mustJSON(f, bad))
	f.Add([]byte(`{"spec":{"targetRef":{"name":""},"service":{"port":0,"targetPort":"x"},"analysis":{"metrics":[{"name":"a","templateRef":{}}]}}}`))
	f.Add([]byte(`{"spec":{"analysis":null}}`))

	v := &CanaryValidator{}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var c v1beta1.Canary
		if err := json.Unmarshal(raw, &c); err != nil {
			return
		}
		errs := ValidateCanary(&c)
		for _, e := range errs {
			if e.Field == "" {
				t.Fatalf("error without a field path: %v", e)
			}
		}
		req := admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
			UID: "fuzz", Operation: admissionv1.Create, Resource: canariesResource,
		}}
		req.Object.Raw = raw
		resp := v.Handle(context.Background(), req)
		if err := resp.Complete(req); err != nil {
			t.Fatal(err)
		}
		switch {
		case resp.Allowed != (len(errs) == 0):
			t.Fatalf("allowed=%v with %d errors", resp.Allowed, len(errs))
		case !resp.Allowed && (resp.Result.Code != http.StatusUnprocessableEntity || len(resp.Result.Details.Causes) != len(errs)):
			t.Fatalf("denial %+v does not carry the %d errors", resp.Result, len(errs))
		}
	})
}

// FuzzCheckQuery: templating then PromQL parsing of any query text must not panic.
func FuzzCheckQuery(f *testing.F) {
	f.Add(seedSuccessRateQuery)
	f.Add(`sum(rate(x{route="{{ variables.route }}"}[{{ variables.window }}])) > {{ variables.limit }}`)
	f.Add(`{{ range variables }}{{ . }}{{ end }}`)
	f.Add(`{{ if target }}{{ with namespace }}{{ . }}{{ end }}{{ else }}x{{ end }}`)
	f.Fuzz(func(t *testing.T, q string) {
		_ = checkQuery(q)
	})
}
