package webhook

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	"sigs.k8s.io/yaml"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// seedCanary is the seed's Canary (shared/seed/flagger-kuma-poc-writeup.md) with only the
// apiVersion changed: it must be valid as it is.
const seedCanary = `
apiVersion: coalmine.dev/v1beta1
kind: Canary
metadata:
  name: alice
  namespace: apps-a-mesh-a
  annotations:
    kuma.io/mesh: mesh-a
spec:
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: alice
  service:
    name: alice
    port: 8080
    targetPort: http
    portName: http
    apex:
      annotations:
        8080.service.kuma.io/protocol: "http"
    canary:
      annotations:
        8080.service.kuma.io/protocol: "http"
    primary:
      annotations:
        8080.service.kuma.io/protocol: "http"
  analysis:
    interval: 30s
    threshold: 5
    maxWeight: 50
    stepWeight: 5
    metrics:
      - name: request-success-rate
        threshold: 99
        interval: 1m
      - name: request-duration
        threshold: 500
        interval: 30s
`

func seed(t testing.TB) *v1beta1.Canary {
	t.Helper()
	var c v1beta1.Canary
	if err := yaml.UnmarshalStrict([]byte(seedCanary), &c); err != nil {
		t.Fatal(err)
	}
	return &c
}

func TestValidateCanary(t *testing.T) {
	cases := []struct {
		name   string
		edit   func(c *v1beta1.Canary)
		errors []string // each a whole field error; none means valid
	}{{
		name: "the seed's Canary is valid",
		edit: func(*v1beta1.Canary) {},
	}, {
		name: "minimal Canary with defaults is valid",
		edit: func(c *v1beta1.Canary) {
			c.Spec = v1beta1.CanarySpec{TargetRef: v1beta1.LocalObjectReference{Name: "alice"}, Service: v1beta1.CanaryService{Port: 80}}
		},
	}, {
		name:   "stepWeight above maxWeight",
		edit:   func(c *v1beta1.Canary) { c.Spec.Analysis.StepWeight = 60 },
		errors: []string{"spec.analysis.stepWeight: Invalid value: 60: must be <= spec.analysis.maxWeight (50)"},
	}, {
		// Flagger's default maxWeight is 100: any step of 1-100 fits under it.
		name: "stepWeight under the default maxWeight of 100",
		edit: func(c *v1beta1.Canary) { c.Spec.Analysis.MaxWeight, c.Spec.Analysis.StepWeight = 0, 60 },
	}, {
		name: "weights outside 0-100, reported together",
		edit: func(c *v1beta1.Canary) {
			c.Spec.Analysis.MaxWeight = 150
			c.Spec.Analysis.StepWeight = -5
			c.Spec.Analysis.StepWeightPromotion = 101
			c.Spec.Analysis.CanaryReadyThreshold = new(120)
		},
		errors: []string{
			"spec.analysis.maxWeight: Invalid value: 150: must be between 0 and 100 (percent)",
			"spec.analysis.stepWeight: Invalid value: -5: must be between 0 and 100 (percent)",
			"spec.analysis.stepWeightPromotion: Invalid value: 101: must be between 0 and 100 (percent)",
			"spec.analysis.canaryReadyThreshold: Invalid value: 120: must be between 0 and 100 (percent)",
		},
	}, {
		name: "stepWeights must increase and stay within 1-100",
		edit: func(c *v1beta1.Canary) { c.Spec.Analysis.StepWeights = []int{0, 10, 10, 5, 200} },
		errors: []string{
			"spec.analysis.stepWeights[0]: Invalid value: 0: must be between 1 and 100 (percent)",
			"spec.analysis.stepWeights[2]: Invalid value: 10: must be greater than spec.analysis.stepWeights[1] (10)",
			"spec.analysis.stepWeights[3]: Invalid value: 5: must be greater than spec.analysis.stepWeights[2] (10)",
			"spec.analysis.stepWeights[4]: Invalid value: 200: must be between 1 and 100 (percent)",
		},
	}, {
		name: "stepWeights win over stepWeight, so stepWeight is not compared with maxWeight",
		edit: func(c *v1beta1.Canary) {
			c.Spec.Analysis.StepWeights = []int{5, 20, 60}
			c.Spec.Analysis.StepWeight = 70
		},
	}, {
		name: "durations that do not parse",
		edit: func(c *v1beta1.Canary) {
			c.Spec.Analysis.Interval = "30 seconds"
			c.Spec.Analysis.Metrics[0].Interval = "1d"
			c.Spec.Analysis.Metrics[1].Interval = "1.5m"
			c.Spec.Analysis.Webhooks = []v1beta1.CanaryWebhook{{Name: "load", URL: "http://loadtester.test/", Timeout: "soon"}}
		},
		errors: []string{
			`spec.analysis.interval: Invalid value: "30 seconds": must be a duration such as 30s, 1m or 1m30s`,
			`spec.analysis.metrics[0].interval: Invalid value: "1d": must be a duration such as 30s, 1m or 1m30s`,
			`spec.analysis.metrics[1].interval: Invalid value: "1.5m": must be a duration PromQL reads as a range too`,
			`spec.analysis.webhooks[0].timeout: Invalid value: "soon": must be a duration such as 30s, 1m or 1m30s`,
		},
	}, {
		name: "zero and negative durations",
		edit: func(c *v1beta1.Canary) { c.Spec.Analysis.Interval = "0s"; c.Spec.Analysis.Metrics[0].Interval = "-1m" },
		errors: []string{
			`spec.analysis.interval: Invalid value: "0s": must be positive`,
			`spec.analysis.metrics[0].interval: Invalid value: "-1m": must be positive`,
		},
	}, {
		name:   "success rate threshold is a percentage",
		edit:   func(c *v1beta1.Canary) { c.Spec.Analysis.Metrics[0].Threshold = 120 },
		errors: []string{"spec.analysis.metrics[0].threshold: Invalid value: 120: must be between 0 and 100: request-success-rate is a percentage"},
	}, {
		name:   "builtin metric without a threshold never fails, so it is refused",
		edit:   func(c *v1beta1.Canary) { c.Spec.Analysis.Metrics[1].Threshold = 0 },
		errors: []string{"spec.analysis.metrics[1].threshold: Required value: the highest p99 request duration in milliseconds, e.g. 500, or thresholdRange"},
	}, {
		name: "thresholdRange min above max, and an empty range",
		edit: func(c *v1beta1.Canary) {
			c.Spec.Analysis.Metrics[0].ThresholdRange = &v1beta1.CanaryThresholdRange{Min: new(99.0), Max: new(90.0)}
			c.Spec.Analysis.Metrics[1].ThresholdRange = &v1beta1.CanaryThresholdRange{}
		},
		errors: []string{
			"spec.analysis.metrics[0].thresholdRange.min: Invalid value: 99: must be <= spec.analysis.metrics[0].thresholdRange.max (90)",
			"spec.analysis.metrics[1].thresholdRange: Required value: set min, max or both",
		},
	}, {
		name: "thresholdRange replaces threshold",
		edit: func(c *v1beta1.Canary) {
			c.Spec.Analysis.Metrics[0].Threshold = 0
			c.Spec.Analysis.Metrics[0].ThresholdRange = &v1beta1.CanaryThresholdRange{Min: new(99.0)}
		},
	}, {
		name:   "unknown metric without templateRef",
		edit:   func(c *v1beta1.Canary) { c.Spec.Analysis.Metrics[0].Name = "error-rate" },
		errors: []string{`spec.analysis.metrics[0].name: Invalid value: "error-rate": is not a builtin metric (request-success-rate, request-duration): set templateRef to a MetricTemplate to use your own query`},
	}, {
		name: "custom metric with templateRef is valid, its threshold is free",
		edit: func(c *v1beta1.Canary) {
			c.Spec.Analysis.Metrics = append(c.Spec.Analysis.Metrics, v1beta1.CanaryMetric{
				Name: "error-rate", TemplateRef: &v1beta1.CrossNamespaceObjectReference{Name: "error-rate", Namespace: "coalmine-system"},
				Threshold: -1, Interval: "1m", OnNoData: v1beta1.NoDataSkip,
			})
		},
	}, {
		name: "duplicate metric names would collide in status",
		edit: func(c *v1beta1.Canary) {
			c.Spec.Analysis.Metrics[1].Name = v1beta1.MetricRequestSuccessRate
			c.Spec.Analysis.Metrics[1].Threshold = 98
		},
		errors: []string{`spec.analysis.metrics[1].name: Duplicate value: "request-success-rate"`},
	}, {
		name:   "onNoData is fail or skip",
		edit:   func(c *v1beta1.Canary) { c.Spec.Analysis.Metrics[0].OnNoData = "ignore" },
		errors: []string{`spec.analysis.metrics[0].onNoData: Unsupported value: "ignore": supported values: "fail", "skip"`},
	}, {
		name:   "targetRef must be a Deployment",
		edit:   func(c *v1beta1.Canary) { c.Spec.TargetRef.Kind = "DaemonSet" },
		errors: []string{`spec.targetRef.kind: Unsupported value: "DaemonSet": supported values: "Deployment"`},
	}, {
		name: "targetRef kind may be left empty",
		edit: func(c *v1beta1.Canary) { c.Spec.TargetRef.Kind, c.Spec.TargetRef.APIVersion = "", "" },
	}, {
		name:   "service.port is required",
		edit:   func(c *v1beta1.Canary) { c.Spec.Service.Port = 0 },
		errors: []string{"spec.service.port: Required value: the ClusterIP port of the apex, primary and canary Services"},
	}, {
		name: "service ports and names",
		edit: func(c *v1beta1.Canary) {
			c.Spec.Service.TargetPort = intstr.FromInt32(70000)
			c.Spec.Service.PortName = "HTTP_port"
			c.Spec.Service.Apex.Labels = map[string]string{"bad key!": "x"}
		},
		errors: []string{
			"spec.service.targetPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
			`spec.service.portName: Invalid value: "HTTP_port"`,
			`spec.service.apex.labels: Invalid value: "bad key!"`,
		},
	}, {
		name: "Service names derived from a long target name must fit",
		edit: func(c *v1beta1.Canary) {
			c.Spec.Service.Name = ""
			c.Spec.TargetRef.Name = strings.Repeat("a", 60)
		},
		errors: []string{"spec.targetRef.name: Invalid value: \"" + strings.Repeat("a", 60) + "\": names the Services"},
	}, {
		name: "iterations is blue/green, with match A/B testing",
		edit: func(c *v1beta1.Canary) {
			c.Spec.Analysis.Iterations = 10
			c.Spec.Analysis.Match = []v1beta1.HTTPMatchRequest{
				{Headers: map[string]v1beta1.StringMatch{"x-canary": {Exact: "insider"}}},
				{Headers: map[string]v1beta1.StringMatch{"cookie": {Regex: "^(.*?;)?(canary=always)(;.*)?$"}}},
				{Uri: &v1beta1.StringMatch{Prefix: "/api"}, Method: &v1beta1.StringMatch{Exact: "GET"}, Headers: map[string]v1beta1.StringMatch{"x-beta": {}}},
			}
		},
	}, {
		name:   "negative iterations",
		edit:   func(c *v1beta1.Canary) { c.Spec.Analysis.Iterations = -1 },
		errors: []string{"spec.analysis.iterations: Invalid value: -1: must be >= 0 (passed checks before a blue/green or A/B testing promotion; 0 means a weighted canary)"},
	}, {
		name: "match: what Kuma cannot route on is refused by name",
		edit: func(c *v1beta1.Canary) {
			c.Spec.Analysis.Iterations = 2
			c.Spec.Analysis.Match = []v1beta1.HTTPMatchRequest{
				{QueryParams: map[string]v1beta1.StringMatch{"beta": {Exact: "1"}}, SourceLabels: map[string]string{"app": "x"}},
				{},
				{Headers: map[string]v1beta1.StringMatch{"X-Canary": {Exact: "a", Prefix: "b"}, "cookie": {Regex: "(("}}},
				{Method: &v1beta1.StringMatch{Prefix: "G"}},
				{Method: &v1beta1.StringMatch{Exact: "get"}},
				{Uri: &v1beta1.StringMatch{Regex: "/api/.*"}},
			}
		},
		errors: []string{
			`spec.analysis.match[0].sourceLabels: Forbidden: sourceLabels has no equivalent in Kuma's TrafficRoute or MeshHTTPRoute; match on headers (a cookie is the "cookie" header), uri or method instead`,
			`spec.analysis.match[0].queryParams: Forbidden: queryParams has no equivalent in Kuma's TrafficRoute or MeshHTTPRoute; match on headers (a cookie is the "cookie" header), uri or method instead`,
			`spec.analysis.match[0]: Required value: a match needs headers, uri or method: an empty one would send every request to the canary`,
			`spec.analysis.match[1]: Required value: a match needs headers, uri or method: an empty one would send every request to the canary`,
			`spec.analysis.match[2].headers[X-Canary]: Invalid value: "X-Canary": header names must be lower case (Flagger's rule; Envoy compares them in lower case)`,
			`spec.analysis.match[2].headers[X-Canary]: Invalid value: {"exact":"a","prefix":"b"}: set one of exact, prefix, suffix or regex`,
			"spec.analysis.match[2].headers[cookie].regex: Invalid value: \"((\": not an RE2 regular expression: error parsing regexp: missing closing ): `((`",
			`spec.analysis.match[3].method: Invalid value: {"prefix":"G"}: only exact is served (MeshHTTPRoute matches a method exactly)`,
			`spec.analysis.match[4].method.exact: Unsupported value: "get": supported values: "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"`,
			`spec.analysis.match[5].uri: Invalid value: {"regex":"/api/.*"}: only exact and prefix are served: Kuma's MeshHTTPRoute ranks a regular expression below the catch-all path prefix, so it would never match; match on a header instead`,
		},
	}, {
		name:   "route kind annotation",
		edit:   func(c *v1beta1.Canary) { c.Annotations[v1beta1.AnnotationRouteKind] = "HTTPRoute" },
		errors: []string{`metadata.annotations[coalmine.dev/route-kind]: Unsupported value: "HTTPRoute": supported values: "TrafficRoute", "MeshHTTPRoute"`},
	}, {
		name: "webhooks need a name and an http URL",
		edit: func(c *v1beta1.Canary) {
			c.Spec.Analysis.Webhooks = []v1beta1.CanaryWebhook{{Type: "pre-rollout", URL: "loadtester:8080"}, {Type: "sometimes", Name: "x", URL: "http://x/"}}
		},
		errors: []string{
			"spec.analysis.webhooks[0].name: Required value",
			`spec.analysis.webhooks[0].url: Invalid value: "loadtester:8080": must be an absolute http or https URL`,
			`spec.analysis.webhooks[1].type: Unsupported value: "sometimes"`,
		},
	}, {
		name:   "provider is kuma",
		edit:   func(c *v1beta1.Canary) { c.Spec.Provider = "istio" },
		errors: []string{`spec.provider: Unsupported value: "istio": supported values: "kuma"`},
	}}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := seed(t)
			tc.edit(c)
			errs := ValidateCanary(c)
			got := errs.ToAggregate()
			if len(tc.errors) == 0 {
				if got != nil {
					t.Fatalf("want valid, got %v", got)
				}
				return
			}
			if len(errs) != len(tc.errors) {
				t.Errorf("got %d errors, want %d: %v", len(errs), len(tc.errors), got)
			}
			for _, want := range tc.errors {
				if got == nil || !strings.Contains(got.Error(), want) {
					t.Errorf("errors %v\ndo not include %q", got, want)
				}
			}
		})
	}
}

// Scenario 11: a rename would leak the old Services and route (and a retarget would
// leave the old Deployment paused), so the names are immutable; the route kind is not.
func TestSafety11ServiceNameImmutable(t *testing.T) {
	const fix = "delete the Canary, whose finalizer releases Deployment alice and removes the Services alice, alice-primary and alice-canary and their route, and create a new one for the apex name "
	cases := []struct {
		name   string
		old    func(c *v1beta1.Canary) // applied to the seed before edit; nil leaves it
		edit   func(c *v1beta1.Canary)
		errors []string // each a whole field error; none means allowed
	}{{
		name:   "service.name change is refused with the way out",
		edit:   func(c *v1beta1.Canary) { c.Spec.Service.Name = "web" },
		errors: []string{`spec.service.name: Invalid value: "web": is immutable (was "alice"): ` + fix + `"web"`},
	}, {
		name: "clearing service.name that equals the target's name keeps the apex",
		edit: func(c *v1beta1.Canary) { c.Spec.Service.Name = "" },
	}, {
		name: "spelling out service.name as the target's name keeps the apex",
		old:  func(c *v1beta1.Canary) { c.Spec.Service.Name = "" },
		edit: func(c *v1beta1.Canary) { c.Spec.Service.Name = "alice" },
	}, {
		name: "clearing service.name that differs from the target's name moves the apex",
		old:  func(c *v1beta1.Canary) { c.Spec.Service.Name = "web" },
		edit: func(c *v1beta1.Canary) { c.Spec.Service.Name = "" },
		errors: []string{`spec.service.name: Invalid value: "": is immutable (was "web"): delete the Canary, whose finalizer releases Deployment alice and ` +
			`removes the Services web, web-primary and web-canary and their route, and create a new one for the apex name "alice"`},
	}, {
		name:   "target name change with service.name unset is one error, on the target",
		old:    func(c *v1beta1.Canary) { c.Spec.Service.Name = "" },
		edit:   func(c *v1beta1.Canary) { c.Spec.Service.Name = ""; c.Spec.TargetRef.Name = "bob" },
		errors: []string{`spec.targetRef.name: Invalid value: "bob": is immutable (was "alice"): delete the Canary, which releases Deployment alice, and create one for the other target`},
	}, {
		name: "target and service.name change are both refused",
		edit: func(c *v1beta1.Canary) { c.Spec.TargetRef.Name = "bob"; c.Spec.Service.Name = "bob" },
		errors: []string{
			`spec.targetRef.name: Invalid value: "bob": is immutable (was "alice")`,
			`spec.service.name: Invalid value: "bob": is immutable (was "alice"): ` + fix + `"bob"`,
		},
	}, {
		name: "targetRef.kind change is refused",
		edit: func(c *v1beta1.Canary) { c.Spec.TargetRef.Kind = "StatefulSet" },
		errors: []string{
			`spec.targetRef.kind: Unsupported value: "StatefulSet"`,
			`spec.targetRef.kind: Invalid value: "StatefulSet": is immutable (was "Deployment")`,
		},
	}, {
		name: "targetRef.apiVersion change is refused",
		edit: func(c *v1beta1.Canary) { c.Spec.TargetRef.APIVersion = "apps/v1beta2" },
		errors: []string{
			`spec.targetRef.apiVersion: Unsupported value: "apps/v1beta2"`,
			`spec.targetRef.apiVersion: Invalid value: "apps/v1beta2": is immutable (was "apps/v1")`,
		},
	}, {
		name: "spelling out the default kind and apiVersion is no change",
		old:  func(c *v1beta1.Canary) { c.Spec.TargetRef.Kind, c.Spec.TargetRef.APIVersion = "", "" },
		edit: func(*v1beta1.Canary) {},
	}, {
		name: "dropping the default kind and apiVersion is no change",
		edit: func(c *v1beta1.Canary) { c.Spec.TargetRef.Kind, c.Spec.TargetRef.APIVersion = "", "" },
	}, {
		name: "route kind change is allowed: the loop cleans up the old route",
		old:  func(c *v1beta1.Canary) { c.Annotations[v1beta1.AnnotationRouteKind] = v1beta1.RouteKindTrafficRoute },
		edit: func(c *v1beta1.Canary) { c.Annotations[v1beta1.AnnotationRouteKind] = v1beta1.RouteKindMeshHTTPRoute },
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			old := seed(t)
			if tc.old != nil {
				tc.old(old)
			}
			c := old.DeepCopy()
			tc.edit(c)
			errs := ValidateCanaryUpdate(c, old)
			if len(errs) != len(tc.errors) {
				t.Errorf("got %d errors, want %d: %v", len(errs), len(tc.errors), errs.ToAggregate())
			}
			for _, want := range tc.errors {
				if agg := errs.ToAggregate(); agg == nil || !strings.Contains(agg.Error(), want) {
					t.Errorf("errors %v\ndo not include %q", agg, want)
				}
			}
		})
	}
}

func TestCanaryValidator(t *testing.T) {
	v := &CanaryValidator{}
	bad := seed(t)
	bad.Spec.Analysis.StepWeight = 60
	bad.Spec.Analysis.Interval = "soon"

	t.Run("denial is a 422 Invalid with one cause per field", func(t *testing.T) {
		resp := v.Handle(context.Background(), review(t, admissionv1.Create, adminUser, canariesResource, bad, nil))
		if resp.Allowed {
			t.Fatal("allowed")
		}
		r := resp.Result
		if r.Code != http.StatusUnprocessableEntity || r.Reason != metav1.StatusReasonInvalid {
			t.Errorf("code %d reason %s, want 422 Invalid", r.Code, r.Reason)
		}
		if r.Details == nil || len(r.Details.Causes) != 2 {
			t.Fatalf("want 2 causes, got %+v", r.Details)
		}
		fields := []string{r.Details.Causes[0].Field, r.Details.Causes[1].Field}
		if fields[0] != "spec.analysis.interval" || fields[1] != "spec.analysis.stepWeight" {
			t.Errorf("cause fields %v", fields)
		}
		want := `Canary.coalmine.dev "alice" is invalid: [spec.analysis.interval: Invalid value: "soon": must be a duration such as 30s, 1m or 1m30s, spec.analysis.stepWeight: Invalid value: 60: must be <= spec.analysis.maxWeight (50)]`
		if r.Message != want {
			t.Errorf("message\n%s\nwant\n%s", r.Message, want)
		}
	})
	t.Run("valid create is allowed", func(t *testing.T) {
		if resp := v.Handle(context.Background(), review(t, admissionv1.Create, adminUser, canariesResource, seed(t), nil)); !resp.Allowed {
			t.Fatalf("denied: %s", resp.Result.Message)
		}
	})
	t.Run("finalizer removal on an invalid Canary is allowed", func(t *testing.T) {
		withFinalizer := bad.DeepCopy()
		withFinalizer.Finalizers = []string{v1beta1.Finalizer}
		resp := v.Handle(context.Background(), review(t, admissionv1.Update, controllerUser, canariesResource, bad, withFinalizer))
		if !resp.Allowed {
			t.Fatalf("denied: %s", resp.Result.Message)
		}
	})
	t.Run("spec change of an invalid Canary is judged", func(t *testing.T) {
		changed := bad.DeepCopy()
		changed.Spec.Analysis.Threshold = 3
		resp := v.Handle(context.Background(), review(t, admissionv1.Update, adminUser, canariesResource, changed, bad))
		if resp.Allowed {
			t.Fatal("allowed")
		}
	})
	// The webhook fails open and skips the rules for metadata-only updates and deletion;
	// the immutable fields are judged on every update all the same.
	renamed := func(c *v1beta1.Canary) *v1beta1.Canary {
		c = c.DeepCopy()
		c.Spec.Service.Name = "web"
		return c
	}
	t.Run("rename of an invalid Canary reports the rules and the immutable name", func(t *testing.T) {
		resp := v.Handle(context.Background(), review(t, admissionv1.Update, adminUser, canariesResource, renamed(bad), bad))
		if resp.Allowed {
			t.Fatal("allowed")
		}
		if got := causeFields(resp); strings.Join(got, " ") != "spec.analysis.interval spec.analysis.stepWeight spec.service.name" {
			t.Errorf("cause fields %v", got)
		}
	})
	t.Run("rename of a Canary being deleted is refused", func(t *testing.T) {
		deleting := seed(t)
		deleting.DeletionTimestamp = &metav1.Time{}
		deleting.Finalizers = []string{v1beta1.Finalizer}
		resp := v.Handle(context.Background(), review(t, admissionv1.Update, adminUser, canariesResource, renamed(deleting), deleting))
		if resp.Allowed {
			t.Fatal("allowed")
		}
		if got := causeFields(resp); len(got) != 1 || got[0] != "spec.service.name" {
			t.Errorf("cause fields %v, want spec.service.name", got)
		}
	})
	t.Run("finalizer removal of an invalid Canary being deleted is allowed", func(t *testing.T) {
		deleting := bad.DeepCopy()
		deleting.DeletionTimestamp = &metav1.Time{}
		released := deleting.DeepCopy()
		deleting.Finalizers = []string{v1beta1.Finalizer}
		if resp := v.Handle(context.Background(), review(t, admissionv1.Update, controllerUser, canariesResource, released, deleting)); !resp.Allowed {
			t.Fatalf("denied: %s", resp.Result.Message)
		}
	})
	t.Run("garbage is a 400", func(t *testing.T) {
		req := review(t, admissionv1.Create, adminUser, canariesResource, seed(t), nil)
		req.Object.Raw = json.RawMessage(`{"spec":{"service":{"port":"eighty"}}}`)
		if resp := v.Handle(context.Background(), req); resp.Allowed || resp.Result.Code != http.StatusBadRequest {
			t.Fatalf("got %+v", resp.AdmissionResponse)
		}
	})
}

// causeFields are the field paths of a denial's causes, in order.
func causeFields(resp admission.Response) []string {
	if resp.Result == nil || resp.Result.Details == nil {
		return nil
	}
	var fields []string
	for _, c := range resp.Result.Details.Causes {
		fields = append(fields, c.Field)
	}
	return fields
}
