package router

import (
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// NewMeshHTTPRouteRouter writes MeshHTTPRoutes in the app's namespace with c (the zone's
// cluster; Kuma syncs zone policies to the Global control plane).
func NewMeshHTTPRouteRouter(c client.Client) Router { return newRouter(c, meshHTTPRoutes{}) }

// NewMeshHTTPRoute is the MeshHTTPRoute coalmine writes for t at canaryWeight percent:
// for every proxy of the mesh, traffic to the apex MeshService (2.x legacy name, the
// kuma.io/service tag) matches one catch-all rule that splits it between primary and
// canary. It is named MeshHTTPRouteName(apex) in the app namespace: not the apex's own
// name, which a user's route may have.
//
// With t.Match (A/B testing) and a weight, a first rule holds one match entry per
// alternative (each with the catch-all path unless the Match has a path) and splits those
// requests; the catch-all rule after it sends the others to primary. Kuma picks the most
// specific rule a request matches, and a rule with header conditions is more specific than
// the bare prefix. At weight 0 the route is the plain one.
func NewMeshHTTPRoute(t Target, canaryWeight int) *MeshHTTPRoute {
	backends := func(w int) RuleConf {
		return RuleConf{BackendRefs: []BackendRef{
			{Kind: "MeshService", Name: ServiceTag(t.Primary, t.Namespace, t.Port), Weight: uint32(100 - w)},
			{Kind: "MeshService", Name: ServiceTag(t.Canary, t.Namespace, t.Port), Weight: uint32(w)},
		}}
	}
	catchAll := []HTTPRouteMatch{{Path: &PathMatch{Type: "PathPrefix", Value: "/"}}}
	rules := []MeshHTTPRouteRule{{Matches: catchAll, Default: backends(canaryWeight)}}
	if t.abTesting(canaryWeight) {
		ab := MeshHTTPRouteRule{Default: backends(canaryWeight)}
		for _, m := range t.Match {
			ab.Matches = append(ab.Matches, meshHTTPRouteMatch(m))
		}
		rules = []MeshHTTPRouteRule{ab, {Matches: catchAll, Default: backends(0)}}
	}
	return &MeshHTTPRoute{
		TypeMeta:   metaTypeOf(KindMeshHTTPRoute),
		ObjectMeta: objectMeta(MeshHTTPRouteName(t.Apex), t.Namespace, t, map[string]string{LabelMesh: t.mesh()}),
		Spec: MeshHTTPRouteSpec{
			TargetRef: &TargetRef{Kind: "Mesh"},
			To: []MeshHTTPRouteTo{{
				TargetRef: TargetRef{Kind: "MeshService", Name: ServiceTag(t.Apex, t.Namespace, t.Port)},
				Rules:     rules,
			}},
		},
	}
}

// meshHTTPRoutes is the MeshHTTPRoute kind: namespaced, named "<apex>-coalmine".
type meshHTTPRoutes struct{}

func (meshHTTPRoutes) kind() string         { return KindMeshHTTPRoute }
func (meshHTTPRoutes) namespaced() bool     { return true }
func (meshHTTPRoutes) empty() client.Object { return &MeshHTTPRoute{} }

func (meshHTTPRoutes) desired(t Target, canaryWeight int) client.Object {
	return NewMeshHTTPRoute(t, canaryWeight)
}

// canaryWeight is the canary's share in the rule for the apex that gives it the most (the
// A/B rule, when there is one); only the rules for the apex count: a route edited by hand
// may hold others.
func (meshHTTPRoutes) canaryWeight(obj client.Object, t Target) int {
	mr := obj.(*MeshHTTPRoute)
	apexTag, canaryTag := ServiceTag(t.Apex, t.Namespace, t.Port), ServiceTag(t.Canary, t.Namespace, t.Port)
	w := 0
	for _, to := range mr.Spec.To {
		if to.TargetRef.Name != apexTag {
			continue
		}
		for _, rule := range to.Rules {
			var canary, total uint32
			for _, b := range rule.Default.BackendRefs {
				total += b.Weight
				if b.Name == canaryTag {
					canary += b.Weight
				}
			}
			w = max(w, percent(canary, total))
		}
	}
	return w
}
