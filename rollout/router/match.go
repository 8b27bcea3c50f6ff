package router

import (
	"regexp"
	"sort"
)

// Match selects the requests a route sends to the canary by its weight (Flagger's
// analysis.match, A/B testing): a request matches when it meets every condition. A
// Target's Match lists alternatives, any one of which is enough; requests that match none
// go to primary.
//
// +kubebuilder:object:generate=false
type Match struct {
	// Headers match request headers by lower-case name (a cookie is the "cookie" header).
	Headers []HeaderMatch
	// Path and Method are conditions on the request line; nil is none.
	Path   *StringMatch
	Method *StringMatch
}

// HeaderMatch is one header condition. An empty Value matches any value of a header that
// is present (Istio's meaning of an empty matcher).
//
// +kubebuilder:object:generate=false
type HeaderMatch struct {
	Name  string
	Value StringMatch
}

// StringMatch is Istio's matcher: one of its fields is set. Regex is RE2 and matches the
// whole value, as Envoy's safe_regex does.
//
// +kubebuilder:object:generate=false
type StringMatch struct {
	Exact, Prefix, Suffix, Regex string
}

// empty reports whether no condition is set: presence only.
func (s StringMatch) empty() bool { return s == StringMatch{} }

// suffixRegex is a suffix condition as an RE2 pattern on the whole value: neither Kuma's
// TrafficRoute nor its MeshHTTPRoute has a suffix matcher.
func suffixRegex(suffix string) string { return ".*" + regexp.QuoteMeta(suffix) }

// sortedHeaders returns the header conditions by name, so a route renders the same way
// every time (server-side apply then stores nothing).
func sortedHeaders(hs []HeaderMatch) []HeaderMatch {
	out := append([]HeaderMatch(nil), hs...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// abTesting reports whether t's route splits only the matching requests, at canaryWeight:
// with no weight the route is the plain one, everything to primary.
func (t Target) abTesting(canaryWeight int) bool { return len(t.Match) > 0 && canaryWeight > 0 }

// --- TrafficRoute (Kuma 1.x): spec.conf.http[].match ---

// trafficRouteMatch is a Match as TrafficRoute's conf.http[].match.
func trafficRouteMatch(m Match) TrafficRouteHTTPMatch {
	out := TrafficRouteHTTPMatch{}
	if m.Path != nil {
		out.Path = kumaStringMatcher(*m.Path)
	}
	if m.Method != nil {
		out.Method = kumaStringMatcher(*m.Method)
	}
	if len(m.Headers) > 0 {
		out.Headers = map[string]KumaStringMatcher{}
		for _, h := range m.Headers {
			if h.Value.empty() {
				out.Headers[h.Name] = KumaStringMatcher{Regex: ".*"}
				continue
			}
			out.Headers[h.Name] = *kumaStringMatcher(h.Value)
		}
	}
	if out.Path == nil && out.Method == nil && out.Headers == nil {
		// Kuma requires one condition; a Match without any is every request.
		out.Path = &KumaStringMatcher{Prefix: "/"}
	}
	return out
}

func kumaStringMatcher(s StringMatch) *KumaStringMatcher {
	switch {
	case s.Exact != "":
		return &KumaStringMatcher{Exact: s.Exact}
	case s.Prefix != "":
		return &KumaStringMatcher{Prefix: s.Prefix}
	case s.Suffix != "":
		return &KumaStringMatcher{Regex: suffixRegex(s.Suffix)}
	case s.Regex != "":
		return &KumaStringMatcher{Regex: s.Regex}
	}
	return &KumaStringMatcher{Regex: ".*"}
}

// --- MeshHTTPRoute (Kuma 2.x): to[].rules[].matches[] ---

// meshHTTPRouteMatch is a Match as one entry of a MeshHTTPRoute rule's matches. Every
// entry carries a path (the catch-all prefix when the Match has none), as the plain rule
// does: Kuma sorts all matches by path kind and length, then method, then the number of
// headers, and the first that a request meets wins, so an entry with the catch-all path
// and a condition more always comes before the catch-all rule.
func meshHTTPRouteMatch(m Match) HTTPRouteMatch {
	out := HTTPRouteMatch{Path: &PathMatch{Type: "PathPrefix", Value: "/"}}
	if p := m.Path; p != nil {
		switch {
		case p.Exact != "":
			out.Path = &PathMatch{Type: "Exact", Value: p.Exact}
		case p.Prefix != "":
			// PathPrefix, not a pattern: Kuma orders a rule's matches by path kind first
			// (Exact, PathPrefix, RegularExpression), so a pattern would rank below the
			// catch-all prefix and never be taken. Kuma's prefix is per path segment.
			out.Path = &PathMatch{Type: "PathPrefix", Value: p.Prefix}
		case p.Suffix != "":
			// Refused by the webhook for that reason; rendered as well as it can be.
			out.Path = &PathMatch{Type: "RegularExpression", Value: suffixRegex(p.Suffix)}
		case p.Regex != "":
			out.Path = &PathMatch{Type: "RegularExpression", Value: p.Regex}
		}
	}
	if m.Method != nil && m.Method.Exact != "" {
		out.Method = m.Method.Exact
	}
	for _, h := range sortedHeaders(m.Headers) {
		hm := HTTPHeaderMatch{Name: h.Name}
		switch v := h.Value; {
		case v.Exact != "":
			hm.Type, hm.Value = "Exact", v.Exact
		case v.Prefix != "":
			hm.Type, hm.Value = "Prefix", v.Prefix
		case v.Suffix != "":
			hm.Type, hm.Value = "RegularExpression", suffixRegex(v.Suffix)
		case v.Regex != "":
			hm.Type, hm.Value = "RegularExpression", v.Regex
		default:
			hm.Type = "Present"
		}
		out.Headers = append(out.Headers, hm)
	}
	return out
}
