package webhook

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// refusedSamples are Flagger values of every refused field, as a Flagger Canary writes
// them (JSON). A refusal without a sample fails the test: each one is exercised.
var refusedSamples = map[string]string{
	"spec.provider":                            `"istio"`,
	"spec.targetRef.kind":                      `"DaemonSet"`,
	"spec.targetRef.apiVersion":                `"apps/v1beta2"`,
	"spec.autoscalerRef.primaryScalerQueries":  `{"q":"sum(up)"}`,
	"spec.autoscalerRef.primaryScalerReplicas": `{"minReplicas":2,"maxReplicas":4}`,
	"spec.ingressRef":                          `{"apiVersion":"networking.k8s.io/v1","kind":"Ingress","name":"alice"}`,
	"spec.routeRef":                            `{"apiVersion":"apisix.apache.org/v2","kind":"ApisixRoute","name":"alice"}`,
	"spec.upstreamRef":                         `{"apiVersion":"gloo.solo.io/v1","kind":"Upstream","name":"alice","namespace":"gloo"}`,
	"spec.canaryAnalysis":                      `{"interval":"1m","threshold":5,"stepWeight":10}`,
	"spec.service.timeout":                     `"30s"`,
	"spec.service.backendTimeout":              `"5s"`,
	"spec.service.headless":                    `true`,
	"spec.service.gateways":                    `["public-gateway.istio-system.svc.cluster.local"]`,
	"spec.service.gatewayRefs":                 `[{"name":"gateway","namespace":"istio-ingress"}]`,
	"spec.service.hosts":                       `["app.example.com"]`,
	"spec.service.delegation":                  `true`,
	"spec.service.trafficPolicy":               `{"tls":{"mode":"ISTIO_MUTUAL"}}`,
	"spec.service.match":                       `[{"uri":{"prefix":"/"}}]`,
	"spec.service.rewrite":                     `{"uri":"/"}`,
	"spec.service.retries":                     `{"attempts":3,"perTryTimeout":"1s","retryOn":"gateway-error"}`,
	"spec.service.headers":                     `{"request":{"add":{"x-some-header":"value"}}}`,
	"spec.service.mirror":                      `[{"backendRef":{"name":"alice-shadow","port":8080}}]`,
	"spec.service.corsPolicy":                  `{"allowOrigin":["example.com"],"allowMethods":["GET"]}`,
	"spec.service.meshName":                    `"global"`,
	"spec.service.backends":                    `["backend.default"]`,
	"spec.analysis.mirror":                     `true`,
	"spec.analysis.mirrorWeight":               `20`,
	"spec.analysis.sessionAffinity":            `{"cookieName":"flagger-cookie","maxAge":21600}`,
}

// withField is the seed Canary with path set to the JSON value, as raw JSON.
func withField(t *testing.T, path, value string) []byte {
	t.Helper()
	var obj map[string]any
	if err := json.Unmarshal(mustJSON(t, seed(t)), &obj); err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal([]byte(value), &v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	keys := strings.Split(path, ".")
	m := obj
	for _, k := range keys[:len(keys)-1] {
		next, ok := m[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[k] = next
		}
		m = next
	}
	m[keys[len(keys)-1]] = v
	b, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestUnsupportedFieldsRefusedByName: each refused Flagger field, written as a Flagger
// Canary writes it, is denied by the webhook with an error naming the field and saying
// what to use instead, the same message the loop reports (Ready=False, InvalidSpec).
func TestUnsupportedFieldsRefusedByName(t *testing.T) {
	v := &CanaryValidator{}
	for _, r := range v1beta1.Refusals {
		t.Run(r.Path, func(t *testing.T) {
			sample, ok := refusedSamples[r.Path]
			if !ok {
				t.Fatalf("no Flagger sample value for refused field %s: add one to refusedSamples", r.Path)
			}
			raw := withField(t, r.Path, sample)
			var c v1beta1.Canary
			if err := json.Unmarshal(raw, &c); err != nil {
				t.Fatalf("decode: %v", err)
			}
			errs := v1beta1.UnsupportedFields(&c)
			if len(errs) != 1 || errs[0].Field != r.Path {
				t.Fatalf("UnsupportedFields = %v, want exactly one error for %s", errs, r.Path)
			}
			loopMessage := errs[0].Error()
			if !strings.Contains(loopMessage, r.Why) && !strings.Contains(loopMessage, "Unsupported value") {
				t.Errorf("message %q does not say why and what instead (%q)", loopMessage, r.Why)
			}

			req := review(t, admissionv1.Create, adminUser, canariesResource, nil, nil)
			req.Name, req.Object.Raw = c.Name, raw
			resp := v.Handle(context.Background(), req)
			if resp.Allowed {
				t.Fatalf("a Canary with %s was allowed", r.Path)
			}
			if !strings.Contains(resp.Result.Message, loopMessage) {
				t.Errorf("webhook message\n%s\ndoes not carry the loop's\n%s", resp.Result.Message, loopMessage)
			}
			found := false
			for _, cause := range resp.Result.Details.Causes {
				found = found || cause.Field == r.Path
			}
			if !found {
				t.Errorf("no cause names %s: %+v", r.Path, resp.Result.Details.Causes)
			}
		})
	}
	t.Run("the seed's Canary sets none", func(t *testing.T) {
		if errs := v1beta1.UnsupportedFields(seed(t)); len(errs) > 0 {
			t.Fatalf("refused: %v", errs)
		}
	})
}

// TestFlaggerFieldValues: the Flagger fields coalmine does are checked like the others.
func TestFlaggerFieldValues(t *testing.T) {
	cases := []struct {
		name  string
		path  string
		value string
		error string // "" means valid
	}{
		{"canaryReplicas a number", "spec.canaryReplicas", `2`, ""},
		{"canaryReplicas a percentage", "spec.canaryReplicas", `"25%"`, ""},
		{"canaryReplicas zero", "spec.canaryReplicas", `0`, "spec.canaryReplicas: Invalid value"},
		{"canaryReplicas above 100%", "spec.canaryReplicas", `"150%"`, "spec.canaryReplicas: Invalid value"},
		{"autoscalerRef to an HPA", "spec.autoscalerRef", `{"apiVersion":"autoscaling/v2","kind":"HorizontalPodAutoscaler","name":"alice"}`, ""},
		{"autoscalerRef to something else", "spec.autoscalerRef", `{"apiVersion":"apps/v1","kind":"Deployment","name":"alice"}`, `spec.autoscalerRef.kind: Unsupported value: "Deployment"`},
		{"trafficDistribution", "spec.service.trafficDistribution", `"PreferClose"`, ""},
		{"trafficDistribution typo", "spec.service.trafficDistribution", `"Closest"`, "spec.service.trafficDistribution: Unsupported value"},
		{"portDiscovery", "spec.service.portDiscovery", `true`, ""},
		{"revertOnDeletion", "spec.revertOnDeletion", `true`, ""},
		{"inline query", "spec.analysis.metrics", `[{"name":"errors","query":"sum(errors{app=\"{{ target }}\"})","threshold":1}]`, ""},
		{"inline query that does not parse", "spec.analysis.metrics", `[{"name":"errors","query":"sum(errors{","threshold":1}]`, "spec.analysis.metrics[0].query: Invalid value"},
		{"confirm-traffic-increase", "spec.analysis.webhooks", `[{"name":"gate","type":"confirm-traffic-increase","url":"http://gate/"}]`, ""},
		{"disableTLS", "spec.analysis.webhooks", `[{"name":"gate","url":"https://gate/","disableTLS":true}]`, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var c v1beta1.Canary
			if err := json.Unmarshal(withField(t, tc.path, tc.value), &c); err != nil {
				t.Fatal(err)
			}
			errs := ValidateCanary(&c).ToAggregate()
			switch {
			case tc.error == "" && errs != nil:
				t.Errorf("want valid, got %v", errs)
			case tc.error != "" && (errs == nil || !strings.Contains(errs.Error(), tc.error)):
				t.Errorf("got %v, want %q", errs, tc.error)
			}
		})
	}
}
