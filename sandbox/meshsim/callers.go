package meshsim

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Service annotations that add callers. They are explicit on purpose: a test says which
// requests the mesh carries (a Canary passes them on with spec.service.apex / .canary
// annotations), and the simulator never derives its traffic from the route under test.
const (
	// AnnotationCallers, on an apex Service, adds callers that send their own requests to
	// it besides the users' plain "GET /", as JSON:
	//
	//	[{"name": "insiders", "rps": 20, "headers": {"x-canary": "insider"}},
	//	 {"name": "testers", "headers": {"cookie": "canary=always"}, "method": "GET", "path": "/"}]
	//
	// Each is counted apart (CallerSnapshot); rps defaults to the simulator's RPS, method
	// to GET, path to /. Header names are lower-cased, as Envoy sees them.
	AnnotationCallers = "sim.coalmine.dev/callers"
	// AnnotationLoadTest, on any Service (typically <app>-canary), plays Flagger's load
	// tester: a caller that calls the Service directly, not through any route, while it has
	// Ready pods, at the rate given ("" or invalid: the simulator's RPS). Blue/green
	// analyses a canary on this traffic while no user request reaches it.
	AnnotationLoadTest = "sim.coalmine.dev/load-test"
)

// The callers CallerSnapshot knows besides those of AnnotationCallers.
const (
	// CallerUsers is the users' caller of every apex: GET /, no header.
	CallerUsers = "users"
	// CallerLoadTester is the caller of the Services annotated with AnnotationLoadTest.
	CallerLoadTester = "load-tester"
)

// CallerSpec is one entry of AnnotationCallers.
type CallerSpec struct {
	Name    string            `json:"name"`
	RPS     float64           `json:"rps,omitempty"`
	Method  string            `json:"method,omitempty"`
	Path    string            `json:"path,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
}

// CallersAnnotation renders callers as the value of AnnotationCallers.
func CallersAnnotation(callers ...CallerSpec) string {
	data, err := json.Marshal(callers)
	if err != nil {
		panic(err) // plain strings and numbers
	}
	return string(data)
}

// request is what a caller's Envoy routes on.
type request struct {
	method, path string
	headers      map[string]string // lower-case names
}

var usersRequest = request{method: "GET", path: "/"}

// caller is one source of requests to one Service.
type caller struct {
	name string
	rps  float64 // 0: the simulator's RPS
	req  request
	// direct: the Service is called by its own tag, no route applies (the load tester).
	direct bool
}

// callersOf reads the callers an apex Service declares besides the users.
func callersOf(svc *corev1.Service) ([]caller, error) {
	v := svc.Annotations[AnnotationCallers]
	if strings.TrimSpace(v) == "" {
		return nil, nil
	}
	var specs []CallerSpec
	if err := json.Unmarshal([]byte(v), &specs); err != nil {
		return nil, fmt.Errorf("annotation %s: %w", AnnotationCallers, err)
	}
	var out []caller
	seen := map[string]bool{}
	for _, sp := range specs {
		switch {
		case sp.Name == "" || sp.Name == CallerUsers || sp.Name == CallerLoadTester || seen[sp.Name]:
			return nil, fmt.Errorf("annotation %s: caller name %q is empty, reserved or repeated", AnnotationCallers, sp.Name)
		case sp.RPS < 0:
			return nil, fmt.Errorf("annotation %s: caller %s: negative rps", AnnotationCallers, sp.Name)
		}
		seen[sp.Name] = true
		c := caller{name: sp.Name, rps: sp.RPS, req: request{method: strings.ToUpper(sp.Method), path: sp.Path, headers: map[string]string{}}}
		if c.req.method == "" {
			c.req.method = "GET"
		}
		if c.req.path == "" {
			c.req.path = "/"
		}
		for k, hv := range sp.Headers {
			c.req.headers[strings.ToLower(k)] = hv
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}

// loadTestOf reads AnnotationLoadTest: whether the Service is load-tested, and the rate.
func loadTestOf(svc *corev1.Service) (caller, bool) {
	v, ok := svc.Annotations[AnnotationLoadTest]
	if !ok {
		return caller{}, false
	}
	rps, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil || rps < 0 {
		rps = 0
	}
	return caller{name: CallerLoadTester, rps: rps, req: usersRequest, direct: true}, true
}

// fullMatch compiles an RE2 pattern that must match a whole value, as Envoy's safe_regex.
func fullMatch(pattern string) (*regexp.Regexp, error) {
	return regexp.Compile(`^(?:` + pattern + `)$`)
}

func regexMatches(pattern, v string) bool {
	re, err := fullMatch(pattern)
	return err == nil && re.MatchString(v)
}

// kumaStringMatches is TrafficRoute's StringMatcher: {prefix|exact|regex}.
func kumaStringMatches(m any, v string) bool {
	mm, ok := m.(map[string]any)
	if !ok {
		return false
	}
	if s, ok := mm["exact"].(string); ok {
		return v == s
	}
	if s, ok := mm["prefix"].(string); ok && s != "" {
		return strings.HasPrefix(v, s)
	}
	if s, ok := mm["regex"].(string); ok && s != "" {
		return regexMatches(s, v)
	}
	return false
}

// trafficRouteHTTPMatches is conf.http[].match of a TrafficRoute: method, path, headers,
// every one given must hold; a match without any condition matches nothing (Kuma refuses
// it).
func trafficRouteHTTPMatches(match any, r request) bool {
	m, ok := match.(map[string]any)
	if !ok || (m["method"] == nil && m["path"] == nil && m["headers"] == nil) {
		return false
	}
	if mt := m["method"]; mt != nil && !kumaStringMatches(mt, r.method) {
		return false
	}
	if p := m["path"]; p != nil && !kumaStringMatches(p, r.path) {
		return false
	}
	hs, _ := m["headers"].(map[string]any)
	for name, hm := range hs {
		v, present := r.headers[strings.ToLower(name)]
		if !present || !kumaStringMatches(hm, v) {
			return false
		}
	}
	return true
}

// meshHTTPRouteMatch is one entry of a MeshHTTPRoute rule's matches, and how specific it
// is: Kuma (as Gateway API) takes the most specific rule a request matches.
func meshHTTPRouteMatches(match any, r request) (bool, specificity) {
	m, ok := match.(map[string]any)
	if !ok {
		return false, specificity{}
	}
	var sp specificity
	if p, ok := m["path"].(map[string]any); ok {
		typ, _ := p["type"].(string)
		value, _ := p["value"].(string)
		switch typ {
		case "Exact":
			if r.path != value {
				return false, sp
			}
			sp.path = 3
		case "PathPrefix":
			trimmed := strings.TrimSuffix(value, "/")
			if !(trimmed == "" || r.path == trimmed || strings.HasPrefix(r.path, trimmed+"/")) {
				return false, sp
			}
			sp.path = 2
		case "RegularExpression":
			if !regexMatches(value, r.path) {
				return false, sp
			}
			sp.path = 1
		default:
			return false, sp
		}
		sp.pathLen = len(value)
	}
	if method, _ := m["method"].(string); method != "" {
		if method != r.method {
			return false, sp
		}
		sp.method = 1
	}
	if qp, _ := m["queryParams"].([]any); len(qp) > 0 {
		return false, sp // the callers send no query string
	}
	hs, _ := m["headers"].([]any)
	for _, h := range hs {
		hm, _ := h.(map[string]any)
		name, _ := hm["name"].(string)
		typ, _ := hm["type"].(string)
		value, _ := hm["value"].(string)
		v, present := r.headers[strings.ToLower(name)]
		var ok bool
		switch typ {
		case "", "Exact":
			ok = present && v == value
		case "Present":
			ok = present
		case "Absent":
			ok = !present
		case "Prefix":
			ok = present && strings.HasPrefix(v, value)
		case "RegularExpression":
			ok = present && regexMatches(value, v)
		}
		if !ok {
			return false, sp
		}
		sp.headers++
	}
	return true, sp
}

// specificity orders MeshHTTPRoute matches as Kuma's CompareMatch does: path kind (Exact >
// PathPrefix > RegularExpression > none), then, for prefixes and patterns, the longer
// value; then a method; then the number of header conditions.
type specificity struct{ path, pathLen, method, headers int }

func (a specificity) less(b specificity) bool {
	switch {
	case a.path != b.path:
		return a.path < b.path
	case a.path != 3 && a.pathLen != b.pathLen:
		return a.pathLen < b.pathLen
	case a.method != b.method:
		return a.method < b.method
	}
	return a.headers < b.headers
}
