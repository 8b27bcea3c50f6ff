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
func NewMeshHTTPRoute(t Target, canaryWeight int) *MeshHTTPRoute {
	return &MeshHTTPRoute{
		TypeMeta:   metaTypeOf(KindMeshHTTPRoute),
		ObjectMeta: objectMeta(MeshHTTPRouteName(t.Apex), t.Namespace, t, map[string]string{LabelMesh: t.mesh()}),
		Spec: MeshHTTPRouteSpec{
			TargetRef: &TargetRef{Kind: "Mesh"},
			To: []MeshHTTPRouteTo{{
				TargetRef: TargetRef{Kind: "MeshService", Name: ServiceTag(t.Apex, t.Namespace, t.Port)},
				Rules: []MeshHTTPRouteRule{{
					Matches: []HTTPRouteMatch{{Path: &PathMatch{Type: "PathPrefix", Value: "/"}}},
					Default: RuleConf{BackendRefs: []BackendRef{
						{Kind: "MeshService", Name: ServiceTag(t.Primary, t.Namespace, t.Port), Weight: uint32(100 - canaryWeight)},
						{Kind: "MeshService", Name: ServiceTag(t.Canary, t.Namespace, t.Port), Weight: uint32(canaryWeight)},
					}},
				}},
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

// canaryWeight counts only the rules for the apex: a route edited by hand may hold others.
func (meshHTTPRoutes) canaryWeight(obj client.Object, t Target) int {
	mr := obj.(*MeshHTTPRoute)
	apexTag, canaryTag := ServiceTag(t.Apex, t.Namespace, t.Port), ServiceTag(t.Canary, t.Namespace, t.Port)
	var canary, total uint32
	for _, to := range mr.Spec.To {
		if to.TargetRef.Name != apexTag {
			continue
		}
		for _, rule := range to.Rules {
			for _, b := range rule.Default.BackendRefs {
				total += b.Weight
				if b.Name == canaryTag {
					canary += b.Weight
				}
			}
		}
	}
	return percent(canary, total)
}
