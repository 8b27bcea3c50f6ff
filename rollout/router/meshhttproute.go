package router

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

type meshHTTPRouteRouter struct{ c client.Client }

// NewMeshHTTPRouteRouter writes MeshHTTPRoutes in the app's namespace with c (the zone's
// cluster; Kuma syncs zone policies to the Global control plane).
func NewMeshHTTPRouteRouter(c client.Client) Router { return &meshHTTPRouteRouter{c: c} }

// NewMeshHTTPRoute is the MeshHTTPRoute coalmine writes for t at canaryWeight percent:
// for every proxy of the mesh, traffic to the apex MeshService (2.x legacy name, the
// kuma.io/service tag) matches one catch-all rule that splits it between primary and
// canary. It is named after the apex, in the app namespace, so it cannot collide.
func NewMeshHTTPRoute(t Target, canaryWeight int) *MeshHTTPRoute {
	return &MeshHTTPRoute{
		TypeMeta:   metaTypeOf("MeshHTTPRoute"),
		ObjectMeta: objectMeta(t.Apex, t.Namespace, t, map[string]string{LabelMesh: t.mesh()}),
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

func (r *meshHTTPRouteRouter) SetWeights(ctx context.Context, t Target, canaryWeight int) error {
	if err := t.validate(canaryWeight); err != nil {
		return err
	}
	return applyRoute(ctx, r.c, NewMeshHTTPRoute(t, canaryWeight))
}

func (r *meshHTTPRouteRouter) Weights(ctx context.Context, t Target) (int, bool, error) {
	mr := &MeshHTTPRoute{}
	err := r.c.Get(ctx, client.ObjectKey{Namespace: t.Namespace, Name: t.Apex}, mr)
	if apierrors.IsNotFound(err) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("get MeshHTTPRoute %s/%s: %w", t.Namespace, t.Apex, err)
	}
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
	return percent(canary, total), true, nil
}

func (r *meshHTTPRouteRouter) Delete(ctx context.Context, t Target) error {
	return deleteRoute(ctx, r.c, &MeshHTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: t.Apex, Namespace: t.Namespace}})
}

func metaTypeOf(kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: GroupVersion.String(), Kind: kind}
}

func (r *meshHTTPRouteRouter) Object(t Target) *metav1.PartialObjectMetadata {
	return &metav1.PartialObjectMetadata{
		TypeMeta:   metaTypeOf("MeshHTTPRoute"),
		ObjectMeta: metav1.ObjectMeta{Name: t.Apex, Namespace: t.Namespace},
	}
}
