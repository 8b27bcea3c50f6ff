package router

import (
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// NewTrafficRouteRouter writes TrafficRoutes with c, which may point at the Global
// control plane's cluster (--mesh-kubeconfig): a federated zone refuses them.
func NewTrafficRouteRouter(c client.Client) Router { return newRouter(c, trafficRoutes{}) }

// NewTrafficRoute is the TrafficRoute coalmine writes for t at canaryWeight percent:
// every source, the apex as destination, split between primary and canary tags.
func NewTrafficRoute(t Target, canaryWeight int) *TrafficRoute {
	return &TrafficRoute{
		TypeMeta:   metaTypeOf(KindTrafficRoute),
		Mesh:       t.mesh(),
		ObjectMeta: objectMeta(TrafficRouteName(t.Apex, t.Namespace), "", t, nil),
		Spec: TrafficRouteSpec{
			Sources:      []Selector{{Match: map[string]string{ServiceTagKey: "*"}}},
			Destinations: []Selector{{Match: map[string]string{ServiceTagKey: ServiceTag(t.Apex, t.Namespace, t.Port)}}},
			Conf: TrafficRouteConf{Split: []TrafficRouteSplit{
				{Weight: uint32(100 - canaryWeight), Destination: map[string]string{ServiceTagKey: ServiceTag(t.Primary, t.Namespace, t.Port)}},
				{Weight: uint32(canaryWeight), Destination: map[string]string{ServiceTagKey: ServiceTag(t.Canary, t.Namespace, t.Port)}},
			}},
		},
	}
}

// trafficRoutes is the TrafficRoute kind: cluster-scoped, named "<apex>.<namespace>".
type trafficRoutes struct{}

func (trafficRoutes) kind() string         { return KindTrafficRoute }
func (trafficRoutes) namespaced() bool     { return false }
func (trafficRoutes) empty() client.Object { return &TrafficRoute{} }

func (trafficRoutes) desired(t Target, canaryWeight int) client.Object {
	return NewTrafficRoute(t, canaryWeight)
}

func (trafficRoutes) canaryWeight(obj client.Object, t Target) int {
	tr := obj.(*TrafficRoute)
	canaryTag := ServiceTag(t.Canary, t.Namespace, t.Port)
	var canary, total uint32
	for _, s := range tr.Spec.Conf.Split {
		total += s.Weight
		if s.Destination[ServiceTagKey] == canaryTag {
			canary += s.Weight
		}
	}
	return percent(canary, total)
}
