package v1beta1

import (
	"regexp"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// httpMethods are the methods a MeshHTTPRoute can match (its CRD's enum).
var httpMethods = map[string]bool{
	"CONNECT": true, "DELETE": true, "GET": true, "HEAD": true, "OPTIONS": true, "PATCH": true, "POST": true, "PUT": true, "TRACE": true,
}

// MatchErrors checks spec.analysis.match (A/B testing) for what Kuma's routes can do:
// headers (cookies are the cookie header), uri (exact or prefix) and an exact method. The
// other fields of Istio's HTTPMatchRequest have no Kuma equivalent and are refused by
// name. UnsupportedFields includes them, so the webhook denies and the loop reports them.
func MatchErrors(c *Canary) field.ErrorList {
	a := c.Spec.Analysis
	if a == nil {
		return nil
	}
	return validateMatch(field.NewPath("spec", "analysis", "match"), a.Match)
}

func validateMatch(p *field.Path, ms []HTTPMatchRequest) field.ErrorList {
	var errs field.ErrorList
	const onKuma = "has no equivalent in Kuma's TrafficRoute or MeshHTTPRoute; match on headers (a cookie is the \"cookie\" header), uri or method instead"
	for i := range ms {
		m, mp := &ms[i], p.Index(i)
		unsupported := []struct {
			name string
			set  bool
		}{
			{"scheme", m.Scheme != nil}, {"authority", m.Authority != nil}, {"port", m.Port != 0},
			{"sourceLabels", len(m.SourceLabels) > 0}, {"gateways", len(m.Gateways) > 0},
			{"queryParams", len(m.QueryParams) > 0}, {"ignoreUriCase", m.IgnoreUriCase},
			{"withoutHeaders", len(m.WithoutHeaders) > 0}, {"sourceNamespace", m.SourceNamespace != ""},
		}
		for _, u := range unsupported {
			if u.set {
				errs = append(errs, field.Forbidden(mp.Child(u.name), u.name+" "+onKuma))
			}
		}
		if m.Uri == nil && m.Method == nil && len(m.Headers) == 0 {
			errs = append(errs, field.Required(mp, "a match needs headers, uri or method: an empty one would send every request to the canary"))
		}
		if u := m.Uri; u != nil {
			switch {
			case u.Suffix != "" || u.Regex != "":
				errs = append(errs, field.Invalid(mp.Child("uri"), *u,
					"only exact and prefix are served: Kuma's MeshHTTPRoute ranks a regular expression below the catch-all path prefix, so it would never match; match on a header instead"))
			case *u == (StringMatch{}):
				errs = append(errs, field.Required(mp.Child("uri"), "exact or prefix"))
			default:
				errs = append(errs, validateStringMatch(mp.Child("uri"), *u)...)
			}
		}
		if mt := m.Method; mt != nil {
			if mt.Prefix != "" || mt.Suffix != "" || mt.Regex != "" || mt.Exact == "" {
				errs = append(errs, field.Invalid(mp.Child("method"), *mt, "only exact is served (MeshHTTPRoute matches a method exactly)"))
			} else if !httpMethods[mt.Exact] {
				errs = append(errs, field.NotSupported(mp.Child("method", "exact"), mt.Exact, []string{"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"}))
			}
		}
		names := make([]string, 0, len(m.Headers))
		for name := range m.Headers {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			hp := mp.Child("headers").Key(name)
			for _, msg := range validation.IsHTTPHeaderName(name) {
				errs = append(errs, field.Invalid(hp, name, msg))
			}
			if strings.ToLower(name) != name {
				errs = append(errs, field.Invalid(hp, name, "header names must be lower case (Flagger's rule; Envoy compares them in lower case)"))
			}
			errs = append(errs, validateStringMatch(hp, m.Headers[name])...)
		}
	}
	return errs
}

// validateStringMatch allows at most one of exact, prefix, suffix, regex (none, for a
// header, means "present", as in Istio), and a regex that compiles as RE2.
func validateStringMatch(p *field.Path, s StringMatch) field.ErrorList {
	var errs field.ErrorList
	set := 0
	for _, v := range []string{s.Exact, s.Prefix, s.Suffix, s.Regex} {
		if v != "" {
			set++
		}
	}
	if set > 1 {
		errs = append(errs, field.Invalid(p, s, "set one of exact, prefix, suffix or regex"))
	}
	if s.Regex != "" {
		if _, err := regexp.Compile(s.Regex); err != nil {
			errs = append(errs, field.Invalid(p.Child("regex"), s.Regex, "not an RE2 regular expression: "+err.Error()))
		}
	}
	return errs
}
