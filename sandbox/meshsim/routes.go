package meshsim

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

var (
	trafficRouteGVK  = schema.GroupVersionKind{Group: "kuma.io", Version: "v1alpha1", Kind: "TrafficRoute"}
	meshHTTPRouteGVK = schema.GroupVersionKind{Group: "kuma.io", Version: "v1alpha1", Kind: "MeshHTTPRoute"}
)

const (
	serviceTagKey = "kuma.io/service"
	wildcard      = "*"
	// absentRetry is how long a route kind whose CRD is missing is left alone before the
	// next look: each look at a missing kind costs a discovery request.
	absentRetry = 10 * time.Second
)

// backendWeight is one entry of a route's split: an Envoy cluster and its weight.
type backendWeight struct {
	tag    string
	weight int64
}

// routeSource is one cluster's routes of one kind, remembered across steps.
type routeSource struct {
	reader client.Reader
	gvk    schema.GroupVersionKind
	// routeCluster: the source reads the route cluster (Options.RouteClient), whose live
	// reader is LiveRouteClient; otherwise Client's, whose live reader is LiveClient.
	routeCluster bool
	absentUntil  time.Time
	last         []unstructured.Unstructured
	lastErr      string
}

// list lists the source's route kind through reader.
func (src *routeSource) list(ctx context.Context, reader client.Reader) ([]unstructured.Unstructured, error) {
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(src.gvk.GroupVersion().WithKind(src.gvk.Kind + "List"))
	err := reader.List(ctx, list)
	return list.Items, err
}

// readRoutes lists a route kind from its sources, the first source winning on a name clash.
// A missing CRD means no routes; a failed read keeps the routes of the last good one, so a
// blip in the control-plane connection does not flip traffic back to the apex.
func (s *Simulator) readRoutes(ctx context.Context, sources []*routeSource) []unstructured.Unstructured {
	lists := make([][]unstructured.Unstructured, 0, len(sources))
	for _, src := range sources {
		now := s.clock.Now()
		if now.Before(src.absentUntil) {
			continue
		}
		items, err := src.list(ctx, src.reader)
		switch {
		case err == nil:
			src.last, src.lastErr = items, ""
		case meta.IsNoMatchError(err) || apierrors.IsNotFound(err):
			log.FromContext(ctx).V(1).Info("Route kind not served; assuming none", "kind", src.gvk.Kind)
			src.absentUntil = now.Add(absentRetry)
			src.last, src.lastErr = nil, ""
		case err.Error() != src.lastErr: // a lasting failure is said once
			log.FromContext(ctx).Error(err, "List routes; keeping the last ones seen", "kind", src.gvk.Kind)
			src.lastErr = err.Error()
		}
		lists = append(lists, src.last)
	}
	return firstByName(lists)
}

// readRoutesLive is readRoutes past the caches, for a step whose weighted cluster a live
// read found empty: the cached route was read before that live read, and coalmine moves
// the weight away before it deletes a canary, so the route it left may already be gone.
// Envoy gets routes and endpoints from one control plane; a stale route beside live pods
// would answer 503s no data plane would (NOTES, "What the chaos run found", the Retry
// flake). A source without a live reader, or whose live read fails, gives what the cached
// read gave. It reports whether any source was live.
func (s *Simulator) readRoutesLive(ctx context.Context, sources []*routeSource) ([]unstructured.Unstructured, bool) {
	lists := make([][]unstructured.Unstructured, 0, len(sources))
	anyLive := false
	for _, src := range sources {
		if s.clock.Now().Before(src.absentUntil) {
			continue
		}
		live := s.opts.LiveClient
		if src.routeCluster {
			live = s.opts.LiveRouteClient
		}
		items := src.last
		if live != nil {
			if l, err := src.list(ctx, live); err != nil {
				log.FromContext(ctx).V(1).Info("Keeping the cached routes: listing them live failed", "kind", src.gvk.Kind, "error", err.Error())
			} else {
				items, anyLive = l, true
			}
		}
		lists = append(lists, items)
	}
	return firstByName(lists), anyLive
}

// firstByName merges route lists, the first list winning on a name clash, sorted by
// namespace and name.
func firstByName(lists [][]unstructured.Unstructured) []unstructured.Unstructured {
	var out []unstructured.Unstructured
	seen := map[types.NamespacedName]bool{}
	for _, list := range lists {
		for _, u := range list {
			key := types.NamespacedName{Namespace: u.GetNamespace(), Name: u.GetName()}
			if !seen[key] {
				seen[key] = true
				out = append(out, u)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].GetNamespace() != out[j].GetNamespace() {
			return out[i].GetNamespace() < out[j].GetNamespace()
		}
		return out[i].GetName() < out[j].GetName()
	})
	return out
}

// trafficRoute is the part of a kuma.io/v1alpha1 TrafficRoute the simulator acts on:
//
//	spec.destinations[].match["kuma.io/service"]
//	spec.conf.split[]{weight, destination["kuma.io/service"]} or spec.conf.destination
//	spec.conf.http[]{match{method, path, headers}, split[] or destination}, in order
//
// Sources are ignored: every caller is in the route's sources in the sandbox.
type trafficRoute struct {
	name         string
	destinations []string
	split        []backendWeight // "*" stands for the called service itself
	http         []trafficRouteHTTP
}

// trafficRouteHTTP is one conf.http entry: the requests that match go to its split.
type trafficRouteHTTP struct {
	match any
	split []backendWeight
}

// parseSplit reads a split list, or a single destination when there is none.
func parseSplit(conf any) []backendWeight {
	var out []backendWeight
	split, _ := nestedField(conf, "split").([]any)
	for _, e := range split {
		tag, ok := nestedString(e, "destination", serviceTagKey)
		if !ok {
			continue
		}
		w, _ := asInt64(nestedField(e, "weight"))
		out = append(out, backendWeight{tag: tag, weight: w})
	}
	if len(split) == 0 {
		if tag, ok := nestedString(conf, "destination", serviceTagKey); ok {
			out = []backendWeight{{tag: tag, weight: 1}}
		}
	}
	return out
}

func parseTrafficRoute(u *unstructured.Unstructured) trafficRoute {
	r := trafficRoute{name: u.GetName()}
	dests, _, _ := unstructured.NestedSlice(u.Object, "spec", "destinations")
	for _, d := range dests {
		if tag, ok := nestedString(d, "match", serviceTagKey); ok {
			r.destinations = append(r.destinations, tag)
		}
	}
	conf := nestedField(u.Object, "spec", "conf")
	r.split = parseSplit(conf)
	httpEntries, _ := nestedField(conf, "http").([]any)
	for _, h := range httpEntries {
		r.http = append(r.http, trafficRouteHTTP{match: nestedField(h, "match"), split: parseSplit(h)})
	}
	return r
}

// routeFor returns the split for a request req of a caller of tag, matching the
// destinations exactly or only by wildcard: the first conf.http entry that matches the
// request, else conf.split.
func (r *trafficRoute) routeFor(tag string, exact bool, req request) ([]backendWeight, bool) {
	if len(r.split) == 0 {
		return nil, false
	}
	for _, d := range r.destinations {
		if (exact && d == tag) || (!exact && d == wildcard) {
			split := r.split
			for _, h := range r.http {
				if len(h.split) > 0 && trafficRouteHTTPMatches(h.match, req) {
					split = h.split
					break
				}
			}
			out := make([]backendWeight, len(split))
			for i, b := range split {
				out[i] = b
				if b.tag == wildcard {
					out[i].tag = tag
				}
			}
			return out, true
		}
	}
	return nil, false
}

// meshHTTPRoute is the part of a kuma.io/v1alpha1 MeshHTTPRoute the simulator acts on:
// spec.to[].targetRef and, of the rules that match a caller's request, the most specific
// one's default.backendRefs (the last of equally specific ones). spec.targetRef (the
// sources) is ignored.
type meshHTTPRoute struct {
	namespace, name string
	to              []meshHTTPRouteTo
}

type meshHTTPRouteTo struct {
	target meshRef
	rules  []meshHTTPRouteRule
}

type meshHTTPRouteRule struct {
	matches  []any
	backends []meshRefWt // nil: the target itself
}

// rule is the rule of to that applies to req, false when none matches.
func (to *meshHTTPRouteTo) rule(req request) (meshHTTPRouteRule, bool) {
	var best meshHTTPRouteRule
	var bestSp specificity
	found := false
	for _, rule := range to.rules {
		ok, sp := len(rule.matches) == 0, specificity{}
		for _, m := range rule.matches {
			if mok, msp := meshHTTPRouteMatches(m, req); mok && (!ok || sp.less(msp)) {
				ok, sp = true, msp
			}
		}
		if ok && (!found || !sp.less(bestSp)) {
			best, bestSp, found = rule, sp, true
		}
	}
	return best, found
}

// meshRef is a targetRef or backendRef to a MeshService: either name is a kuma.io/service
// tag (Kuma 2.x legacy naming) or name/namespace/port(or sectionName) name a Service port.
type meshRef struct {
	kind, name, namespace, sectionName string
	port                               int64
}

type meshRefWt struct {
	ref    meshRef
	weight int64
}

func parseMeshHTTPRoute(u *unstructured.Unstructured) meshHTTPRoute {
	r := meshHTTPRoute{namespace: u.GetNamespace(), name: u.GetName()}
	to, _, _ := unstructured.NestedSlice(u.Object, "spec", "to")
	for _, t := range to {
		tm, ok := t.(map[string]any)
		if !ok {
			continue
		}
		entry := meshHTTPRouteTo{target: parseMeshRef(tm["targetRef"])}
		rules, _ := tm["rules"].([]any)
		for _, rule := range rules {
			matches, _ := nestedField(rule, "matches").([]any)
			parsed := meshHTTPRouteRule{matches: matches}
			refs, _ := nestedField(rule, "default", "backendRefs").([]any)
			for _, b := range refs {
				w, ok := asInt64(nestedField(b, "weight"))
				if !ok {
					w = 1 // Kuma's default weight
				}
				parsed.backends = append(parsed.backends, meshRefWt{ref: parseMeshRef(b), weight: w})
			}
			entry.rules = append(entry.rules, parsed)
		}
		r.to = append(r.to, entry)
	}
	return r
}

func parseMeshRef(v any) meshRef {
	m, _ := v.(map[string]any)
	str := func(k string) string { s, _ := m[k].(string); return s }
	port, _ := asInt64(m["port"])
	return meshRef{kind: str("kind"), name: str("name"), namespace: str("namespace"), sectionName: str("sectionName"), port: port}
}

// routeFor returns the split for a request req to apex c if one of the route's targets
// is c and one of its rules matches req.
func (r *meshHTTPRoute) routeFor(c serviceRef, services map[types.NamespacedName]*corev1.Service, req request) ([]backendWeight, bool) {
	for i := range r.to {
		to := &r.to[i]
		if !r.refers(to.target, c) {
			continue
		}
		rule, ok := to.rule(req)
		if !ok {
			continue
		}
		if len(rule.backends) == 0 {
			return []backendWeight{{tag: c.tag, weight: 1}}, true
		}
		out := make([]backendWeight, 0, len(rule.backends))
		for _, b := range rule.backends {
			if tag, ok := r.resolve(b.ref, c, services); ok {
				out = append(out, backendWeight{tag: tag, weight: b.weight})
			}
		}
		return out, true
	}
	return nil, false
}

func (r *meshHTTPRoute) refers(ref meshRef, c serviceRef) bool {
	if ref.kind != "" && ref.kind != "MeshService" {
		return false
	}
	if ref.name == c.tag {
		return true
	}
	ns := ref.namespace
	if ns == "" {
		ns = r.namespace
	}
	if ref.name != c.name || ns != c.namespace {
		return false
	}
	switch {
	case ref.port != 0:
		return ref.port == int64(c.port)
	case ref.sectionName != "":
		return ref.sectionName == c.portName || ref.sectionName == strconv.Itoa(int(c.port))
	}
	return true
}

// resolve turns a backendRef into the tag of its Envoy cluster. Without a port, the
// backend's port equal to the apex's is taken, else its first.
func (r *meshHTTPRoute) resolve(ref meshRef, c serviceRef, services map[types.NamespacedName]*corev1.Service) (string, bool) {
	if ref.kind != "" && ref.kind != "MeshService" {
		return "", false
	}
	if strings.Contains(ref.name, "_svc_") {
		return ref.name, true
	}
	ns := ref.namespace
	if ns == "" {
		ns = r.namespace
	}
	if ref.port != 0 {
		return Tag(ref.name, ns, int32(ref.port)), true
	}
	svc := services[types.NamespacedName{Namespace: ns, Name: ref.name}]
	if svc == nil || len(svc.Spec.Ports) == 0 {
		return Tag(ref.name, ns, c.port), true // unknown Service: no endpoints, 503s
	}
	for _, p := range svc.Spec.Ports {
		if (ref.sectionName != "" && (p.Name == ref.sectionName || strconv.Itoa(int(p.Port)) == ref.sectionName)) ||
			(ref.sectionName == "" && p.Port == c.port) {
			return Tag(ref.name, ns, p.Port), true
		}
	}
	return Tag(ref.name, ns, svc.Spec.Ports[0].Port), true
}

func nestedField(v any, path ...string) any {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

func nestedString(v any, path ...string) (string, bool) {
	s, ok := nestedField(v, path...).(string)
	return s, ok && s != ""
}

// asInt64 reads a JSON number as unstructured holds it (int64 from the apiserver, float64
// or others from hand-built objects).
func asInt64(v any) (int64, bool) {
	switch n := v.(type) {
	case int64:
		return n, true
	case int:
		return int64(n), true
	case int32:
		return int64(n), true
	case float64:
		return int64(n), true
	case string:
		i, err := strconv.ParseInt(n, 10, 64)
		return i, err == nil
	case fmt.Stringer: // json.Number
		i, err := strconv.ParseInt(n.String(), 10, 64)
		return i, err == nil
	}
	return 0, false
}
