package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/prometheus/common/model"
	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// CanaryValidator refuses malformed Canaries, naming every offending field at once.
type CanaryValidator struct{}

var _ admission.Handler = &CanaryValidator{}

// Handle implements admission.Handler.
func (v *CanaryValidator) Handle(_ context.Context, req admission.Request) admission.Response {
	if req.Operation != admissionv1.Create && req.Operation != admissionv1.Update || req.SubResource != "" {
		return admission.Allowed("")
	}
	var c v1beta1.Canary
	if err := json.Unmarshal(req.Object.Raw, &c); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decode Canary: %w", err))
	}
	var errs field.ErrorList
	if req.Operation == admissionv1.Update {
		var old v1beta1.Canary
		if err := json.Unmarshal(req.OldObject.Raw, &old); err != nil {
			return admission.Errored(http.StatusBadRequest, fmt.Errorf("decode old Canary: %w", err))
		}
		// Finalizer, label and owner changes of an unchanged spec, and any update of a
		// Canary being deleted, skip the rules of a Canary, so that one created while the
		// webhook was down can still be finalised and deleted. The immutable fields are
		// judged on every update: they refuse only a change of themselves. So is an operator
		// command (coalmine.dev/command) alone: abort must work on a Canary whose spec would
		// not pass today's rules.
		switch {
		case c.DeletionTimestamp != nil:
			errs = validateImmutable(&c, &old)
		case equality.Semantic.DeepEqual(old.Spec, c.Spec) &&
			equality.Semantic.DeepEqual(withoutCommand(old.Annotations), withoutCommand(c.Annotations)):
			errs = validateImmutable(&c, &old)
			if c.Annotations[v1beta1.AnnotationCommand] != old.Annotations[v1beta1.AnnotationCommand] {
				errs = append(errs, validateCommand(&c)...)
			}
		default:
			errs = ValidateCanaryUpdate(&c, &old)
		}
	} else {
		errs = ValidateCanary(&c)
	}
	return invalidResponse(v1beta1.GroupVersion.WithKind("Canary").GroupKind(), c.Name, errs)
}

// withoutCommand is a copy of a Canary's annotations without the operator command and
// its stamp.
func withoutCommand(ann map[string]string) map[string]string {
	out := maps.Clone(ann)
	delete(out, v1beta1.AnnotationCommand)
	delete(out, v1beta1.AnnotationCommandBy)
	return out
}

// validateCommand refuses an operator command coalmine does not know, so that a typo in
// `kubectl annotate` fails at once instead of in an Event.
func validateCommand(c *v1beta1.Canary) field.ErrorList {
	cmd := c.Annotations[v1beta1.AnnotationCommand]
	if cmd == "" || slices.Contains(v1beta1.Commands, cmd) {
		return nil
	}
	return field.ErrorList{field.NotSupported(field.NewPath("metadata", "annotations").Key(v1beta1.AnnotationCommand), cmd, v1beta1.Commands)}
}

// invalidResponse allows when errs is empty, else denies with a 422 Invalid status whose
// causes carry one field path each, the way the apiserver reports its own validation.
func invalidResponse(gk schema.GroupKind, name string, errs field.ErrorList) admission.Response {
	if len(errs) == 0 {
		return admission.Allowed("")
	}
	status := apierrors.NewInvalid(gk, name, errs).ErrStatus
	resp := admission.ValidationResponse(false, "")
	resp.Result = &status
	return resp
}

// ValidateCanaryUpdate is ValidateCanary plus the rules of a change: the target and the
// apex name are immutable. Moving them would leave the old Deployment paused and managed,
// or the old Services and route in place; deleting the Canary releases all of them through
// its finalizer, and a new Canary takes the new names. The loop guards the same rule,
// since this webhook fails open.
func ValidateCanaryUpdate(c, old *v1beta1.Canary) field.ErrorList {
	return append(ValidateCanary(c), validateImmutable(c, old)...)
}

// validateImmutable refuses changes of the fields that may not change. It only judges
// what the request changes, so an update of anything else (a finalizer removal on an
// invalid Canary, a route-kind change, which the loop cleans up after) always passes it.
func validateImmutable(c, old *v1beta1.Canary) field.ErrorList {
	return append(validateTargetRefUpdate(c, old), validateApexNameUpdate(c, old)...)
}

// validateTargetRefUpdate refuses a targetRef that points elsewhere. Kind and apiVersion
// are compared as the loop reads them (unset means Deployment, apps/v1), so spelling out
// a default is no change.
func validateTargetRefUpdate(c, old *v1beta1.Canary) field.ErrorList {
	p := field.NewPath("spec", "targetRef")
	fix := fmt.Sprintf("delete the Canary, which releases Deployment %s, and create one for the other target", old.Spec.TargetRef.Name)
	var errs field.ErrorList
	for _, f := range []struct {
		name, now, was, unset string
	}{
		{"apiVersion", c.Spec.TargetRef.APIVersion, old.Spec.TargetRef.APIVersion, "apps/v1"},
		{"kind", c.Spec.TargetRef.Kind, old.Spec.TargetRef.Kind, "Deployment"},
		{"name", c.Spec.TargetRef.Name, old.Spec.TargetRef.Name, ""},
	} {
		if orDefault(f.now, f.unset) != orDefault(f.was, f.unset) {
			errs = append(errs, immutable(p.Child(f.name), f.now, orDefault(f.was, f.unset), fix))
		}
	}
	return errs
}

// validateApexNameUpdate refuses a change of the apex name, service.name or (when unset)
// the target's name: it names the apex, primary and canary Services and the route. When
// service.name is unset on both sides the apex follows targetRef.name, whose change
// validateTargetRefUpdate reports already.
func validateApexNameUpdate(c, old *v1beta1.Canary) field.ErrorList {
	apex, was := c.ApexName(), old.ApexName()
	if apex == was || c.Spec.Service.Name == "" && old.Spec.Service.Name == "" {
		return nil
	}
	fix := fmt.Sprintf("delete the Canary, whose finalizer releases Deployment %s and removes the Services %s, %s and %s and their route, and create a new one for the apex name %q",
		old.Spec.TargetRef.Name, was, old.PrimaryName(), old.CanaryName(), apex)
	return field.ErrorList{immutable(field.NewPath("spec", "service", "name"), c.Spec.Service.Name, was, fix)}
}

// immutable is the error of a field that may not change once set, with the way out.
func immutable(p *field.Path, now, was, fix string) *field.Error {
	return field.Invalid(p, now, fmt.Sprintf("is immutable (was %q): %s", was, fix))
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// ValidateCanary checks the rules of DESIGN §3 on a Canary; every error names its field.
func ValidateCanary(c *v1beta1.Canary) field.ErrorList {
	errs := validateCommand(c)
	spec := field.NewPath("spec")

	if k := c.Annotations[v1beta1.AnnotationRouteKind]; k != "" && k != v1beta1.RouteKindTrafficRoute && k != v1beta1.RouteKindMeshHTTPRoute {
		errs = append(errs, field.NotSupported(field.NewPath("metadata", "annotations").Key(v1beta1.AnnotationRouteKind), k,
			[]string{v1beta1.RouteKindTrafficRoute, v1beta1.RouteKindMeshHTTPRoute}))
	}
	if s := c.Spec.MetricsServer; s != "" {
		errs = append(errs, validateHTTPURL(spec.Child("metricsServer"), s)...)
	}
	errs = append(errs, validateTargetRef(spec.Child("targetRef"), c.Spec.TargetRef)...)
	if p := c.Spec.ProgressDeadlineSeconds; p != nil && *p < 1 {
		errs = append(errs, field.Invalid(spec.Child("progressDeadlineSeconds"), *p, "must be at least 1"))
	}
	errs = append(errs, validateCanaryService(spec.Child("service"), c)...)
	if a := c.Spec.Analysis; a != nil {
		errs = append(errs, validateAnalysis(spec.Child("analysis"), a)...)
	}
	errs = append(errs, validateFlaggerExtras(spec, c)...)
	// The Flagger fields coalmine does not do on Kuma, by name with what to use instead;
	// the loop reports the same list, since this webhook fails open.
	return append(errs, v1beta1.UnsupportedFields(c)...)
}

// validateFlaggerExtras checks the values of the Flagger fields coalmine declares beyond
// the Kuma provider's (autoscalerRef, trafficDistribution) and of spec.canaryReplicas.
func validateFlaggerExtras(spec *field.Path, c *v1beta1.Canary) field.ErrorList {
	var errs field.ErrorList
	if c.Spec.FlaggerRefs != nil && c.Spec.AutoscalerRef != nil {
		r := c.Spec.AutoscalerRef
		switch r.Kind {
		case "", "HorizontalPodAutoscaler", "ScaledObject":
		default:
			errs = append(errs, field.NotSupported(spec.Child("autoscalerRef", "kind"), r.Kind, []string{"HorizontalPodAutoscaler", "ScaledObject"}))
		}
	}
	if v := c.Spec.CanaryReplicas; v != nil {
		if _, err := v1beta1.CanaryReplicasOf(v, 1); err != nil {
			errs = append(errs, field.Invalid(spec.Child("canaryReplicas"), v.String(),
				"must be a number of replicas (at least 1) or a percentage of the target's replicas from 1% to 100%: "+err.Error()))
		}
	}
	if td := c.Spec.Service.TrafficDistribution; td != "" {
		switch td {
		case "PreferClose", "PreferSameZone", "PreferSameNode":
		default:
			errs = append(errs, field.NotSupported(spec.Child("service", "trafficDistribution"), td, []string{"PreferClose", "PreferSameZone", "PreferSameNode"}))
		}
	}
	return errs
}

func validateTargetRef(p *field.Path, t v1beta1.LocalObjectReference) field.ErrorList {
	// kind and apiVersion: v1beta1.UnsupportedFields.
	var errs field.ErrorList
	if t.Name == "" {
		errs = append(errs, field.Required(p.Child("name"), "the Deployment to guard"))
	} else {
		for _, msg := range validation.IsDNS1123Subdomain(t.Name) {
			errs = append(errs, field.Invalid(p.Child("name"), t.Name, msg))
		}
	}
	return errs
}

func validateCanaryService(p *field.Path, c *v1beta1.Canary) field.ErrorList {
	var errs field.ErrorList
	s := c.Spec.Service
	switch {
	case s.Port == 0:
		errs = append(errs, field.Required(p.Child("port"), "the ClusterIP port of the apex, primary and canary Services"))
	default:
		for _, msg := range validation.IsValidPortNum(int(s.Port)) {
			errs = append(errs, field.Invalid(p.Child("port"), s.Port, msg))
		}
	}
	tp := p.Child("targetPort")
	switch {
	case s.TargetPort.Type == intstr.Int && s.TargetPort.IntVal != 0:
		for _, msg := range validation.IsValidPortNum(int(s.TargetPort.IntVal)) {
			errs = append(errs, field.Invalid(tp, s.TargetPort.IntVal, msg))
		}
	case s.TargetPort.Type == intstr.String && s.TargetPort.StrVal != "":
		for _, msg := range validation.IsValidPortName(s.TargetPort.StrVal) {
			errs = append(errs, field.Invalid(tp, s.TargetPort.StrVal, msg))
		}
	}
	if s.PortName != "" {
		for _, msg := range validation.IsValidPortName(s.PortName) {
			errs = append(errs, field.Invalid(p.Child("portName"), s.PortName, msg))
		}
	}
	// The Service names derive from service.name or the target's name; the longest one
	// must still be a Service name.
	if apex := c.ApexName(); apex != "" {
		np := p.Child("name")
		if s.Name == "" {
			np = field.NewPath("spec", "targetRef", "name")
		}
		if msgs := validation.IsDNS1035Label(c.CanaryName()); len(msgs) > 0 {
			errs = append(errs, field.Invalid(np, apex, fmt.Sprintf(
				"names the Services %s, %s and %s, which must be DNS-1035 labels: %s", apex, c.PrimaryName(), c.CanaryName(), msgs[0])))
		}
	}
	for _, m := range []struct {
		name string
		meta *v1beta1.CustomMetadata
	}{{"apex", s.Apex}, {"primary", s.Primary}, {"canary", s.Canary}} {
		if m.meta == nil {
			continue
		}
		mp := p.Child(m.name)
		errs = append(errs, metav1validation.ValidateLabels(m.meta.Labels, mp.Child("labels"))...)
		errs = append(errs, apivalidation.ValidateAnnotations(m.meta.Annotations, mp.Child("annotations"))...)
	}
	return errs
}

func validateAnalysis(p *field.Path, a *v1beta1.CanaryAnalysis) field.ErrorList {
	var errs field.ErrorList
	if a.Interval != "" {
		errs = append(errs, validateDuration(p.Child("interval"), a.Interval)...)
	}
	if a.Iterations < 0 {
		errs = append(errs, field.Invalid(p.Child("iterations"), a.Iterations,
			"must be >= 0 (passed checks before a blue/green or A/B testing promotion; 0 means a weighted canary)"))
	}
	if a.Threshold < 0 {
		errs = append(errs, field.Invalid(p.Child("threshold"), a.Threshold, fmt.Sprintf("must be >= 0 (failed checks before a rollback; 0 means the default, %d)", v1beta1.DefaultThreshold)))
	}
	errs = append(errs, validatePercent(p.Child("maxWeight"), a.MaxWeight)...)
	errs = append(errs, validatePercent(p.Child("stepWeight"), a.StepWeight)...)
	errs = append(errs, validatePercent(p.Child("stepWeightPromotion"), a.StepWeightPromotion)...)
	if a.CanaryReadyThreshold != nil {
		errs = append(errs, validatePercent(p.Child("canaryReadyThreshold"), *a.CanaryReadyThreshold)...)
	}
	if a.PrimaryReadyThreshold != nil {
		errs = append(errs, validatePercent(p.Child("primaryReadyThreshold"), *a.PrimaryReadyThreshold)...)
	}
	if len(a.StepWeights) == 0 && a.StepWeight > 0 {
		switch {
		case a.MaxWeight > 0 && a.StepWeight > a.MaxWeight:
			errs = append(errs, field.Invalid(p.Child("stepWeight"), a.StepWeight,
				fmt.Sprintf("must be <= %s (%d)", p.Child("maxWeight"), a.MaxWeight)))
		case a.MaxWeight == 0 && a.StepWeight > v1beta1.DefaultMaxWeight:
			errs = append(errs, field.Invalid(p.Child("stepWeight"), a.StepWeight,
				fmt.Sprintf("must be <= %s (unset: the default, %d)", p.Child("maxWeight"), v1beta1.DefaultMaxWeight)))
		}
	}
	sw := p.Child("stepWeights")
	for i, w := range a.StepWeights {
		switch {
		case w < 1 || w > 100:
			errs = append(errs, field.Invalid(sw.Index(i), w, "must be between 1 and 100 (percent)"))
		case i > 0 && w <= a.StepWeights[i-1]:
			errs = append(errs, field.Invalid(sw.Index(i), w,
				fmt.Sprintf("must be greater than %s (%d): weights increase step by step", sw.Index(i-1), a.StepWeights[i-1])))
		}
	}

	mp := p.Child("metrics")
	names := map[string]bool{}
	for i := range a.Metrics {
		m := &a.Metrics[i]
		if m.Name != "" && names[m.Name] {
			// Status keeps one entry per metric name.
			errs = append(errs, field.Duplicate(mp.Index(i).Child("name"), m.Name))
		}
		names[m.Name] = true
		errs = append(errs, validateMetric(mp.Index(i), m)...)
	}

	wp := p.Child("webhooks")
	for i := range a.Webhooks {
		errs = append(errs, validateHook(wp.Index(i), &a.Webhooks[i])...)
	}
	return errs
}

func validateMetric(p *field.Path, m *v1beta1.CanaryMetric) field.ErrorList {
	var errs field.ErrorList
	builtin := m.TemplateRef == nil && (m.Name == v1beta1.MetricRequestSuccessRate || m.Name == v1beta1.MetricRequestDuration)
	switch {
	case m.Name == "":
		errs = append(errs, field.Required(p.Child("name"), ""))
	case m.TemplateRef == nil && !builtin && m.Query == "":
		errs = append(errs, field.Invalid(p.Child("name"), m.Name, fmt.Sprintf(
			"is not a builtin metric (%s, %s): set templateRef to a MetricTemplate to use your own query",
			v1beta1.MetricRequestSuccessRate, v1beta1.MetricRequestDuration)))
	}
	if m.Query != "" && m.TemplateRef == nil && !builtin {
		// Flagger's deprecated inline query: run as a template on the Canary's server.
		if err := checkQuery(m.Query); err != nil {
			errs = append(errs, field.Invalid(p.Child("query"), field.OmitValueType{}, err.Error()))
		}
	}
	if r := m.TemplateRef; r != nil {
		rp := p.Child("templateRef")
		if r.Name == "" {
			errs = append(errs, field.Required(rp.Child("name"), "the MetricTemplate's name"))
		}
		if r.Namespace != "" {
			for _, msg := range validation.IsDNS1123Label(r.Namespace) {
				errs = append(errs, field.Invalid(rp.Child("namespace"), r.Namespace, msg))
			}
		}
	}
	if m.Interval != "" {
		errs = append(errs, validatePromDuration(p.Child("interval"), m.Interval)...)
	}
	switch m.OnNoData {
	case "", v1beta1.NoDataFail, v1beta1.NoDataSkip:
	default:
		errs = append(errs, field.NotSupported(p.Child("onNoData"), m.OnNoData,
			[]v1beta1.NoDataPolicy{v1beta1.NoDataFail, v1beta1.NoDataSkip}))
	}

	tp := p.Child("threshold")
	if r := m.ThresholdRange; r != nil {
		rp := p.Child("thresholdRange")
		switch {
		case r.Min == nil && r.Max == nil:
			errs = append(errs, field.Required(rp, "set min, max or both"))
		case r.Min != nil && r.Max != nil && *r.Min > *r.Max:
			errs = append(errs, field.Invalid(rp.Child("min"), *r.Min, fmt.Sprintf("must be <= %s (%v)", rp.Child("max"), *r.Max)))
		}
		if builtin {
			for _, b := range []struct {
				name string
				v    *float64
			}{{"min", r.Min}, {"max", r.Max}} {
				if b.v != nil {
					errs = append(errs, validateBuiltinThreshold(rp.Child(b.name), m.Name, *b.v)...)
				}
			}
		}
	} else if builtin {
		if m.Threshold == 0 {
			errs = append(errs, field.Required(tp, builtinThresholdHint(m.Name)+", or thresholdRange"))
		} else {
			errs = append(errs, validateBuiltinThreshold(tp, m.Name, m.Threshold)...)
		}
	}
	return errs
}

func builtinThresholdHint(metric string) string {
	if metric == v1beta1.MetricRequestSuccessRate {
		return "the lowest success rate in percent, e.g. 99"
	}
	return "the highest p99 request duration in milliseconds, e.g. 500"
}

func validateBuiltinThreshold(p *field.Path, metric string, v float64) field.ErrorList {
	switch {
	case metric == v1beta1.MetricRequestSuccessRate && (v < 0 || v > 100):
		return field.ErrorList{field.Invalid(p, v, "must be between 0 and 100: "+metric+" is a percentage")}
	case metric == v1beta1.MetricRequestDuration && v < 0:
		return field.ErrorList{field.Invalid(p, v, "must be >= 0: "+metric+" is in milliseconds")}
	}
	return nil
}

var hookTypes = []v1beta1.HookType{
	v1beta1.PreRolloutHook, v1beta1.RolloutHook, v1beta1.PostRolloutHook, v1beta1.RollbackHook,
	v1beta1.EventHook, v1beta1.ConfirmRolloutHook, v1beta1.ConfirmPromotionHook, v1beta1.ConfirmTrafficIncreaseHook,
}

func validateHook(p *field.Path, h *v1beta1.CanaryWebhook) field.ErrorList {
	var errs field.ErrorList
	if h.Type != "" {
		ok := false
		for _, t := range hookTypes {
			ok = ok || h.Type == t
		}
		if !ok {
			errs = append(errs, field.NotSupported(p.Child("type"), h.Type, hookTypes))
		}
	}
	if h.Name == "" {
		errs = append(errs, field.Required(p.Child("name"), ""))
	}
	if h.URL == "" {
		errs = append(errs, field.Required(p.Child("url"), "the address the hook POSTs to"))
	} else {
		errs = append(errs, validateHTTPURL(p.Child("url"), h.URL)...)
	}
	if h.Timeout != "" {
		errs = append(errs, validateDuration(p.Child("timeout"), h.Timeout)...)
	}
	if h.Retries < 0 {
		errs = append(errs, field.Invalid(p.Child("retries"), h.Retries, "must be >= 0"))
	}
	return errs
}

func validatePercent(p *field.Path, v int) field.ErrorList {
	if v < 0 || v > 100 {
		return field.ErrorList{field.Invalid(p, v, "must be between 0 and 100 (percent)")}
	}
	return nil
}

// validateDuration accepts a positive Go duration (30s, 1m, 1m30s).
func validateDuration(p *field.Path, s string) field.ErrorList {
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return field.ErrorList{field.Invalid(p, s, "must be a duration such as 30s, 1m or 1m30s")}
	case d <= 0:
		return field.ErrorList{field.Invalid(p, s, "must be positive")}
	}
	return nil
}

// validatePromDuration accepts a positive duration that Go and Prometheus both read: a
// metric interval is both the query range ([{{ interval }}]) and a Go duration.
func validatePromDuration(p *field.Path, s string) field.ErrorList {
	if errs := validateDuration(p, s); len(errs) > 0 {
		return errs
	}
	if _, err := model.ParseDuration(s); err != nil {
		return field.ErrorList{field.Invalid(p, s, "must be a duration PromQL reads as a range too, such as 30s, 1m or 1h30m")}
	}
	return nil
}

func validateHTTPURL(p *field.Path, s string) field.ErrorList {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return field.ErrorList{field.Invalid(p, s, "must be an absolute http or https URL")}
	}
	return nil
}
