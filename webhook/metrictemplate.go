package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// MetricTemplateValidator refuses MetricTemplates whose provider is not Prometheus or
// whose query does not parse as PromQL once templated.
type MetricTemplateValidator struct{}

var _ admission.Handler = &MetricTemplateValidator{}

// Handle implements admission.Handler.
func (v *MetricTemplateValidator) Handle(_ context.Context, req admission.Request) admission.Response {
	if req.Operation != admissionv1.Create && req.Operation != admissionv1.Update || req.SubResource != "" {
		return admission.Allowed("")
	}
	var t v1beta1.MetricTemplate
	if err := json.Unmarshal(req.Object.Raw, &t); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decode MetricTemplate: %w", err))
	}
	if req.Operation == admissionv1.Update {
		var old v1beta1.MetricTemplate
		if err := json.Unmarshal(req.OldObject.Raw, &old); err != nil {
			return admission.Errored(http.StatusBadRequest, fmt.Errorf("decode old MetricTemplate: %w", err))
		}
		if t.DeletionTimestamp != nil || equality.Semantic.DeepEqual(old.Spec, t.Spec) {
			return admission.Allowed("")
		}
	}
	return invalidResponse(v1beta1.GroupVersion.WithKind("MetricTemplate").GroupKind(), t.Name, ValidateMetricTemplate(&t))
}

// ValidateMetricTemplate checks a MetricTemplate: a Prometheus provider that can be
// reached as written, and a query that parses as PromQL after templating with sample
// values for name, namespace, target, service, interval and every variables.key.
func ValidateMetricTemplate(t *v1beta1.MetricTemplate) field.ErrorList {
	var errs field.ErrorList
	p := field.NewPath("spec", "provider")
	pr := t.Spec.Provider
	if pr.Type != "" && pr.Type != "prometheus" {
		errs = append(errs, field.NotSupported(p.Child("type"), pr.Type, []string{"prometheus"}))
	}
	if pr.Address != "" {
		errs = append(errs, validateHTTPURL(p.Child("address"), pr.Address)...)
	}
	if pr.Timeout != "" {
		errs = append(errs, validateDuration(p.Child("timeout"), pr.Timeout)...)
	}
	if pr.SecretRef != nil && pr.SecretRef.Name == "" {
		errs = append(errs, field.Required(p.Child("secretRef", "name"), "the Secret with username/password, token or ca.crt"))
	}
	for k, vs := range pr.Headers {
		if !validHeaderName(k) {
			errs = append(errs, field.Invalid(p.Child("headers").Key(k), k, "must be an HTTP header name"))
		}
		for i, v := range vs {
			if strings.ContainsAny(v, "\r\n\x00") {
				errs = append(errs, field.Invalid(p.Child("headers").Key(k).Index(i), v, "must not contain CR, LF or NUL"))
			}
		}
	}

	qp := field.NewPath("spec", "query")
	if t.Spec.Query == "" {
		errs = append(errs, field.Required(qp, "a PromQL query"))
	} else if err := checkQuery(t.Spec.Query); err != nil {
		errs = append(errs, field.Invalid(qp, field.OmitValueType{}, err.Error()))
	}
	return errs
}

// validHeaderName reports whether s is an RFC 9110 token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r > 0x7e || !(r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' ||
			r == '!' || r == '#' || r == '$' || r == '%' || r == '&' || r == '\'' || r == '*' ||
			r == '+' || r == '-' || r == '.' || r == '^' || r == '_' || r == '`' || r == '|' || r == '~') {
			return false
		}
	}
	return true
}
