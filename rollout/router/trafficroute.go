package router

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TrafficRouteName is the name of a Target's TrafficRoute: "<apex>.<namespace>". The kind
// is cluster-scoped, and neither part can hold a dot, so two namespaces with the same app
// never collide (Flagger uses the apex alone, and they do).
func TrafficRouteName(apex, namespace string) string { return apex + "." + namespace }

type trafficRouteRouter struct{ c client.Client }

// NewTrafficRouteRouter writes TrafficRoutes with c, which may point at the Global
// control plane's cluster (--mesh-kubeconfig): a federated zone refuses them.
func NewTrafficRouteRouter(c client.Client) Router { return &trafficRouteRouter{c: c} }

// NewTrafficRoute is the TrafficRoute coalmine writes for t at canaryWeight percent:
// every source, the apex as destination, split between primary and canary tags.
func NewTrafficRoute(t Target, canaryWeight int) *TrafficRoute {
	return &TrafficRoute{
		TypeMeta:   metaTypeOf("TrafficRoute"),
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

func (r *trafficRouteRouter) SetWeights(ctx context.Context, t Target, canaryWeight int) error {
	if err := t.validate(canaryWeight); err != nil {
		return err
	}
	return applyRoute(ctx, r.c, NewTrafficRoute(t, canaryWeight))
}

func (r *trafficRouteRouter) Weights(ctx context.Context, t Target) (int, bool, error) {
	tr := &TrafficRoute{}
	err := r.c.Get(ctx, client.ObjectKey{Name: TrafficRouteName(t.Apex, t.Namespace)}, tr)
	if apierrors.IsNotFound(err) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("get TrafficRoute %s: %w", TrafficRouteName(t.Apex, t.Namespace), err)
	}
	canaryTag := ServiceTag(t.Canary, t.Namespace, t.Port)
	var canary, total uint32
	for _, s := range tr.Spec.Conf.Split {
		total += s.Weight
		if s.Destination[ServiceTagKey] == canaryTag {
			canary += s.Weight
		}
	}
	return percent(canary, total), true, nil
}

func (r *trafficRouteRouter) Delete(ctx context.Context, t Target) error {
	return deleteRoute(ctx, r.c, &TrafficRoute{ObjectMeta: metav1.ObjectMeta{Name: TrafficRouteName(t.Apex, t.Namespace)}})
}

func (r *trafficRouteRouter) Object(t Target) *metav1.PartialObjectMetadata {
	return &metav1.PartialObjectMetadata{
		TypeMeta:   metaTypeOf("TrafficRoute"),
		ObjectMeta: metav1.ObjectMeta{Name: TrafficRouteName(t.Apex, t.Namespace)},
	}
}
