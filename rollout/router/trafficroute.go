package router

import (
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// NewTrafficRouteRouter writes TrafficRoutes with c, which may point at the Global
// control plane's cluster (--mesh-kubeconfig): a federated zone refuses them.
func NewTrafficRouteRouter(c client.Client) Router { return newRouter(c, trafficRoutes{}) }

// NewTrafficRoute is the TrafficRoute coalmine writes for t at canaryWeight percent:
// every source, the apex as destination, split between primary and canary tags. With
// t.Match (A/B testing) and a weight, the requests that match an entry are split in
// conf.http, one entry per alternative, and the others go to primary (conf.split 100/0);
// at weight 0 the route is the plain one.
func NewTrafficRoute(t Target, canaryWeight int) *TrafficRoute {
	split := func(w int) []TrafficRouteSplit {
		return []TrafficRouteSplit{
			{Weight: uint32(100 - w), Destination: map[string]string{ServiceTagKey: ServiceTag(t.Primary, t.Namespace, t.Port)}},
			{Weight: uint32(w), Destination: map[string]string{ServiceTagKey: ServiceTag(t.Canary, t.Namespace, t.Port)}},
		}
	}
	conf := TrafficRouteConf{Split: split(canaryWeight)}
	if t.abTesting(canaryWeight) {
		conf.Split = split(0)
		for _, m := range t.Match {
			conf.HTTP = append(conf.HTTP, TrafficRouteHTTP{Match: trafficRouteMatch(m), Split: split(canaryWeight)})
		}
	}
	return &TrafficRoute{
		TypeMeta:   metaTypeOf(KindTrafficRoute),
		Mesh:       t.mesh(),
		ObjectMeta: objectMeta(TrafficRouteName(t.Apex, t.Namespace), "", t, nil),
		Spec: TrafficRouteSpec{
			Sources:      []Selector{{Match: map[string]string{ServiceTagKey: "*"}}},
			Destinations: []Selector{{Match: map[string]string{ServiceTagKey: ServiceTag(t.Apex, t.Namespace, t.Port)}}},
			Conf:         conf,
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

// canaryWeight is the canary's share of the split that gives it the most: conf.split, or
// a conf.http entry's (A/B testing).
func (trafficRoutes) canaryWeight(obj client.Object, t Target) int {
	tr := obj.(*TrafficRoute)
	canaryTag := ServiceTag(t.Canary, t.Namespace, t.Port)
	share := func(split []TrafficRouteSplit) int {
		var canary, total uint32
		for _, s := range split {
			total += s.Weight
			if s.Destination[ServiceTagKey] == canaryTag {
				canary += s.Weight
			}
		}
		return percent(canary, total)
	}
	w := share(tr.Spec.Conf.Split)
	for _, h := range tr.Spec.Conf.HTTP {
		w = max(w, share(h.Split))
	}
	return w
}
